"""The bundle's compiled graphs, bound to its weights on one device.

`WhisperModel` loads the three MEFs of the chosen target (milliseconds: nothing is compiled at
the edge) and binds them to the memory-mapped weights. Decoding state stays on the device: the
encoder's cross-attention K/V are passed back to the decoder graphs as the device buffers the
encoder returned, and the self-attention caches are device buffers the graphs write in place.
On GPU targets every graph but `align` runs as a replayed device graph (replay.py): one launch
per run instead of one per kernel.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Hashable

import numpy as np

from . import gpu_memory
from .bundle import NUMPY_DTYPES, BundleReader
from .constants import N_FFT, N_FRAMES, N_SAMPLES
from .dims import ModelDims
from .errors import BundleError, MxwError
from .replay import Const, Fixed, ReplayedGraph
from .targets import Target, select_target

ROLES = ("frontend", "encoder", "prefill", "step", "reorder", "align")
REPLAYED = ("frontend", "encoder", "prefill", "step", "reorder")  # align runs once per window
REPLAY_MODES = ("auto", "off", "emulate")


def reflect_padded(windows: Sequence[np.ndarray], out: np.ndarray) -> np.ndarray:
    """out [B, N_SAMPLES + N_FFT] <- each window zero-padded to N_SAMPLES, then reflect-padded by
    N_FFT // 2 on both sides (torch.stft(center=True) of `pad_or_trim(audio)`); rows past the
    windows are silence. One pass over the buffer, where np.pad of a zero-filled copy takes three."""
    h = N_FFT // 2
    assert len(windows) <= out.shape[0] and out.shape[1] == N_SAMPLES + 2 * h, (len(windows), out.shape)
    out[len(windows):] = 0.0
    for row, window in enumerate(windows):
        n = min(len(window), N_SAMPLES)
        out[row, h : h + n] = window[:n]
        out[row, h + n :] = 0.0
        out[row, :h] = out[row, 2 * h : h : -1]
        out[row, h + N_SAMPLES :] = out[row, h + N_SAMPLES - 2 : N_SAMPLES - 2 : -1]
    return out


@dataclass
class DecoderOutput:
    """A decoder graph's outputs, left on the device until something reads them."""

    logits: Any  # [B, V] (step) or [B, 2, V] (prefill: last position, start-of-transcript)
    token: Any  # [B] int64: the greedy next token under the suppress mask
    logprob: Any  # [B] float32: its log-probability


@dataclass
class AudioContext:
    """What the decoder needs from one encoder run: features and per-layer cross K/V."""

    features: Any  # max.driver.Buffer [B, n_audio_ctx, d]
    cross_k: Any  # [n_layer, B, n_head, n_audio_ctx, d_head] (tile-padded on 16-bit GPU targets)
    cross_v: Any  # the same, or on 16-bit GPU targets padded and transposed: [..., width, slots]
    generation: int = 0  # which encoder run made it (a replayed encoder reuses its buffers)


class Fetch:
    """Device outputs on their way to the host. `result()` waits for this copy alone, not for
    graphs launched after it (GPU: pinned staging buffers and an event; CPU: read at once)."""

    def __init__(self, arrays: list[np.ndarray] | None = None, staging: list[Any] | None = None, event: Any = None):
        self._arrays, self._staging, self._event = arrays, staging, event

    def result(self) -> list[np.ndarray]:
        if self._arrays is None:
            self._event.synchronize()
            self._arrays = [s.to_numpy().copy() for s in self._staging]
        return self._arrays


class KVCache:
    """Self-attention key/value caches, one buffer per layer for K and for V, on the device."""

    def __init__(self, model: "WhisperModel"):
        d = model.dims
        shape = (model.rows, d.n_text_head, model.max_seq, d.n_text_state // d.n_text_head)
        # Some GPU bundles store them padded to the matmul tile: the step graph's inputs say how.
        specs = {i.get("name"): i for i in model.target.graphs["step"].get("inputs", [])}
        if "self_k.0" in specs:
            shape = tuple(specs["self_k.0"]["shape"])
        # Zeros, not garbage: masked slots still enter the attention products (as 0 * value).
        self.buffers = [
            _device_array(np.zeros(shape, dtype=NUMPY_DTYPES[model.target.dtype]), model.target.dtype, model.device)
            for _ in range(2 * d.n_text_layer)
        ]


class WhisperModel:
    def __init__(self, bundle: BundleReader, device: str = "auto", replay: str = "auto"):
        """`replay`: `auto` runs the graphs as replayed device graphs on GPU targets and directly
        on the CPU; `off` never replays; `emulate` keeps replay's bookkeeping on any device (by
        executing) so that CPU tests exercise the GPU path."""
        from max import engine
        from max.driver import CPU

        m = bundle.manifest
        self.dims = ModelDims.from_dict(m.get("dims"))
        shape = m.get("shape") or {}
        self.batch, self.max_seq, self.prompt_len = (
            _positive_int(shape, k) for k in ("batch", "max_seq", "prompt_len")
        )
        self.group = _positive_int({"group": 1, **shape}, "group")  # sequences per window (1.0 bundles: 1)
        self.rows = self.batch * self.group  # the decoder graphs' batch
        if self.max_seq > self.dims.n_text_ctx:
            raise BundleError(f"bundle max_seq {self.max_seq} exceeds n_text_ctx {self.dims.n_text_ctx}")
        if device != "cpu":  # before MAX opens a GPU: it sizes its graph memory pool then
            gpu_memory.reserve_for(m, lambda name: bundle.section(name)["length"] if bundle.has_section(name) else 0)
        self.target: Target = select_target(m.get("targets"), device)
        if self.target.dtype not in ("float32", "float16", "bfloat16"):
            raise BundleError(f"bundle target {self.target.name} has unknown dtype {self.target.dtype}")
        self.device = self.target.open_device()

        # Read-only views into the mapping; the reader outlives the models (self.bundle).
        self.bundle = bundle
        weights = bundle.read_tensors(self.target.weights_section)
        if self.target.dtype == "bfloat16":  # stored as uint16 bits: numpy has no bfloat16
            weights = {k: _bfloat16(v) for k, v in weights.items()}
        # The front end's constants (mel filterbank, STFT basis) are float32 in every target.
        try:
            frontend = bundle.read_tensors(m["audio"]["mel_filters_section"])
            self.mel_filters = np.asarray(frontend["mel_filters"])
        except (KeyError, TypeError):
            raise BundleError(f"{bundle.path} has no mel filterbank") from None
        if self.mel_filters.shape != (self.dims.n_mels, N_FFT // 2 + 1):
            raise BundleError(f"{bundle.path} has a mel filterbank of shape {self.mel_filters.shape}")
        weights = {**weights, **frontend}
        devices = [self.device] if isinstance(self.device, CPU) else [self.device, CPU()]
        session = engine.InferenceSession(devices=devices)
        graphs = {}
        for role in [r for r in ROLES if r in self.target.graphs]:
            section = self.target.graphs[role]["section"]
            try:
                compiled = engine.read(io.BytesIO(bundle.read_bytes(section)))
                graphs[role] = session.init(compiled, weights_registry=weights)
            except MxwError:
                raise
            except Exception as e:  # MAX reports load failures as RuntimeError/ValueError
                raise BundleError(f"cannot load the {role} graph of {bundle.path}: {_first_line(e)}") from None
            _check_signature(role, graphs[role], self.target.graphs[role])
        self._graphs = graphs
        self.frontend = graphs.get("frontend")
        self.reorder_graph, self.align_graph = graphs.get("reorder"), graphs.get("align")
        if self.group > 1 and self.reorder_graph is None:
            raise BundleError(f"{bundle.path} decodes {self.group} sequences per window but has no reorder graph")
        heads = m.get("alignment_heads")
        self.alignment_heads = [tuple(h) for h in heads] if isinstance(heads, list) else None

        # Format 1 step graphs read the position on the host: a device graph can't record that.
        position_spec = (self.target.graphs["step"].get("inputs") or [{}, {}])[1]
        self._host_position = self.target.is_gpu and position_spec.get("device") == "cpu"
        if replay not in REPLAY_MODES:
            raise MxwError(f"unknown replay mode {replay!r}: use {', '.join(REPLAY_MODES)}")
        self.replaying = replay == "emulate" or (replay == "auto" and self.target.is_gpu)
        self._replayed = {
            role: ReplayedGraph(role, graphs[role], self.device, emulate=replay == "emulate")
            for role in REPLAYED if self.replaying and graphs.get(role) is not None
            and not (role == "step" and self._host_position)
        }
        self._cache: KVCache | None = None  # replaying: the one cache the recordings write
        self._masks: dict[frozenset[int], Any] = {}
        self._generation = 0
        # Replaying, a step's position is copied in on the device from this table: no host
        # allocation or host-to-device copy per step.
        self._positions = self._to_device(np.arange(self.max_seq, dtype=np.int64)) if self.replaying else None
        self._staging: dict[tuple[Any, int], Any] = {}  # (slot, output) -> pinned host buffer
        self._audio, self._audio_sent = None, None  # pinned audio for the front end, its copy's event

    # -- graphs ------------------------------------------------------------------------------

    def log_mel(self, windows: Sequence[np.ndarray]) -> Any:
        """Up to B windows of at most N_SAMPLES float32 samples (shorter ones end in silence, missing
        rows are silence) -> log-mel [B, n_mels, 3000], computed on the device by the front-end
        graph. Only the reflect padding happens here, written straight into the upload buffer."""
        shape = (self.batch, N_SAMPLES + N_FFT)
        if self.replaying and self.target.is_gpu:
            audio = self._pinned_audio(shape)
            reflect_padded(windows, audio.to_numpy())
        else:
            audio = reflect_padded(windows, np.empty(shape, np.float32))
        (mel,) = self._run("frontend", "frontend", [audio])
        if self.replaying and self.target.is_gpu:
            self._audio_sent = self.device.default_queue.record_event()
        return mel

    def _pinned(self, shape: Any, dtype: Any) -> Any:
        """A pinned host buffer: copies between it and the device are one DMA each way (a numpy
        array goes through a new allocation and a pageable copy)."""
        from max.driver import Buffer, Usage

        return Buffer(shape=shape, dtype=dtype, device=self.device, usage=Usage.STAGING | Usage.UNTRACKED)

    def _pinned_audio(self, shape: tuple[int, int]) -> Any:
        """The front end's input, pinned; free to be rewritten once the last window's copy has left."""
        from max.dtype import DType

        if self._audio is None:
            self._audio = self._pinned(shape, DType.float32)
        if self._audio_sent is not None:
            self._audio_sent.synchronize()
        return self._audio

    def encode(self, mel: Any) -> AudioContext:
        """mel [B, n_mels, 3000] float32 (numpy, or the front end's device buffer) -> AudioContext,
        left on the device."""
        if isinstance(mel, np.ndarray):
            assert mel.shape == (self.batch, self.dims.n_mels, N_FRAMES), mel.shape
            mel = np.ascontiguousarray(mel, np.float32)
        features, cross_k, cross_v = self._run("encoder", "encoder", [mel])
        self._generation += 1
        return AudioContext(features, cross_k, cross_v, self._generation)

    def prefill(self, ctx: AudioContext, cache: KVCache, tokens: np.ndarray, sot_index: int,
                suppress: Any) -> DecoderOutput:
        """tokens [rows, T], T <= prompt_len: fills cache positions 0..T-1; logits at (T-1, sot_index)."""
        b, t = tokens.shape
        padded = np.zeros((b, self.prompt_len), dtype=np.int64)
        padded[:, :t] = tokens
        positions = np.array([t - 1, sot_index], dtype=np.int64)
        return DecoderOutput(*self._run("prefill", "prefill", [padded, positions, *self._decoder_state(ctx, cache, suppress)]))

    def step(self, ctx: AudioContext, cache: KVCache, tokens: Any, position: int, suppress: Any,
             slot: int = 0) -> DecoderOutput:
        """tokens [rows] (numpy, or the device buffer a previous call returned) at `position`.

        Replaying, each `slot` (0 or 1) is a recording of its own with its own outputs: a step
        can run while the previous one's outputs, in the other slot, are still being read.
        """
        from max.driver import Buffer

        if isinstance(tokens, np.ndarray):
            tokens = np.ascontiguousarray(tokens, np.int64)
        if self._host_position:  # format 1 GPU bundles: read on the host, so never recorded
            where = Buffer.from_numpy(np.array([position], np.int64))
        elif self._positions is not None:
            where = self._positions[position : position + 1]
        else:
            where = np.array([position], np.int64)
        return DecoderOutput(*self._run(
            "step", ("step", slot), [tokens, where, *self._decoder_state(ctx, cache, suppress)]))

    def fetch(self, buffers: list[Any], slot: Hashable = 0) -> Fetch:
        """Starts copying device outputs to the host. A `slot` names one reader's staging
        buffers: its previous result must have been read before it fetches again."""
        if not self.target.is_gpu:
            return Fetch(arrays=[b.to_numpy().copy() for b in buffers])
        staging = []
        for i, b in enumerate(buffers):
            host = self._staging.get((slot, i))
            if host is None or tuple(host.shape) != tuple(b.shape) or host.dtype != b.dtype:
                host = self._staging[(slot, i)] = self._pinned(b.shape, b.dtype)
            host.inplace_copy_from(b)
            staging.append(host)
        return Fetch(staging=staging, event=self.device.default_queue.record_event())

    def reorder(self, cache: KVCache, source_rows: list[int]) -> None:
        """Row r of every cache takes row source_rows[r] (beam search), on the device."""
        self._run("reorder", "reorder", [np.asarray(source_rows, dtype=np.int64), *map(self._fixed, cache.buffers)])

    def align(self, ctx: AudioContext, tokens: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """A whole sequence (window 0 of ctx) -> (alignment heads' cross-attention scores
        [n_heads, T, n_audio_ctx], probability of each next token [T]) for its T positions."""
        if self.align_graph is None:
            raise MxwError("this bundle was built without word timestamps (mxwc build --word-timestamps)")
        if len(tokens) > self.max_seq:
            raise MxwError(f"{len(tokens)} tokens do not fit the bundle's max_seq {self.max_seq}")
        padded = np.zeros((self.batch, self.max_seq), dtype=np.int64)
        padded[0, : len(tokens)] = tokens
        self._check_current(ctx)
        scores, probs = self.align_graph.execute(self._to_device(padded), ctx.cross_k, ctx.cross_v)
        n = len(tokens)
        return scores.to_numpy()[0, :, :n], probs.to_numpy()[0, :n]

    def suppress_mask(self, token_ids: Any) -> Any:
        """A device vector [V]: -inf at `token_ids`, 0 elsewhere (added to the logits). Made once
        per set of ids: the same buffer each time, so a recording never copies it in again."""
        key = frozenset(int(t) for t in token_ids)
        if key not in self._masks:
            mask = np.zeros(self.dims.n_vocab, dtype=np.float32)
            mask[np.asarray(sorted(key), dtype=np.int64)] = -np.inf
            self._masks[key] = self._to_device(mask)
        return self._masks[key]

    def new_cache(self) -> KVCache:
        """Replaying, the recordings write one cache: every decode reuses it (stale entries are
        never read: a decode writes each position before attending to it)."""
        if not self.replaying:
            return KVCache(self)
        if self._cache is None:
            self._cache = KVCache(self)
        return self._cache

    # -- running a graph ---------------------------------------------------------------------

    def _run(self, role: str, key: Any, inputs: list[Any]) -> list[Any]:
        """Runs a graph on inputs (numpy arrays, device buffers, `Fixed`/`Const` markers), as a
        replayed recording under `key` or directly."""
        replayed = self._replayed.get(role)
        if replayed is not None:
            return replayed(key, inputs)
        graph = self._graphs[role]
        plain = [v.buffer if isinstance(v, (Fixed, Const)) else v for v in inputs]
        return graph.execute(*[self._to_device(v) if isinstance(v, np.ndarray) else v for v in plain])

    def _check_current(self, ctx: AudioContext) -> None:
        if self.replaying and ctx.generation != self._generation:
            raise MxwError("internal: an AudioContext was used after the next encode replaced it")

    def _fixed(self, buffer: Any) -> Any:
        return Fixed(buffer) if self.replaying else buffer

    def _decoder_state(self, ctx: AudioContext, cache: KVCache, suppress: Any) -> list[Any]:
        """The decoder graphs' inputs after the tokens: suppress mask, caches, cross K/V."""
        self._check_current(ctx)
        # A replayed encoder writes the same buffers every run: read where they are.
        cross = [ctx.cross_k, ctx.cross_v]
        if "encoder" in self._replayed:
            cross = [Fixed(b) for b in cross]
        return [Const(suppress) if self.replaying else suppress, *map(self._fixed, cache.buffers), *cross]

    def _to_device(self, array: np.ndarray):
        from max.driver import Buffer

        return Buffer.from_numpy(array).to(self.device)


def _device_array(array: np.ndarray, dtype: str, device: Any):
    from max.driver import Buffer

    host = _bfloat16(array.view(np.uint16)) if dtype == "bfloat16" else Buffer.from_numpy(array)
    return host.to(device)


def _bfloat16(bits: np.ndarray):
    """A MAX buffer viewing uint16 bit patterns as bfloat16."""
    from max.driver import Buffer
    from max.dtype import DType

    if not bits.flags.writeable:  # DLPack cannot always export read-only (memory-mapped) arrays
        bits = bits.copy()
    return Buffer.from_numpy(np.ascontiguousarray(bits)).view(DType.bfloat16)


def _positive_int(d: dict, key: str) -> int:
    value = d.get(key)
    if not isinstance(value, int) or value <= 0:
        raise BundleError(f"bundle manifest has a malformed shape.{key}")
    return value


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _check_signature(role: str, model: Any, spec: dict) -> None:
    """The MEF's inputs must be what the manifest says they are (catches mixed-up sections)."""
    expected = [tuple(i["shape"]) for i in spec.get("inputs", [])]
    actual = [tuple(int(d) for d in m.shape) for m in model.input_metadata]
    if expected != actual:
        raise BundleError(f"the {role} graph's inputs {actual} do not match the manifest's {expected}")
