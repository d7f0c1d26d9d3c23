"""The 16-bit GPU graphs' layout and attention, run on the CPU.

GPU targets in float16/bfloat16 pad attention operands to MAX's matmul tile, store cross V
transposed and attend in the step as float32 sums (`mxwr.graphspec.TILED`); CPU targets never
compile those graphs. Here a CPU bundle is built with that tiling forced: it must decode the
dev speech as the plain CPU bundle does, through the replay bookkeeping the GPU runs.
"""

from __future__ import annotations

import pytest

from support import DEV
from mxwr.audio import load_audio
from mxwr.bundle import BundleReader
from mxwr.transcribe import Transcriber

# Confident English speech: near-ties in the logits (noise, a German clip through tiny.en) could
# flip at float32 rounding, which is not what this test is about.
CLIPS = [DEV / "jfk.flac", DEV / "ls_tc_1089-134686-0000.wav", DEV / "ls_tc_1089-134686-0001.wav",
         DEV / "sr_english_one_two_three.wav"]


@pytest.fixture(scope="module")
def tiled_cpu_bundle(tmp_path_factory):
    from mxwc.build import BuildOptions, build
    from mxwr.graphspec import TILED

    out = tmp_path_factory.mktemp("tiled") / "tiny.en-tiled-cpu.mxw"
    # The layout of 16-bit GPU targets, on the CPU.
    build(BuildOptions(model="tiny.en", output=out, offline=True, layout=TILED), log=lambda _: None)
    return out


def test_tiled_layout_is_in_the_manifest(tiled_cpu_bundle):
    with BundleReader(tiled_cpu_bundle) as reader:
        step = {i["name"]: i["shape"] for i in reader.manifest.to_dict()["targets"][0]["graphs"]["step"]["inputs"]}
    assert step["self_k.0"] == [1, 6, 448, 64]  # caches unpadded
    assert step["cross_k"] == [4, 1, 6, 1536, 128]  # slots and width padded to the tile
    assert step["cross_v"] == [4, 1, 6, 128, 1536]  # and V transposed


def test_tiled_graphs_decode_as_the_plain_ones(tiled_cpu_bundle, tiny_bundle):
    audios = [load_audio(c) for c in CLIPS]
    plain = list(Transcriber(tiny_bundle, device="cpu").decode_windows(audios))
    tiled = list(Transcriber(tiled_cpu_bundle, device="cpu", replay="emulate").decode_windows(audios))
    for got, want in zip(tiled, plain, strict=True):
        for a, b in zip(got["segments"], want["segments"], strict=True):
            assert a["tokens"] == b["tokens"]
            assert a["avg_logprob"] == pytest.approx(b["avg_logprob"], rel=1e-4)
            assert a["no_speech_prob"] == pytest.approx(b["no_speech_prob"], rel=1e-3, abs=1e-6)
    assert all(r["text"] for r in tiled)


def test_tiled_align_graph_gives_the_plain_word_times(tiled_cpu_bundle, tiny_bundle):
    """Word timestamps read the alignment heads' cross-attention through the tiled align graph
    (cross V transposed back for its batched matmul)."""
    def words(bundle, **kwargs):
        result = Transcriber(bundle, device="cpu", **kwargs).transcribe(DEV / "jfk.flac", word_timestamps=True)
        return [(w["word"], w["start"], w["end"]) for seg in result["segments"] for w in seg["words"]]

    assert words(tiled_cpu_bundle, replay="emulate") == words(tiny_bundle)
