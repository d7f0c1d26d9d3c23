"""Graph ops of our own Mojo kernels (`compiler/mxwc/kernels`), for layouts that have them.

The cache write, the cache copies and the attention and logits kernels keep the graph ops'
arithmetic: the cache write writes one slot where the ops would select and store a whole
cache, the copies copy only the slots written so far, the sums run in float32 in another
order. The int8 kernels are an int8 target's products (`mxwr.quantization`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from max.dtype import DType
from max.graph import BufferValue, TensorType, TensorValue, ops

from mxwr.graphspec import Layout
from mxwr.quantization import GROUP

KERNELS = Path(__file__).parents[1] / "kernels"  # built into the graphs that use them (custom_extensions)

# The GPU logits kernel's sums run on CUDA cores: past a few rows MAX's matmul wins. The CPU's
# reads each embedding row once for up to 8 rows at a time, and takes any number of rows.
LOGITS_MAX_ROWS = 4
# It reads each embedding row as 16 lanes of 16-byte vectors: 128 values of a 16-bit dtype.
LOGITS_WIDTH_MULTIPLE = 128
# Embedding rows per 256-thread block: 4 for each of its 16-lane groups, whose loads are all in
# flight before any sum (fewer or more rows a block measured slower).
LOGIT_ROWS_PER_BLOCK = 64


def logits_kernel_fits(rows: int, d: int, layout: Layout) -> bool:
    """The GPU layouts' kernel (`logits_greedy`); the CPU's (`logits_choice`) takes any rows."""
    return layout.logits_kernel and d % LOGITS_WIDTH_MULTIPLE == 0 and rows <= LOGITS_MAX_ROWS


def _choice_types(rows: int, vocab: int, top: int, device) -> list[TensorType]:
    f32, i64 = DType.float32, DType.int64
    return [TensorType(f32, [rows, vocab], device), TensorType(i64, [rows], device), TensorType(f32, [rows], device),
            TensorType(i64, [rows, top], device), TensorType(f32, [rows, top], device), TensorType(f32, [rows], device)]


def logits_choice(x: TensorValue, embedding: TensorValue, suppress: TensorValue, text_end: TensorValue,
                  top: int) -> list[TensorValue]:
    """kernels/logits.mojo (CPU): x [R, d] -> logits [R, V] against the tied embedding, and
    under the suppress mask the greedy token [R] and its log-probability [R], the best `top`
    text tokens (ids below text_end) [R, top] with their logits [R, top], and the text logits'
    log-sum-exp [R]."""
    rows, d = (int(n) for n in x.shape)
    vocab = int(embedding.shape[0])
    outputs = ops.custom("mxw_logits_choice", x.device, [x, embedding, suppress, text_end],
                         _choice_types(rows, vocab, top, x.device), {"rows": rows, "d": d, "vocab": vocab, "top": top})
    return [o.tensor for o in outputs]


def logits_greedy(x: TensorValue, embedding: TensorValue,
                  suppress: TensorValue) -> tuple[TensorValue, TensorValue, TensorValue]:
    """kernels/logits.mojo: x [R, d] -> logits [R, V] f32 against the tied embedding, the lowest
    id of the largest logit + suppress [R], and its log-probability [R]."""
    rows, d = (int(n) for n in x.shape)
    vocab = int(embedding.shape[0])
    blocks = -(-vocab // LOGIT_ROWS_PER_BLOCK)
    f32 = DType.float32
    out_types = [TensorType(f32, [rows, vocab], x.device), TensorType(DType.int64, [rows], x.device),
                 TensorType(f32, [rows], x.device), TensorType(f32, [rows, blocks], x.device),
                 TensorType(DType.int32, [rows, blocks], x.device)]
    outputs = ops.custom("mxw_logits_greedy", x.device, [x, embedding, suppress], out_types,
                         {"rows": rows, "d": d, "vocab": vocab, "per_block": LOGIT_ROWS_PER_BLOCK})
    return outputs[0].tensor, outputs[1].tensor, outputs[2].tensor


# The int8 logits kernel passes over the embedding once per 8 rows of x (kernels/logits.mojo): past
# a few hundred rows (the align graph's whole sequence) MAX's matmul on the widened embedding wins.
INT8_KERNEL_MAX_ROWS = 256


def int8_kernel_fits(rows: int) -> bool:
    return rows <= INT8_KERNEL_MAX_ROWS


def int8_linear(x: TensorValue, weight: TensorValue, scale: TensorValue, bias: TensorValue) -> TensorValue:
    """kernels/products.mojo: x [..., k] float32 times the int8 weight [n, k] with its groups' scales
    [n, k / GROUP] transposed, plus bias [n] -> [..., n]; x rounded to 8 bits by groups too, so
    that each group of products is one VNNI instruction (kernels/vnni.mojo), for a step's few
    rows and the encoder's many alike."""
    lead = [int(d) for d in x.shape[:-1]]
    rows, (n, k) = int(np.prod(lead)), (int(d) for d in weight.shape)
    flat = ops.reshape(x, [rows, k])
    y = ops.custom("mxw_linear_int8", x.device, [flat, weight, scale, bias],
                   [TensorType(DType.float32, [rows, n], x.device)],
                   {"rows": rows, "k": k, "n": n, "group": GROUP})[0].tensor
    return ops.reshape(y, [*lead, n])


# The float32 products of a decoder step's few rows (kernels/products.mojo): past a few rows (a
# prompt chunk, the encoder) MAX's matmul, which packs the weight, wins.
SMALL_PRODUCTS_MAX_ROWS = 8


def small_products_fit(rows: int) -> bool:
    return rows <= SMALL_PRODUCTS_MAX_ROWS


def small_linear(x: TensorValue, weight: TensorValue, bias: TensorValue) -> TensorValue:
    """kernels/products.mojo (CPU): x [..., k] float32 times the float32 weight [n, k]
    transposed, plus bias [n] -> [..., n]."""
    lead = [int(d) for d in x.shape[:-1]]
    rows, (n, k) = int(np.prod(lead)), (int(d) for d in weight.shape)
    y = ops.custom("mxw_linear", x.device, [ops.reshape(x, [rows, k]), weight, bias],
                   [TensorType(DType.float32, [rows, n], x.device)], {"rows": rows, "k": k, "n": n})[0].tensor
    return ops.reshape(y, [*lead, n])


def logits_choice_int8(x: TensorValue, embedding: TensorValue, scale: TensorValue, suppress: TensorValue,
                       text_end: TensorValue, top: int) -> list[TensorValue]:
    """kernels/logits.mojo: `logits_choice` against an int8 embedding with its groups' scales."""
    rows, d = (int(n) for n in x.shape)
    vocab = int(embedding.shape[0])
    outputs = ops.custom("mxw_logits_choice_int8", x.device, [x, embedding, scale, suppress, text_end],
                         _choice_types(rows, vocab, top, x.device),
                         {"rows": rows, "d": d, "vocab": vocab, "top": top, "group": GROUP})
    return [o.tensor for o in outputs]


def cache_write(keys: BufferValue, values: BufferValue, k: TensorValue, v: TensorValue,
                position: TensorValue) -> None:
    """kernels/cache.mojo: k, v [R, H, 1, dh] into slot `position` of the caches [R, H, S, dh],
    in place. The position is read on the device, so a recorded device graph replays it."""
    r, h, s, dh = (int(n) for n in keys.shape)
    ops.inplace_custom("mxw_cache_write", k.device, [keys, values, k, v, position],
                       parameters={"rows_heads": r * h, "slots": s, "dh": dh})


def encoder_attention(q: TensorValue, k: TensorValue, v: TensorValue) -> TensorValue:
    """kernels/attention.mojo (CPU): softmax(q k^T) v over q, k, v [B, H, T, dh] (q and k
    pre-scaled), every frame seeing every frame."""
    b, h, t, dh = (int(n) for n in q.shape)
    return ops.custom("mxw_encoder_attention", q.device, [q, k, v], [TensorType(DType.float32, [b, h, t, dh], q.device)],
                      {"batch": b, "heads": h, "frames": t, "dh": dh})[0].tensor


def step_self_attention(keys: BufferValue, values: BufferValue, q: TensorValue, k: TensorValue,
                        v: TensorValue, position: TensorValue) -> TensorValue:
    """kernels/attention.mojo (CPU): k, v [R, H, 1, dh] into slot `position` of the caches
    [R, H, S, dh], in place, then q [R, H, 1, dh] over slots 0..position -> [R, H, 1, dh]."""
    r, h, s, dh = (int(n) for n in keys.shape)
    [out] = ops.inplace_custom("mxw_step_self_attention", q.device, [keys, values, q, k, v, position],
                               [TensorType(DType.float32, [r, h, 1, dh], q.device)],
                               {"rows": r, "heads": h, "slots": s, "dh": dh})
    return out.tensor


def step_cross_attention(q: TensorValue, cross_k: TensorValue, cross_v: TensorValue, layer: int,
                         group: int) -> TensorValue:
    """kernels/attention.mojo (CPU): q [B * group, H, 1, dh] over layer `layer` of the cross K/V
    [L, B, H, n_audio_ctx, dh], each window's rows over its own -> [B * group, H, 1, dh]."""
    rows, h, _, dh = (int(n) for n in q.shape)
    _, batch, _, ctx_len, _ = (int(n) for n in cross_k.shape)
    [out] = ops.custom("mxw_step_cross_attention", q.device, [q, cross_k, cross_v],
                       [TensorType(DType.float32, [rows, h, 1, dh], q.device)],
                       {"batch": batch, "group": group, "heads": h, "ctx_len": ctx_len, "dh": dh, "layer": layer})
    return out.tensor


def cache_fork(dest: BufferValue, source: TensorValue, length: TensorValue) -> None:
    """kernels/cache.mojo (CPU): row r of dest [B * G, H, S, dh] takes row r // G of source
    [B, H, S, dh], slots 0..length-1, in place."""
    rows, h, s, dh = (int(n) for n in dest.shape)
    batch = int(source.shape[0])
    ops.inplace_custom("mxw_cache_fork", dest.device, [dest, source, length],
                       parameters={"batch": batch, "group": rows // batch, "heads": h, "slots": s, "dh": dh})


def cache_reorder(cache: BufferValue, source_rows: TensorValue, length: TensorValue) -> None:
    """kernels/cache.mojo (CPU): row r of the cache [R, H, S, dh] takes row source_rows[r], slots
    0..length-1, in place."""
    r, h, s, dh = (int(n) for n in cache.shape)
    ops.inplace_custom("mxw_cache_reorder", cache.device, [cache, source_rows, length],
                       parameters={"rows": r, "heads": h, "slots": s, "dh": dh})
