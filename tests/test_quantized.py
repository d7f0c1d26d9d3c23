"""The int8 CPU bundle (`mxwc build --dtype int8`): what it stores, each graph against
openai-whisper on the very weights it stores, and its transcripts of the dev clips against
openai-whisper's on the float32 weights."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from support import DEV, ROOT, dev_manifest, run_cli
from mxwr.bundle import BundleReader
from mxwr.quantization import GROUP, SCALE, int8_weights

sys.path.insert(0, str(ROOT / "scripts"))
from benchlib import word_error_rate

# The int8 bundle's WER on the English dev clips may exceed openai-whisper's (float32, same
# weights, same options) by at most this much: one word in a hundred.
WER_MARGIN = 0.01


@pytest.fixture(scope="session")
def int8_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "tiny.en-int8.mxw"
    run_cli("mxwc", "build", "--model", "tiny.en", "--offline", "--dtype", "int8", "-o", str(out), check=True)
    return out


def test_the_manifest_names_the_scheme(int8_bundle):
    proc = run_cli("mxwr", "inspect", str(int8_bundle), check=True)
    [target] = json.loads(proc.stdout)["targets"]
    assert (target["name"], target["dtype"], target["quantization"]) == ("cpu", "float32", "int8")
    with BundleReader(int8_bundle) as reader:
        t = reader.manifest.targets[0]
        assert t.weights_section == "weights.int8"
        tensors = {e.name: e.dtype for e in reader.manifest.section(t.weights_section).tensors}
    quantized = set(int8_weights(reader.manifest.dims))
    assert {n for n, d in tensors.items() if d == "int8"} == quantized
    assert {n for n, d in tensors.items() if d != "int8"} == (
        set(reader.manifest.dims.weight_shapes()) - quantized) | {n + SCALE for n in quantized}


def test_int8_weights_are_the_float32_weights_rounded(int8_bundle, tiny_weights):
    with BundleReader(int8_bundle) as reader:
        stored = reader.read_tensors("weights.int8")
        for name, w in tiny_weights.tensors.items():
            w = np.asarray(w, dtype=np.float32)
            if name not in stored or stored[name].dtype != np.int8:
                np.testing.assert_array_equal(stored[name], w)
                continue
            rows, cols = w.shape
            groups = w.reshape(rows, cols // GROUP, GROUP)
            scale = stored[name + SCALE]
            np.testing.assert_allclose(scale, np.abs(groups).max(axis=2) / 127, rtol=1e-6)
            q = stored[name].reshape(rows, cols // GROUP, GROUP).astype(np.float32)
            assert (np.abs(q * scale[:, :, None] - groups) <= scale[:, :, None] / 2 * (1 + 1e-5)).all()
            assert (np.abs(q).max(axis=2) == 127).all()


def test_each_graph_computes_what_openai_whisper_computes_on_its_weights(int8_bundle):
    """openai-whisper on the dequantized weights: every graph within the 8-bit products' limits
    (their inputs rounded to 8 bits too), and the tokens its tokens."""
    from mxwc.conformance import compare

    rows = compare(int8_bundle, DEV / "jfk.flac")
    assert {r.graph for r in rows} >= {"encoder", "prefill", "step", "align", "tokens"}
    assert all(r.ok for r in rows), "\n".join(f"{r.graph} {r.metric}: {r.value} > {r.threshold}" for r in rows)


def test_a_gpu_target_cannot_be_int8():
    proc = run_cli("mxwc", "build", "--model", "tiny.en", "--offline", "--dtype", "int8", "--target", "cuda:sm_90a",
                   "-o", "/dev/null")
    assert proc.returncode != 0 and "--dtype int8 is the cpu target's" in proc.stderr


def test_int8_needs_vnni(monkeypatch):
    from mxwc import build

    monkeypatch.setattr(build, "this_cpu", lambda: ("an x86 without VNNI", frozenset({"avx2", "avx512f"})))
    with pytest.raises(build.BuildError, match="AVX-512 VNNI"):
        build.target_storage("cpu", "int8")
    assert build.target_storage("cpu", "float32").quantization == "none"


def test_dev_clips_transcribe_within_the_wer_bound(int8_bundle, reference_model):
    """transcribe() with its defaults (greedy, temperature fallback) on every English dev clip."""
    import whisper
    from mxwr.audio import load_audio
    from mxwr.transcribe import Transcriber
    from whisper.normalizers import EnglishTextNormalizer

    english = [m for m in dev_manifest() if m["language"] == "en" and m["text"]]
    ours = Transcriber(int8_bundle, device="cpu")
    pairs_ours, pairs_ref = [], []
    for m in english:
        audio = load_audio(DEV / m["file"])
        pairs_ours.append((m["text"], ours.transcribe(audio, language="en")["text"]))
        reference = whisper.transcribe(reference_model, audio, language="en", fp16=False, verbose=None)
        pairs_ref.append((m["text"], reference["text"]))
    normalize = EnglishTextNormalizer()
    assert all(normalize(text) for _, text in pairs_ours), pairs_ours
    wer, ref_wer = word_error_rate(pairs_ours, normalize), word_error_rate(pairs_ref, normalize)
    assert wer <= ref_wer + WER_MARGIN, (wer, ref_wer, pairs_ours)
