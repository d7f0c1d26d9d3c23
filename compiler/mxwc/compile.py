"""Compiling the graphs for one target and exporting each as a MEF.

Each graph is traced from its role's spec (`mxwr.graphspec`); its signature (names, kinds,
dtypes, shapes, devices) goes into the manifest, and the runtime checks a loaded MEF against it.
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
from max.graph import BufferValue, DeviceRef, Graph

from mxwr.dims import ModelDims, Shape
from mxwr.graphspec import SPECS, Geometry, Layout, Port, roles

from .graphs import BUILDERS, Alignment, GraphContext


@dataclass
class CompiledGraph:
    role: str
    mef: bytes
    signature: dict[str, list[dict[str, Any]]]


def signature(role: str, graph: Graph, geometry: Geometry) -> dict[str, list[dict[str, Any]]]:
    """Names from the role's spec; kind, dtype, shape and device as traced, which must be the
    spec's: the check that the builder honoured it."""
    in_ports, out_ports = SPECS[role].signature(geometry)
    inputs = [(value.type, "buffer" if isinstance(value, BufferValue) else "tensor") for value in graph.inputs]
    outputs = [(t, "tensor") for t in graph.output_types]
    return {"inputs": _described(role, in_ports, inputs), "outputs": _described(role, out_ports, outputs)}


def _described(role: str, ports: list[Port], traced: list[tuple[Any, str]]) -> list[dict[str, Any]]:
    if len(traced) != len(ports):
        names = [p.name for p in ports]
        raise ValueError(f"the traced {role} graph has {len(traced)} values where its spec names {names}")
    out = []
    for port, (t, kind) in zip(ports, traced):
        got = {"kind": kind, "dtype": str(t.dtype).removeprefix("DType."), "shape": [int(d) for d in t.shape]}
        if got != {"kind": port.kind, "dtype": port.dtype, "shape": list(port.shape)}:
            raise ValueError(f"the traced {role} graph's {port.name} is {got}, its spec says {port}")
        out.append({"name": port.name, **got, "device": "cpu" if t.device == DeviceRef.CPU() else "gpu"})
    return out


def trace(role: str, ctx: GraphContext) -> Graph:
    return BUILDERS[role](ctx)


def parse_target(target: str) -> tuple[str, str] | None:
    """None for "cpu", else (api, arch) for "<api>:<arch>" (e.g. "cuda:sm_90a")."""
    if target == "cpu":
        return None
    api, _, arch = target.partition(":")
    if api not in ("cuda", "hip") or not arch:
        raise ValueError(f"unsupported target {target!r}: use cpu, cuda:<arch> (e.g. cuda:sm_90a) or hip:<arch>")
    return api, arch


def _compile_graphs(
    target: str, dims: ModelDims, shape: Shape, shapes: Mapping[str, tuple[int, ...]], dtype: str,
    layout: Layout, alignment: Alignment | None, quantization: str = "none",
) -> list[tuple[CompiledGraph, float]]:
    from max.driver import CPU, Accelerator
    from max.engine import InferenceSession

    if parse_target(target) is None:
        device, session = DeviceRef.CPU(), InferenceSession(devices=[CPU()])
    else:
        device, session = DeviceRef.GPU(0), InferenceSession(devices=[Accelerator(0), CPU()])
    ctx = GraphContext(dims, shape, shapes, DType[dtype], device, layout, alignment, quantization)
    out = []
    for role in roles(shape, alignment is not None):
        start = time.perf_counter()
        graph = trace(role, ctx)
        compiled = session.compile(graph)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{role}.mef"
            compiled.export_mef(path)
            mef = path.read_bytes()
        out.append((CompiledGraph(role, mef, signature(role, graph, ctx.geometry)), time.perf_counter() - start))
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
    target: str, dims: ModelDims, shape: Shape, shapes: Mapping[str, tuple[int, ...]],
    dtype: str, layout: Layout, log: Callable[[str], None], alignment: Alignment | None = None,
    quantization: str = "none",
) -> list[CompiledGraph]:
    """Traces and compiles the bundle's graphs for `target`, in `layout`, on weights stored as
    `quantization` says (`mxwr.quantization`).

    GPU targets are cross-compiled with MAX virtual devices, so no GPU is needed to build them;
    each compiles in its own spawned process.
    """
    args = (dims, shape, shapes, dtype, layout, alignment, quantization)
    if parse_target(target) is None:
        results = _compile_graphs(target, *args)
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            results = pool.submit(_compile_virtual, target, *args).result()
    for graph, seconds in results:
        weights = dtype if quantization == "none" else f"{dtype}, {quantization} weights"
        log(f"  compiled {graph.role} graph for {target} ({weights}, {len(graph.mef) / 1e6:.1f} MB MEF) "
            f"in {seconds:.1f} s")
    return [graph for graph, _ in results]
