"""Bundle + audio -> transcript: audio -> log-mel -> encoder -> prefill -> step loop -> text.

Audio longer than one window is cut into consecutive 30-second windows, each decoded on its own
(openai-whisper's `decode` on each; the seeking and conditioning of `transcribe()` are not done
here). Windows fill the bundle's batch, so a batch-N bundle decodes N windows at once.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
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
        audio = load_audio(audio_path)
        starts = list(range(0, max(len(audio), 1), N_SAMPLES))
        decoder = GreedyDecoder(self.model, self.special, options)
        b = self.model.batch
        segments = []
        for first in range(0, len(starts), b):
            group = starts[first : first + b]
            mels = [self.mel(audio[s : s + N_SAMPLES]) for s in group]
            mels += [np.zeros_like(mels[0])] * (b - len(mels))  # fill the batch; results dropped
            results = decoder.decode(self.model.encode(np.stack(mels)))
            for s, r in zip(group, results):
                end = min(s + N_SAMPLES, len(audio))
                segments.append({"id": len(segments), "start": s / SAMPLE_RATE, "end": end / SAMPLE_RATE,
                                 **asdict(r)})
        return {
            "text": " ".join(seg["text"] for seg in segments if seg["text"]),
            "tokens": [t for seg in segments for t in seg["tokens"]],
            "language": segments[0]["language"],
            "segments": segments,
        }
