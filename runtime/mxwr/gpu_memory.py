"""Sizing the memory pool MAX records device graphs into.

MAX takes that pool when it first opens a GPU, as a percentage of the GPU's memory
(`MODULAR_DEVICE_CONTEXT_MEMORY_MANAGER_SIZE_PERCENT`), and by default takes nearly all of it,
however small the model (BENCHMARKS.md has the figure). An edge runtime shares its GPU, so mxwr asks for what
the bundle needs — its weights twice over plus the encoder's attention scores for its batch, and
at least 4 GiB — unless the variable is already set. The GPU's size comes from the CUDA driver
(no context is created), before MAX opens the device. The pool serves the whole process, sized
by the first bundle loaded: a process that loads several reserves for them first (`reserve_bytes`).
"""

from __future__ import annotations

import ctypes
import math
import os

from .graphspec import MATMUL_TILE, round_up
from .manifest import Manifest

VARIABLE = "MODULAR_DEVICE_CONTEXT_MEMORY_MANAGER_SIZE_PERCENT"
FLOOR = 4 << 30


def bundle_needs(manifest: Manifest) -> int:
    """Bytes the largest GPU target of a bundle needs in the pool."""
    dims, batch = manifest.dims, manifest.shape.batch
    ctx = dims.n_audio_ctx
    # fp32 scores, their softmax and the 16-bit probabilities of one encoder layer, with margin.
    scores = batch * dims.n_audio_head * ctx * round_up(ctx, MATMUL_TILE) * 10 * 2
    needs = [2 * manifest.section(t.weights_section).length + scores + (512 << 20)
             for t in manifest.targets if t.is_gpu]
    return max([FLOOR, *needs])


def cuda_total_memory(index: int = 0) -> int | None:
    """The GPU's memory in bytes from libcuda, or None without an NVIDIA driver."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    device, total = ctypes.c_int(), ctypes.c_size_t()
    if cuda.cuInit(0) or cuda.cuDeviceGet(ctypes.byref(device), index):
        return None
    if cuda.cuDeviceTotalMem_v2(ctypes.byref(total), device):
        return None
    return total.value


def reserve_for(manifest: Manifest) -> None:
    """Sets MAX's pool size for this bundle, unless set already or there is no NVIDIA GPU."""
    if any(t.is_gpu for t in manifest.targets):
        reserve_bytes(bundle_needs(manifest))


def reserve_bytes(needed: int) -> None:
    """Sets MAX's pool to `needed` bytes (as a percentage of the GPU), unless set already."""
    total = cuda_total_memory() if VARIABLE not in os.environ else None
    if total:
        os.environ[VARIABLE] = str(min(max(math.ceil(100 * needed / total), 1), 90))
