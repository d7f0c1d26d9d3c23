"""One record per graph role: what each of a bundle's graphs takes and gives.

As MAX's pipelines keep a `GraphSpec`, this module is the only place that says which graphs a
bundle holds, the names, order, types and shapes of their inputs and outputs, which of them our
own kernels serve, which GPU runtimes replay and which a run may never use (loaded on demand).
The compiler traces each graph from its spec and names its inputs and outputs by it
(`mxwc.graphs`), the manifest records the traced signature and is checked against the spec when
read (`mxwr.manifest`), and the runtime passes inputs and reads outputs by name (`mxwr.model`).
A new input is one `Port` here, then used by name where it is made and where it is read.

A target's `Layout` is here too: the shapes of cross K/V depend on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from .constants import N_FFT, N_FRAMES, N_SAMPLES
from .dims import ModelDims, Shape
from .errors import BundleError

MATMUL_TILE = 128  # MAX's tiled batched matmul on NVIDIA wants N a multiple of it and K >= it


@dataclass(frozen=True)
class Layout:
    """How a target stores and computes attention, chosen once per target (`Layout.of`).

    16-bit GPU targets pad attention operands to MAX's matmul tile (its tiled kernel takes only
    such shapes; whisper's 64-wide heads otherwise fall to a naive kernel), store cross V
    transposed (the step's P.V then sums along rows), run the step's cache write and logits with
    our own kernels, and attend in the step as float32 sums (one query per head needs no
    matmul). The CPU computes the decoders' logits with our kernel (MAX's product with the
    transposed embedding reads it more slowly than memory allows) and writes the step's cache
    slot with it (the select would read and write every slot of every cache at each token). float32 on a GPU is plain:
    there the tiled kernel's other summation order moved a dev clip's tokens off the CPU's.
    """

    tile: int | None = None  # attention operands padded to a multiple of this; None: unpadded
    cross_v_transposed: bool = False  # cross V stored [..., width, slots] rather than [..., slots, width]
    cache_kernel: bool = False  # the step writes its cache slot with our kernel (mxwc/kernels/cache.mojo)
    logits_kernel: bool = False  # logits + greedy token of a few rows by our kernel (logits.mojo)
    single_query: bool = False  # the step attends by float32 sums instead of batched matmuls
    # The CPU's own kernels (attention.mojo, products.mojo, vnni.mojo, cache.mojo): the decoder
    # steps attend over the cache slots written so far and over the window's cross K/V and
    # multiply their few rows by the weights at the memory's speed; the encoder attends without
    # materializing its frames x frames scores; fork/reorder copy only the written slots.
    cpu_kernels: bool = False
    # The decoder graphs also give each row's best text tokens and the log-sum-exp of its text
    # logits (`_choice`), so the host applies openai-whisper's logit rules to the special
    # tokens alone (`mxwr.scores`).
    text_summary: bool = False

    @property
    def kernels(self) -> bool:
        """Whether any of our kernels is built into the decoder graphs."""
        return self.cache_kernel or self.logits_kernel or self.cpu_kernels

    @classmethod
    def of(cls, gpu: bool, dtype: str) -> "Layout":
        if not gpu:
            return CPU
        return TILED if dtype != "float32" else PLAIN

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "Layout":
        names = [f.name for f in fields(cls)]
        tile = d.get("tile") if isinstance(d, dict) else None
        if (
            not isinstance(d, dict) or set(d) != set(names)
            or not (tile is None or (type(tile) is int and 0 < tile <= 1024))
            or any(type(d[n]) is not bool for n in names if n != "tile")
        ):
            raise BundleError("bundle manifest has a malformed target layout")
        return cls(**d)


PLAIN = Layout()
CPU = Layout(cache_kernel=True, logits_kernel=True, cpu_kernels=True, text_summary=True)
TILED = Layout(tile=MATMUL_TILE, cross_v_transposed=True, cache_kernel=True, logits_kernel=True, single_query=True)


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@dataclass(frozen=True)
class Geometry:
    """Everything a graph's input and output shapes follow."""

    dims: ModelDims
    shape: Shape
    dtype: str  # the target's compute dtype (float32, float16, bfloat16)
    layout: Layout
    n_alignment_heads: int = 0

    @property
    def cross_slots_width(self) -> tuple[int, int]:
        """Cross K/V key slots and head width as stored: padded to the layout's tile."""
        slots, width = self.dims.n_audio_ctx, self.dims.text_head_width
        tile = self.layout.tile
        return (slots, width) if tile is None else (round_up(slots, tile), round_up(width, tile))


@dataclass(frozen=True)
class Port:
    """One input or output of a graph: `buffer` inputs are mutable, written in place."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    kind: str = "tensor"


def cache_names(n_layer: int) -> list[str]:
    """The self-attention caches: every layer's K, then every layer's V."""
    return [f"self_k.{i}" for i in range(n_layer)] + [f"self_v.{i}" for i in range(n_layer)]


def _caches(g: Geometry, rows: int, prefix: str = "", kind: str = "buffer") -> list[Port]:
    # Never padded: the step reads them with single-query sums (no tile), and the prefill
    # attends over its own keys/values before it stores them.
    d, s = g.dims, g.shape
    shape = (rows, d.n_text_head, s.max_seq, d.text_head_width)
    return [Port(prefix + name, g.dtype, shape, kind) for name in cache_names(d.n_text_layer)]


def _cross(g: Geometry) -> list[Port]:
    """Cross K (pre-scaled by d_head^-0.25) and V of every decoder layer, once per window."""
    d = g.dims
    slots, width = g.cross_slots_width
    lead = (d.n_text_layer, g.shape.batch, d.n_text_head)
    v = (width, slots) if g.layout.cross_v_transposed else (slots, width)
    return [Port("cross_k", g.dtype, (*lead, slots, width)), Port("cross_v", g.dtype, (*lead, *v))]


def summary_width(shape: Shape) -> int:
    """How many of each row's best text tokens a decoder graph gives: beam search proposes
    beam_size + 1 tokens a row, and greedy needs one."""
    return shape.group + 1


def _decoder_inputs(g: Geometry, rows: int) -> list[Port]:
    """What the decoder graphs take besides their tokens and position: the suppress mask (and
    where the text tokens end, where the graph summarizes them), the caches, cross K/V."""
    text = [Port("text_end", "int64", (1,))] if g.layout.text_summary else []
    return [Port("suppress", "float32", (g.dims.n_vocab,)), *text, *_caches(g, rows), *_cross(g)]


def _choice(g: Geometry, rows: int) -> list[Port]:
    """openai-whisper's greedy choice under the suppress mask, and its log-probability; where the
    layout summarizes the text tokens (ids below `text_end`), under the same mask: the best
    `summary_width` of them (largest first, the lower id first among equals) and the log-sum-exp
    of all of them."""
    ports = [Port("next_token", "int64", (rows,)), Port("next_logprob", "float32", (rows,))]
    if g.layout.text_summary:
        k = summary_width(g.shape)
        ports += [Port("text_top_ids", "int64", (rows, k)), Port("text_top_logits", "float32", (rows, k)),
                  Port("text_logsumexp", "float32", (rows,))]
    return ports


def _step_inputs(g: Geometry, rows: int) -> list[Port]:
    """A step's: one token a row, at one position for all."""
    return [Port("token", "int64", (rows,)), Port("position", "int64", (1,)), *_decoder_inputs(g, rows)]


def _step_outputs(g: Geometry, rows: int) -> list[Port]:
    return [Port("logits", "float32", (rows, g.dims.n_vocab)), *_choice(g, rows)]


@dataclass(frozen=True)
class GraphSpec:
    role: str
    inputs: Callable[[Geometry], list[Port]]
    outputs: Callable[[Geometry], list[Port]]
    present: Callable[[Shape, bool], bool] = lambda shape, word_timestamps: True
    replayed: bool = True  # GPU runtimes record it once as a device graph and replay it
    kernels: bool = False  # may call our own kernels, where the layout has them
    on_demand: bool = False  # not every run uses it: where graphs are not replayed, loaded when first run
    # The decoder graphs' batch: a row per window (`batch`) or per sequence (`rows`: beams, samples).
    rows: Callable[[Shape], int] = lambda shape: shape.batch

    def signature(self, g: Geometry) -> tuple[list[Port], list[Port]]:
        return self.inputs(g), self.outputs(g)


def _grouped(shape: Shape, word_timestamps: bool) -> bool:
    return shape.group > 1


SPECS: dict[str, GraphSpec] = {
    spec.role: spec
    for spec in (
        # openai-whisper's log-mel on the device, from one reflect-padded window per row.
        GraphSpec(
            "frontend",
            inputs=lambda g: [Port("padded_audio", "float32", (g.shape.batch, N_SAMPLES + N_FFT))],
            outputs=lambda g: [Port("mel", "float32", (g.shape.batch, g.dims.n_mels, N_FRAMES))],
            on_demand=True,  # the CPU computes log-mel in numpy
        ),
        GraphSpec(
            "encoder",
            inputs=lambda g: [Port("mel", "float32", (g.shape.batch, g.dims.n_mels, N_FRAMES))],
            outputs=lambda g: [
                Port("audio_features", "float32", (g.shape.batch, g.dims.n_audio_ctx, g.dims.n_audio_state)),
                *_cross(g),
            ],
            kernels=True,  # the CPU's attention
        ),
        # prompt_len tokens of each window's prompt (the last chunk padded) at positions offset..
        # (on the device) -> logits at two of them: the last real one and start-of-transcript
        # (for the no-speech probability); fills those cache positions, attending to all before
        # them. A window's sequences share their prompt: it runs once a window, and `fork` copies
        # it to every sequence.
        GraphSpec(
            "prefill",
            inputs=lambda g: [
                Port("tokens", "int64", (g.shape.batch, g.shape.prompt_len)),
                Port("offset", "int64", (1,)),
                Port("logit_positions", "int64", (2,)),
                *_decoder_inputs(g, g.shape.batch),
            ],
            outputs=lambda g: [Port("logits", "float32", (g.shape.batch, 2, g.dims.n_vocab)),
                               *_choice(g, g.shape.batch)],
            kernels=True,
        ),
        # One token per window at `position` (on the device): writes that cache slot, attends 0..position.
        GraphSpec(
            "step",
            inputs=lambda g: _step_inputs(g, g.shape.batch),
            outputs=lambda g: _step_outputs(g, g.shape.batch),
            kernels=True,
        ),
        # Beam search and best-of: each window's caches (slots 0..length-1, its prompt) copied to
        # every sequence of the window: sequence r takes window r // group.
        GraphSpec(
            "fork",
            inputs=lambda g: [Port("length", "int64", (1,)), *_caches(g, g.shape.batch, kind="tensor"),
                              *_caches(g, g.shape.rows, prefix="group_")],
            outputs=lambda g: [],
            present=_grouped,
            kernels=True,
            on_demand=True,
            rows=lambda shape: shape.rows,
        ),
        # `step` for every sequence of every window (beams, samples), on the sequences' caches.
        GraphSpec(
            "group_step",
            inputs=lambda g: _step_inputs(g, g.shape.rows),
            outputs=lambda g: _step_outputs(g, g.shape.rows),
            present=_grouped,
            kernels=True,
            on_demand=True,
            rows=lambda shape: shape.rows,
        ),
        # Beam search: row r of every sequence cache takes row source_rows[r] (slots 0..length-1
        # at least), in place.
        GraphSpec(
            "reorder",
            inputs=lambda g: [Port("source_rows", "int64", (g.shape.rows,)), Port("length", "int64", (1,)),
                              *_caches(g, g.shape.rows)],
            outputs=lambda g: [],
            present=_grouped,
            kernels=True,
            on_demand=True,  # beam search only
            rows=lambda shape: shape.rows,
        ),
        # Word timestamps: a whole sequence -> the alignment heads' cross-attention scores and
        # each next token's probability. Run once per window, so never recorded.
        GraphSpec(
            "align",
            inputs=lambda g: [Port("tokens", "int64", (g.shape.batch, g.shape.max_seq)), *_cross(g)],
            outputs=lambda g: [
                Port("alignment_scores", "float32",
                     (g.shape.batch, g.n_alignment_heads, g.shape.max_seq, g.dims.n_audio_ctx)),
                Port("next_token_probs", "float32", (g.shape.batch, g.shape.max_seq)),
            ],
            present=lambda shape, word_timestamps: word_timestamps,
            kernels=True,  # an int8 target's products of a short sequence
            replayed=False,
            on_demand=True,
        ),
    )
}
REQUIRED = ("encoder", "prefill", "step")  # a bundle without these cannot decode
GROUPED = ("fork", "group_step", "reorder")  # and a bundle of several sequences per window without these


def roles(shape: Shape, word_timestamps: bool) -> list[str]:
    """The graphs a bundle built for `shape` holds, in the order they are built and loaded."""
    return [role for role, spec in SPECS.items() if spec.present(shape, word_timestamps)]


def bind(ports: Sequence[Port], values: Mapping[str, Any], role: str) -> list[Any]:
    """`values` by port name -> the graph's positional inputs; every port given, and no other."""
    names = [p.name for p in ports]
    if len(values) == len(names) and all(n in values for n in names):  # every decoder step: cheap
        return [values[n] for n in names]
    missing, extra = [n for n in names if n not in values], [n for n in values if n not in names]
    raise TypeError(f"the {role} graph takes {names}: missing {missing}, unknown {extra}")
