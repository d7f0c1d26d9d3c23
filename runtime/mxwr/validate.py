"""What a bundle's sections hold, checked for meaning (the manifest is checked when it is read,
`Manifest.from_dict`; each section's checksum when it is first read).

A checksum only says the bytes are the builder's; these say they are bytes a builder could have
meant: a mel filterbank of finite, non-negative weights, a vocabulary of byte strings, finite
weights. `contents` runs every check without loading a graph (`signing.verify_bundle`: what
`mxwr inspect` and `mxwc verify` report); the runtime runs the cheap ones whenever it loads the
sections they are about.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import BundleError

if TYPE_CHECKING:
    from .bundle import BundleReader


def check_frontend(arrays: dict[str, np.ndarray], where: object) -> None:
    """The mel filterbank is finite and non-negative; the STFT basis (a windowed cos/sin) finite
    and within [-1, 1]."""
    filters, basis = arrays["mel_filters"], arrays["stft_basis"]
    if not (np.isfinite(filters).all() and (filters >= 0).all()):
        raise BundleError(f"{where}'s mel filterbank holds negative or non-finite values")
    if not (np.isfinite(basis).all() and (np.abs(basis) <= 1).all()):
        raise BundleError(f"{where}'s STFT basis holds values that no windowed cosine takes")


def check_vocabulary(pieces: Any, n_mergeable: int, n_vocab: int) -> list[bytes]:
    if not (isinstance(pieces, list) and n_mergeable <= len(pieces) <= n_vocab
            and all(isinstance(p, bytes) for p in pieces)):
        raise BundleError("bundle vocabulary is malformed (a list of byte strings, one per token, is expected)")
    return pieces


def check_weights(arrays: dict[str, np.ndarray], dtype: str, where: object) -> None:
    """Every weight is a number: NaN or inf in a checkpoint makes every log-probability NaN."""
    for name, array in arrays.items():
        if dtype == "bfloat16":  # uint16 bit patterns: all exponent bits set is inf or NaN
            finite = not ((array & 0x7F80) == 0x7F80).any()
        else:
            finite = bool(np.isfinite(array).all())
        if not finite:
            raise BundleError(f"{where}'s weights hold non-finite values ({name[:80]})")


def contents(reader: BundleReader) -> None:
    """The meaning of every section but the compiled graphs (which only the MAX that compiled
    them can read); each section's checksum is checked as it is read."""
    m = reader.manifest
    check_frontend(reader.read_tensors(m.audio.mel_filters_section), reader.path)
    check_vocabulary(reader.read_msgpack(m.tokenizer.vocabulary_section), m.tokenizer.n_mergeable, m.dims.n_vocab)
    for name in sorted({t.weights_section for t in m.targets}):
        dtype = next(t.dtype for t in m.targets if t.weights_section == name)
        check_weights(reader.read_tensors(name), dtype, reader.path)
