"""Special tokens and the vocabulary, read from the bundle (computed at build time from
openai-whisper's tokenizer, so the runtime needs neither tiktoken nor openai-whisper)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .bundle import BundleReader
from .errors import BundleError, MxwError
from .manifest import SPECIAL_IDS
from .validate import check_vocabulary
from .vocab import Vocabulary


# openai-whisper's names of the special tokens (its tokenizer's `specials`), by manifest field.
SPECIAL_TEXTS = {"sot": "<|startoftranscript|>", "eot": "<|endoftext|>", "sot_prev": "<|startofprev|>",
                 "sot_lm": "<|startoflm|>", "no_timestamps": "<|notimestamps|>", "timestamp_begin": "<|0.00|>",
                 "transcribe": "<|transcribe|>", "translate": "<|translate|>", "no_speech": "<|nospeech|>"}


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
        try:
            return self._encoding.encode(text)
        except ValueError:  # tiktoken's refusal of a special token's text, as openai-whisper's encode refuses it
            raise MxwError("cannot encode the prompt: it holds the text of a special token (such as "
                           "<|endoftext|>)") from None

    @cached_property
    def _encoding(self):
        """The tiktoken encoding of the bundle's vocabulary, built on first use (50k ranks)."""
        import tiktoken

        pieces, n = self.vocab.pieces, self.n_mergeable
        if any(not p for p in pieces[n:]):  # an empty special token would be found in every text
            raise BundleError("bundle vocabulary has a special token without text")
        ranks = self._ranks
        try:
            return tiktoken.Encoding(
                name="mxw", pat_str=self.pattern, mergeable_ranks=ranks,
                special_tokens={pieces[i].decode("utf-8", "replace"): i for i in range(n, len(pieces))},
            )
        except Exception as e:  # tiktoken's own types; a vocabulary it refuses is a corrupt bundle
            raise BundleError(f"bundle vocabulary does not make a tokenizer ({type(e).__name__}: {e})") from None

    @cached_property
    def _ranks(self) -> dict[bytes, int]:
        pieces, n = self.vocab.pieces, self.n_mergeable
        ranks = {pieces[i]: i for i in range(n)}
        # BPE starts from single bytes (tiktoken panics, a BaseException past any handler here, on
        # one without a rank); a piece twice would leave one of its ids unreachable.
        if len(ranks) != n or any(bytes([b]) not in ranks for b in range(256)):
            raise BundleError("bundle vocabulary's byte-pair ranks are not a tokenizer's (a byte missing, or a piece twice)")
        return ranks

    def sot_sequence(self, language: str | None, task: str) -> list[int]:
        """openai-whisper's `Tokenizer.sot_sequence` (without the no-timestamps token)."""
        if not self.multilingual:
            return [self.sot]
        return [self.sot, self.languages[language or "en"], getattr(self, task)]

    @classmethod
    def from_bundle(cls, bundle: BundleReader) -> "SpecialTokens":
        t = bundle.manifest.tokenizer  # ids checked against the vocabulary size when read
        pieces = check_vocabulary(bundle.read_msgpack(t.vocabulary_section), t.n_mergeable, bundle.manifest.dims.n_vocab)
        special = t.special
        # The vocabulary holds special tokens as their text: each id must name its token there (an
        # id moved to a neighbour would decode with another token's meaning, silently).
        named = [(special[k], text) for k, text in SPECIAL_TEXTS.items() if special[k] is not None]
        named += [(i, f"<|{code}|>") for code, i in t.languages.items()]
        if any(i >= len(pieces) or pieces[i] != text.encode() for i, text in named):
            raise BundleError("bundle manifest's special token ids do not name those tokens in its vocabulary")
        tokens = cls(**{k: special[k] for k in SPECIAL_IDS}, no_speech=special["no_speech"], languages=t.languages,
                     non_speech=t.non_speech_tokens, blank=t.blank_tokens, multilingual=t.multilingual,
                     vocab=Vocabulary(pieces, special["timestamp_begin"]), pattern=t.pattern,
                     n_mergeable=t.n_mergeable)
        # What decoding suppresses must be openai-whisper's sets for this vocabulary: one id off
        # changes every log-probability, silently.
        if tokens.non_speech != tokens._non_speech_of_vocabulary() or tokens.blank != tokens._symbol(" "):
            raise BundleError("bundle manifest's suppressed token sets are not openai-whisper's for its vocabulary")
        return tokens

    def _non_speech_of_vocabulary(self) -> tuple[int, ...]:
        """openai-whisper's `Tokenizer.non_speech_tokens`, computed the way it computes them."""
        symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
        symbols += "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
        miscellaneous = set("♩♪♫♬♭♮♯")  # the first token of each, however many it takes
        result = {self._symbol(" -")[0], self._symbol(" '")[0]}
        for symbol in symbols + list(miscellaneous):
            for tokens in (self._symbol(symbol), self._symbol(" " + symbol)):
                if len(tokens) == 1 or symbol in miscellaneous:
                    result.add(tokens[0])
        return tuple(sorted(result))

    def _symbol(self, text: str) -> tuple[int, ...]:
        """`encode(text)` for a run of symbols after at most one space: one pre-token under
        openai-whisper's pattern (` ?[^\\s\\p{L}\\p{N}]+`), so tiktoken's byte-pair merge of it alone
        (the whole piece if it is one rank, else the lowest-ranked adjacent pair merged first,
        the leftmost of equals). Pure Python: checking the sets needs no 50k-rank tiktoken build."""
        ranks, parts = self._ranks, [bytes([b]) for b in text.encode()]
        if (whole := ranks.get(b"".join(parts))) is not None:
            return (whole,)
        while len(parts) > 1:
            pairs = [(r, i) for i, (a, b) in enumerate(zip(parts, parts[1:])) if (r := ranks.get(a + b)) is not None]
            if not pairs:
                break
            _, i = min(pairs)
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        return tuple(ranks[p] for p in parts)
