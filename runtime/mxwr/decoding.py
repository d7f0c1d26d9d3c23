"""Greedy decoding of one 30-second window, following openai-whisper's `DecodingTask`.

The same rules, in the same order: the start-of-transcript sequence (language and task tokens
for multilingual models, language detected when not given), `SuppressBlank` on the first
sampled token, `SuppressTokens` ("-1" = openai-whisper's non-speech set plus the task and
special tokens), argmax sampling, stop at end-of-text or after `sample_len` tokens.

The suppression masks live on the device and the graphs pick each token there, so a step
sends nothing to the device and brings back only the token ids and their log-probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import MxwError
from .model import AudioContext, WhisperModel
from .tokens import SpecialTokens


@dataclass(frozen=True)
class DecodingOptions:
    task: str = "transcribe"
    language: str | None = None  # None: English for English-only models, detected otherwise
    sample_len: int | None = None  # default n_text_ctx // 2, as openai-whisper
    suppress_blank: bool = True
    suppress_tokens: str = "-1"


@dataclass
class DecodingResult:
    tokens: list[int]  # sampled tokens, without the prompt and end-of-text
    text: str
    language: str
    avg_logprob: float
    no_speech_prob: float
    language_probs: dict[str, float] | None = field(default=None)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def suppress_token_ids(options: DecodingOptions, special: SpecialTokens) -> list[int]:
    """openai-whisper's `DecodingTask._get_suppress_tokens`."""
    text = options.suppress_tokens.strip()
    ids = [int(t) for t in text.split(",")] if text else []
    if -1 in ids:
        ids = [t for t in ids if t >= 0] + list(special.non_speech)
    ids += [special.transcribe, special.translate, special.sot, special.sot_prev, special.sot_lm]
    if special.no_speech is not None:
        ids.append(special.no_speech)
    return sorted(set(ids))


class GreedyDecoder:
    """Decodes a batch of windows (the bundle's batch size) with the bundle's graphs."""

    def __init__(self, model: WhisperModel, special: SpecialTokens, options: DecodingOptions):
        if options.task not in ("transcribe", "translate"):
            raise MxwError(f"unknown task {options.task!r}: use transcribe or translate")
        if options.language is not None and options.language not in special.languages:
            raise MxwError(f"unknown language {options.language!r}")
        if not special.multilingual and (options.task == "translate" or options.language not in (None, "en")):
            raise MxwError("this is an English-only model: it transcribes English and cannot translate")
        self.model = model
        self.special = special
        self.options = options
        self.sample_len = options.sample_len or model.dims.n_text_ctx // 2
        suppress = suppress_token_ids(options, special)
        first = suppress + (list(special.blank) + [special.eot] if options.suppress_blank else [])
        # Device-resident masks: the graphs apply them and pick the token on the device.
        self.suppress = model.suppress_mask(suppress)
        self.suppress_first = model.suppress_mask(first)  # SuppressBlank: the first sampled token only
        self.no_suppress = model.suppress_mask([])

    def detect_language(self, ctx: AudioContext, cache) -> tuple[list[str], list[dict[str, float]]]:
        """openai-whisper's `detect_language`: the start-of-transcript token's logits over the
        language tokens."""
        b = self.model.batch
        sot = np.full((b, 1), self.special.sot, dtype=np.int64)
        logits = self.model.prefill(ctx, cache, sot, 0, self.no_suppress).logits.to_numpy()[:, 0]
        codes = list(self.special.languages)
        ids = np.array([self.special.languages[c] for c in codes])
        lang_logits = logits[:, ids]
        probs = np.exp(_log_softmax(lang_logits.astype(np.float64)))
        best = [codes[int(i)] for i in lang_logits.argmax(axis=-1)]
        return best, [dict(zip(codes, map(float, p))) for p in probs]

    def decode(self, ctx: AudioContext) -> list[DecodingResult]:
        special, model = self.special, self.model
        cache = model.new_cache()
        b = model.batch
        language_probs: list[dict[str, float] | None] = [None] * b
        if special.multilingual and self.options.language is None:
            languages, language_probs = self.detect_language(ctx, cache)
        else:
            languages = [self.options.language or "en"] * b

        prompts = [special.sot_sequence(lang, self.options.task) + [special.no_timestamps] for lang in languages]
        tokens = np.array(prompts, dtype=np.int64)  # [B, T]; same length for every row
        sample_begin = tokens.shape[1]
        sot_index = 0

        sum_logprobs = np.zeros(b)
        finished = np.zeros(b, dtype=bool)
        out, at_sot = self._prefill(ctx, cache, tokens, sot_index)
        no_speech_prob = np.zeros(b)
        if special.no_speech is not None:
            no_speech_prob = np.exp(_log_softmax(at_sot.astype(np.float64)))[:, special.no_speech]
        for i in range(self.sample_len):
            if i > 0:
                # The previous token goes back in as the device buffer the graph returned.
                out = model.step(ctx, cache, out.token, tokens.shape[1] - 1, self.suppress)
            next_tokens = out.token.to_numpy().astype(np.int64)
            sum_logprobs += np.where(finished, 0.0, out.logprob.to_numpy())
            next_tokens[finished] = special.eot
            tokens = np.concatenate([tokens, next_tokens[:, None]], axis=1)
            finished |= next_tokens == special.eot
            if finished.all() or tokens.shape[1] > model.max_seq:  # openai-whisper: > n_ctx
                break

        results = []
        for row in range(b):
            sampled = tokens[row, sample_begin:].tolist()
            if special.eot in sampled:
                sampled = sampled[: sampled.index(special.eot)]
            results.append(
                DecodingResult(
                    tokens=sampled,
                    text=special.vocab.decode(sampled).strip(),
                    language=languages[row],
                    avg_logprob=float(sum_logprobs[row] / (len(sampled) + 1)),
                    no_speech_prob=float(no_speech_prob[row]),
                    language_probs=language_probs[row],
                )
            )
        return results

    def _prefill(self, ctx, cache, tokens: np.ndarray, sot_index: int):
        """Runs the prompt through the prefill graph, continuing with single steps past its fixed
        length; returns (the output at the last position, logits at the start-of-transcript)."""
        P = self.model.prompt_len
        first = self.suppress_first if tokens.shape[1] <= P else self.no_suppress
        out = self.model.prefill(ctx, cache, tokens[:, :P], sot_index, first)
        at_sot = out.logits.to_numpy()[:, 1]
        for pos in range(P, tokens.shape[1]):
            last = pos == tokens.shape[1] - 1
            out = self.model.step(ctx, cache, tokens[:, pos], pos, self.suppress_first if last else self.no_suppress)
        return out, at_sot
