"""Device-graph capture and replay: one launch per graph run instead of one per kernel.

A decoder step of whisper tiny is ~100 small kernels; launched one by one from the host, the
launches, not the GPU, set its time. MAX can record a compiled graph's launches once into a
device (CUDA) graph and replay the recording with a single launch. A recording is bound to the
buffers it was made with, and cannot re-read host memory (format 2 graphs read none), so
`ReplayedGraph` keeps a recording per key (mxwr uses one per graph) and feeds each run through
the recorded buffers:

- `Fixed` inputs are buffers the caller keeps for the graph's life (the KV caches the graph
  writes in place, the replayed encoder's cross K/V): recorded as they are; a run must pass the
  same ones.
- `Const` inputs never change once made (suppress masks): copied in only when another is given.
- anything else (tokens, mel) is copied into the recording's own buffer on every run.

Outputs are the recording's own buffers, overwritten by the next run of the same key: callers
read them before running that key again.

CPU targets have no device graphs; `EmulatedCapture` gives the same contract by executing, so
tests on CPU drive every copy and identity rule of the GPU path.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

import numpy as np

from .errors import MxwError


@dataclass(frozen=True)
class Fixed:
    buffer: Any


@dataclass(frozen=True)
class Const:
    buffer: Any


class EmulatedCapture:
    """`Model.capture`/`replay` semantics on any device, by executing the graph."""

    def __init__(self, model: Any):
        self.model = model
        self.outputs: dict[int, list[Any]] = {}

    def capture(self, key: int, *inputs: Any) -> list[Any]:
        # A real capture records launches without running them: its outputs hold nothing yet.
        self.outputs[key] = list(self.model.execute(*inputs))
        for out in self.outputs[key]:
            out.to_numpy().fill(0)
        return self.outputs[key]

    def replay(self, key: int, *inputs: Any) -> None:
        for kept, new in zip(self.outputs[key], self.model.execute(*inputs)):
            copy(kept, new, emulated=True)


def copy(dst: Any, src: Any, emulated: bool = False) -> None:
    """dst <- src, ordered after whatever fills src. A GPU's single stream orders the copy; MAX's
    CPU runs are asynchronous and its copies don't wait for them, so emulation copies host
    memory through numpy views (which wait)."""
    if emulated:
        np.copyto(dst.to_numpy(), src.to_numpy())
    else:
        dst.inplace_copy_from(src)


# Device-graph keys, unique in the process: nothing says MAX scopes them to one model.
_GRAPH_KEYS = itertools.count(1)


@dataclass
class _Recording:
    graph_key: int
    inputs: list[Any]  # the buffers the recording reads
    sources: list[Any]  # per input: the Const last copied in (None otherwise)
    outputs: list[Any]
    staged: list[Any] = field(default_factory=list)  # this run's copy sources, kept alive until the next


class ReplayedGraph:
    """One compiled graph, run through a recording per key (see the module's docstring)."""

    def __init__(self, name: str, engine_model: Any, device: Any, emulate: bool = False):
        self.name, self.device = name, device
        self.emulated = emulate
        self.backend = EmulatedCapture(engine_model) if emulate else engine_model
        self.recordings: dict[Hashable, _Recording] = {}

    def __call__(self, key: Hashable, inputs: Sequence[Any]) -> list[Any]:
        rec = self.recordings.get(key)
        if rec is None:
            return self._record(key, inputs)
        rec.staged = []
        for i, given in enumerate(inputs):
            held = rec.inputs[i]
            if isinstance(given, Fixed):
                if given.buffer is not held:
                    raise MxwError(f"internal: the {self.name} graph was recorded with another buffer at input {i}")
            elif isinstance(given, Const):
                if given.buffer is not rec.sources[i]:
                    copy(held, given.buffer, self.emulated)
                    rec.sources[i] = given.buffer
            else:
                rec.staged.append(self._buffer(given))
                copy(held, rec.staged[-1], self.emulated)
        self.backend.replay(rec.graph_key, *rec.inputs)
        return rec.outputs

    def _record(self, key: Hashable, inputs: Sequence[Any]) -> list[Any]:
        held, sources = [], []
        for given in inputs:
            if isinstance(given, Fixed):
                held.append(given.buffer)
                sources.append(None)
            else:
                source = given.buffer if isinstance(given, Const) else self._buffer(given)
                # The recording's own copy, in device memory: the caller's buffer may be reused
                # or freed, or be pinned host memory (which a recording must not read).
                own = _copy_of(source) if self.emulated else _device_copy(source, self.device)
                held.append(own)
                sources.append(given.buffer if isinstance(given, Const) else None)
        graph_key = next(_GRAPH_KEYS)
        outputs = list(self.backend.capture(graph_key, *held))
        self.backend.replay(graph_key, *held)  # capturing records the launches; this runs them
        self.recordings[key] = _Recording(graph_key, held, sources, outputs)
        return outputs

    def _buffer(self, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            from max.driver import Buffer

            return Buffer.from_numpy(np.ascontiguousarray(value)).to(self.device)
        return value


def _copy_of(buffer: Any) -> Any:
    from max.driver import Buffer

    return Buffer.from_numpy(buffer.to_numpy().copy()).to(buffer.device)


def _device_copy(buffer: Any, device: Any) -> Any:
    from max.driver import Buffer

    own = Buffer(shape=buffer.shape, dtype=buffer.dtype, device=device)
    own.inplace_copy_from(buffer)
    return own
