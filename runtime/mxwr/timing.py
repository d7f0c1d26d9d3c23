"""Word-level timestamps: the host-side math of openai-whisper's `whisper/timing.py`, in numpy.

The model side (one decoder forward over `[*sot_sequence, no_timestamps, *text, eot]` that yields
the alignment heads' cross-attention scores and the logits) runs elsewhere; everything after it is
here and follows openai-whisper step by step, so that the same inputs give the same words, times
and probabilities.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .constants import APPEND_PUNCTUATIONS, HOP_LENGTH, PREPEND_PUNCTUATIONS, SAMPLE_RATE, TOKENS_PER_SECOND
from .vocab import Vocabulary

UNICODE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})  # no spaces between words
SENTENCE_END_MARKS = ".。!！?？"


@dataclass
class WordTiming:
    word: str
    tokens: list[int]
    start: float
    end: float
    probability: float


def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Median of each `width` window along the last axis, reflect-padded (openai-whisper's)."""
    pad = width // 2
    if x.shape[-1] <= pad:  # reflect padding needs more samples than the pad; whisper gives up too
        return x
    assert width > 0 and width % 2 == 1, "`width` should be an odd number"
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
    return np.partition(windows, pad, axis=-1)[..., pad]


def dtw(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """openai-whisper's `dtw_cpu`: (text indices, time indices) of the cheapest monotonic path.

    Cell (i, j) depends only on (i-1, j-1), (i-1, j) and (i, j-1), so each anti-diagonal i + j = d
    is computed at once from the two before it. The arithmetic is whisper's: float64 costs added
    to a float32 accumulator (rounded on store), and ties go diagonal < up < left as its if-chain.
    """
    x = np.asarray(x, dtype=np.float64)
    n, m = x.shape
    cost = np.full((n + 1, m + 1), np.inf, dtype=np.float32)
    cost[0, 0] = 0
    trace = np.full((n + 1, m + 1), -1, dtype=np.int8)
    for d in range(2, n + m + 1):
        i = np.arange(max(1, d - m), min(n, d - 1) + 1)
        j = d - i
        c0, c1, c2 = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
        diag = (c0 < c1) & (c0 < c2)
        up = ~diag & (c1 < c0) & (c1 < c2)
        c = np.where(diag, c0, np.where(up, c1, c2))
        cost[i, j] = x[i - 1, j - 1] + c.astype(np.float64)
        trace[i, j] = np.where(diag, 0, np.where(up, 1, 2))

    # backtrace from the far corner; the borders only lead back towards (0, 0)
    trace[0, :] = 2
    trace[:, 0] = 1
    steps = trace.tolist()
    i, j = n, m
    path = []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        t = steps[i][j]
        if t == 0:
            i, j = i - 1, j - 1
        elif t == 1:
            i -= 1
        elif t == 2:
            j -= 1
        else:
            raise ValueError("Unexpected trace[i, j]")
    result = np.array(path[::-1], dtype=np.int64).reshape(-1, 2).T
    return result[0], result[1]


def split_tokens_on_unicode(tokens: Sequence[int], vocab: Vocabulary) -> tuple[list[str], list[list[int]]]:
    """Cut wherever the tokens so far decode to whole characters; a U+FFFD that is really in the
    text (not a character cut in half) also ends a piece, as in openai-whisper."""
    decoded_full = vocab.decode_with_timestamps(tokens)
    words: list[str] = []
    word_tokens: list[list[int]] = []
    current: list[int] = []
    offset = 0  # characters of decoded_full already taken
    for token in tokens:
        current.append(token)
        decoded = vocab.decode_with_timestamps(current)
        if "\ufffd" not in decoded or decoded_full[offset + decoded.index("\ufffd")] == "\ufffd":
            words.append(decoded)
            word_tokens.append(current)
            current = []
            offset += len(decoded)
    return words, word_tokens


def split_tokens_on_spaces(tokens: Sequence[int], vocab: Vocabulary, eot: int) -> tuple[list[str], list[list[int]]]:
    """Join the character pieces into words: a new word at a leading space, a special token or
    punctuation (`strip() in string.punctuation` is a substring test, kept as whisper has it)."""
    words: list[str] = []
    word_tokens: list[list[int]] = []
    for sub, sub_tokens in zip(*split_tokens_on_unicode(tokens, vocab)):
        if sub_tokens[0] >= eot or sub.startswith(" ") or sub.strip() in string.punctuation or not words:
            words.append(sub)
            word_tokens.append(sub_tokens)
        else:
            words[-1] += sub
            word_tokens[-1].extend(sub_tokens)
    return words, word_tokens


def split_to_word_tokens(tokens: Sequence[int], vocab: Vocabulary, language: str | None,
                         eot: int) -> tuple[list[str], list[list[int]]]:
    """openai-whisper's `Tokenizer.split_to_word_tokens`. Languages written without spaces are
    cut at every character boundary (no morphological analysis), the rest at spaces."""
    if language in UNICODE_LANGUAGES:
        return split_tokens_on_unicode(tokens, vocab)
    return split_tokens_on_spaces(tokens, vocab, eot)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def find_alignment(qk: np.ndarray, token_probs: np.ndarray, text_tokens: Sequence[int], sot_len: int,
                   num_frames: int, vocab: Vocabulary, language: str | None, *, eot: int,
                   medfilt_width: int = 7, qk_scale: float = 1.0) -> list[WordTiming]:
    """openai-whisper's `find_alignment` after its decoder forward.

    qk: float32 [alignment heads, T, n_audio_ctx], raw scaled q.k (pre-softmax, unmasked) for the
    tokens `[*sot_sequence, no_timestamps, *text_tokens, eot]` (T of them, sot_len = the sot
    sequence's length); token_probs: [len(text_tokens)], the probability each text token had when
    it was predicted, under the softmax over the text vocabulary (the align graph's output).
    """
    text_tokens = list(text_tokens)
    if not text_tokens:
        return []
    probs = np.asarray(token_probs, dtype=np.float64)

    # float32 throughout, as whisper's torch path: softmax over the frames of real audio only,
    # each frame standardised across tokens, smoothed along time, then the heads averaged
    w = np.asarray(qk, dtype=np.float32)[:, :, : num_frames // 2] * np.float32(qk_scale)
    w = _softmax(w)
    mean = w.mean(axis=-2, keepdims=True)
    std = np.sqrt(((w - mean) ** 2).mean(axis=-2, keepdims=True))
    w = median_filter((w - mean) / std, medfilt_width)
    matrix = w.mean(axis=0)[sot_len:-1]  # text tokens and eot; no_timestamps is row 0
    text_indices, time_indices = dtw(-matrix)

    words, word_tokens = split_to_word_tokens(text_tokens + [eot], vocab, language, eot)
    if len(word_tokens) <= 1:  # eot alone: nothing to time
        return []
    word_boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))

    # the path's first frame at each token (where it steps down a row) is that token's start
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = time_indices[jumps] / TOKENS_PER_SECOND
    starts = jump_times[word_boundaries[:-1]]
    ends = jump_times[word_boundaries[1:]]
    word_probs = [np.mean(probs[i:j]) for i, j in zip(word_boundaries[:-1], word_boundaries[1:])]
    return [WordTiming(*fields) for fields in zip(words, word_tokens, starts, ends, word_probs)]


def merge_punctuations(alignment: list[WordTiming], prepended: str, appended: str) -> None:
    """Fold opening punctuation into the next word and closing punctuation into the previous one,
    in place; emptied entries stay (word "" and no tokens) so token counts still line up."""
    # right to left, so a run of opening marks all ends on the word after them
    i, j = len(alignment) - 2, len(alignment) - 1
    while i >= 0:
        prev, nxt = alignment[i], alignment[j]
        if prev.word.startswith(" ") and prev.word.strip() in prepended:
            nxt.word = prev.word + nxt.word
            nxt.tokens = prev.tokens + nxt.tokens
            prev.word, prev.tokens = "", []
        else:
            j = i
        i -= 1

    # left to right, so a run of closing marks all ends on the word before them
    i, j = 0, 1
    while j < len(alignment):
        prev, nxt = alignment[i], alignment[j]
        if not prev.word.endswith(" ") and nxt.word in appended:
            prev.word = prev.word + nxt.word
            prev.tokens = prev.tokens + nxt.tokens
            nxt.word, nxt.tokens = "", []
        else:
            i = j
        j += 1


def add_word_timestamps(segments: list[dict], alignment_fn: Callable[[list[int]], list[WordTiming]], *,
                        eot: int, last_speech_timestamp: float,
                        prepend_punctuations: str = PREPEND_PUNCTUATIONS,
                        append_punctuations: str = APPEND_PUNCTUATIONS) -> None:
    """openai-whisper's `add_word_timestamps` for one window's segments (dicts as transcribe builds
    them, all of one window: the first one's "seek" gives the time offset). Adds "words" to each
    segment and may move its "start"/"end", in place. `alignment_fn(text_tokens)` is
    `find_alignment` over the whole window's text, model included."""
    if not segments:
        return

    tokens_per_segment = [[t for t in s["tokens"] if t < eot] for s in segments]
    text_tokens = [t for tokens in tokens_per_segment for t in tokens]
    # whisper's find_alignment returns [] for no text without running the model; skip it too
    alignment = alignment_fn(text_tokens) if text_tokens else []

    durations = np.array([t.end - t.start for t in alignment])
    durations = durations[durations.nonzero()]
    median_duration = min(0.7, float(np.median(durations) if len(durations) > 0 else 0.0))
    max_duration = median_duration * 2

    # whisper's hack: a sentence mark, or the word after one, may not be longer than max_duration
    # (DTW tends to stretch them over pauses)
    if len(durations) > 0:
        for i in range(1, len(alignment)):
            if alignment[i].end - alignment[i].start > max_duration:
                if alignment[i].word in SENTENCE_END_MARKS:
                    alignment[i].end = alignment[i].start + max_duration
                elif alignment[i - 1].word in SENTENCE_END_MARKS:
                    alignment[i].start = alignment[i].end - max_duration

    merge_punctuations(alignment, prepend_punctuations, append_punctuations)

    time_offset = segments[0]["seek"] * HOP_LENGTH / SAMPLE_RATE  # in whisper's order: same rounding
    word_index = 0
    for segment, seg_tokens in zip(segments, tokens_per_segment):
        # hand out alignment entries (emptied ones included) until this segment's tokens are used
        saved_tokens = 0
        words = []
        while word_index < len(alignment) and saved_tokens < len(seg_tokens):
            timing = alignment[word_index]
            if timing.word:
                # np.round, not round(): whisper's times are numpy floats and numpy's rounding
                # (scale, rint, unscale) differs from Python's on some values, e.g. 2.675
                words.append(dict(word=timing.word,
                                  start=float(np.round(time_offset + timing.start, 2)),
                                  end=float(np.round(time_offset + timing.end, 2)),
                                  probability=float(timing.probability)))
            saved_tokens += len(timing.tokens)
            word_index += 1

        if words:
            # whisper's hack: after a pause, the first (and second) word may not be long
            first, last = words[0], words[-1]
            if first["end"] - last_speech_timestamp > median_duration * 4 and (
                first["end"] - first["start"] > max_duration
                or (len(words) > 1 and words[1]["end"] - first["start"] > max_duration * 2)
            ):
                if len(words) > 1 and words[1]["end"] - words[1]["start"] > max_duration:
                    boundary = max(words[1]["end"] / 2, words[1]["end"] - max_duration)
                    first["end"] = words[1]["start"] = boundary
                first["start"] = max(0, first["end"] - max_duration)

            # a first word starting well before its segment is too long: trust the segment
            if segment["start"] < first["end"] and segment["start"] - 0.5 > first["start"]:
                first["start"] = max(0, min(first["end"] - median_duration, segment["start"]))
            else:
                segment["start"] = first["start"]

            # likewise a last word ending well after its segment
            if segment["end"] > last["start"] and segment["end"] + 0.5 < last["end"]:
                last["end"] = max(last["start"] + median_duration, segment["end"])
            else:
                segment["end"] = last["end"]

            last_speech_timestamp = segment["end"]

        segment["words"] = words
