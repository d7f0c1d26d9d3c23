"""Compiling the graphs for one target and exporting each as a MEF.

Graph inputs and outputs get names here; the names, dtypes and shapes go into the manifest as
each graph's signature, and the runtime checks a loaded MEF against them.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from max.dtype import DType
from max.graph import DeviceRef, Graph

from mxwr.dims import ModelDims

from .graphs import (GraphShape, align_graph, encoder_graph, frontend_graph, prefill_graph, reorder_graph,
                     step_graph)

DTYPES = {"float32": DType.float32, "float16": DType.float16, "bfloat16": DType.bfloat16}
BUILDERS = {"frontend": frontend_graph, "encoder": encoder_graph, "prefill": prefill_graph, "step": step_graph,
            "reorder": reorder_graph, "align": align_graph}


@dataclass(frozen=True)
class Alignment:
    """What the align graph needs besides the weights: which heads, and the end-of-text id."""

    heads: tuple[tuple[int, int], ...]
    eot: int


def roles(shape: GraphShape, alignment: Alignment | None) -> list[str]:
    """The graphs a bundle holds: reorder only where several sequences share a window (beams),
    align only where word timestamps are wanted."""
    out = ["frontend", "encoder", "prefill", "step"]
    if shape.group > 1:
        out.append("reorder")
    if alignment is not None:
        out.append("align")
    return out


@dataclass
class CompiledGraph:
    role: str
    mef: bytes
    signature: dict[str, list[dict[str, Any]]]


def _io_names(role: str, dims: ModelDims) -> tuple[list[str], list[str]]:
    caches = [f"self_k.{i}" for i in range(dims.n_text_layer)] + [
        f"self_v.{i}" for i in range(dims.n_text_layer)
    ]
    if role == "frontend":
        return ["padded_audio"], ["mel"]
    if role == "encoder":
        return ["mel"], ["audio_features", "cross_k", "cross_v"]
    if role == "reorder":
        return ["source_rows", *caches], []
    if role == "align":
        return ["tokens", "cross_k", "cross_v"], ["alignment_scores", "next_token_probs"]
    first = ["tokens", "logit_positions"] if role == "prefill" else ["token", "position"]
    return [*first, "suppress", *caches, "cross_k", "cross_v"], ["logits", "next_token", "next_logprob"]


def _describe(name: str, t: Any, kind: str) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "dtype": str(t.dtype).removeprefix("DType."),
        "shape": [int(d) for d in t.shape],
        "device": "cpu" if t.device == DeviceRef.CPU() else "gpu",
    }


def signature(role: str, graph: Graph, dims: ModelDims) -> dict[str, list[dict[str, Any]]]:
    in_names, out_names = _io_names(role, dims)
    inputs = []
    for name, value in zip(in_names, graph.inputs, strict=True):
        kind = "buffer" if type(value).__name__ == "BufferValue" else "tensor"
        inputs.append(_describe(name, value.type, kind))
    outputs = [_describe(n, t, "tensor") for n, t in zip(out_names, graph.output_types, strict=True)]
    return {"inputs": inputs, "outputs": outputs}


def trace(role: str, dims: ModelDims, shape: GraphShape, shapes: Mapping[str, tuple[int, ...]],
          dtype: str, device: DeviceRef, alignment: Alignment | None = None) -> Graph:
    extra = {"heads": [list(h) for h in alignment.heads], "eot": alignment.eot} if role == "align" else {}
    return BUILDERS[role](dims, shape, shapes, DTYPES[dtype], device, **extra)


def parse_target(target: str) -> tuple[str, str] | None:
    """None for "cpu", else (api, arch) for "<api>:<arch>" (e.g. "cuda:sm_90a")."""
    if target == "cpu":
        return None
    api, _, arch = target.partition(":")
    if api not in ("cuda", "hip") or not arch:
        raise ValueError(f"unsupported target {target!r}: use cpu, cuda:<arch> (e.g. cuda:sm_90a) or hip:<arch>")
    return api, arch


def _compile_graphs(
    target: str, dims: ModelDims, shape: GraphShape, shapes: Mapping[str, tuple[int, ...]], dtype: str,
    alignment: Alignment | None,
) -> list[tuple[CompiledGraph, float]]:
    from max.driver import CPU, Accelerator
    from max.engine import InferenceSession

    if parse_target(target) is None:
        device, session = DeviceRef.CPU(), InferenceSession(devices=[CPU()])
    else:
        device, session = DeviceRef.GPU(0), InferenceSession(devices=[Accelerator(0), CPU()])
    out = []
    for role in roles(shape, alignment):
        start = time.perf_counter()
        graph = trace(role, dims, shape, shapes, dtype, device, alignment)
        compiled = session.compile(graph)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{role}.mef"
            compiled.export_mef(path)
            mef = path.read_bytes()
        out.append((CompiledGraph(role, mef, signature(role, graph, dims)), time.perf_counter() - start))
    return out


def _compile_virtual(target: str, *args: Any) -> list[tuple[CompiledGraph, float]]:
    """In a fresh process: MAX latches the device kind at the first device it creates."""
    from max import driver

    api, arch = parse_target(target)
    driver.set_virtual_device_api(api)
    driver.set_virtual_device_target_arch(arch)
    driver.set_virtual_device_count(1)
    return _compile_graphs(target, *args)


def compile_target(
    target: str, dims: ModelDims, shape: GraphShape, shapes: Mapping[str, tuple[int, ...]],
    dtype: str, log: Callable[[str], None], alignment: Alignment | None = None,
) -> list[CompiledGraph]:
    """Traces and compiles the three graphs for `target`.

    GPU targets are cross-compiled with MAX virtual devices, so no GPU is needed to build them;
    each compiles in its own spawned process.
    """
    args = (dims, shape, shapes, dtype, alignment)
    if parse_target(target) is None:
        results = _compile_graphs(target, *args)
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            results = pool.submit(_compile_virtual, target, *args).result()
    for graph, seconds in results:
        log(f"  compiled {graph.role} graph for {target} ({dtype}, {len(graph.mef) / 1e6:.1f} MB MEF) "
            f"in {seconds:.1f} s")
    return [graph for graph, _ in results]
