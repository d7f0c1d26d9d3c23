"""tiny.en: the bundle's tokens equal openai-whisper's on the same weights; per-graph numerics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from support import DECODE_ARGS, DEV, reference_tokens, run_cli, short_clips

CLIPS = short_clips()


@pytest.fixture(scope="module")
def mxwr_results(tiny_bundle) -> dict[str, dict]:
    """One `mxwr run --output-format json` over every clip, each 30-second window decoded as
    openai-whisper's decode() does (greedy, no timestamps): one JSON object per line."""
    proc = run_cli("mxwr", "run", str(tiny_bundle), *map(str, CLIPS), "--output-format", "json", *DECODE_ARGS,
                   check=True)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(CLIPS)
    return {clip.name: json.loads(line) for clip, line in zip(CLIPS, lines)}


@pytest.mark.parametrize("clip", CLIPS, ids=[c.name for c in CLIPS])
def test_tokens_equal_openai_whisper(clip, mxwr_results, reference_model):
    expected = reference_tokens(reference_model, clip)
    (segment,) = mxwr_results[clip.name]["segments"]  # clips of 30 s or less: one window
    assert segment["tokens"] == expected


def test_transcripts_are_not_trivially_empty(mxwr_results, reference_model):
    # Guards the parity test against both sides agreeing on nothing: the sample clip has speech.
    assert len(mxwr_results["jfk.flac"]["segments"][0]["tokens"]) > 10
    assert "ask not" in mxwr_results["jfk.flac"]["text"]


@pytest.fixture(scope="module")
def conformance_rows(tiny_bundle):
    from mxwc.conformance import compare

    return {(r.graph, r.metric.split(" over ")[0]): r for r in compare(tiny_bundle, DEV / "jfk.flac")}


@pytest.mark.parametrize(
    "graph, metric, limit",
    [
        ("mel", "max |diff|", 1e-3),
        ("frontend", "device log-mel max |diff|", 1e-3),
        ("encoder", "features rel err", 1e-4),
        ("encoder", "cross K rel err", 1e-4),
        ("encoder", "cross V rel err", 1e-4),
        ("prefill", "first-step logits max |diff|", 1e-3),
        ("step", "logits max |diff|", 1e-3),
        ("align", "alignment-head scores rel err", 1e-4),
        ("align", "text token probs max |diff|", 1e-4),
        ("tokens", "mismatched tokens vs openai-whisper", 0),
    ],
)
def test_per_graph_numerics(conformance_rows, graph, metric, limit):
    row = conformance_rows[(graph, metric)]
    assert row.value <= limit, f"{graph}: {metric} = {row.value:.3e} > {limit:.0e}"


@pytest.mark.parametrize("clip", [c for c in CLIPS if c.suffix == ".wav"][:3], ids=lambda c: c.name)
def test_log_mel_matches_openai_whisper(clip, tiny_bundle):
    import whisper

    from mxwr.audio import load_audio
    from mxwr.bundle import BundleReader
    from mxwr.mel import log_mel_spectrogram

    with BundleReader(tiny_bundle) as reader:
        filters = np.array(reader.read_tensors("mel_filters")["mel_filters"])
    audio = load_audio(clip)
    ours = log_mel_spectrogram(whisper.pad_or_trim(audio), filters)
    ref = whisper.log_mel_spectrogram(whisper.pad_or_trim(whisper.load_audio(str(clip)))).numpy()
    assert ours.shape == ref.shape == (80, 3000)
    assert np.abs(ours - ref).max() <= 1e-3


def test_device_front_end_gives_the_same_tokens(tiny_bundle, reference_model):
    """The GPU path's log-mel graph, run on the CPU target: same tokens as openai-whisper."""
    from mxwr.transcribe import Transcriber

    t = Transcriber(tiny_bundle, device="cpu", mel_on_device=True)
    clips = CLIPS[:4]
    results = list(t.decode_files(clips))
    for clip, result in zip(clips, results):
        assert result["segments"][0]["tokens"] == reference_tokens(reference_model, clip), clip.name


def test_threads_pin_the_process_and_keep_the_tokens(tiny_bundle, reference_model):
    """`--threads 1` runs MAX on one core (its thread pool follows the process's affinity) and
    decodes exactly as openai-whisper does."""
    clip = DEV / "jfk.flac"
    proc = run_cli("mxwr", "run", str(tiny_bundle), str(clip), "--output-format", "json", "--threads", "1",
                   *DECODE_ARGS, check=True)
    (segment,) = json.loads(proc.stdout)["segments"]
    assert segment["tokens"] == reference_tokens(reference_model, clip)


def test_long_prompts_run_through_the_prefill_in_chunks(tiny_bundle, reference_model):
    """A previous-text prompt several times the prefill's length (transcribe()'s conditioning)
    fills the caches chunk by chunk: the window decodes as openai-whisper's decode() with it."""
    import torch
    import whisper

    from mxwr.audio import load_audio
    from mxwr.decoding import DecodingOptions
    from mxwr.transcribe import Transcriber

    t = Transcriber(tiny_bundle, device="cpu")
    prompt = " ".join(["ask not what your country can do for you"] * 12)
    assert len(t.special.encode(" " + prompt)) > 3 * t.model.prompt_len
    audio = load_audio(DEV / "jfk.flac")
    (ours,) = next(t.decode_windows([audio], DecodingOptions(without_timestamps=True, prompt=prompt)))["segments"]
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio)))
    theirs = reference_model.decode(mel, whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False,
                                                                 prompt=prompt))
    assert ours["tokens"] == theirs.tokens
    assert ours["no_speech_prob"] == pytest.approx(theirs.no_speech_prob, abs=1e-3)
    assert ours["avg_logprob"] == pytest.approx(theirs.avg_logprob, abs=1e-3)
