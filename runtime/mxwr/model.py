"""The bundle's compiled graphs, bound to its weights on one device.

`WhisperModel` loads the MEFs of the chosen target (nothing is compiled at the edge) and binds
them to the memory-mapped weights; every graph is run with its inputs by name, in the order its
manifest signature (its role's spec, `graphspec.py`) gives. Decoding state stays on the device: the
encoder's cross-attention K/V are passed back to the decoder graphs as the device buffers the
encoder returned, and the self-attention caches are device buffers the graphs write in place.
On GPU targets every graph but `align` runs as a replayed device graph (replay.py): one launch
per run instead of one per kernel.
"""

from __future__ import annotations

import io
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Hashable

import numpy as np

from . import gpu_memory
from .bundle import NUMPY_DTYPES, BundleReader
from .constants import N_FFT, N_FRAMES, N_SAMPLES
from .errors import BundleError, MxwError
from .graphspec import SPECS, cache_names
from .manifest import GraphEntry, Target
from .replay import Const, Fixed, ReplayedGraph
from .targets import check_cpu, check_max_version, open_device, select_target
from .validate import check_frontend

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

    logits: Any  # [R, V] (steps) or [B, 2, V] (prefill: last position, start-of-transcript)
    token: Any  # [R] int64: the greedy next token under the suppress mask
    logprob: Any  # [R] float32: its log-probability
    # Where the layout summarizes the text tokens: their best ids and logits [R, K] and their
    # log-sum-exp [R] under the suppress mask (`graphspec._choice`); else None.
    text_summary: tuple[Any, Any, Any] | None = None

    @classmethod
    def of(cls, out: dict[str, Any]) -> "DecoderOutput":
        summary = None
        if "text_top_ids" in out:
            summary = (out["text_top_ids"], out["text_top_logits"], out["text_logsumexp"])
        return cls(out["logits"], out["next_token"], out["next_logprob"], summary)


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
    """Self-attention key/value caches, one buffer per layer for K and for V, on the device: a
    row per window (`step`) or per sequence (`group_step`), as that graph's signature says."""

    def __init__(self, model: "WhisperModel", role: str = "step"):
        self.role = role
        self.names = cache_names(model.dims.n_text_layer)
        ports = [model.target.graphs[role].input(name) for name in self.names]
        # Zeros, not garbage: masked slots still enter the attention products (as 0 * value).
        self.buffers = [
            _device_array(np.zeros(p.shape, dtype=NUMPY_DTYPES[p.dtype]), p.dtype, model.device) for p in ports
        ]

    def named(self, fixed: bool, prefix: str = "") -> dict[str, Any]:
        """The caches as graph inputs; `fixed`: marked as buffers a recording keeps (replay)."""
        return {prefix + name: Fixed(b) if fixed else b for name, b in zip(self.names, self.buffers)}


class WhisperModel:
    def __init__(self, bundle: BundleReader, device: str = "auto", replay: str = "auto"):
        """`replay`: `auto` runs the graphs as replayed device graphs on GPU targets and directly
        on the CPU; `off` never replays; `emulate` keeps replay's bookkeeping on any device (by
        executing) so that CPU tests exercise the GPU path."""
        m = bundle.manifest  # validated when read: dims, shape and signatures agree
        if len(m.targets) == 1:  # which target loads is known before MAX is imported to choose
            t = m.targets[0]
            bundle.verify_ahead([t.weights_section, m.audio.mel_filters_section, *(e.section for e in t.graphs.values())])
        from max import engine
        from max.driver import CPU

        self.dims, self.shape = m.dims, m.shape
        self.batch, self.max_seq, self.prompt_len, self.group = (
            m.shape.batch, m.shape.max_seq, m.shape.prompt_len, m.shape.group)
        self.rows = m.shape.rows  # every sequence of every window: the group step's batch
        if device != "cpu":  # before MAX opens a GPU: it sizes its graph memory pool then
            gpu_memory.reserve_for(m)
        self.target: Target = select_target(m.targets, device)
        check_max_version(m.producer.max_version, bundle.path)
        if not self.target.is_gpu:
            check_cpu(m.producer.host, bundle.path)
        self.device = open_device(self.target)

        # Read-only views into the mapping; the reader outlives the models (self.bundle).
        self.bundle = bundle
        weights = bundle.read_tensors(self.target.weights_section)
        if self.target.dtype == "bfloat16":  # stored as uint16 bits: numpy has no bfloat16
            weights = {k: _bfloat16(v) for k, v in weights.items()}
        # The front end's constants (mel filterbank, STFT basis) are float32 in every target.
        frontend = bundle.read_tensors(m.audio.mel_filters_section)
        self.mel_filters = np.asarray(frontend["mel_filters"])
        check_frontend(frontend, bundle.path)
        weights = {**weights, **frontend}
        devices = [self.device] if isinstance(self.device, CPU) else [self.device, CPU()]
        self._session, self._weights = engine.InferenceSession(devices=devices), weights
        if replay not in REPLAY_MODES:
            raise MxwError(f"unknown replay mode {replay!r}: use {', '.join(REPLAY_MODES)}")
        self.replaying = replay == "emulate" or (replay == "auto" and self.target.is_gpu)
        # Replaying records every graph up front; otherwise a graph a run may never ask for (the
        # front end where numpy computes log-mel, word timestamps' align, beam search's reorder)
        # is loaded when first run.
        self._graphs: dict[str, Any] = {}
        for role, entry in self.target.graphs.items():
            if self.replaying or not SPECS[role].on_demand:
                self._load(role)
            else:  # a corrupt graph is refused now all the same, not in the middle of a run
                bundle.check(entry.section)
        self.alignment_heads = list(m.alignment_heads) if m.alignment_heads is not None else None

        self._replayed = {
            role: ReplayedGraph(role, graph, self.device, emulate=replay == "emulate")
            for role, graph in self._graphs.items() if self.replaying and SPECS[role].replayed
        }
        self._caches: dict[str, KVCache] = {}  # replaying: the one cache per role the recordings write
        self._masks: dict[frozenset[int], Any] = {}
        # Where the graphs summarize the text tokens (ids below end-of-text), they are told where
        # those end: the tokenizer's end-of-text id.
        self.text_summary = self.target.layout.text_summary
        self._text_end = self._to_device(np.array([m.tokenizer.special["eot"]], np.int64)) if self.text_summary else None
        self._generation = 0
        # Replaying, a step's position is copied in on the device from this table: no host
        # allocation or host-to-device copy per step.
        self._positions = self._to_device(np.arange(self.max_seq, dtype=np.int64)) if self.replaying else None
        self._staging: dict[tuple[Any, int], Any] = {}  # (slot, output) -> pinned host buffer
        self._audio, self._audio_sent = None, None  # pinned audio for the front end, its copy's event

    def has(self, role: str) -> bool:
        """Whether the bundle holds this graph (loaded or not yet)."""
        return role in self.target.graphs

    def _load(self, role: str) -> Any:
        from max import engine

        entry = self.target.graphs[role]
        try:
            compiled = engine.read(io.BytesIO(self.bundle.read_bytes(entry.section)))
            graph = self._session.init(compiled, weights_registry=self._weights)
        except MxwError:
            raise
        except Exception as e:  # MAX reports load failures as RuntimeError/ValueError
            raise BundleError(f"cannot load the {role} graph of {self.bundle.path}: {_first_line(e)}") from None
        _check_signature(entry, graph)
        self._graphs[role] = graph
        return graph

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
        mel = self._run("frontend", "frontend", padded_audio=audio)["mel"]
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
        out = self._run("encoder", "encoder", mel=mel)
        self._generation += 1
        return AudioContext(out["audio_features"], out["cross_k"], out["cross_v"], self._generation)

    def prefill(self, ctx: AudioContext, cache: KVCache, tokens: np.ndarray, sot_index: int,
                suppress: Any, offset: int = 0) -> DecoderOutput:
        """tokens [batch, T], T <= prompt_len, at positions offset..offset+T-1 (cache positions
        before offset filled already): fills those cache positions; logits at the chunk's
        positions (T-1, sot_index)."""
        b, t = tokens.shape
        padded = np.zeros((b, self.prompt_len), dtype=np.int64)
        padded[:, :t] = tokens
        positions = np.array([t - 1, sot_index], dtype=np.int64)
        out = self._run("prefill", "prefill", tokens=padded, offset=np.array([offset], np.int64),
                        logit_positions=positions, **self._decoder_state(ctx, cache, suppress))
        return DecoderOutput.of(out)

    def step(self, ctx: AudioContext, cache: KVCache, tokens: Any, position: int, suppress: Any,
             slot: int = 0, role: str = "step") -> DecoderOutput:
        """tokens [rows] (numpy, or the device buffer a previous call returned) at `position`:
        a row per window (`step`) or per sequence (`group_step`, on a cache of its own).

        Replaying, each `slot` (0 or 1) is a recording of its own with its own outputs: a step
        can run while the previous one's outputs, in the other slot, are still being read.
        """
        if isinstance(tokens, np.ndarray):
            tokens = np.ascontiguousarray(tokens, np.int64)
        where = self._positions[position : position + 1] if self._positions is not None else np.array([position], np.int64)
        out = self._run(role, (role, slot), token=tokens, position=where, **self._decoder_state(ctx, cache, suppress))
        return DecoderOutput.of(out)

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

    def read_later(self, buffer: Any) -> Fetch:
        """Starts copying one graph output to the host, for a read after later runs of its graph
        (which, replayed, overwrite their outputs). One such read per output shape at a time."""
        return self.fetch([buffer], slot=("read later", tuple(buffer.shape)))

    def greedy(self, ctx: AudioContext, cache: KVCache, first: DecoderOutput, position: int, suppress: Any,
               limit: int) -> Generator[tuple[np.ndarray, np.ndarray], None, None]:
        """Greedy decoding from `first`, the decoder output whose token goes to `position`:
        yields the (tokens, logprobs) of `first` and of each step after it, at most `limit` in all;
        close it to stop sooner. Each token goes back in as the device buffer its graph returned,
        so only it and its log-probability cross to the host. Replaying, the next step is launched
        before this one's token is read (two step recordings and staging slots take turns) so the
        GPU does not wait on the host; stopping sooner wastes that step."""

        def launch(previous: DecoderOutput, i: int) -> tuple[DecoderOutput, Fetch]:
            """Sample i's step (i >= 1), fed sample i - 1's token where the device left it."""
            out = self.step(ctx, cache, previous.token, position + i - 1, suppress, slot=i % 2)
            return out, self.fetch([out.token, out.logprob], slot=i % 2)

        pending = first, self.fetch([first.token, first.logprob], slot=0)
        for i in range(1, limit + 1):  # yields sample i - 1
            current, fetched = pending
            more = i < limit
            if more and self.replaying:
                pending = launch(current, i)
            tokens, logprobs = fetched.result()
            yield tokens, logprobs
            if more and not self.replaying:  # resumed, not closed: sample i is wanted
                pending = launch(current, i)

    def fork(self, windows: KVCache, sequences: KVCache, length: int) -> None:
        """Each window's caches (positions 0..length-1) into every one of its sequences' (a
        `group_step` cache: sequence r takes window r // group), on the device."""
        self._run("fork", "fork", length=np.array([length], np.int64), **windows.named(self.replaying),
                  **sequences.named(self.replaying, "group_"))

    def reorder(self, cache: KVCache, source_rows: list[int], length: int) -> None:
        """Row r of every sequence cache takes row source_rows[r] (beam search), positions
        0..length-1 at least, on the device."""
        self._run("reorder", "reorder", source_rows=np.asarray(source_rows, dtype=np.int64),
                  length=np.array([length], np.int64), **cache.named(self.replaying))

    def align(self, ctx: AudioContext, tokens: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """A whole sequence (window 0 of ctx) -> (alignment heads' cross-attention scores
        [n_heads, T, n_audio_ctx], probability of each next token [T]) for its T positions."""
        if not self.has("align"):
            raise MxwError("this bundle was built without word timestamps (mxwc build --word-timestamps)")
        if len(tokens) > self.max_seq:
            raise MxwError(f"{len(tokens)} tokens do not fit the bundle's max_seq {self.max_seq}")
        padded = np.zeros((self.batch, self.max_seq), dtype=np.int64)
        padded[0, : len(tokens)] = tokens
        self._check_current(ctx)
        out = self._run("align", "align", tokens=padded, cross_k=ctx.cross_k, cross_v=ctx.cross_v)
        n = len(tokens)
        return out["alignment_scores"].to_numpy()[0, :, :n], out["next_token_probs"].to_numpy()[0, :n]

    def suppress_mask(self, token_ids: Any) -> Any:
        """A device vector [V]: -inf at `token_ids`, 0 elsewhere (added to the logits). Made once
        per set of ids: the same buffer each time, so a recording never copies it in again."""
        key = frozenset(int(t) for t in token_ids)
        if key not in self._masks:
            mask = np.zeros(self.dims.n_vocab, dtype=np.float32)
            mask[np.asarray(sorted(key), dtype=np.int64)] = -np.inf
            self._masks[key] = self._to_device(mask)
        return self._masks[key]

    def new_cache(self, role: str = "step") -> KVCache:
        """Caches for `role`'s rows (`step`: a row per window, `group_step`: per sequence).
        Replaying, the recordings write one cache per role: every decode reuses it (stale
        entries are never read: a decode writes each position before attending to it)."""
        if not self.replaying:
            return KVCache(self, role)
        if role not in self._caches:
            self._caches[role] = KVCache(self, role)
        return self._caches[role]

    # -- running a graph ---------------------------------------------------------------------

    def _run(self, role: str, key: Any, **named: Any) -> dict[str, Any]:
        """Runs a graph on its inputs by name (numpy arrays, device buffers, `Fixed`/`Const`
        markers), as a replayed recording under `key` or directly; its outputs by name."""
        entry = self.target.graphs[role]
        inputs = entry.bind(named)
        replayed = self._replayed.get(role)
        if replayed is not None:
            return entry.name_outputs(replayed(key, inputs))
        plain = [v.buffer if isinstance(v, (Fixed, Const)) else v for v in inputs]
        graph = self._graphs.get(role) or self._load(role)
        return entry.name_outputs(
            graph.execute(*[self._to_device(v) if isinstance(v, np.ndarray) else v for v in plain]))

    def _check_current(self, ctx: AudioContext) -> None:
        if self.replaying and ctx.generation != self._generation:
            raise MxwError("internal: an AudioContext was used after the next encode replaced it")

    def _decoder_state(self, ctx: AudioContext, cache: KVCache, suppress: Any) -> dict[str, Any]:
        """The decoder graphs' inputs besides the tokens: suppress mask, caches, cross K/V."""
        self._check_current(ctx)
        # A replayed encoder writes the same buffers every run: read where they are.
        cross = {"cross_k": ctx.cross_k, "cross_v": ctx.cross_v}
        if "encoder" in self._replayed:
            cross = {name: Fixed(b) for name, b in cross.items()}
        state = {"suppress": Const(suppress) if self.replaying else suppress, **cache.named(self.replaying), **cross}
        if self.text_summary:
            state["text_end"] = Const(self._text_end) if self.replaying else self._text_end
        return state

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


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _check_signature(entry: GraphEntry, model: Any) -> None:
    """The MEF's inputs must be what the manifest says they are (catches mixed-up sections)."""
    expected = [p.shape for p in entry.inputs]
    actual = [tuple(int(d) for d in m.shape) for m in model.input_metadata]
    if expected != actual:
        raise BundleError(f"the {entry.role} graph's inputs {actual} do not match the manifest's {expected}"[:300])
