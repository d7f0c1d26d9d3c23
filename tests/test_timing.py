"""mxwr.timing (numpy word timestamps) against openai-whisper's whisper.timing, computed here."""

from __future__ import annotations

import copy
import importlib
import inspect
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import whisper
import whisper.timing as wt
from whisper.tokenizer import get_tokenizer

from mxwr import timing
from mxwr.vocab import Vocabulary

AUDIO = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "dev" / "jfk_inaugural.wav"


def text_token_probs(logits: np.ndarray, text_tokens, sot_len: int, eot: int) -> np.ndarray:
    """What the align graph computes on the device, from openai-whisper's logits [T, n_vocab] of
    `[*sot_sequence, no_timestamps, *text_tokens, eot]`: the probability each text token had when
    it was predicted (row sot_len predicts the first), the softmax over the text vocabulary only."""
    rows = np.asarray(logits[sot_len: sot_len + len(text_tokens), :eot], dtype=np.float32)
    e = np.exp(rows - rows.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True))[np.arange(len(text_tokens)), list(text_tokens)].astype(np.float64)


def vocab_of(tok) -> Vocabulary:
    enc = tok.encoding
    return Vocabulary([enc.decode_single_token_bytes(i) for i in range(enc.n_vocab)], tok.timestamp_begin)


def as_dicts(alignment) -> list[dict]:
    return [dict(word=w.word, tokens=list(w.tokens), start=float(w.start), end=float(w.end),
                 probability=float(w.probability)) for w in alignment]


# ---- median filter and DTW -------------------------------------------------------------------

@pytest.mark.parametrize("shape,width", [((37,), 7), ((3, 11, 50), 7), ((2, 5, 9), 3), ((4, 3), 7), ((6, 2), 5)])
def test_median_filter(shape, width):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ref = wt.median_filter(torch.from_numpy(x), width).numpy()
    np.testing.assert_array_equal(timing.median_filter(x, width), ref)


@pytest.mark.parametrize("n,m,seed", [(1, 1, 0), (1, 9, 1), (9, 1, 2), (7, 40, 3), (40, 7, 4), (120, 700, 5)])
def test_dtw_random(n, m, seed):
    x = np.random.default_rng(seed).standard_normal((n, m))
    ti, fi = timing.dtw(x)
    ref = wt.dtw_cpu(x)
    np.testing.assert_array_equal(np.stack([ti, fi]), ref)


def test_dtw_ties():
    # integer costs make exact ties common: the tie-breaking order must be whisper's
    rng = np.random.default_rng(6)
    for _ in range(20):
        x = rng.integers(0, 3, size=(rng.integers(1, 15), rng.integers(1, 40))).astype(np.float64)
        np.testing.assert_array_equal(np.stack(timing.dtw(x)), wt.dtw_cpu(x))


# ---- word splitting ----------------------------------------------------------------------------

TEXTS = {
    None: [" And so, my fellow Americans: ask not what your country can do for you!",
           " Hello--world (it's 3.14%) \"quoted\" café naïve 😀 well-known... ok?"],
    "en": [" Don't stop, e.g. U.S.A. is fine; 1,000,000 people."],
    "zh": ["我们今天去北京吧。你好，世界！😀"],
    "ja": ["今日はいい天気ですね、散歩しましょう。"],
    "th": ["สวัสดีครับ ยินดีต้อนรับ"],
    "de": [" Grüß Gott, schöne Straße! Übermäßig."],
}


@pytest.mark.parametrize("language", list(TEXTS))
def test_split_to_word_tokens(language):
    tok = get_tokenizer(language is not None, language=language)
    vocab = vocab_of(tok)
    for text in TEXTS[language]:
        tokens = tok.encode(text)
        for seq in (tokens + [tok.eot],
                    [tok.timestamp_begin, *tokens[:5], tok.timestamp_begin + 17, *tokens[5:], tok.eot],
                    tokens[1:-1] + [tok.eot]):  # may start or end mid-character
            assert vocab.decode_with_timestamps(seq) == tok.decode_with_timestamps(seq)
            assert timing.split_to_word_tokens(seq, vocab, tok.language, tok.eot) == tok.split_to_word_tokens(seq)


# ---- punctuation merging and the add_word_timestamps heuristics ----------------------------------

WORD_POOL = [" hello", " world", ".", ",", "!", "?", " \"", "\"", " (", ")", " '", "'", "-", " -",
             " ¿", "。", "、", " yes", "s", " a", " “", "”", ":", " ...", "...", " "]


def random_alignment(rng: random.Random, n: int, cls):
    words, t = [], rng.uniform(0, 3)
    for _ in range(n):
        start = t + rng.choice([0, 0, rng.uniform(0, 4)])  # sometimes a pause before the word
        end = start + rng.choice([0.0, rng.uniform(0, 0.6), rng.uniform(0, 4)])  # some too long
        start, end = round(start * 50) / 50, round(end * 50) / 50  # DTW frames are 20 ms
        word = rng.choice(WORD_POOL)
        words.append(cls(word, [rng.randrange(1000) for _ in range(rng.randint(1, 3))],
                         np.float64(start), np.float64(end), np.float64(rng.random())))
        t = end
    return words


def test_merge_punctuations():
    defaults = inspect.signature(wt.add_word_timestamps).parameters
    assert timing.PREPEND_PUNCTUATIONS == defaults["prepend_punctuations"].default
    assert timing.APPEND_PUNCTUATIONS == defaults["append_punctuations"].default
    rng = random.Random(0)
    for _ in range(300):
        ours = random_alignment(rng, rng.randint(0, 12), timing.WordTiming)
        theirs = [wt.WordTiming(w.word, list(w.tokens), w.start, w.end, w.probability) for w in ours]
        timing.merge_punctuations(ours, timing.PREPEND_PUNCTUATIONS, timing.APPEND_PUNCTUATIONS)
        wt.merge_punctuations(theirs, "\"'“¿([{-", "\"'.。,，!！?？:：”)]}、")
        assert as_dicts(ours) == as_dicts(theirs)


class _Tok:
    eot = 50256


def test_add_word_timestamps_heuristics(monkeypatch):
    """Random alignments (long words, sentence marks, pauses, several segments, a non-zero seek)
    through both add_word_timestamps, the model replaced by the same alignment."""
    rng = random.Random(1)
    for case in range(300):
        alignment = random_alignment(rng, rng.randint(0, 14), wt.WordTiming)
        # cut the alignment's tokens into 1-3 segments, each between timestamps (eot sometimes)
        tokens = [t for w in alignment for t in w.tokens]
        bounds = [0, *sorted(rng.choices(range(len(tokens) + 1), k=rng.randint(0, 2))), len(tokens)]
        seek = rng.choice([0, 1234, 3001, 100007])
        offset = seek * 160 / 16000
        segments, t = [], offset + rng.uniform(0, 2)
        for a, b in zip(bounds, bounds[1:]):
            end = t + rng.uniform(0, 8)
            text = [50363 + 5, *tokens[a:b], 50363 + 60] + rng.choice([[], [_Tok.eot]])
            segments.append(dict(seek=seek, start=round(t, 2), end=round(end, 2), tokens=text))
            t = end
        theirs, ours = copy.deepcopy(segments), copy.deepcopy(segments)
        last_speech = rng.choice([0.0, offset, offset + rng.uniform(0, 5)])

        monkeypatch.setattr(wt, "find_alignment", lambda *a, **k: copy.deepcopy(alignment))
        wt.add_word_timestamps(segments=theirs, model=None, tokenizer=_Tok(), mel=None, num_frames=3000,
                               last_speech_timestamp=last_speech)
        seen = []

        def fake(text_tokens):
            seen.append(text_tokens)
            return [timing.WordTiming(w.word, list(w.tokens), w.start, w.end, w.probability) for w in alignment]

        timing.add_word_timestamps(ours, fake, eot=_Tok.eot, last_speech_timestamp=last_speech)
        assert seen == ([tokens] if tokens else [])
        assert ours == theirs, case


# ---- end to end on tiny.en ------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_en():
    from mxwc.reference import openai_whisper_model
    from mxwc.weights import load_weights

    return openai_whisper_model(load_weights("tiny.en", log=lambda _: None))


def test_end_to_end_tiny_en(tiny_en, monkeypatch):
    """whisper.transcribe(word_timestamps=True) on real audio; at each of its add_word_timestamps
    calls, our numpy path gets the qk scores (hooked from the model's cross-attention) and the
    logits of the same token sequence, and must give the same alignment and segment words."""
    from whisper.model import disable_sdpa

    model = tiny_en
    tok = get_tokenizer(False)
    vocab = vocab_of(tok)
    heads = model.alignment_heads.indices().T.tolist()
    transcribe_module = importlib.import_module("whisper.transcribe")
    original_find, original_add = wt.find_alignment, transcribe_module.add_word_timestamps
    captured, compared = {}, []

    def find_alignment(model, tokenizer, text_tokens, mel, num_frames, **kwargs):
        # our own forward over the same tokens, hooks on the cross-attention as whisper's
        tokens = torch.tensor([*tokenizer.sot_sequence, tokenizer.no_timestamps, *text_tokens, tokenizer.eot])
        qks = [None] * model.dims.n_text_layer
        hooks = [b.cross_attn.register_forward_hook(lambda _, ins, outs, i=i: qks.__setitem__(i, outs[-1][0]))
                 for i, b in enumerate(model.decoder.blocks)]
        try:
            with torch.no_grad(), disable_sdpa():
                logits = model(mel.unsqueeze(0), tokens.unsqueeze(0))[0]
        finally:
            for h in hooks:
                h.remove()
        captured.update(
            text_tokens=list(text_tokens), num_frames=num_frames, sot_len=len(tokenizer.sot_sequence),
            qk=torch.stack([qks[l][h] for l, h in heads]).numpy(), logits=logits.numpy())
        result = original_find(model, tokenizer, text_tokens, mel, num_frames, **kwargs)
        captured["reference"] = as_dicts(result)  # before add_word_timestamps edits it
        return result

    def add_word_timestamps(*, segments, last_speech_timestamp, **kwargs):
        ours = copy.deepcopy(segments)
        original_add(segments=segments, last_speech_timestamp=last_speech_timestamp, **kwargs)
        c = dict(captured)

        def alignment_fn(text_tokens):
            assert text_tokens == c["text_tokens"]
            probs = text_token_probs(c["logits"], text_tokens, c["sot_len"], tok.eot)
            return timing.find_alignment(c["qk"], probs, text_tokens, c["sot_len"], c["num_frames"],
                                         vocab, tok.language, eot=tok.eot)

        alignment = alignment_fn(c["text_tokens"])
        timing.add_word_timestamps(ours, alignment_fn, eot=tok.eot, last_speech_timestamp=last_speech_timestamp,
                                   prepend_punctuations=kwargs["prepend_punctuations"],
                                   append_punctuations=kwargs["append_punctuations"])
        compared.append((as_dicts(alignment), c["reference"], ours, copy.deepcopy(segments)))

    monkeypatch.setattr(wt, "find_alignment", find_alignment)
    monkeypatch.setattr(transcribe_module, "add_word_timestamps", add_word_timestamps)
    audio = whisper.load_audio(str(AUDIO))
    with torch.no_grad():
        result = whisper.transcribe(model, audio, word_timestamps=True, fp16=False, verbose=None,
                                    temperature=0.0, condition_on_previous_text=False)
    assert compared and sum(len(s["words"]) for s in result["segments"]) > 10

    def check_words(ours, theirs):
        assert [w["word"] for w in ours] == [w["word"] for w in theirs]
        for key, tol in (("start", 1e-6), ("end", 1e-6), ("probability", 1e-4)):
            np.testing.assert_allclose([w[key] for w in ours], [w[key] for w in theirs], rtol=0, atol=tol)

    for alignment, reference, ours, theirs in compared:
        assert [w["tokens"] for w in alignment] == [w["tokens"] for w in reference]
        check_words(alignment, reference)
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            check_words(a["words"], b["words"])
            assert a["start"] == pytest.approx(b["start"], abs=1e-6)
            assert a["end"] == pytest.approx(b["end"], abs=1e-6)
