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

    def decode_with_timestamps(self, tokens: Iterable[int]) -> str:
        """As openai-whisper's `Tokenizer.decode_with_timestamps`: every token kept, timestamps
        written "<|1.08|>". Joined as bytes before decoding, as tiktoken does, so a character split
        across tokens still decodes whole."""
        def piece(t: int) -> bytes:
            if t >= self.timestamp_begin:  # tiktoken's names for them: "<|%.2f|>" % (i * 0.02)
                return ("<|%.2f|>" % ((t - self.timestamp_begin) * 0.02)).encode()
            return self.pieces[t]

        try:
            data = b"".join(piece(t) for t in tokens)
        except IndexError:
            raise BundleError("token id outside the bundle's vocabulary") from None
        return data.decode("utf-8", errors="replace")
