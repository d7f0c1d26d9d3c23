"""Model dimensions, named as openai-whisper's `ModelDimensions` names them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import BundleError

N_SAMPLES = 480_000  # 30 s at 16 kHz: one window
N_FRAMES = 3000  # mel frames in one window
SAMPLE_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160


@dataclass(frozen=True)
class ModelDims:
    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int

    @property
    def is_multilingual(self) -> bool:
        # openai-whisper's rule: English-only checkpoints have 51864 tokens.
        return self.n_vocab >= 51865

    @property
    def num_languages(self) -> int:
        # 99 languages plus one per extra token (large-v3 added Cantonese).
        return self.n_vocab - 51765 - int(self.is_multilingual)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "ModelDims":
        names = [f.name for f in fields(cls)]
        if not isinstance(d, dict) or any(not isinstance(d.get(n), int) or d[n] <= 0 for n in names):
            raise BundleError("bundle manifest has malformed model dimensions")
        return cls(**{n: d[n] for n in names})
