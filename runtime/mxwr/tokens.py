"""Special tokens and the vocabulary, read from the bundle (computed at build time from
openai-whisper's tokenizer, so the runtime needs neither tiktoken nor openai-whisper)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .bundle import BundleReader
from .errors import BundleError
from .vocab import Vocabulary

_IDS = ("sot", "eot", "sot_prev", "sot_lm", "no_timestamps", "timestamp_begin", "transcribe", "translate")


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
    pattern: str | None = None  # the BPE pre-tokenizer (bundles of format 1.1 on)
    n_mergeable: int | None = None

    def encode(self, text: str) -> list[int]:
        """Text -> token ids, as openai-whisper's `Tokenizer.encode` (prompts, prefixes).

        tiktoken's BPE over the bundle's own vocabulary: no tokenizer file is read or fetched.
        """
        if self.pattern is None or self.n_mergeable is None:
            raise BundleError("this bundle cannot encode text prompts (built before format 1.1): rebuild it")
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
        t: Any = bundle.manifest.get("tokenizer")
        try:
            ids = {k: t["special"][k] for k in _IDS}
            no_speech = t["special"].get("no_speech")
            languages = dict(t["languages"])
            non_speech = tuple(t["non_speech_tokens"])
            blank = tuple(t["blank_tokens"])
            multilingual = t["multilingual"]
            section = t["vocabulary_section"]
        except (KeyError, TypeError, ValueError):
            raise BundleError("bundle manifest has a malformed tokenizer entry") from None
        n_vocab = bundle.manifest["dims"]["n_vocab"]
        every = [*ids.values(), *languages.values(), *non_speech, *blank] + ([no_speech] if no_speech is not None else [])
        if not all(isinstance(i, int) and 0 <= i < n_vocab for i in every) or not isinstance(multilingual, bool):
            raise BundleError("bundle manifest has token ids outside the vocabulary")
        pieces = bundle.read_msgpack(section)
        if not isinstance(pieces, list) or len(pieces) > n_vocab:
            raise BundleError("bundle vocabulary is malformed")
        vocab = Vocabulary(pieces, ids["timestamp_begin"])
        pattern, n_mergeable = t.get("pattern"), t.get("n_mergeable")
        if not isinstance(pattern, (str, type(None))) or not isinstance(n_mergeable, (int, type(None))):
            raise BundleError("bundle manifest has a malformed tokenizer pattern")
        return cls(**ids, no_speech=no_speech, languages=languages, non_speech=non_speech,
                   blank=blank, multilingual=multilingual, vocab=vocab, pattern=pattern, n_mergeable=n_mergeable)

