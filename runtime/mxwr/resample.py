"""Band-limited polyphase resampling (Kaiser-windowed sinc), block by block.

Each output block reads only the input samples its filter taps need, so a file is resampled
without holding it, and the blocks are the whole-array result bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache
from math import gcd

import numpy as np

from .constants import SAMPLE_RATE

_HALF = 32  # taps either side of each output sample, in input samples
_TAPS = np.arange(-_HALF + 1, _HALF + 1)[None, :]
_BLOCK = 1 << 13  # output samples per block (~3 MB of temporaries)


def resampled_blocks(read: Callable[[int, int], np.ndarray], n_in: int, rate: int, target: int = SAMPLE_RATE,
                     block: int = _BLOCK) -> Iterator[np.ndarray]:
    """The resampling of n_in samples at `rate`, as consecutive float32 blocks at `target`;
    `read(a, b)` gives input samples [a, b), 0 <= a < b <= n_in. Past the input, the taps read zeros."""
    up, down, h = _polyphase(rate, target)
    n_out = (n_in * up + down - 1) // down
    for start in range(0, n_out, block):
        stop = min(start + block, n_out)
        # The input samples [lo, hi) that outputs [start, stop) read.
        lo, hi = (start * down) // up - _HALF + 1, ((stop - 1) * down) // up + _HALF + 1
        seg = np.zeros(hi - lo, np.float32)
        a, b = max(lo, 0), min(hi, n_in)
        if b > a:
            seg[a - lo : b - lo] = read(a, b)
        n = np.arange(start, stop)
        base, phase = (n * down) // up, (n * down) % up
        windows = seg[(base - lo)[:, None] + _TAPS]
        yield np.einsum("ij,ij->i", windows, h[phase])


@lru_cache(maxsize=16)
def _polyphase(rate: int, target: int) -> tuple[int, int, np.ndarray]:
    """(up, down, filters [up, 2 * _HALF] float32) for resampling `rate` -> `target`."""
    g = gcd(rate, target)
    up, down = target // g, rate // g
    cutoff = min(1.0, target / rate) * 0.95
    # For output n the input position is n*down/up; phase p = (n*down) % up.
    phases = np.arange(up)[:, None] / up
    t = _TAPS - phases  # distance (in input samples) of each tap from the output position
    h = cutoff * np.sinc(cutoff * t) * np.kaiser(2 * _HALF, 8.6)[None, :]
    h = (h / h.sum(axis=1, keepdims=True)).astype(np.float32)
    h.setflags(write=False)
    return up, down, h
