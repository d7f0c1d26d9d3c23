"""Graph ops of our own Mojo kernels (`compiler/mxwc/kernels`), for layouts that have them.

The cache write and the logits kernel keep the graph ops' arithmetic: the cache write writes
one slot where the ops would select and store a whole cache; the logits kernel sums in float32
in another order. The int8 kernels are an int8 target's products (`mxwr.quantization`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from max.dtype import DType
from max.graph import BufferValue, TensorType, TensorValue, ops

from mxwr.graphspec import Layout
from mxwr.quantization import GROUP

KERNELS = Path(__file__).parents[1] / "kernels"  # built into the graphs that use them (custom_extensions)

# The logits kernel's sums run on CUDA cores (GPU) or one row at a time (CPU): past a few rows
# MAX's matmul wins.
LOGITS_MAX_ROWS = 4
# It reads each embedding row as 16 lanes of 16-byte vectors: 128 values of a 16-bit dtype.
LOGITS_WIDTH_MULTIPLE = 128
# Embedding rows per 256-thread block: 4 for each of its 16-lane groups, whose loads are all in
# flight before any sum (fewer or more rows a block measured slower).
LOGIT_ROWS_PER_BLOCK = 64


def logits_kernel_fits(rows: int, d: int, layout: Layout) -> bool:
    return layout.logits_kernel and d % LOGITS_WIDTH_MULTIPLE == 0 and rows <= LOGITS_MAX_ROWS


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


# The int8 kernels pass over a weight row once per 8 rows of x (kernels/int8.mojo): past a few
# hundred rows (the align graph's whole sequence) MAX's matmul on the widened weight wins.
INT8_KERNEL_MAX_ROWS = 256


def int8_kernel_fits(rows: int) -> bool:
    return rows <= INT8_KERNEL_MAX_ROWS


def int8_linear(x: TensorValue, weight: TensorValue, scale: TensorValue) -> TensorValue:
    """kernels/int8.mojo: x [..., k] float32 times the int8 weight [n, k] with its groups' scales
    [n, k / GROUP] transposed -> [..., n]."""
    lead = [int(d) for d in x.shape[:-1]]
    rows, (n, k) = int(np.prod(lead)), (int(d) for d in weight.shape)
    flat = ops.reshape(x, [rows, k])
    y = ops.custom("mxw_linear_int8", x.device, [flat, weight, scale],
                   [TensorType(DType.float32, [rows, n], x.device)],
                   {"rows": rows, "k": k, "n": n, "group": GROUP})[0].tensor
    return ops.reshape(y, [*lead, n])


def logits_greedy_int8(x: TensorValue, embedding: TensorValue, scale: TensorValue,
                       suppress: TensorValue) -> tuple[TensorValue, TensorValue, TensorValue]:
    """kernels/int8.mojo: `logits_greedy` against an int8 embedding with its groups' scales."""
    rows, d = (int(n) for n in x.shape)
    vocab = int(embedding.shape[0])
    f32 = DType.float32
    out_types = [TensorType(f32, [rows, vocab], x.device), TensorType(DType.int64, [rows], x.device),
                 TensorType(f32, [rows], x.device)]
    outputs = ops.custom("mxw_logits_greedy_int8", x.device, [x, embedding, scale, suppress], out_types,
                         {"rows": rows, "d": d, "vocab": vocab, "group": GROUP})
    return outputs[0].tensor, outputs[1].tensor, outputs[2].tensor


def cache_write(keys: BufferValue, values: BufferValue, k: TensorValue, v: TensorValue,
                position: TensorValue) -> None:
    """kernels/cache.mojo: k, v [R, H, 1, dh] into slot `position` of the caches [R, H, S, dh],
    in place. The position is read on the device, so a recorded device graph replays it."""
    r, h, s, dh = (int(n) for n in keys.shape)
    ops.inplace_custom("mxw_cache_write", k.device, [keys, values, k, v, position],
                       parameters={"rows_heads": r * h, "slots": s, "dh": dh})
