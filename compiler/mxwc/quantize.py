"""Weights as a target stores them (`mxwr.quantization`): cast to the compute dtype, and for a
quantized target its matrices rounded to int8 with one scale per group of a row, or packed in
K-quant blocks (`kquants`)."""

from __future__ import annotations

import numpy as np

from mxwr.dims import ModelDims
from mxwr.quantization import GROUP, INT8_MAX, SCALE, weight_encodings

from . import kquants


def bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """float -> bfloat16 (round to nearest even), as the uint16 bit patterns numpy can hold."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def int8_groups(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w [rows, cols] -> (q int8 [rows, cols], scale float32 [rows, cols / GROUP]) with
    w ≈ scale[:, j // GROUP] * q[:, j]: each group's largest |w| maps to 127 (symmetric, rounded
    to nearest; an all-zero group has scale 1)."""
    w = np.asarray(w, dtype=np.float32)
    rows, cols = w.shape
    if cols % GROUP:
        raise ValueError(f"int8 weights need rows of a multiple of {GROUP} values, not {cols}")
    groups = w.reshape(rows, cols // GROUP, GROUP)
    top = np.abs(groups).max(axis=2)
    scale = np.where(top > 0, top / INT8_MAX, 1.0).astype(np.float32)
    q = np.clip(np.rint(groups / scale[:, :, None]), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q.reshape(rows, cols), scale


def stored_weights(tensors: dict[str, np.ndarray], dims: ModelDims, dtype: str,
                   quantization: str) -> dict[str, np.ndarray]:
    """The weights section's arrays (bfloat16 as uint16 bits), as `stored_tensors` names them."""
    if dtype == "bfloat16":
        out = {k: bfloat16_bits(v) for k, v in tensors.items()}
    else:
        out = {k: np.ascontiguousarray(v, dtype=np.dtype(dtype)) for k, v in tensors.items()}
    for name, encoding in weight_encodings(dims, quantization).items():
        if encoding == "int8":
            out[name], out[name + SCALE] = int8_groups(tensors[name])
        else:
            out[name] = kquants.pack(tensors[name], encoding)
    return out
