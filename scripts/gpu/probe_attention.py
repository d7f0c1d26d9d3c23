#!/usr/bin/env python3
"""The step's single-query attention on the GPU: our kernel (graphs.single_query_attention)
against the same arithmetic written with MAX graph ops, at tiny.en's shapes (fp16): time per
call and how far apart the results are. Compile here, run on the device:

    .venv/bin/python scripts/gpu/probe_attention.py compile .device/probe          # build host
    PYTHONPATH=/root/site python3 scripts/gpu/probe_attention.py run .device/probe # device
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "compiler"), str(ROOT / "runtime")]

RUNS = 50
H, DH, SELF_SLOTS, CROSS_SLOTS, WIDTH, N_AUDIO = 6, 64, 448, 1536, 128, 1500
CASES = {  # name: (k shape, v shape, v transposed, keys seen)
    "self@10": ([1, H, SELF_SLOTS, DH], [1, H, SELF_SLOTS, DH], False, 11),
    "self@400": ([1, H, SELF_SLOTS, DH], [1, H, SELF_SLOTS, DH], False, 401),
    "cross": ([1, H, CROSS_SLOTS, WIDTH], [1, H, WIDTH, CROSS_SLOTS], True, N_AUDIO),
}


def ops_attention(q, k, v, mask, v_transposed):
    """The graph-op version the kernel replaced (float32 products and sums, P rounded)."""
    from max.dtype import DType
    from max.graph import ops

    r, h, _, dh = (int(d) for d in q.shape)
    f32 = DType.float32
    k = k[..., :dh]
    slots = int(k.shape[-2])
    scores = ops.reshape(ops.sum(ops.cast(q, f32) * ops.cast(k, f32), axis=-1), [r, h, 1, slots]) + mask
    weights = ops.cast(ops.cast(ops.softmax(scores), v.dtype), f32)
    if v_transposed:
        out = ops.reshape(ops.sum(weights * ops.cast(v[:, :, :dh, :], f32), axis=-1), [r, h, 1, dh])
    else:
        out = ops.sum(ops.reshape(weights, [r, h, slots, 1]) * ops.cast(v[..., :dh], f32), axis=-2)
    return ops.cast(out, v.dtype)


def compile_all(folder: Path) -> None:
    from max import driver

    driver.set_virtual_device_api("cuda")
    driver.set_virtual_device_target_arch("sm_90a")
    driver.set_virtual_device_count(1)
    from max.driver import CPU, Accelerator
    from max.dtype import DType
    from max.engine import InferenceSession
    from max.graph import DeviceRef, Graph, TensorType

    from mxwc.graphs import KERNELS, single_query_attention

    device = DeviceRef.GPU(0)
    session = InferenceSession(devices=[Accelerator(0), CPU()])
    for name, (k_shape, v_shape, transposed, _) in CASES.items():
        types = [TensorType(DType.float16, s, device) for s in ([1, H, 1, DH], k_shape, v_shape)]
        types.append(TensorType(DType.float32, [k_shape[2]], device))
        with Graph(name.split("@")[0], input_types=types, custom_extensions=[KERNELS]) as g:
            q, k, v, mask = (x.tensor for x in g.inputs)
            g.output(single_query_attention(q, k, v, mask, transposed), ops_attention(q, k, v, mask, transposed))
        session.compile(g).export_mef(folder / f"{name.split('@')[0]}.mef")
        print("compiled", name, flush=True)


def run_all(folder: Path) -> None:
    from max import engine
    from max.driver import CPU, Accelerator, Buffer

    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.zeros(1, device="cuda")  # CUPTI sees MAX's kernels through torch.profiler
    gpu = Accelerator(0)
    session = engine.InferenceSession(devices=[gpu, CPU()])
    rng = np.random.default_rng(0)
    print("| case | kernel (GPU µs) | graph ops (GPU µs) | max |diff| | equal outputs |")
    print("|---|---|---|---|---|")
    for name, (k_shape, v_shape, transposed, seen) in CASES.items():
        model = session.init(engine.read(io.BytesIO((folder / f"{name.split('@')[0]}.mef").read_bytes())))
        q = rng.standard_normal([1, H, 1, DH]).astype(np.float16)
        k = (rng.standard_normal(k_shape) * 0.5).astype(np.float16)
        v = rng.standard_normal(v_shape).astype(np.float16)
        mask = np.where(np.arange(k_shape[2]) < seen, 0.0, -np.inf).astype(np.float32)
        args = [Buffer.from_numpy(a).to(gpu) for a in (q, k, v, mask)]
        ours, ref = (o.to_numpy().astype(np.float32) for o in model.execute(*args))
        for _ in range(20):
            model.execute(*args)
        gpu.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(RUNS):
                model.execute(*args)
            gpu.synchronize()
        kernel = graph_ops = 0.0  # µs per run: ours is the one kernel from our Mojo package
        for e in prof.events():
            if e.device_type.name == "CUDA" and "Memcpy" not in e.name:
                if "mojo_pkg" in e.name:
                    kernel += e.device_time / RUNS
                else:
                    graph_ops += e.device_time / RUNS
        print(f"| {name} | {kernel:.1f} | {graph_ops:.1f} | {np.abs(ours - ref).max():.3g} | "
              f"{int((ours == ref).sum())}/{ours.size} |", flush=True)


if __name__ == "__main__":
    (compile_all if sys.argv[1] == "compile" else run_all)(Path(sys.argv[2]))
