"""The quantized CPU bundles (`mxwc build --dtype int8|q4_k|q6_k`): what each stores, each graph
against openai-whisper on the very weights it stores, and its transcripts of the dev clips
against openai-whisper's on the float32 weights."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from support import DEV, ROOT, dev_manifest, run_cli
from mxwr.bundle import BundleReader
from mxwr.quantization import GROUP, SCALE, quantized_weights

sys.path.insert(0, str(ROOT / "scripts"))
from benchlib import word_error_rate

# A quantized bundle's WER on the English dev clips may exceed openai-whisper's (float32, same
# weights, same options) by at most this much: one word in a hundred for int8; two for the
# K-quants, whose words on these 133 move by two either way against float32's (more errors
# greedy here, fewer under the `whisper` defaults in BENCHMARKS.md).
WER_MARGIN = {"int8": 0.01, "q4_k": 0.02, "q6_k": 0.02}
SCHEMES = ("int8", "q4_k", "q6_k")
KQUANTS = ("q4_k", "q6_k")


@pytest.fixture(scope="session")
def quantized_bundles(tmp_path_factory):
    """scheme -> its bundle, each built once, when a test first asks for it."""
    built = {}

    def bundle(scheme):
        if scheme not in built:
            out = tmp_path_factory.mktemp("bundles") / f"tiny.en-{scheme}.mxw"
            run_cli("mxwc", "build", "--model", "tiny.en", "--offline", "--dtype", scheme, "-o", str(out), check=True)
            built[scheme] = out
        return built[scheme]

    return bundle


def _stored(bundle, scheme):
    with BundleReader(bundle) as reader:
        t = reader.manifest.targets[0]
        assert t.weights_section == f"weights.{scheme}"
        return reader.manifest.dims, reader.read_tensors(t.weights_section)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_manifest_names_the_scheme(quantized_bundles, scheme):
    """int8: every quantizable matrix int8 with its groups' scales. K-quants: the decoder's
    matrices in blocks as wide as MAX's encoding says (rows padded to whole blocks; q4_k's
    self-attention value and second MLP matrices Q6_K, the rest Q4_K), the encoder's matrices
    and the embedding int8; nothing else quantized."""
    from max.graph.quantization import QuantizationEncoding

    bundle = quantized_bundles(scheme)
    proc = run_cli("mxwr", "inspect", str(bundle), check=True)
    [target] = json.loads(proc.stdout)["targets"]
    assert (target["name"], target["dtype"], target["quantization"]) == ("cpu", "float32", scheme)
    dims, stored = _stored(bundle, scheme)
    shapes = dims.weight_shapes()
    quantized = set(quantized_weights(dims))
    blocks = {n for n in quantized if scheme in KQUANTS and n.startswith("decoder.blocks.")}
    assert {n for n, a in stored.items() if a.dtype == np.int8} == quantized - blocks
    assert {n for n, a in stored.items() if a.dtype == np.uint8} == blocks
    assert set(stored) == set(shapes) | {n + SCALE for n in quantized - blocks}
    for name in blocks:
        more_bits = scheme == "q4_k" and name.endswith((".attn.value.weight", ".mlp.2.weight"))
        encoding = QuantizationEncoding.Q6_K if more_bits else QuantizationEncoding[scheme.upper()]
        rows, cols = shapes[name]
        assert stored[name].shape == (rows, -(-cols // encoding.elements_per_block) * encoding.block_size)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_int8_weights_are_the_float32_weights_rounded(quantized_bundles, tiny_weights, scheme):
    """The int8 weights (every quantized one of an int8 bundle; the encoder's and the embedding
    of a K-quant one) are rounded as `mxwr.quantization` says; what is not quantized is the
    float32 weight itself."""
    _, stored = _stored(quantized_bundles(scheme), scheme)
    for name, w in tiny_weights.tensors.items():
        w = np.asarray(w, dtype=np.float32)
        if stored[name].dtype == np.uint8:  # K-quant blocks: the test below
            continue
        if stored[name].dtype != np.int8:
            np.testing.assert_array_equal(stored[name], w)
            continue
        rows, cols = w.shape
        groups = w.reshape(rows, cols // GROUP, GROUP)
        scale = stored[name + SCALE]
        np.testing.assert_allclose(scale, np.abs(groups).max(axis=2) / 127, rtol=1e-6)
        q = stored[name].reshape(rows, cols // GROUP, GROUP).astype(np.float32)
        assert (np.abs(q * scale[:, :, None] - groups) <= scale[:, :, None] / 2 * (1 + 1e-5)).all()
        assert (np.abs(q).max(axis=2) == 127).all()


@pytest.mark.parametrize("scheme", KQUANTS)
def test_kquant_weights_are_the_float32_weights_in_blocks(quantized_bundles, tiny_weights, scheme):
    """Each decoder matrix unpacked is the float32 one within what its bits allow: row by row no
    further from it than the plainest quantizer of its grid, with float32 scales (the blocks'
    6- and 8-bit scale grids may cost a few percent more): Q4_K rounds each 32 weights to 16
    levels between their extremes; Q6_K each 16 to the integers within +-31 times max |w| / 31.
    The width of a row's blocks says which it is (144 or 210 bytes per 256 weights)."""
    from mxwc import kquants

    _, stored = _stored(quantized_bundles(scheme), scheme)
    for name, blocks in stored.items():
        if blocks.dtype != np.uint8:
            continue
        w = np.asarray(tiny_weights.tensors[name], dtype=np.float32)
        encoding = {144: "q4_k", 210: "q6_k"}[blocks.shape[1] // -(-w.shape[1] // 256)]
        ours = np.sqrt(((kquants.unpack(blocks, encoding, w.shape[1]) - w) ** 2).mean(axis=1))
        if encoding == "q4_k":
            sub = w.reshape(len(w), -1, 32)
            low, high = sub.min(-1, keepdims=True), sub.max(-1, keepdims=True)
            step = np.where(high > low, (high - low) / 15, 1)
            plain = np.round((sub - low) / step) * step + low
        else:
            sub = w.reshape(len(w), -1, 16)
            top = np.abs(sub).max(-1, keepdims=True)
            step = np.where(top > 0, top / 31, 1)
            plain = np.round(sub / step) * step
        plain = np.sqrt(((plain - sub) ** 2).reshape(len(w), -1).mean(axis=1))
        assert (ours <= 1.05 * plain + 1e-7).all(), (name, float((ours / np.maximum(plain, 1e-12)).max()))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_each_graph_computes_what_openai_whisper_computes_on_its_weights(quantized_bundles, scheme):
    """openai-whisper on the dequantized weights: every graph within the 8-bit products' limits
    (their inputs rounded to 8 bits too), and the tokens its tokens."""
    from mxwc.conformance import compare

    rows = compare(quantized_bundles(scheme), DEV / "jfk.flac")
    assert {r.graph for r in rows} >= {"encoder", "prefill", "step", "align", "tokens"}
    assert all(r.ok for r in rows), "\n".join(f"{r.graph} {r.metric}: {r.value} > {r.threshold}" for r in rows)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_gpu_target_cannot_be_quantized(scheme):
    proc = run_cli("mxwc", "build", "--model", "tiny.en", "--offline", "--dtype", scheme, "--target", "cuda:sm_90a",
                   "-o", "/dev/null")
    assert proc.returncode != 0 and f"--dtype {scheme} is the cpu target's" in proc.stderr


@pytest.mark.parametrize("scheme", SCHEMES)
def test_quantized_bundles_need_vnni(monkeypatch, scheme):
    from mxwc import build

    monkeypatch.setattr(build, "this_cpu", lambda: ("an x86 without VNNI", frozenset({"avx2", "avx512f"})))
    with pytest.raises(build.BuildError, match="AVX-512 VNNI"):
        build.target_storage("cpu", scheme)
    assert build.target_storage("cpu", "float32").quantization == "none"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_dev_clips_transcribe_within_the_wer_bound(quantized_bundles, reference_model, scheme):
    """transcribe() with its defaults (greedy, temperature fallback) on every English dev clip."""
    import whisper
    from mxwr.audio import load_audio
    from mxwr.transcribe import Transcriber
    from whisper.normalizers import EnglishTextNormalizer

    english = [m for m in dev_manifest() if m["language"] == "en" and m["text"]]
    ours = Transcriber(quantized_bundles(scheme), device="cpu")
    pairs_ours, pairs_ref = [], []
    for m in english:
        audio = load_audio(DEV / m["file"])
        pairs_ours.append((m["text"], ours.transcribe(audio, language="en")["text"]))
        reference = whisper.transcribe(reference_model, audio, language="en", fp16=False, verbose=None)
        pairs_ref.append((m["text"], reference["text"]))
    normalize = EnglishTextNormalizer()
    assert all(normalize(text) for _, text in pairs_ours), pairs_ours
    wer, ref_wer = word_error_rate(pairs_ours, normalize), word_error_rate(pairs_ref, normalize)
    assert wer <= ref_wer + WER_MARGIN[scheme], (wer, ref_wer, pairs_ours)
