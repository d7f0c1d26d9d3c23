"""The Python API (`mxwr.load`): `transcribe()` against openai-whisper's `transcribe()` on the same
weights and against `mxwr run`, each kind of audio input, `segments()` streaming window by
window through the same loop, `detect_language`, threads, closing, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from support import DEV, ROOT, assert_same_result, reference, run_cli

LONG = DEV / "long_osr_us_000_0034_8k.wav"  # 35 s: two windows
JFK = DEV / "jfk.flac"


@pytest.fixture(scope="module")
def model(tiny_bundle):
    import mxwr

    with mxwr.load(tiny_bundle, device="cpu") as m:
        yield m


def test_transcribe_equals_openai_whisper(model, reference_model):
    assert_same_result(model.transcribe(LONG), reference(reference_model, LONG))


def test_word_timestamps_equal_openai_whisper(model, reference_model):
    assert_same_result(model.transcribe(JFK, word_timestamps=True),
                       reference(reference_model, JFK, word_timestamps=True), words=True)


def test_graphs_a_run_may_not_use_load_when_first_run(tiny_bundle, reference_model):
    """On the CPU the front end (numpy computes log-mel) and word timestamps' align graph load
    on first use; every section of the target is still verified at load (on a thread, while
    MAX imports), and the answers are openai-whisper's."""
    from mxwr.transcribe import Transcriber

    t = Transcriber(tiny_bundle, device="cpu")
    try:
        target = t.model.target
        assert set(t.model._graphs) == {"encoder", "prefill", "step"}
        assert t.model.has("align") and t.model.has("frontend") and not t.model.has("reorder")
        assert {target.weights_section, *(e.section for e in target.graphs.values())} <= t.bundle._verified
        assert_same_result(t.transcribe(JFK, word_timestamps=True),
                           reference(reference_model, JFK, word_timestamps=True), words=True)
        assert "align" in t.model._graphs and "frontend" not in t.model._graphs
    finally:
        t.bundle.close()


def test_path_bytes_and_samples_give_the_same_result(model, reference_model):
    """A float32 array is what openai-whisper's load_audio gives; its transcribe() on that array
    is the reference too."""
    import whisper

    samples = whisper.load_audio(str(JFK))
    ours = model.transcribe(samples)
    assert_same_result(ours, whisper.transcribe(reference_model, samples, fp16=False, verbose=None))
    assert model.transcribe(JFK.read_bytes()) == ours
    assert model.transcribe(str(JFK)) == ours


def test_transcribe_equals_mxwr_run(model, tiny_bundle):
    """Same options as `mxwr run` passes (its temperatures, its thresholds) give its output."""
    proc = run_cli("mxwr", "run", str(tiny_bundle), str(LONG), "--device", "cpu", "-f", "json",
                   "--initial_prompt", "Harvard sentences.", check=True)
    ours = model.transcribe(LONG, initial_prompt="Harvard sentences.", temperature=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0))
    from mxwr.writers import render

    assert json.loads(render("json", ours)) == json.loads(proc.stdout)


def test_segments_come_window_by_window_from_the_same_loop(model):
    """The first window's segments arrive before the second window is encoded; they are the
    segments transcribe() returns; closing the iterator stops decoding."""
    t = model.transcriber
    encoded = []
    encode = t.encode_window
    t.encode_window = lambda mel: (encoded.append(1), encode(mel))[1]
    try:
        stream = model.segments(LONG)
        first = next(stream)
        assert len(encoded) == 1
        rest = list(stream)
        assert len(encoded) >= 2
        assert [first, *rest] == model.transcribe(LONG)["segments"]
        assert first["start"] == 0.0 and rest[-1]["end"] > 30.0

        encoded.clear()
        stream = model.segments(LONG)
        next(stream)
        stream.close()
        assert len(encoded) == 1  # nothing decoded after the consumer stopped
    finally:
        del t.encode_window


def test_concurrent_calls_take_turns_and_stay_correct(model):
    expected = model.transcribe(JFK)
    results = []

    def work(call):
        results.append(call())

    threads = [threading.Thread(target=work, args=(lambda: model.transcribe(JFK),)),
               threading.Thread(target=work, args=(lambda: {"segments": list(model.segments(JFK))},))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert sorted(r["segments"] == expected["segments"] for r in results) == [True, True]


def test_detect_language_as_openai_whisper(model):
    from mxwr import MxwError

    with pytest.raises(MxwError, match="doesn't have language tokens"):  # as openai-whisper on .en models
        model.detect_language(JFK)


def test_bad_input_is_an_error_not_a_crash(model):
    from mxwr import AudioError

    with pytest.raises(TypeError):
        model.transcribe(JFK, no_such_option=1)
    with pytest.raises(AudioError, match="cannot decode the audio"):
        model.transcribe(b"not audio at all" * 100)
    with pytest.raises(AudioError, match="1-D float"):
        model.transcribe(np.zeros(16000, dtype=np.int16))
    with pytest.raises(AudioError, match="finite"):
        model.transcribe(np.full(16000, np.nan, dtype=np.float32))
    with pytest.raises(AudioError, match="not found"):
        model.transcribe(DEV / "missing.wav")


def test_properties_and_close(tiny_bundle):
    import mxwr

    m = mxwr.load(tiny_bundle, device="cpu")
    assert (m.name, m.dtype, m.target, m.targets, m.batch, m.beams) == ("tiny.en", "float32", "cpu", ["cpu"], 1, 1)
    assert m.dims["n_text_layer"] == 4 and not m.multilingual
    m.close()
    assert m.closed
    with pytest.raises(mxwr.MxwError, match="closed"):
        m.transcribe(JFK)


def test_threads_pins_the_process(tiny_bundle):
    code = f"""
import os, mxwr
with mxwr.load({str(tiny_bundle)!r}, device="cpu", threads=1) as m:
    print(len(os.sched_getaffinity(0)), m.transcribe({str(JFK)!r})["text"])
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert proc.stdout.startswith("1 ") and "ask not" in proc.stdout
