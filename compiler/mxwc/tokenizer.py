"""What the runtime needs of openai-whisper's tokenizer, computed once at build time: the
vocabulary as bytes, the special tokens, and the token sets its decoding rules use."""

from __future__ import annotations

from typing import Any

from mxwr.dims import ModelDims


def tokenizer_tables(dims: ModelDims) -> tuple[list[bytes], dict[str, Any]]:
    """(token id -> bytes for every id of the model, manifest `tokenizer` entry less its section)."""
    from whisper.tokenizer import get_tokenizer

    tok = get_tokenizer(dims.is_multilingual, num_languages=dims.num_languages)
    enc = tok.encoding
    if enc.n_vocab > dims.n_vocab:
        raise ValueError(f"tokenizer has {enc.n_vocab} tokens but the model only {dims.n_vocab}")
    pieces = [enc.decode_single_token_bytes(i) for i in range(enc.n_vocab)]
    entry = {
        "kind": "tiktoken-bytes",
        "encoding": enc.name.removesuffix(".tiktoken"),
        "multilingual": dims.is_multilingual,
        "special": {
            "sot": tok.sot, "eot": tok.eot, "sot_prev": tok.sot_prev, "sot_lm": tok.sot_lm,
            "no_timestamps": tok.no_timestamps, "timestamp_begin": tok.timestamp_begin,
            "transcribe": tok.transcribe, "translate": tok.translate, "no_speech": tok.no_speech,
        },
        "languages": dict(zip(tok.all_language_codes, tok.all_language_tokens)),
        "non_speech_tokens": list(tok.non_speech_tokens),
        "blank_tokens": tok.encode(" "),
        # Enough to rebuild the BPE encoder at run time (prompts): ids below n_mergeable are the
        # byte-pair ranks, the rest special tokens; the pre-tokenizing pattern splits the text.
        "pattern": enc._pat_str,
        "n_mergeable": len(enc._mergeable_ranks),
    }
    return pieces, entry


def mel_filters(n_mels: int):
    """openai-whisper's librosa-derived mel filterbank [n_mels, 201] (float32)."""
    import numpy as np
    from whisper.audio import mel_filters as whisper_mel_filters

    return np.ascontiguousarray(whisper_mel_filters("cpu", n_mels).numpy().astype(np.float32))
