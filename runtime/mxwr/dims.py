"""What a bundle's graphs are traced for: the model's dimensions (named as openai-whisper's
`ModelDimensions` names them) and the shape fixed at build time."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import BundleError

# Ceilings on what a manifest may claim, far above any Whisper (large-v3: 32 layers, 1280 wide,
# 51866 tokens): the runtime allocates from these numbers before MAX checks anything.
MAX_DIM = {"n_mels": 512, "n_audio_ctx": 1 << 14, "n_audio_state": 1 << 14, "n_audio_head": 256,
           "n_audio_layer": 256, "n_vocab": 1 << 20, "n_text_ctx": 1 << 14, "n_text_state": 1 << 14,
           "n_text_head": 256, "n_text_layer": 256}
MAX_ROWS = 1024  # batch * group


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

    @property
    def text_head_width(self) -> int:
        return self.n_text_state // self.n_text_head

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """openai-whisper's state dict for these dimensions, name -> shape: the weights a bundle
        holds and its graphs are traced for (a checkpoint's tensors are checked against it)."""
        shapes: dict[str, tuple[int, ...]] = {}

        def block(prefix: str, n: int, cross: bool) -> None:
            attentions = ("attn", "cross_attn") if cross else ("attn",)
            for attn in attentions:
                shapes.update({f"{prefix}.{attn}_ln.weight": (n,), f"{prefix}.{attn}_ln.bias": (n,)})
                for proj in ("query", "key", "value", "out"):
                    shapes[f"{prefix}.{attn}.{proj}.weight"] = (n, n)
                    if proj != "key":  # openai-whisper's key projection has no bias
                        shapes[f"{prefix}.{attn}.{proj}.bias"] = (n,)
            shapes.update({f"{prefix}.mlp_ln.weight": (n,), f"{prefix}.mlp_ln.bias": (n,),
                           f"{prefix}.mlp.0.weight": (4 * n, n), f"{prefix}.mlp.0.bias": (4 * n,),
                           f"{prefix}.mlp.2.weight": (n, 4 * n), f"{prefix}.mlp.2.bias": (n,)})

        n = self.n_audio_state
        shapes.update({"encoder.conv1.weight": (n, self.n_mels, 3), "encoder.conv1.bias": (n,),
                       "encoder.conv2.weight": (n, n, 3), "encoder.conv2.bias": (n,),
                       "encoder.positional_embedding": (self.n_audio_ctx, n)})
        for i in range(self.n_audio_layer):
            block(f"encoder.blocks.{i}", n, cross=False)
        shapes.update({"encoder.ln_post.weight": (n,), "encoder.ln_post.bias": (n,)})
        n = self.n_text_state
        shapes.update({"decoder.token_embedding.weight": (self.n_vocab, n),
                       "decoder.positional_embedding": (self.n_text_ctx, n)})
        for i in range(self.n_text_layer):
            block(f"decoder.blocks.{i}", n, cross=True)
        shapes.update({"decoder.ln.weight": (n,), "decoder.ln.bias": (n,)})
        return shapes

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "ModelDims":
        names = [f.name for f in fields(cls)]
        if not isinstance(d, dict) or set(d) != set(names) or any(
            type(d[n]) is not int or not 0 < d[n] <= MAX_DIM[n] for n in names
        ):
            raise BundleError("bundle manifest has malformed model dimensions")
        dims = cls(**{n: d[n] for n in names})
        if dims.n_audio_state % dims.n_audio_head or dims.n_text_state % dims.n_text_head:
            raise BundleError("bundle manifest has model dimensions whose heads do not divide the width")
        return dims


@dataclass(frozen=True)
class Shape:
    """What is fixed at build time, besides the model's own dimensions."""

    batch: int  # windows per call (the encoder's batch)
    max_seq: int  # self-attention cache length, <= n_text_ctx
    prompt_len: int  # prefill length; longer prompts continue through the step graph
    group: int = 1  # sequences decoded per window (beams, best-of samples)

    @property
    def rows(self) -> int:
        """The decoder graphs' batch: every sequence of every window."""
        return self.batch * self.group

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, dims: ModelDims) -> "Shape":
        names = [f.name for f in fields(cls)]
        if not isinstance(d, dict) or set(d) != set(names) or any(type(d[n]) is not int or d[n] <= 0 for n in names):
            raise BundleError("bundle manifest has a malformed shape")
        shape = cls(**{n: d[n] for n in names})
        if shape.max_seq > dims.n_text_ctx or shape.prompt_len > shape.max_seq or shape.rows > MAX_ROWS:
            raise BundleError(
                f"bundle manifest's shape {shape.to_dict()} does not fit the model (n_text_ctx {dims.n_text_ctx})"
            )
        return shape
