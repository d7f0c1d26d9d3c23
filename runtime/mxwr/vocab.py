"""Token ids -> text with the bundle's vocabulary (token id -> bytes): no tiktoken needed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .errors import BundleError


class Vocabulary:
    def __init__(self, pieces: Sequence[bytes], timestamp_begin: int):
        if not all(isinstance(p, bytes) for p in pieces):
            raise BundleError("bundle vocabulary is malformed (entries must be bytes)")
        self.pieces = list(pieces)
        self.timestamp_begin = timestamp_begin

    def __len__(self) -> int:
        return len(self.pieces)

    def decode(self, tokens: Iterable[int]) -> str:
        """As openai-whisper's `Tokenizer.decode`: timestamp tokens dropped, bytes joined, then
        decoded as UTF-8 with replacement (tiktoken's behaviour)."""
        try:
            data = b"".join(self.pieces[t] for t in tokens if t < self.timestamp_begin)
        except IndexError:
            raise BundleError("token id outside the bundle's vocabulary") from None
        return data.decode("utf-8", errors="replace")
