"""Tile padding of attention operands, as a target's `Layout` asks for it.

MAX's batched matmul on NVIDIA runs its tiled kernel only when N is a multiple of the tile and
K is at least the tile; whisper's heads are 64 wide, so unpadded attention falls to a naive
kernel. Zero columns add nothing to q k^T, and padded key slots are masked out.
"""

from __future__ import annotations

import numpy as np
from max.dtype import DType
from max.graph import DeviceRef, TensorValue, ops


def pad_to(x: TensorValue, axis: int, size: int) -> TensorValue:
    """x with zeros appended along `axis` up to `size`."""
    n = int(x.shape[axis])
    if n == size:
        return x
    shape = [int(d) for d in x.shape]
    shape[axis] = size - n
    zeros = ops.broadcast_to(ops.constant(0.0, x.dtype, x.device), shape)
    return ops.concat([x, zeros], axis=axis)


def key_mask(keys: int, slots: int, device: DeviceRef) -> TensorValue:
    """[slots] f32: 0 for the first `keys` key slots, -inf for the padding after them."""
    mask = np.zeros(slots, np.float32)
    mask[keys:] = -np.inf
    return ops.constant(mask, DType.float32, device)


def cross_layout(x: TensorValue, slots_width: tuple[int, int], transposed: bool = False) -> TensorValue:
    """One layer's cross K or V [B, H, n_audio_ctx, dh] as stored: padded to `slots_width`
    (`Geometry.cross_slots_width`), and V `transposed` to [B, H, width, slots] where the layout
    says so, so that the step's P.V sums along rows."""
    slots, width = slots_width
    x = pad_to(pad_to(x, -1, width), -2, slots)
    return ops.transpose(x, -1, -2) if transposed else x
