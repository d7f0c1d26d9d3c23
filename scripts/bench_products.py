#!/usr/bin/env python3
"""CPU products: one weight matrix of tiny's shapes times a few rows (a decoder step), five (a
beam search's step) or 1500 (the encoder), each way a bundle may multiply it, side by side in one
run: why each dtype computes as it does (README, "Which dtype").

    .venv/bin/python scripts/bench_products.py [--threads N] [--repeats 200] [--out table.md]

Columns: MAX's float32 matmul; MAX's matmul in bfloat16 (x and the weight cast, the product cast
back); our int8 VNNI kernel (`mxw_linear_int8`, x rounded to 8 bits per 64 values); MAX's
`qmatmul` on Q4_K and Q6_K blocks (x rounded per 256 values; rows of 384 padded to 512). Each
weight is bound at load as in a bundle, so what MAX does to weights alone (repacking blocks)
is done once, not timed. Cells: median microseconds per product over --repeats runs, each
engine in turn; and the largest relative error of its result against float64 x @ w.T.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import benchlib
import numpy as np

SHAPES = ((384, 384), (384, 1536), (1536, 384))  # (k, n): attention, the MLP's first and second
ROWS = (1, 5, 1500)
WAYS = ("float32", "bfloat16", "int8", "q4_k", "q6_k")


def product_graph(way: str, rows: int, k: int, n: int):
    """The graph of x [rows, k] times weight `w` [n, k] transposed, and the weights to bind."""
    from max.dtype import DType
    from max.graph import DeviceRef, Graph, TensorType, ops

    from mxwc.graphs.kernels import KERNELS
    from mxwc.graphs.layers import Params, linear

    device = DeviceRef.CPU()
    encodings = {"w.weight": way} if way in ("int8", "q4_k", "q6_k") else {}
    dtype = DType.bfloat16 if way == "bfloat16" else DType.float32
    with Graph(f"{way}_{rows}_{k}_{n}", input_types=[TensorType(DType.float32, [rows, k], device)],
               custom_extensions=[KERNELS]) as graph:
        p = Params({"w.weight": (n, k)}, dtype, device, encodings=encodings)
        x = graph.inputs[0].tensor
        if way == "bfloat16":
            y = ops.cast(ops.cast(x, dtype) @ ops.transpose(p("w.weight"), 0, 1), DType.float32)
        else:
            y = linear(p, "w", x, bias=False)
        graph.output(y)
    return graph


def stored(way: str, w: np.ndarray) -> dict:
    from max.driver import Buffer
    from max.dtype import DType

    from mxwc import kquants
    from mxwc.quantize import bfloat16_bits, int8_groups
    from mxwr.quantization import SCALE

    if way == "bfloat16":
        return {"w.weight": Buffer.from_numpy(bfloat16_bits(w)).view(DType.bfloat16)}
    if way == "int8":
        q, scale = int8_groups(w)
        return {"w.weight": q, "w.weight" + SCALE: scale}
    if way in ("q4_k", "q6_k"):
        return {"w.weight": kquants.pack(w, way)}
    return {"w.weight": w}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="cores to use (default: all)")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()
    threads = benchlib.pin_threads(args.threads)

    from max.driver import CPU
    from max.engine import InferenceSession

    session = InferenceSession(devices=[CPU()])
    rng = np.random.default_rng(0)
    lines = []
    for k, n in SHAPES:
        w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
        for rows in ROWS:
            x = rng.standard_normal((rows, k)).astype(np.float32)
            exact = x.astype(np.float64) @ w.astype(np.float64).T
            models = {way: session.load(product_graph(way, rows, k, n), weights_registry=stored(way, w)) for way in WAYS}
            repeats = max(5, args.repeats if rows < 100 else args.repeats // 20)
            times: dict[str, list[float]] = {way: [] for way in WAYS}
            errors = {}
            for way, model in models.items():
                errors[way] = float(np.abs(model.execute(x)[0].to_numpy() - exact).max() / np.abs(exact).max())
            for _ in range(repeats):
                for way, model in models.items():
                    start = time.perf_counter()
                    model.execute(x)
                    times[way].append(time.perf_counter() - start)
            cells = [f"{1e6 * statistics.median(times[way]):.0f} ({errors[way]:.0e})" for way in WAYS]
            lines.append(f"| {rows} x {k} times {k} x {n} | " + " | ".join(cells) + " |")
    header = (f"CPU: {benchlib.cpu_model()}, {threads} threads; {benchlib.today()}; "
              f"{benchlib.versions(('max',))}; median microseconds per product (largest error relative "
              f"to the largest |x @ w.T|), ways interleaved, {args.repeats} runs ({args.repeats // 20} "
              f"for 1500 rows)")
    text = "\n".join([header, "", "| product | " + " | ".join(WAYS) + " |", "|---" * (len(WAYS) + 1) + "|", *lines]) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
