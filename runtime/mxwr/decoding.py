"""Decoding one 30-second window, following openai-whisper's `DecodingTask`.

The same rules, in the same order: the initial tokens (previous-text prompt, start-of-transcript
sequence, prefix), language detection when no language is given, `SuppressBlank`,
`SuppressTokens` ("-1" = openai-whisper's non-speech set plus the task and special tokens),
`ApplyTimestampRules`, then greedy / sampled / beam-search token choice, stopping at
end-of-text or after `sample_len` tokens, and the same ranking of a group's candidates.

Two paths, one result. Plain greedy decoding without timestamps (the common fast case) lets
the graphs pick each token on the device: a step sends nothing and brings back only the token
ids and their log-probabilities. Everything else (timestamp rules, sampling, beams) applies the
rules on the host, as openai-whisper does in torch, to each step's logits (`mxwr.scores`): where
the graphs summarize the text tokens, to that summary and the special tokens' logits; else to
every logit in numpy.

Beam search and best-of decode a window's G sequences together: its prompt goes through the
prefill once, `fork` copies that window's caches to its G sequences, and `group_step` steps them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .constants import CHUNK_LENGTH
from .errors import MxwError
from .model import AudioContext, DecoderOutput, Fetch, KVCache, WhisperModel
from .scores import DenseLogits, SplitLogits, log_softmax
from .tokens import SpecialTokens


# Only weights that are not numbers make a log-probability NaN: no transcript, not a wrong one.
NAN = "the model computed NaN log-probabilities: the bundle's weights are corrupt"


@dataclass(frozen=True)
class DecodingOptions:
    """openai-whisper's `DecodingOptions` (fp16 is the bundle's dtype, not an option), plus the
    seed of the sampler used at temperature > 0."""

    task: str = "transcribe"
    language: str | None = None  # None: English for English-only models, detected otherwise
    temperature: float = 0.0
    sample_len: int | None = None  # default n_text_ctx // 2
    best_of: int | None = None
    beam_size: int | None = None
    patience: float | None = None
    length_penalty: float | None = None
    prompt: str | tuple[int, ...] | None = None  # previous text: conditions the window
    prefix: str | tuple[int, ...] | None = None  # forced start of the window's text
    suppress_tokens: str | tuple[int, ...] | None = "-1"
    suppress_blank: bool = True
    without_timestamps: bool = False
    max_initial_timestamp: float | None = 1.0
    seed: int = 0


@dataclass
class DecodingResult:
    tokens: list[int]  # sampled tokens, without the initial tokens and end-of-text
    text: str
    language: str
    avg_logprob: float
    no_speech_prob: float
    temperature: float
    compression_ratio: float
    language_probs: dict[str, float] | None = field(default=None)


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))


def suppress_token_ids(options: DecodingOptions, special: SpecialTokens) -> list[int]:
    """openai-whisper's `DecodingTask._get_suppress_tokens`."""
    value = options.suppress_tokens
    if isinstance(value, str):
        value = [int(t) for t in value.split(",")] if value.strip() else []
    ids = list(value or [])
    if -1 in ids:
        ids = [t for t in ids if t >= 0] + list(special.non_speech)
    ids += [special.transcribe, special.translate, special.sot, special.sot_prev, special.sot_lm]
    if special.no_speech is not None:
        ids.append(special.no_speech)
    return sorted(set(ids))


# ----------------------------------------------------------------------------------------------
# Logit rules (in place on the logits of N rows, `mxwr.scores`, given the tokens so far [N, T])


class SuppressBlank:
    def __init__(self, special: SpecialTokens, sample_begin: int):
        self.ids = np.array(list(special.blank) + [special.eot])
        self.sample_begin = sample_begin

    def apply(self, logits, tokens: np.ndarray) -> None:
        if tokens.shape[1] == self.sample_begin:
            logits.mask_ids(self.ids)


class SuppressTokens:
    def __init__(self, ids: list[int]):
        self.ids = np.array(ids, dtype=np.int64)

    def apply(self, logits, tokens: np.ndarray) -> None:
        logits.mask_ids(self.ids)


class ApplyTimestampRules:
    """Timestamps come in pairs (except right before end-of-text), never decrease, start the
    text, the first one is at most `max_initial_timestamp`; and a timestamp is forced when the
    timestamps together are likelier than any single text token."""

    def __init__(self, special: SpecialTokens, sample_begin: int, max_initial_timestamp_index: int | None):
        self.special = special
        self.sample_begin = sample_begin
        self.max_initial_timestamp_index = max_initial_timestamp_index

    def apply(self, logits, tokens: np.ndarray) -> None:
        ts, eot = self.special.timestamp_begin, self.special.eot
        logits.mask_ids(np.array([self.special.no_timestamps]))
        for k in range(tokens.shape[0]):
            sampled = tokens[k, self.sample_begin :]
            last_was_timestamp = len(sampled) >= 1 and sampled[-1] >= ts
            penultimate_was_timestamp = len(sampled) < 2 or sampled[-2] >= ts
            if last_was_timestamp:
                if penultimate_was_timestamp:  # a pair just closed: text (or end) must follow
                    logits.mask(k, ts)
                else:  # an opening timestamp: no text token may follow it directly
                    logits.mask(k, 0, eot)
            timestamps = sampled[sampled >= ts]
            if len(timestamps) > 0:
                # Never decreasing; a segment that just opened must also have a non-zero length.
                last = timestamps[-1] if last_was_timestamp and not penultimate_was_timestamp else timestamps[-1] + 1
                logits.mask(k, ts, int(last))
        if tokens.shape[1] == self.sample_begin:
            logits.mask(slice(None), 0, ts)
            if self.max_initial_timestamp_index is not None:
                logits.mask(slice(None), ts + self.max_initial_timestamp_index + 1)
        for k in range(tokens.shape[0]):
            if logits.logsumexp_logprobs(k, ts) > logits.max_logprob(k, 0, ts):
                logits.mask(k, 0, ts)


# ----------------------------------------------------------------------------------------------
# Token choice


class GreedySampler:
    """Argmax at temperature 0, else a sample of softmax(logits / T) from a seeded generator
    (which needs every logit: `DenseLogits`)."""

    def __init__(self, temperature: float, eot: int, rng: np.random.Generator):
        self.temperature, self.eot, self.rng = temperature, eot, rng

    def update(self, tokens: np.ndarray, logits, sum_logprobs: np.ndarray):
        if self.temperature == 0:
            next_tokens = logits.argmax()
        else:
            probs = np.exp(log_softmax(logits.logits / np.float32(self.temperature)).astype(np.float64))
            cumulative = np.cumsum(probs, axis=-1)
            draws = self.rng.random(logits.rows) * cumulative[:, -1]
            next_tokens = np.array([np.searchsorted(c, d, side="right") for c, d in zip(cumulative, draws)])
            next_tokens = np.minimum(next_tokens, logits.logits.shape[1] - 1)
        current = logits.logprob(np.arange(len(next_tokens)), next_tokens)
        sum_logprobs += current * (tokens[:, -1] != self.eot)
        next_tokens[tokens[:, -1] == self.eot] = self.eot
        tokens = np.concatenate([tokens, next_tokens[:, None]], axis=1)
        return tokens, bool((tokens[:, -1] == self.eot).all()), None

    def finalize(self, tokens: np.ndarray, sum_logprobs: np.ndarray):
        """[n_audio, n_group, T] -> candidates per audio (each ends with end-of-text)."""
        tokens = np.pad(tokens, ((0, 0), (0, 0), (0, 1)), constant_values=self.eot)
        return [[seq.tolist() for seq in group] for group in tokens], sum_logprobs.tolist()


class BeamSearch:
    """openai-whisper's `BeamSearchDecoder`: each beam proposes its beam_size + 1 best tokens, the
    best beam_size unfinished continuations go on (the caches follow them on the device), and
    finished ones are kept until beam_size * patience of them exist."""

    def __init__(self, beam_size: int, eot: int, patience: float | None):
        self.beam_size, self.eot = beam_size, eot
        self.max_candidates = round(beam_size * (patience or 1.0))
        if self.max_candidates <= 0:
            raise MxwError(f"invalid beam size ({beam_size}) or patience ({patience})")
        self.finished: list[dict[tuple[int, ...], float]] | None = None

    def update(self, tokens: np.ndarray, logits, sum_logprobs: np.ndarray):
        n_audio = tokens.shape[0] // self.beam_size
        if self.finished is None:
            self.finished = [{} for _ in range(n_audio)]
        next_tokens, sources, newly_finished = [], [], []
        for i in range(n_audio):
            scores, source, finished = {}, {}, {}
            for j in range(self.beam_size):
                row = i * self.beam_size + j
                prefix = tokens[row].tolist()
                top = logits.top_k(row, self.beam_size + 1)
                for token, logprob in zip(top.tolist(), logits.logprob(np.full(len(top), row), top)):
                    sequence = tuple(prefix + [token])
                    scores[sequence] = float(np.float32(sum_logprobs[row] + logprob))
                    source[sequence] = row
            saved = 0
            for sequence in sorted(scores, key=scores.get, reverse=True):
                if sequence[-1] == self.eot:
                    finished[sequence] = scores[sequence]
                else:
                    sum_logprobs[len(next_tokens)] = scores[sequence]
                    next_tokens.append(sequence)
                    sources.append(source[sequence])
                    saved += 1
                    if saved == self.beam_size:
                        break
            newly_finished.append(finished)
        for previous, new in zip(self.finished, newly_finished):
            for sequence in sorted(new, key=new.get, reverse=True):
                if len(previous) >= self.max_candidates:
                    break
                previous[sequence] = new[sequence]
        completed = all(len(s) >= self.max_candidates for s in self.finished)
        return np.array(next_tokens, dtype=np.int64), completed, sources

    def finalize(self, tokens: np.ndarray, sum_logprobs: np.ndarray):
        for i, sequences in enumerate(self.finished):
            if len(sequences) < self.beam_size:  # not enough finished: add the best unfinished
                for j in np.argsort(sum_logprobs[i], kind="stable")[::-1]:
                    sequences[tuple(tokens[i, j].tolist()) + (self.eot,)] = float(sum_logprobs[i][j])
                    if len(sequences) >= self.beam_size:
                        break
        return ([[list(s) for s in seqs] for seqs in self.finished],
                [list(seqs.values()) for seqs in self.finished])


def rank(candidates: list[list[int]], sum_logprobs: list[float], length_penalty: float | None) -> int:
    """openai-whisper's `MaximumLikelihoodRanker` for one audio's candidates."""
    scores = []
    for tokens, logprob in zip(candidates, sum_logprobs):
        n = len(tokens)
        scores.append(logprob / (n if length_penalty is None else ((5 + n) / 6) ** length_penalty))
    return int(np.argmax(scores))


# ----------------------------------------------------------------------------------------------
# The task


class DecodingTask:
    """Decodes the bundle's batch of windows with one set of options."""

    def __init__(self, model: WhisperModel, special: SpecialTokens, options: DecodingOptions):
        self.model, self.special = model, special
        self.options = options = self._verify(options)
        self.n_group = options.beam_size or options.best_of or 1
        if self.n_group > 1 and self.n_group != model.group:
            built = f"built with --beams {model.group}" if model.group > 1 else "built without --beams"
            raise MxwError(f"{'beam_size' if options.beam_size else 'best_of'} {self.n_group} needs a bundle built "
                           f"with --beams {self.n_group}; this one decodes {model.group} sequence(s) per window ({built})")
        self.n_ctx = model.dims.n_text_ctx
        self.sample_len = options.sample_len or self.n_ctx // 2
        self.max_tokens = min(self.n_ctx, model.max_seq)  # decoding stops once the sequence is longer
        language = options.language or "en"
        self.sot_sequence = special.sot_sequence(language, options.task)
        if options.without_timestamps:
            self.sot_sequence = self.sot_sequence + [special.no_timestamps]
        self.initial_tokens = self._initial_tokens()
        self.sample_begin = len(self.initial_tokens)
        self.sot_index = self.initial_tokens.index(special.sot)

        suppress = suppress_token_ids(options, special) if options.suppress_tokens else []
        self.rules: list[Any] = []
        if options.suppress_blank:
            self.rules.append(SuppressBlank(special, self.sample_begin))
        if suppress:
            self.rules.append(SuppressTokens(suppress))
        if not options.without_timestamps:
            precision = CHUNK_LENGTH / model.dims.n_audio_ctx
            index = round(options.max_initial_timestamp / precision) if options.max_initial_timestamp else None
            self.rules.append(ApplyTimestampRules(special, self.sample_begin, index))

        # Greedy without timestamps: the graphs apply the masks and pick tokens on the device.
        self.on_device = options.temperature == 0 and self.n_group == 1 and options.without_timestamps
        # Otherwise the rules run on the host: on the graphs' summary of the text tokens where
        # they give one and every logit need not be drawn from, else on every logit.
        self.summarized = model.text_summary and options.temperature == 0
        # The masks the graphs apply (to their greedy choice and summary): the fixed ones, and at
        # the first sampled position the blank ones too (`SuppressBlank`).
        first = suppress + (list(special.blank) + [special.eot] if options.suppress_blank else [])
        self.masks = {False: frozenset(suppress), True: frozenset(first)}  # keyed by "first position"
        self.suppress = model.suppress_mask(suppress)
        self.suppress_first = model.suppress_mask(first)

    def _verify(self, options: DecodingOptions) -> DecodingOptions:
        special = self.special
        if options.task not in ("transcribe", "translate"):
            raise MxwError(f"unknown task {options.task!r}: use transcribe or translate")
        if options.language is not None and options.language not in special.languages:
            raise MxwError(f"unknown language {options.language!r}")
        if not special.multilingual and (options.task == "translate" or options.language not in (None, "en")):
            raise MxwError("this is an English-only model: it transcribes English and cannot translate")
        if options.beam_size is not None and options.best_of is not None:
            raise MxwError("beam_size and best_of can't be given together")
        if options.temperature == 0 and options.best_of is not None:
            raise MxwError("best_of with greedy sampling (T=0) is not compatible")
        if options.patience is not None and options.beam_size is None:
            raise MxwError("patience requires beam_size to be given")
        if options.length_penalty is not None and not 0 <= options.length_penalty <= 1:
            raise MxwError("length_penalty (alpha) should be a value between 0 and 1")
        return options

    def _encode(self, text_or_ids) -> list[int]:
        return self.special.encode(" " + text_or_ids.strip()) if isinstance(text_or_ids, str) else list(text_or_ids)

    def _initial_tokens(self) -> list[int]:
        tokens = list(self.sot_sequence)
        if self.options.prefix:
            prefix = self._encode(self.options.prefix)
            if self.sample_len is not None:
                prefix = prefix[-(self.n_ctx // 2 - self.sample_len):]
            tokens += prefix
        if self.options.prompt:
            prompt = self._encode(self.options.prompt)
            tokens = [self.special.sot_prev] + prompt[-(self.n_ctx // 2 - 1):] + tokens
        if len(tokens) >= self.model.max_seq:
            raise MxwError(f"the prompt and prefix ({len(tokens)} tokens) do not fit the bundle's max_seq")
        return tokens

    # -- the loop ------------------------------------------------------------------------------

    def run(self, ctx: AudioContext) -> list[DecodingResult]:
        """One result per window of the batch."""
        special, model, options = self.special, self.model, self.options
        n_audio = model.batch
        tokens = np.array([self.initial_tokens] * n_audio, dtype=np.int64)
        languages = [options.language or "en"] * n_audio
        language_probs: list[dict[str, float] | None] = [None] * n_audio
        if special.multilingual and options.language is None:
            languages, language_probs = detect_language(model, special, ctx)
            tokens[:, self.sot_index + 1] = [special.languages[lang] for lang in languages]

        cache = model.new_cache("step")
        if self.on_device:
            tokens, sum_logprobs, no_speech = self._loop_on_device(ctx, cache, tokens)
            sampler = GreedySampler(0.0, special.eot, None)
        else:
            sampler = (BeamSearch(self.n_group, special.eot, options.patience) if options.beam_size
                       else GreedySampler(options.temperature, special.eot, np.random.default_rng(options.seed)))
            tokens, sum_logprobs, no_speech = self._loop_on_host(ctx, cache, tokens, sampler)

        n = self.n_group
        candidates, scores = sampler.finalize(tokens.reshape(n_audio, n, -1), sum_logprobs.reshape(n_audio, n))
        if any(score != score for row in scores for score in row) or np.isnan(no_speech).any():
            raise MxwError(NAN)
        results = []
        for i in range(n_audio):
            texts = [c[self.sample_begin : c.index(special.eot, self.sample_begin)] for c in candidates[i]]
            best = rank(texts, scores[i], options.length_penalty)
            sampled = texts[best]
            text = special.vocab.decode(sampled).strip()
            results.append(DecodingResult(
                tokens=sampled, text=text, language=languages[i],
                avg_logprob=float(scores[i][best]) / (len(sampled) + 1), no_speech_prob=float(no_speech[i]),
                temperature=options.temperature, compression_ratio=compression_ratio(text),
                language_probs=language_probs[i],
            ))
        return results

    def _prefill(self, ctx: AudioContext, cache: KVCache, tokens: np.ndarray, last_mask: Any):
        """Each window's initial tokens through the prefill graph, prompt_len at a time; returns
        (the output at the last position, a read of the logits at start-of-transcript, taken
        now and waited for only when `_no_speech` needs them)."""
        model, P, n = self.model, self.model.prompt_len, tokens.shape[1]
        for start in range(0, n, P):
            has_sot = start <= self.sot_index < start + P
            out = model.prefill(ctx, cache, tokens[:, start : start + P], self.sot_index - start if has_sot else 0,
                                last_mask if start + P >= n else self.suppress, offset=start)
            if has_sot:
                at_sot = model.read_later(out.logits)
        return out, at_sot

    def _no_speech(self, at_sot: Fetch) -> np.ndarray:
        """at_sot: the read of the prefill's logits at (last position, start-of-transcript)."""
        logits = at_sot.result()[0][:, 1]
        if self.special.no_speech is None:
            return np.full(len(logits), np.nan)
        return np.exp(log_softmax(logits))[:, self.special.no_speech].astype(np.float64)

    def _loop_on_device(self, ctx, cache, tokens: np.ndarray):
        """Greedy with the graphs picking tokens: the model steps, this loop only keeps score."""
        eot, first = self.special.eot, tokens.shape[1]
        sum_logprobs = np.zeros(len(tokens), dtype=np.float32)
        finished = np.zeros(len(tokens), dtype=bool)
        out, at_sot = self._prefill(ctx, cache, tokens, self.suppress_first)
        # The host loop's bounds: sample_len samples, none after the sequence outgrows max_tokens.
        limit = min(self.sample_len, self.max_tokens - first + 1)
        steps = self.model.greedy(ctx, cache, out, first, self.suppress, limit)
        for next_tokens, logprobs in steps:
            next_tokens = next_tokens.astype(np.int64)
            sum_logprobs += np.where(finished, 0.0, logprobs).astype(np.float32)
            next_tokens[finished] = eot
            tokens = np.concatenate([tokens, next_tokens[:, None]], axis=1)
            finished |= next_tokens == eot
            if finished.all():
                break
        steps.close()
        return tokens, sum_logprobs, self._no_speech(at_sot)

    def _loop_on_host(self, ctx, cache, tokens: np.ndarray, sampler):
        """The rules and the sampler on the host, a step at a time. Several sequences a window:
        the prompt runs once a window, then `fork` gives each sequence its copy of the caches."""
        model, n = self.model, self.n_group
        out, at_sot = self._prefill(ctx, cache, tokens, self.suppress_first)
        role = "step"
        if n > 1:
            role, windows = "group_step", cache
            cache = model.new_cache(role)
            model.fork(windows, cache, tokens.shape[1])
            tokens = np.repeat(tokens, n, axis=0)
        sum_logprobs = np.zeros(len(tokens), dtype=np.float32)
        for i in range(self.sample_len):
            if i > 0:
                out = model.step(ctx, cache, tokens[:, -1], tokens.shape[1] - 1, self.suppress, role=role)
            logits = self._scores(out, first=i == 0, repeat=n if i == 0 else 1)
            for rule in self.rules:
                rule.apply(logits, tokens)
            tokens, completed, sources = sampler.update(tokens, logits, sum_logprobs)
            # The first choice of a window's sequences is made from identical rows: no reorder.
            if i > 0 and sources is not None and sources != list(range(len(sources))):
                model.reorder(cache, sources, tokens.shape[1] - 1)
            if completed or tokens.shape[1] > self.max_tokens:
                break
        return tokens, sum_logprobs, self._no_speech(at_sot)

    def _scores(self, out: DecoderOutput, first: bool, repeat: int):
        """One step's logits as the rules take them (`mxwr.scores`); the prefill's at its last
        position, each window's row repeated for its sequences."""
        eot = self.special.eot
        logits = out.logits.to_numpy()
        if logits.ndim == 3:  # the prefill's [rows, (last position, start-of-transcript), V]
            logits = logits[:, 0]
        if not self.summarized:
            return DenseLogits(np.repeat(logits, repeat, axis=0))
        top_ids, top_logits, lse = (np.repeat(b.to_numpy(), repeat, axis=0) for b in out.text_summary)
        view = SplitLogits(np.repeat(logits[:, eot:], repeat, axis=0), eot, top_ids, top_logits, lse,
                           self.masks[first])
        if not view.finite():  # its choices could not be made
            raise MxwError(NAN)
        return view


def detect_language(model: WhisperModel, special: SpecialTokens,
                    ctx: AudioContext) -> tuple[list[str], list[dict[str, float]]]:
    """openai-whisper's `detect_language`, per window: the start-of-transcript token's logits over
    the language tokens, their most probable language and the probabilities of all of them."""
    if not special.multilingual:
        raise MxwError("this model doesn't have language tokens so it can't perform lang id")
    sot = np.full((model.batch, 1), special.sot, dtype=np.int64)
    logits = model.prefill(ctx, model.new_cache("step"), sot, 0, model.suppress_mask([])).logits.to_numpy()[:, 0]
    codes = list(special.languages)
    ids = np.array([special.languages[c] for c in codes])
    lang_logits = logits[:, ids].astype(np.float32)
    probs = np.exp(log_softmax(lang_logits))
    best = [codes[int(i)] for i in lang_logits.argmax(axis=-1)]
    return best, [dict(zip(codes, map(float, p))) for p in probs]
