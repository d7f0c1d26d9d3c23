"""Compiling the graphs for one target and exporting each as a MEF.

Each graph is traced from its role's spec (`mxwr.graphspec`); its signature (names, kinds,
dtypes, shapes, devices) goes into the manifest, and the runtime checks a loaded MEF against it.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
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


_SESSION: list[Any] = []  # this process's InferenceSession for its target (a worker compiles many roles)


def _start_worker(target: str) -> None:
    """A fresh (spawned) process for `target`: a GPU target's virtual device is set before MAX
    creates any device, since MAX latches the device kind at the first one."""
    gpu = parse_target(target)
    if gpu is not None:
        from max import driver

        api, arch = gpu
        driver.set_virtual_device_api(api)
        driver.set_virtual_device_target_arch(arch)
        driver.set_virtual_device_count(1)


def _compile_role(target: str, role: str, ctx: GraphContext) -> tuple[CompiledGraph, float]:
    from max.driver import CPU, Accelerator
    from max.engine import InferenceSession

    if not _SESSION:
        devices = [CPU()] if parse_target(target) is None else [Accelerator(0), CPU()]
        _SESSION.append(InferenceSession(devices=devices))
    start = time.perf_counter()
    graph = trace(role, ctx)
    compiled = _SESSION[0].compile(graph)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{role}.mef"
        compiled.export_mef(path)
        mef = path.read_bytes()
    return CompiledGraph(role, mef, signature(role, graph, ctx.geometry)), time.perf_counter() - start


def compile_target(
    target: str, dims: ModelDims, shape: Shape, shapes: Mapping[str, tuple[int, ...]],
    dtype: str, layout: Layout, log: Callable[[str], None], alignment: Alignment | None = None,
    quantization: str = "none",
) -> list[CompiledGraph]:
    """Traces and compiles the bundle's graphs for `target`, in `layout`, on weights stored as
    `quantization` says (`mxwr.quantization`).

    Each graph compiles in a spawned worker process, as many at once as there are cores: MAX
    compiles one graph mostly on one core. GPU targets are cross-compiled with MAX virtual
    devices, so no GPU is needed to build them.
    """
    device = DeviceRef.CPU() if parse_target(target) is None else DeviceRef.GPU(0)
    ctx = GraphContext(dims, shape, shapes, DType[dtype], device, layout, alignment, quantization)
    graph_roles = roles(shape, alignment is not None)
    workers = max(1, min(len(graph_roles), len(os.sched_getaffinity(0))))
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(target,)
    ) as pool:
        # The slowest graphs first, so the last to finish is a short one.
        order = sorted(graph_roles, key=lambda r: r not in ("encoder", "prefill", "step"))
        futures = {role: pool.submit(_compile_role, target, role, ctx) for role in order}
        results = [futures[role].result() for role in graph_roles]
    for graph, seconds in results:
        weights = dtype if quantization == "none" else f"{dtype}, {quantization} weights"
        log(f"  compiled {graph.role} graph for {target} ({weights}, {len(graph.mef) / 1e6:.1f} MB MEF) "
            f"in {seconds:.1f} s")
    return [graph for graph, _ in results]
