"""Special tokens and the vocabulary, read from the bundle (computed at build time from
openai-whisper's tokenizer, so the runtime needs neither tiktoken nor openai-whisper)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .bundle import BundleReader
from .errors import BundleError
from .manifest import SPECIAL_IDS
from .vocab import Vocabulary


@dataclass(frozen=True)
class SpecialTokens:
    sot: int
    eot: int
    sot_prev: int
    sot_lm: int
    no_timestamps: int
    timestamp_begin: int
    transcribe: int
    translate: int
    no_speech: int | None
    languages: dict[str, int]  # language code -> token id, in openai-whisper's order
    non_speech: tuple[int, ...]  # openai-whisper's `non_speech_tokens`
    blank: tuple[int, ...]  # tokenizer.encode(" ")
    multilingual: bool
    vocab: Vocabulary
    pattern: str  # the BPE pre-tokenizer
    n_mergeable: int  # ids below it are byte-pair ranks

    def encode(self, text: str) -> list[int]:
        """Text -> token ids, as openai-whisper's `Tokenizer.encode` (prompts, prefixes).

        tiktoken's BPE over the bundle's own vocabulary: no tokenizer file is read or fetched.
        """
        return self._encoding.encode(text)

    @cached_property
    def _encoding(self):
        """The tiktoken encoding of the bundle's vocabulary, built on first use (50k ranks)."""
        import tiktoken

        pieces, n = self.vocab.pieces, self.n_mergeable
        return tiktoken.Encoding(
            name="mxw", pat_str=self.pattern, mergeable_ranks={pieces[i]: i for i in range(n)},
            special_tokens={pieces[i].decode("utf-8", "replace"): i for i in range(n, len(pieces))},
        )

    def sot_sequence(self, language: str | None, task: str) -> list[int]:
        """openai-whisper's `Tokenizer.sot_sequence` (without the no-timestamps token)."""
        if not self.multilingual:
            return [self.sot]
        return [self.sot, self.languages[language or "en"], getattr(self, task)]

    @classmethod
    def from_bundle(cls, bundle: BundleReader) -> "SpecialTokens":
        t = bundle.manifest.tokenizer  # ids checked against the vocabulary size when read
        pieces = bundle.read_msgpack(t.vocabulary_section)
        if not isinstance(pieces, list) or not t.n_mergeable <= len(pieces) <= bundle.manifest.dims.n_vocab:
            raise BundleError("bundle vocabulary is malformed")
        special = t.special
        return cls(**{k: special[k] for k in SPECIAL_IDS}, no_speech=special["no_speech"], languages=t.languages,
                   non_speech=t.non_speech_tokens, blank=t.blank_tokens, multilingual=t.multilingual,
                   vocab=Vocabulary(pieces, special["timestamp_begin"]), pattern=t.pattern, n_mergeable=t.n_mergeable)
