"""Attention over [B, H, T, dh] heads, plain or tile-padded (`layout`), and for one query per
head as float32 sums; the heads' split and merge; the causal mask."""

from __future__ import annotations

import numpy as np
from max.dtype import DType
from max.graph import DeviceRef, TensorValue, ops

from mxwr.graphspec import round_up

from .layout import key_mask, pad_to


def split_heads(x: TensorValue, n_head: int) -> TensorValue:
    b, t, d = x.shape
    return ops.permute(ops.reshape(x, [b, t, n_head, int(d) // n_head]), [0, 2, 1, 3])


def merge_heads(x: TensorValue) -> TensorValue:
    b, h, t, dh = x.shape
    return ops.reshape(ops.permute(x, [0, 2, 1, 3]), [b, t, int(h) * int(dh)])


def split_single(x: TensorValue, n_head: int) -> TensorValue:
    """`split_heads` of one position [R, 1, d]: a reshape, the order in memory is already right."""
    r, _, d = (int(s) for s in x.shape)
    return ops.reshape(x, [r, n_head, 1, d // n_head])


def merge_single(x: TensorValue) -> TensorValue:
    r, h, _, dh = (int(s) for s in x.shape)
    return ops.reshape(x, [r, 1, h * dh])


def causal_mask(n: int, tile: int | None, device: DeviceRef) -> TensorValue:
    """[n, keys] f32: query t sees keys 0..t; keys spans n, padded to the `tile` if any."""
    keys = n if tile is None else round_up(n, tile)
    return ops.constant(np.triu(np.full((n, keys), -np.inf, dtype=np.float32), 1), DType.float32, device)


def attention(q: TensorValue, k: TensorValue, v: TensorValue, mask: TensorValue | None = None,
              tile: int | None = None) -> TensorValue:
    """Softmax(q k^T + mask) v over [B, H, T, dh] heads; q and k arrive pre-scaled.

    With a `tile` the operands are zero-padded to [.., round_up(S), round_up(dh)] first (k and v
    may arrive padded), for MAX's tiled matmul kernel (`layout`); padded key slots are masked (a
    given mask must already span them) and the result is sliced back.
    """
    if tile is not None:
        dh, keys = int(q.shape[-1]), int(k.shape[-2])
        width, slots = round_up(int(k.shape[-1]), tile), round_up(keys, tile)
        q, k, v = pad_to(q, -1, width), pad_to(pad_to(k, -1, width), -2, slots), pad_to(pad_to(v, -1, width), -2, slots)
        if mask is None and slots > keys:
            mask = key_mask(keys, slots, q.device)
    scores = ops.cast(q @ ops.transpose(k, -1, -2), DType.float32)
    if mask is not None:
        scores = scores + mask
    out = ops.cast(ops.softmax(scores), v.dtype) @ v
    return out if tile is None else out[..., :dh]


def single_query_attention(q: TensorValue, k: TensorValue, v: TensorValue, mask: TensorValue | None = None,
                           v_transposed: bool = False) -> TensorValue:
    """`attention` for one query per head (the decoder step), q [R, H, 1, dh] over k, v
    [R, H, S, w >= dh] (tile-padded widths are read up to dh), as float32 products and sums.
    `v_transposed`: v arrives as [R, H, w, S], so P.V sums along rows, like q k^T.

    A batched matmul with one query row wastes its 128-row tile and, for P.V, runs a handful of
    thread blocks down the whole key axis; the sums spread over every (head, key) and fuse their
    operands' slicing and casts. P is rounded to the model dtype first, as the matmul path does.
    """
    r, h, _, dh = (int(d) for d in q.shape)
    f32 = DType.float32
    k = k[..., :dh]
    slots = int(k.shape[-2])
    scores = ops.reshape(ops.sum(ops.cast(q, f32) * ops.cast(k, f32), axis=-1), [r, h, 1, slots])
    if mask is not None:
        scores = scores + mask
    weights = ops.cast(ops.cast(ops.softmax(scores), v.dtype), f32)
    if v_transposed:
        out = ops.reshape(ops.sum(weights * ops.cast(v[:, :, :dh, :], f32), axis=-1), [r, h, 1, dh])
    else:
        out = ops.sum(ops.reshape(weights, [r, h, slots, 1]) * ops.cast(v[..., :dh], f32), axis=-2)
    return ops.cast(out, v.dtype)
