"""Bundle + audio -> transcript: audio -> log-mel -> encoder -> prefill -> step loop -> text.

Audio longer than one window is cut into consecutive 30-second windows, each decoded on its own
(openai-whisper's `decode` on each; the seeking and conditioning of `transcribe()` are not done
here). Windows, from one file or many, fill the bundle's batch, so a batch-N bundle decodes N
windows at once.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import numpy as np

from .audio import load_audio, pad_or_trim
from .bundle import BundleReader
from .decoding import DecodingOptions, GreedyDecoder
from .dims import N_SAMPLES, SAMPLE_RATE
from .errors import MxwError
from .mel import log_mel_spectrogram
from .model import WhisperModel
from .tokens import SpecialTokens


class Transcriber:
    def __init__(self, bundle: str | Path, device: str = "auto", mel_on_device: bool | None = None):
        """`mel_on_device`: compute log-mel with the bundle's front-end graph (default: on GPU
        targets) rather than in numpy."""
        self.bundle = BundleReader(bundle)
        self.special = SpecialTokens.from_bundle(self.bundle)
        self.model = WhisperModel(self.bundle, device)
        self._decoders: dict[DecodingOptions, GreedyDecoder] = {}
        if mel_on_device is None:
            mel_on_device = self.model.target.is_gpu and self.model.frontend is not None
        if mel_on_device and self.model.frontend is None:
            raise MxwError(f"{bundle} has no front-end graph to compute log-mel on the device")
        self.mel_on_device = mel_on_device

    def _mels(self, windows: list[np.ndarray]):
        """The batch's log-mels: on the device with the front-end graph (so nothing but audio
        crosses to a GPU), or in numpy. Missing batch rows are silence."""
        b = self.model.batch
        if self.mel_on_device:
            padded = np.zeros((b, N_SAMPLES), dtype=np.float32)
            for row, w in enumerate(windows):
                padded[row, : len(w)] = w[:N_SAMPLES]
            return self.model.log_mel(padded)
        mels = [self.mel(w) for w in windows]
        return np.stack(mels + [np.zeros_like(mels[0])] * (b - len(mels)))

    def mel(self, audio: np.ndarray) -> np.ndarray:
        """One window's log-mel, as openai-whisper's `log_mel_spectrogram(pad_or_trim(audio))`."""
        return log_mel_spectrogram(pad_or_trim(audio), self.model.mel_filters)

    def transcribe(self, audio_path: str | Path, options: DecodingOptions = DecodingOptions()) -> dict[str, Any]:
        return next(self.transcribe_files([audio_path], options))

    def transcribe_files(self, paths: list[str | Path], options: DecodingOptions = DecodingOptions()) -> Iterator[dict[str, Any]]:
        """Yields one result per file, in order. Windows of all files share the batch, so a
        batch-N bundle decodes N windows at once whichever files they come from."""
        yield from self.transcribe_arrays([load_audio(p) for p in paths], options)  # all readable first

    def transcribe_arrays(self, audios: list[np.ndarray], options: DecodingOptions = DecodingOptions()) -> Iterator[dict[str, Any]]:
        """As `transcribe_files`, for audio already loaded (mono float32 at 16 kHz)."""
        jobs = [(i, s) for i, audio in enumerate(audios) for s in range(0, max(len(audio), 1), N_SAMPLES)]
        if options not in self._decoders:  # its masks live on the device: make them once
            self._decoders[options] = GreedyDecoder(self.model, self.special, options)
        decoder = self._decoders[options]
        b = self.model.batch
        segments: list[list[dict[str, Any]]] = [[] for _ in audios]
        done = 0
        for first in range(0, len(jobs), b):
            group = jobs[first : first + b]
            mels = self._mels([audios[i][s : s + N_SAMPLES] for i, s in group])
            for (i, s), r in zip(group, decoder.decode(self.model.encode(mels))):
                end = min(s + N_SAMPLES, len(audios[i]))
                segments[i].append({"id": len(segments[i]), "start": s / SAMPLE_RATE, "end": end / SAMPLE_RATE,
                                    **asdict(r)})
            finished_upto = group[-1][0] if first + b < len(jobs) else len(audios)
            while done < finished_upto:
                yield _result(segments[done])
                done += 1


def _result(segments: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "text": " ".join(seg["text"] for seg in segments if seg["text"]),
        "tokens": [t for seg in segments for t in seg["tokens"]],
        "language": segments[0]["language"],
        "segments": segments,
    }
