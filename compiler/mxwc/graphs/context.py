"""What every graph builder is given, and how it opens and closes its graph by the role's spec."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from max.dtype import DType
from max.graph import BufferType, DeviceRef, Graph, TensorType, TensorValue

from mxwr.dims import ModelDims, Shape
from mxwr.graphspec import SPECS, Geometry, Layout, Port
from mxwr.quantization import weight_encodings

from .kernels import KERNELS
from .layers import Params


@dataclass(frozen=True)
class Alignment:
    """What the align graph needs besides the weights: which heads, and the end-of-text id."""

    heads: tuple[tuple[int, int], ...]
    eot: int


@dataclass(frozen=True)
class GraphContext:
    """One target's graphs: the model, the build's shape, the weights to bind, how to compute."""

    dims: ModelDims
    shape: Shape
    weight_shapes: Mapping[str, tuple[int, ...]]
    dtype: DType  # the compute dtype of weights, activations and caches
    device: DeviceRef
    layout: Layout
    alignment: Alignment | None = None  # None: no align graph
    quantization: str = "none"  # how the weights are stored (`mxwr.quantization`)

    @property
    def geometry(self) -> Geometry:
        heads = 0 if self.alignment is None else len(self.alignment.heads)
        return Geometry(self.dims, self.shape, self.dtype.name, self.layout, heads)

    def params(self, dtype: DType | None = None) -> Params:
        """The graph's weights, in the compute dtype unless told otherwise."""
        encodings = weight_encodings(self.dims, self.quantization)
        return Params(self.weight_shapes, dtype or self.dtype, self.device, self.layout.tile, encodings,
                      self.layout.cpu_kernels and (dtype or self.dtype) == DType.float32)

    @contextmanager
    def open(self, role: str) -> Iterator[tuple[Graph, dict[str, Any]]]:
        """The role's graph, its inputs typed by its spec and handed out by name; our kernels
        are built in where the spec calls them and the layout has them."""
        spec = SPECS[role]
        ports = spec.inputs(self.geometry)
        ours = self.layout.kernels or self.quantization != "none"  # a quantized target's int8 products
        extensions = [KERNELS] if spec.kernels and ours else []
        with Graph(role, input_types=[self._type(p) for p in ports], custom_extensions=extensions) as graph:
            values = (v.buffer if p.kind == "buffer" else v.tensor for p, v in zip(ports, graph.inputs, strict=True))
            yield graph, dict(zip((p.name for p in ports), values))

    def output(self, graph: Graph, **values: TensorValue) -> None:
        """The graph's outputs by name, in the spec's order: every one given, and no other."""
        names = [p.name for p in SPECS[graph.name].outputs(self.geometry)]
        if set(values) != set(names):
            raise TypeError(f"the {graph.name} graph gives {names}, not {sorted(values)}")
        graph.output(*(values[n] for n in names))

    def _type(self, port: Port) -> TensorType | BufferType:
        kind = BufferType if port.kind == "buffer" else TensorType
        return kind(DType[port.dtype], list(port.shape), self.device)
