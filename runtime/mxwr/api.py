"""mxwr's Python API: a bundle loaded once, transcribing as openai-whisper's `transcribe()` does.

    import mxwr

    with mxwr.load("tiny.en.mxw") as model:
        result = model.transcribe("audio.wav")             # openai-whisper's result dict
        for segment in model.segments("long.mp3"):         # each segment as its window is decoded
            print(segment["start"], segment["text"])

`audio` is a path, the bytes of an audio file (any format `mxwr run` reads), or a float32 array
of 16 kHz mono samples (openai-whisper's `load_audio` output). The options are openai-whisper's
`transcribe()` keywords, with its defaults (the Python function's: greedy at temperature 0 with
fallback, no beams); `mxwr run` applies the `whisper` command's defaults instead.

A model is one set of graphs and device buffers: calls on one model from several threads take
turns (a lock, one window at a time for `segments()`), so they stay correct but do not run in
parallel. Nothing here imports torch or openai-whisper.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, Union

import numpy as np

from .audio import AudioStream, open_audio
from .decoding import DecodingOptions
from .errors import AudioError, MxwError
from .transcribe import TranscribeOptions, Transcriber

__all__ = ["Audio", "Model", "load"]

Audio = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray, AudioStream]

_TRANSCRIBE_FIELDS = frozenset(f.name for f in fields(TranscribeOptions)) - {"decode_options"}


def load(bundle: str | os.PathLike, device: str = "auto", threads: int | None = None, *,
         max_duration: float | None = None, require_signature: str | os.PathLike | None = None) -> Model:
    """Opens `bundle` (checked as `mxwr run` checks it) and loads its graphs for `device`
    (`auto`, `cpu`, `gpu`, `gpu:N`). `threads`: run on that many CPU cores — the whole process is
    pinned to them, since MAX sizes its thread pool by the cores the process may use (it must
    happen before MAX first starts in the process; None: all of them). `max_duration`: refuse
    audio longer than this many seconds (AudioError). `require_signature`: a public key file
    the bundle must be signed by (the sign extra). Raises BundleError / MxwError for bad input."""
    if threads is not None:
        _use_cores(threads)
    return Model(Transcriber(bundle, device=device, max_duration=max_duration,
                             require_signature=require_signature))


class Model:
    """A loaded bundle. Use `load()` to make one; close it (or use `with`) to free its graphs."""

    def __init__(self, transcriber: Transcriber):
        self._transcriber: Transcriber | None = transcriber
        # One set of device buffers (KV caches, the encoder's outputs): one decode at a time.
        self._lock = threading.Lock()

    # -- what was loaded ---------------------------------------------------------------------

    @property
    def transcriber(self) -> Transcriber:
        """The runtime's `Transcriber` under this model (for `decode_windows` and the like)."""
        if self._transcriber is None:
            raise MxwError("the model is closed")
        return self._transcriber

    @property
    def name(self) -> str:
        """The model's name in the bundle's manifest (e.g. `tiny.en`)."""
        return self.transcriber.bundle.manifest.model.name

    @property
    def dims(self) -> dict[str, int]:
        """openai-whisper's ModelDimensions, as a dict."""
        return dict(self.transcriber.bundle.manifest.dims.to_dict())

    @property
    def dtype(self) -> str:
        """What the loaded target computes in (`float32`, `float16`, `bfloat16`)."""
        return self.transcriber.model.target.dtype

    @property
    def quantization(self) -> str:
        """How the loaded target stores its weights: `none`, or `int8` (`mxwr.quantization`)."""
        return self.transcriber.model.target.quantization

    @property
    def target(self) -> str:
        """The bundle's target that was loaded (e.g. `cpu`, `cuda:sm_90a`)."""
        return self.transcriber.model.target.name

    @property
    def targets(self) -> list[str]:
        """Every target the bundle was built for."""
        return [t.name for t in self.transcriber.bundle.manifest.targets]

    @property
    def multilingual(self) -> bool:
        return self.transcriber.special.multilingual

    @property
    def batch(self) -> int:
        """How many 30-second windows the graphs decode together (`mxwc build --batch`)."""
        return self.transcriber.model.batch

    @property
    def beams(self) -> int:
        """How many sequences one window can decode (`mxwc build --beams`): beam search and
        best-of need as many."""
        return self.transcriber.model.group

    # -- transcription -----------------------------------------------------------------------

    def transcribe(self, audio: Audio, **options: Any) -> dict[str, Any]:
        """openai-whisper's `transcribe(model, audio, **options)`: `{"text", "segments",
        "language"}`, segment for segment as openai-whisper gives on the same weights. TypeError
        for an unknown option, AudioError for audio that cannot be read."""
        windows = self._windows(audio, options)
        with self._lock:
            try:
                while True:
                    next(windows)
            except StopIteration as done:
                return done.value
            finally:
                windows.close()

    def segments(self, audio: Audio, **options: Any) -> Iterator[dict[str, Any]]:
        """The segments `transcribe()` would return (same options, same loop), each yielded as
        soon as its window is decoded: a long file's first words come after one window, not at
        the end. Stop iterating (or close the iterator) to stop decoding."""
        windows = self._windows(audio, options)
        try:
            while True:
                with self._lock:  # released between windows: other calls may take turns
                    try:
                        segments = next(windows)
                    except StopIteration:
                        return
                yield from segments
        finally:
            with self._lock:
                windows.close()

    def detect_language(self, audio: Audio) -> tuple[str, dict[str, float]]:
        """openai-whisper's `detect_language` on the first 30 seconds: the likeliest language
        code and every language's probability. An English-only model has no language tokens:
        MxwError, as openai-whisper raises."""
        transcriber = self.transcriber
        with _stream(audio, transcriber.max_duration) as stream, self._lock:
            return transcriber.detect_language(stream)

    def _windows(self, audio: Audio, options: dict[str, Any]) -> Generator[list[dict[str, Any]], None, dict[str, Any]]:
        """The seek loop over `audio` as a generator of windows (nothing read before its first
        `next`); options checked now, so that a bad one raises at the call."""
        transcriber = self.transcriber
        verbose = options.pop("verbose", None)
        options.pop("fp16", None)  # openai-whisper's: here the bundle's target fixes the dtype
        decode = {k: v for k, v in options.items() if k not in _TRANSCRIBE_FIELDS}
        topts = TranscribeOptions(**{k: v for k, v in options.items() if k in _TRANSCRIBE_FIELDS},
                                  decode_options=DecodingOptions(**decode))

        def run() -> Generator[list[dict[str, Any]], None, dict[str, Any]]:
            with _stream(audio, transcriber.max_duration) as stream:
                windows = transcriber.transcribe_windows(stream, topts)
                while True:
                    try:
                        segments = next(windows)
                    except StopIteration as done:
                        return done.value
                    if verbose:  # openai-whisper's verbose=True: each segment as it is decoded
                        from .writers import format_timestamp

                        for s in segments:
                            print(f"[{format_timestamp(s['start'])} --> {format_timestamp(s['end'])}] {s['text']}",
                                  flush=True)
                    yield segments

        return run()

    # -- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Frees the graphs and unmaps the bundle; the model cannot be used afterwards."""
        with self._lock:
            transcriber, self._transcriber = self._transcriber, None
        if transcriber is not None:
            transcriber.bundle.close()

    @property
    def closed(self) -> bool:
        return self._transcriber is None

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._transcriber is None:
            return "mxwr.Model(closed)"
        return f"mxwr.Model({self.name!r}, target={self.target!r}, dtype={self.dtype!r})"


@contextmanager
def _stream(audio: Audio, max_duration: float | None) -> Iterator[AudioStream]:
    """Any accepted audio as a stream, closed afterwards (unless the caller's own)."""
    if isinstance(audio, AudioStream):
        yield audio
    elif isinstance(audio, np.ndarray):
        yield samples_stream(audio)
    elif isinstance(audio, (bytes, bytearray, memoryview)):
        with bytes_stream(bytes(audio), max_duration) as stream:
            yield stream
    elif isinstance(audio, (str, os.PathLike)):
        with open_audio(Path(audio), max_duration=max_duration) as stream:
            yield stream
    else:
        raise TypeError(f"audio must be a path, bytes or a float32 numpy array, not {type(audio).__name__}")


def samples_stream(audio: np.ndarray) -> AudioStream:
    """16 kHz mono float samples as a stream; AudioError for anything else (an int array would
    be read as samples of amplitude up to 32767, and NaN decodes as nonsense)."""
    if audio.ndim != 1 or not np.issubdtype(audio.dtype, np.floating):
        raise AudioError(f"audio samples must be a 1-D float array (16 kHz mono), not {audio.ndim}-D {audio.dtype}")
    if not np.isfinite(audio).all():
        raise AudioError("audio samples must be finite (no NaN or infinity)")
    return AudioStream.from_array(audio)


def bytes_stream(data: bytes, max_duration: float | None, name: str = "the audio") -> AudioStream:
    """An audio file's bytes as a stream: written to a temporary file that is unlinked at once
    (the stream keeps what it reads open: the WAV itself, or its decoded temporary copy).
    `name`: what an error calls the audio (our temporary file means nothing to the caller)."""
    fd, path = tempfile.mkstemp(prefix="mxwr-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            return open_audio(path, max_duration=max_duration)
        except AudioError as e:
            raise AudioError(str(e).replace(f"file:{path}", name).replace(path, name)) from None
    finally:
        os.unlink(path)


def _use_cores(n: int) -> None:
    if n < 0:
        raise MxwError(f"threads must be None, 0 (all cores) or more, not {n}")
    if n > 0:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:n])
