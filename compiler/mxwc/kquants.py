"""GGUF's K-quant blocks (llama.cpp's `block_q4_K` and `block_q6_K`), the byte layout MAX's
`qmatmul` and `dequantize` read: packing a float32 matrix row by row, and unpacking it again.

A row is zero-padded to whole blocks of KQUANT_VALUES weights (`mxwr.quantization`).

- Q4_K, 144 bytes a block: float16 d and dmin, then 12 bytes holding eight 6-bit scales and
  eight 6-bit mins (one each per 32 weights), then 128 bytes of 4-bit q (two 32-weight
  sub-blocks share 32 bytes: the first in the low nibbles). w = d * scale * q - dmin * min.
- Q6_K, 210 bytes a block: 128 bytes of q's low 4 bits, 64 bytes of their high 2 bits, sixteen
  int8 scales (one per 16 weights), float16 d. w = d * scale * (q - 32).

Each sub-block's scale (and min) is chosen among a few candidates by least squares, as llama.cpp's
quantizers do, then rounded to the block's 6- or 8-bit grid, and q is rounded against the rounded
scale.
"""

from __future__ import annotations

import numpy as np

from mxwr.quantization import KQUANT_BLOCK_BYTES, KQUANT_VALUES


def padded(w: np.ndarray) -> np.ndarray:
    """w [rows, cols] float32, zero-padded to whole K-quant blocks."""
    rows, cols = w.shape
    return np.pad(np.asarray(w, dtype=np.float32), ((0, 0), (0, -cols % KQUANT_VALUES)))


def pack(w: np.ndarray, encoding: str) -> np.ndarray:
    """w [rows, cols] -> uint8 [rows, kquant_width(cols, encoding)]."""
    return {"q4_k": _pack_q4_k, "q6_k": _pack_q6_k}[encoding](padded(w))


def unpack(blocks: np.ndarray, encoding: str, cols: int) -> np.ndarray:
    """The float32 matrix [rows, cols] that packed blocks stand for (the padding dropped)."""
    rows, width = blocks.shape
    n = width // KQUANT_BLOCK_BYTES[encoding]
    b = blocks.reshape(rows, n, KQUANT_BLOCK_BYTES[encoding])
    w = {"q4_k": _unpack_q4_k, "q6_k": _unpack_q6_k}[encoding](b)
    return w.reshape(rows, n * KQUANT_VALUES)[:, :cols]


def _half(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).astype(np.float16)


def _ratio(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """x / scale, 0 where the scale is 0."""
    return np.where(scale != 0, x / np.where(scale != 0, scale, 1), 0.0)


def _on_grid(values: np.ndarray, top: int, lowest: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-block values [..., n] -> (block factor [...] as float16 would store it, integer
    multiples [..., n] in [lowest, top]) with factor * multiple ≈ value."""
    extreme = np.take_along_axis(values, np.abs(values).argmax(-1)[..., None], -1)[..., 0]
    factor = _half(extreme / (top if lowest >= 0 else lowest)).astype(np.float32)
    return factor, np.clip(np.rint(_ratio(values, factor[..., None])), lowest, top)


def _pack_q4_k(w: np.ndarray) -> np.ndarray:
    rows, cols = w.shape
    n = cols // KQUANT_VALUES
    x = w.reshape(rows, n, 8, 32)
    low, high = np.minimum(x.min(-1), 0.0), x.max(-1)
    best = np.full(low.shape, np.inf, np.float32)
    scale, minimum = np.zeros_like(low), np.zeros_like(low)
    for step in np.linspace(-1.5, 1.5, 21):
        inverse = _ratio(15 + step, high - low)
        q = np.clip(np.rint((x - low[..., None]) * inverse[..., None]), 0, 15)
        # the least-squares scale and offset for these q, the offset kept <= 0
        sq, sqq, sx, sqx = q.sum(-1), (q * q).sum(-1), x.sum(-1), (q * x).sum(-1)
        det = 32 * sqq - sq * sq
        s = np.maximum(np.where(det > 0, _ratio(32 * sqx - sq * sx, det), 0.0), 0.0)
        b = np.minimum((sx - s * sq) / 32, 0.0)
        err = ((s[..., None] * q + b[..., None] - x) ** 2).sum(-1)
        better = err < best
        best, scale, minimum = np.where(better, err, best), np.where(better, s, scale), np.where(better, -b, minimum)
    d, sc = _on_grid(scale, 63, 0)
    dmin, mn = _on_grid(minimum, 63, 0)
    step, offset = d[..., None] * sc, dmin[..., None] * mn
    q = np.clip(np.rint(_ratio(x + offset[..., None], step[..., None])), 0, 15).astype(np.uint8)
    sc, mn = sc.astype(np.uint8), mn.astype(np.uint8)
    out = np.zeros((rows, n, 144), np.uint8)
    out[..., 0:2] = _half(d).view(np.uint8).reshape(rows, n, 2)
    out[..., 2:4] = _half(dmin).view(np.uint8).reshape(rows, n, 2)
    out[..., 4:8] = sc[..., 0:4] | ((sc[..., 4:8] >> 4) << 6)
    out[..., 8:12] = mn[..., 0:4] | ((mn[..., 4:8] >> 4) << 6)
    out[..., 12:16] = (sc[..., 4:8] & 0xF) | ((mn[..., 4:8] & 0xF) << 4)
    pairs = q.reshape(rows, n, 4, 2, 32)
    out[..., 16:] = (pairs[:, :, :, 0] | (pairs[:, :, :, 1] << 4)).reshape(rows, n, 128)
    return out.reshape(rows, n * 144)


def _unpack_q4_k(b: np.ndarray) -> np.ndarray:
    rows, n, _ = b.shape
    d = b[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    dmin = b[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    s = b[..., 4:16]
    sc = np.concatenate([s[..., 0:4] & 63, (s[..., 8:12] & 0xF) | ((s[..., 0:4] >> 6) << 4)], axis=-1)
    mn = np.concatenate([s[..., 4:8] & 63, (s[..., 8:12] >> 4) | ((s[..., 4:8] >> 6) << 4)], axis=-1)
    packed = b[..., 16:].reshape(rows, n, 4, 32)
    q = np.stack([packed & 0xF, packed >> 4], axis=3).reshape(rows, n, 8, 32).astype(np.float32)
    return d[..., None, None] * sc[..., None] * q - dmin[..., None, None] * mn[..., None]


def _pack_q6_k(w: np.ndarray) -> np.ndarray:
    rows, cols = w.shape
    n = cols // KQUANT_VALUES
    x = w.reshape(rows, n, 16, 16)
    extreme = np.take_along_axis(x, np.abs(x).argmax(-1)[..., None], -1)[..., 0]
    best = np.full(extreme.shape, np.inf, np.float32)
    scale = np.zeros_like(extreme)
    for step in np.linspace(-0.9, 0.9, 19):
        # the extreme weight maps near -32, the end of the grid with room to spare
        q = np.clip(np.rint(x * _ratio(-(32 + step), extreme)[..., None]), -32, 31)
        s = _ratio((q * x).sum(-1), (q * q).sum(-1))
        err = ((s[..., None] * q - x) ** 2).sum(-1)
        better = err < best
        best, scale = np.where(better, err, best), np.where(better, s, scale)
    d, sc = _on_grid(scale, 127, -128)
    q = (np.clip(np.rint(_ratio(x, (d[..., None] * sc)[..., None])), -32, 31) + 32).astype(np.uint8)
    q = q.reshape(rows, n, 2, 4, 32)  # two halves of 128, four quarters of 32 each
    out = np.zeros((rows, n, 210), np.uint8)
    low = q & 0xF
    out[..., 0:128] = np.concatenate([low[..., 0, :] | (low[..., 2, :] << 4),
                                      low[..., 1, :] | (low[..., 3, :] << 4)], axis=-1).reshape(rows, n, 128)
    high = q >> 4
    out[..., 128:192] = (high[..., 0, :] | (high[..., 1, :] << 2) | (high[..., 2, :] << 4)
                         | (high[..., 3, :] << 6)).reshape(rows, n, 64)
    out[..., 192:208] = sc.astype(np.int8).view(np.uint8)
    out[..., 208:210] = _half(d).view(np.uint8).reshape(rows, n, 2)
    return out.reshape(rows, n * 210)


def _unpack_q6_k(b: np.ndarray) -> np.ndarray:
    rows, n, _ = b.shape
    low = b[..., 0:128].reshape(rows, n, 2, 64)
    high = b[..., 128:192].reshape(rows, n, 2, 32)
    sc = b[..., 192:208].copy().view(np.int8).astype(np.float32)
    d = b[..., 208:210].copy().view(np.float16)[..., 0].astype(np.float32)
    quarters = [low[..., 0:32] & 0xF, low[..., 32:64] & 0xF, low[..., 0:32] >> 4, low[..., 32:64] >> 4]
    q = np.stack([quarters[i] | (((high >> (2 * i)) & 3) << 4) for i in range(4)], axis=3)
    q = (q.astype(np.float32) - 32).reshape(rows, n, 16, 16)
    return d[..., None, None] * sc[..., None] * q
