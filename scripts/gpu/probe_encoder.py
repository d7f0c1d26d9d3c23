#!/usr/bin/env python3
"""Where the encoder's time goes on the GPU: its pieces as separate small graphs, compiled on
the device (tiny.en shapes, fp16), each timed warm. A diagnostic for scripts/gpu/README.md.

    PYTHONPATH=/root/site:compiler:runtime python3 scripts/gpu/probe_encoder.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "compiler"), str(ROOT / "runtime"), str(ROOT / "scripts")]

from benchlib import median_time  # noqa: E402


def main() -> None:
    from max.driver import CPU, Accelerator
    from max.dtype import DType
    from max.engine import InferenceSession
    from max.graph import DeviceRef, Graph, TensorType, ops

    from mxwc.graphs.attention import attention, split_heads
    from mxwc.graphs.layers import Params, conv1d, layer_norm, linear, mlp
    from mxwr.graphspec import Layout

    gpu = Accelerator(0)
    session = InferenceSession(devices=[gpu, CPU()])
    device = DeviceRef.GPU(0)
    T, C, H = 1500, 384, 6
    dt = DType.float16
    tile = Layout.of(True, "float16").tile  # products as a float16 GPU target runs them
    shapes = {"c.weight": (C, 80, 3), "c.bias": (C,), "l.weight": (C, C), "l.bias": (C,), "n.weight": (C,),
              "n.bias": (C,), "b.mlp.0.weight": (4 * C, C), "b.mlp.0.bias": (4 * C,), "b.mlp.2.weight": (C, 4 * C),
              "b.mlp.2.bias": (C,)}
    rng = np.random.default_rng(0)
    weights = {k: (rng.standard_normal(v) * 0.05).astype(np.float16) for k, v in shapes.items()}

    def probe(name, in_shape, body):
        with Graph(name, input_types=[TensorType(dt, in_shape, device)]) as g:
            p = Params(shapes, dt, device, tile)
            g.output(body(p, g.inputs[0].tensor))
        start = time.perf_counter()
        model = session.load(g, weights_registry=weights)
        compile_s = time.perf_counter() - start
        from max.driver import Buffer

        x = Buffer.from_numpy(rng.standard_normal(in_shape).astype(np.float16)).to(gpu)

        def run():
            model.execute(x)
            gpu.synchronize()

        print(f"{name:<28} {median_time(run, repeats=50, warmup=5) * 1e3:8.3f} ms   (compiled in {compile_s:.0f} s)",
              flush=True)

    probe("conv1d k3 80->384 T=3000", [1, 3000, 80], lambda p, x: conv1d(p, "c", x, stride=1))
    probe("self-attention T=1500", [1, T, C], lambda p, x: attention(
        *(split_heads(linear(p, "l", x), H) for _ in range(3))))
    probe("layer_norm T=1500", [1, T, C], lambda p, x: layer_norm(p, "n", x))
    probe("mlp T=1500", [1, T, C], lambda p, x: mlp(p, "b", x))
    probe("gelu T=1500x1536", [1, T, 4 * C], lambda p, x: ops.gelu(x))


if __name__ == "__main__":
    main()
