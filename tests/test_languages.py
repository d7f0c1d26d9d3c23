"""Multilingual models: base (real weights) against openai-whisper — language detection,
translation, transcripts — and a large-v3-shaped model (128 mel bins, 51866 tokens) on random
weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from support import CLIPS, DEV, IDS, assert_parity, assert_same_result, reference, run_cli

GERMAN = DEV / "pv_test_de.wav"


@pytest.fixture(scope="module")
def base(base_bundle):
    from mxwr.transcribe import Transcriber

    return Transcriber(base_bundle, device="cpu")


def test_base_detects_german_with_openai_whisper_probabilities(base, base_reference_model):
    import whisper

    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(whisper.load_audio(str(GERMAN))))
    _, expected = base_reference_model.detect_language(mel)
    language, probs = base.detect_language(GERMAN)
    assert language == max(expected, key=expected.get) == "de"
    assert probs.keys() == expected.keys()
    assert max(abs(probs[k] - expected[k]) for k in probs) <= 1e-3


@pytest.mark.parametrize("clip", CLIPS, ids=IDS)
def test_base_transcribe_equals_openai_whisper(clip, base, base_reference_model):
    assert_parity(base, base_reference_model, clip)


@pytest.mark.parametrize("clip", CLIPS, ids=IDS)
def test_base_beam_search_equals_openai_whisper(clip, base, base_reference_model):
    assert_parity(base, base_reference_model, clip, beam_size=5, best_of=5)


@pytest.mark.parametrize("clip", CLIPS, ids=IDS)
def test_base_word_timestamps_equal_openai_whisper(clip, base, base_reference_model):
    assert_parity(base, base_reference_model, clip, words=True)


def test_base_translates_as_openai_whisper(base, base_reference_model):
    """Deterministic decoding (no sampled fallback): the same English text."""
    ours = base.transcribe(GERMAN, task="translate", temperature=0.0)
    theirs = reference(base_reference_model, GERMAN, task="translate", temperature=0.0)
    assert_same_result(ours, theirs)
    assert ours["text"].isascii() and ours["language"] == "de"  # English text from German speech


def test_base_translate_with_fallback(base, base_reference_model):
    assert_parity(base, base_reference_model, GERMAN, task="translate")


def test_cli_translate_and_language(base_bundle, base_reference_model):
    proc = run_cli("mxwr", "run", str(base_bundle), str(GERMAN), "--task", "translate", "--language", "de",
                   "--temperature_increment_on_fallback", "None", check=True)
    theirs = reference(base_reference_model, GERMAN, task="translate", language="de", beam_size=5, temperature=0.0)
    assert proc.stdout.strip() == theirs["text"].strip()


# ----------------------------------------------------------------------------------------------
# large-v3 shape, random weights


LARGE_V3_SHAPE = dict(n_mels=128, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=2,
                      n_vocab=51866, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=2)


@pytest.fixture(scope="module")
def large_v3_like(tmp_path_factory):
    """A random openai-whisper checkpoint of large-v3's vocabulary and mel bins, built into a bundle."""
    import torch
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    dims = ModelDimensions(**LARGE_V3_SHAPE)
    model = Whisper(dims)
    with torch.no_grad():  # default init leaves LayerNorms at identity: randomise everything
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    folder = tmp_path_factory.mktemp("large-v3-like")
    checkpoint = folder / "large-v3-like.pt"
    torch.save({"dims": dataclasses.asdict(dims), "model_state_dict": model.state_dict()}, checkpoint)
    bundle = folder / "large-v3-like.mxw"
    run_cli("mxwc", "build", "--model", str(checkpoint), "--no-word-timestamps", "-o", str(bundle), check=True)
    return bundle


def test_large_v3_shape_logits_match_openai_whisper(large_v3_like):
    from mxwc.conformance import compare

    rows = {(r.graph, r.metric.split(" over ")[0]): r for r in compare(large_v3_like, DEV / "jfk_inaugural.wav")}
    for key in [("mel", "max |diff|"), ("encoder", "features rel err"), ("encoder", "cross K rel err"),
                ("prefill", "first-step logits max |diff|"), ("step", "logits max |diff|")]:
        assert rows[key].ok, f"{key}: {rows[key].value:.3e} > {rows[key].threshold:.0e}"


def test_large_v3_tokenizer_has_cantonese(large_v3_like):
    from whisper.tokenizer import get_tokenizer

    from mxwr.bundle import BundleReader
    from mxwr.tokens import SpecialTokens

    tok = get_tokenizer(True, num_languages=100)
    with BundleReader(large_v3_like) as reader:
        special = SpecialTokens.from_bundle(reader)
        assert reader.manifest.dims.n_mels == 128
    assert special.languages == dict(zip(tok.all_language_codes, tok.all_language_tokens))
    assert "yue" in special.languages and len(special.languages) == 100
    assert (special.transcribe, special.translate, special.no_timestamps, special.timestamp_begin) == (
        tok.transcribe, tok.translate, tok.no_timestamps, tok.timestamp_begin)
    assert special.encode(" Guten Tag") == tok.encode(" Guten Tag")
    assert np.array_equal(special.non_speech, tok.non_speech_tokens)


@pytest.mark.parametrize("multilingual", [False, True], ids=["en", "multilingual"])
def test_suppressed_sets_are_derived_as_openai_whisper_derives_them(tiny_bundle, large_v3_like, multilingual):
    """The reader derives `non_speech_tokens` and the blank token itself (in pure Python) to check
    the manifest's; its byte-pair merge must be tiktoken's on every run of symbols."""
    import random

    from whisper.tokenizer import get_tokenizer

    from mxwr.bundle import BundleReader
    from mxwr.tokens import SpecialTokens

    tok = get_tokenizer(multilingual, num_languages=100)
    with BundleReader(large_v3_like if multilingual else tiny_bundle) as reader:
        special = SpecialTokens.from_bundle(reader)
    assert special._non_speech_of_vocabulary() == tuple(tok.non_speech_tokens)
    symbols, rng = '"#()*+/:;<=>@[\\]^_`{|}~「」『』-\'!?.,♩♪♫♬♭♮♯', random.Random(0)
    for _ in range(3000):
        text = rng.choice(("", " ")) + "".join(rng.choices(symbols, k=rng.randint(1, 6)))
        assert list(special._symbol(text)) == tok.encode(text), text
