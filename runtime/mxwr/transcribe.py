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
from .mel import log_mel_spectrogram
from .model import WhisperModel
from .tokens import SpecialTokens


class Transcriber:
    def __init__(self, bundle: str | Path, device: str = "auto"):
        self.bundle = BundleReader(bundle)
        self.special = SpecialTokens.from_bundle(self.bundle)
        self.filters = self.bundle.read_tensors(self.bundle.manifest["audio"]["mel_filters_section"])["mel_filters"]
        self.model = WhisperModel(self.bundle, device)

    def mel(self, audio: np.ndarray) -> np.ndarray:
        """One window's log-mel, as openai-whisper's `log_mel_spectrogram(pad_or_trim(audio))`."""
        return log_mel_spectrogram(pad_or_trim(audio), self.filters)

    def transcribe(self, audio_path: str | Path, options: DecodingOptions = DecodingOptions()) -> dict[str, Any]:
        return next(self.transcribe_files([audio_path], options))

    def transcribe_files(self, paths: list[str | Path], options: DecodingOptions = DecodingOptions()) -> Iterator[dict[str, Any]]:
        """Yields one result per file, in order. Windows of all files share the batch, so a
        batch-N bundle decodes N windows at once whichever files they come from."""
        audios = [load_audio(p) for p in paths]  # every file is readable before any work starts
        jobs = [(i, s) for i, audio in enumerate(audios) for s in range(0, max(len(audio), 1), N_SAMPLES)]
        decoder = GreedyDecoder(self.model, self.special, options)
        b = self.model.batch
        segments: list[list[dict[str, Any]]] = [[] for _ in paths]
        done = 0
        for first in range(0, len(jobs), b):
            group = jobs[first : first + b]
            mels = [self.mel(audios[i][s : s + N_SAMPLES]) for i, s in group]
            mels += [np.zeros_like(mels[0])] * (b - len(mels))  # fill the batch; results dropped
            for (i, s), r in zip(group, decoder.decode(self.model.encode(np.stack(mels)))):
                end = min(s + N_SAMPLES, len(audios[i]))
                segments[i].append({"id": len(segments[i]), "start": s / SAMPLE_RATE, "end": end / SAMPLE_RATE,
                                    **asdict(r)})
            finished_upto = group[-1][0] if first + b < len(jobs) else len(paths)
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
