"""Fuzzing the bundle reader, the manifest validator and the audio decoder with hostile input.

Hypothesis draws mutants of the real tiny.en bundle (byte flips, truncations, splices, header
and manifest rewrites with the checksums recomputed, section contents resealed) and of real
speech in every WAV encoding, through the mutators of scripts/fuzzlib.py; each must be refused
with one bounded line or be accepted as what it is (fuzzlib's docstring states the oracle).
A few hundred more go through the real CLI of the torch-free environment, each with a timeout.
Long runs: scripts/fuzz.py, whose figures are in RELIABILITY.md.
"""

from __future__ import annotations

import collections
import contextlib
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from support import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import fuzzlib  # noqa: E402

BUNDLE_CASES = 2000
AUDIO_CASES = 2000
CLI_BUNDLE_CASES = 200
CLI_AUDIO_CASES = 20
# Accepted mutants whose records differ are decoded through `mxwr run` (~1.5 s each): here the
# first two of each kind of mutation and set of records it changed; scripts/fuzz.py decodes every one.
DECODES_PER_CLASS = 2
AUDIO = ROOT / "samples" / "jfk.wav"

# Reproducible in CI (the same cases every run, drawn from the test's source); no example
# database left in the checkout. Time is bounded per case by fuzzlib.limits, not by a deadline.
FUZZ = settings(deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))


def _draws(data) -> fuzzlib.Choices:
    """Choices drawn by hypothesis: a failing case shrinks towards every choice's first option."""
    return fuzzlib.Choices(lambda n: data.draw(st.integers(0, n - 1)))


@pytest.fixture(scope="module")
def pristine(tiny_bundle) -> fuzzlib.Pristine:
    return fuzzlib.Pristine(tiny_bundle)


@pytest.fixture(scope="module")
def workspace(pristine, tmp_path_factory) -> fuzzlib.Workspace:
    return fuzzlib.Workspace(pristine, tmp_path_factory.mktemp("fuzz") / "mutant.mxw")


@pytest.fixture(scope="module")
def pristine_view(pristine) -> str:
    from mxwr.bundle import BundleReader

    with BundleReader(pristine.path) as reader:
        return fuzzlib.runtime_view(reader.manifest)


@pytest.fixture(scope="module")
def mxwr(runtime_env) -> Path:
    return runtime_env / "mxwr"


@pytest.fixture(scope="module")
def transcript(pristine, mxwr) -> str:
    """The pristine bundle's output for the decodes every accepted mutant is compared with."""
    failure, what, proc = fuzzlib.run_cli(mxwr, fuzzlib.decode_args(pristine.path, AUDIO), 300)
    assert failure is None and proc.returncode == 0, what
    return proc.stdout


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[dict[str, bytes], dict]:
    from mxwr.audio import load_audio

    corpus = fuzzlib.audio_corpus(AUDIO)
    path = tmp_path_factory.mktemp("corpus") / "base.wav"
    originals = {}
    for name, data in corpus.items():
        path.write_bytes(data)
        originals[name] = load_audio(path)
    return corpus, originals


def test_bundle_mutants(pristine, workspace, pristine_view, mxwr, transcript):
    """Against the reader and the validator in process; accepted mutants whose records differ
    are decoded by the real CLI and must be refused there or transcribe as the original."""
    tally: collections.Counter = collections.Counter()
    kinds: collections.Counter = collections.Counter()
    decoded: dict[str, fuzzlib.Verdict] = {}
    decodes: collections.Counter = collections.Counter()

    @settings(FUZZ, max_examples=BUNDLE_CASES)
    @given(st.data())
    def case(data):
        m = fuzzlib.mutate_bundle(pristine, _draws(data))
        note(m.describe())
        with workspace.apply(m) as path:
            v = fuzzlib.judge_bundle(path, m, pristine, pristine_view)
            if v.outcome == "accepted":
                key = f"{m.content}{m.refuse}{v.view}"
                if key in decoded:
                    v = decoded[key]
                elif decodes[m.kind, fuzzlib.differs(v.view, pristine_view)] < DECODES_PER_CLASS:
                    decodes[m.kind, fuzzlib.differs(v.view, pristine_view)] += 1
                    v = decoded[key] = fuzzlib.judge_decode(mxwr, path, AUDIO, transcript, m)
                else:
                    v = fuzzlib.Verdict("accepted-not-decoded")
        tally[v.outcome] += 1
        kinds[m.kind] += 1
        assert v.ok, f"{v.failure}: {v.detail}"

    case()
    print(f"\nbundle mutants: {dict(tally)}; by mutation: {dict(kinds)}; decoded: {dict(decodes)}")
    assert sum(tally.values()) >= BUNDLE_CASES
    # The mutators reach every outcome: a fuzzer that only ever hit the magic check proves nothing.
    assert {"refused", "accepted-identical"} <= set(tally), tally
    assert set(kinds) == fuzzlib.BUNDLE_KINDS, kinds
    assert decoded, "no accepted mutant differed from the original: the decode oracle never ran"


def test_audio_mutants(corpus, tmp_path):
    """Against the audio decoder (native WAV, the resampler, ffmpeg for the rest), in process."""
    files, originals = corpus
    path = tmp_path / "mutant.wav"
    tally: collections.Counter = collections.Counter()

    @settings(FUZZ, max_examples=AUDIO_CASES)
    @given(st.data())
    def case(data):
        m = fuzzlib.mutate_audio(files, _draws(data))
        note(m.describe())
        path.write_bytes(m.data)
        v = fuzzlib.judge_audio(path, m, originals)
        tally[v.outcome] += 1
        tally[f"same-as-{m.same_as is not None}"] += 1
        assert v.ok, f"{v.failure}: {v.detail}"

    case()
    print(f"\naudio mutants: {dict(tally)}")
    assert tally["refused"] + tally["accepted"] >= AUDIO_CASES
    assert tally["refused"] and tally["accepted"] and tally["same-as-True"], tally


def test_mutants_through_the_cli(pristine, workspace, pristine_view, mxwr, transcript, corpus, tmp_path):
    """The real CLI in a subprocess: exit 0, or 1 with one `mxwr: error:` line; never a signal,
    a traceback or a timeout. A bundle the reader accepts as identical to the original in what
    decoding reads must transcribe exactly as the original (the argument by construction, tested).
    Two cases at a time, each in its own working copy: the subprocesses are most of this test."""
    spaces = [workspace, fuzzlib.Workspace(pristine, tmp_path / "second.mxw")]
    failures: list[str] = []
    identical = 0

    def through_cli(m: fuzzlib.Mutant, path: Path, verdict: str, i: int) -> list[str]:
        found = []
        v = fuzzlib.judge_cli_bundle(mxwr, path)
        if v.failure:
            found.append(f"{m.describe()}: inspect: {v.failure}: {v.detail}")
        if verdict == "accepted-identical":
            v = fuzzlib.judge_decode(mxwr, path, AUDIO, transcript, m)
            if v.outcome != "accepted-decoded-identical":
                found.append(f"{m.describe()}: run: {v.outcome} {v.failure}: {v.detail}")
        elif i % 10 == 0:  # refused early, or decoded: the contract either way
            failure, what, _ = fuzzlib.run_cli(mxwr, fuzzlib.decode_args(path, AUDIO), 300)
            if failure:
                found.append(f"{m.describe()}: run: {failure}: {what}")
        return found

    with ThreadPoolExecutor(len(spaces)) as pool:
        for first in range(0, CLI_BUNDLE_CASES, len(spaces)):
            with contextlib.ExitStack() as applied:
                jobs = []
                for i, space in enumerate(spaces, first):
                    m = fuzzlib.mutate_bundle(pristine, fuzzlib.Choices.seeded(f"ci:bundle:{i}"))
                    m.case = f"bundle:ci:{i}"
                    path = applied.enter_context(space.apply(m))
                    verdict = fuzzlib.judge_bundle(path, m, pristine, pristine_view).outcome  # in this thread: it sets timers
                    identical += verdict == "accepted-identical"
                    jobs.append(pool.submit(through_cli, m, path, verdict, i))
                for job in jobs:
                    failures += job.result()

        files, _ = corpus

        def audio_case(i: int) -> list[str]:
            m = fuzzlib.mutate_audio(files, fuzzlib.Choices.seeded(f"ci:audio:{i}"))
            m.case = f"audio:ci:{i}"
            audio = tmp_path / f"mutant-{i}.wav"
            audio.write_bytes(m.data)
            failure, what, _ = fuzzlib.run_cli(mxwr, ["run", str(pristine.path), str(audio)], 300)
            return [f"{m.describe()}: run: {failure}: {what}"] if failure else []

        for found in pool.map(audio_case, range(CLI_AUDIO_CASES)):
            failures += found
    assert not failures, "\n".join(failures)
    assert identical, "no mutant was accepted as identical: the decode comparison never ran"
    assert all(space.intact() for space in spaces)


# ----------------------------------------------------------------------------------------------
# What this fuzzer found, each case built on purpose (hypothesis need not draw it again)


def _vocabulary_section(tree) -> dict:
    return next(s for s in tree["sections"] if s["name"] == tree["tokenizer"]["vocabulary_section"])


def _neighbour_offset(tree):
    weights = next(s for s in tree["sections"] if s["kind"] == "weights")
    weights["tensors"][1]["offset"] = weights["tensors"][0]["offset"]  # onto its neighbour's bytes


def _shared_name(tree):
    weights = next(s for s in tree["sections"] if s["kind"] == "weights")
    a, b = weights["tensors"][:2]
    b["name"] = a["name"]


def _newer_minor_field(record):
    def edit(tree):
        from mxwr.manifest import FORMAT_MINOR

        tree["format_version"][1] = FORMAT_MINOR + 1
        node = tree
        for key in record:
            node = node[key]
        node["zz_from_the_future"] = 1

    return edit


FOUND = {
    # decoded as a multilingual model: an empty transcript in Albanian
    "multilingual flag of an English-only model": lambda t: t["tokenizer"].__setitem__("multilingual", True),
    # TypeError: 'int' object is not iterable, in the message naming the roles
    "graph table not a map": lambda t: t["targets"][0].__setitem__("graphs", -1),
    # a wrong transcript: the weights bound were another tensor's bytes
    "tensor moved onto its neighbour": _neighbour_offset,
    "two tensors of one name": _shared_name,
    # a wrong transcript: the prompt began with <|startoflm|>
    "special id naming another token": lambda t: t["tokenizer"]["special"].__setitem__(
        "sot_prev", t["tokenizer"]["special"]["sot_lm"]),
    # other log-probabilities in every segment (61 cases of the first long run)
    "a suppressed token dropped": lambda t: t["tokenizer"]["non_speech_tokens"].pop(0),
    "another blank token": lambda t: t["tokenizer"].__setitem__("blank_tokens", [t["tokenizer"]["blank_tokens"][0] + 1]),
}


@pytest.mark.parametrize("edit", FOUND.values(), ids=FOUND.keys())
def test_found_manifest_rewrites_are_refused(pristine, workspace, pristine_view, edit):
    tree = pristine.tree()
    edit(tree)
    m = fuzzlib.with_manifest(pristine, tree)
    with workspace.apply(m) as path:
        v = fuzzlib.judge_bundle(path, m, pristine, pristine_view)
    assert v.outcome == "refused", v


@pytest.mark.parametrize("record", [("audio",), ("tokenizer", "special")], ids=".".join)
def test_found_newer_minor_field_is_ignored(pristine, workspace, pristine_view, record):
    """A newer minor's field in the audio record was passed to its constructor (a TypeError);
    one among the special ids was looked up as one (a KeyError)."""
    tree = pristine.tree()
    _newer_minor_field(record)(tree)
    m = fuzzlib.with_manifest(pristine, tree, minor=tree["format_version"][1])
    with workspace.apply(m) as path:
        v = fuzzlib.judge_bundle(path, m, pristine, pristine_view)
    assert v.outcome in ("accepted-identical", "accepted"), v  # kept in the record, read by nothing


def test_found_vocabulary_rewrites_are_refused(pristine, workspace, pristine_view):
    """Resealed vocabularies: a special token without text made every prompt a ValueError; a
    byte without its rank made tiktoken panic (a BaseException, past every handler); a zstd frame
    without its size and a raw_length of 16 GiB made the reader allocate 16 GiB."""
    import msgpack
    import zstandard

    section = _vocabulary_section(pristine.tree())
    stored = bytes(pristine.data[section["offset"] : section["offset"] + section["length"]])
    original = zstandard.ZstdDecompressor().decompress(stored)
    pieces = msgpack.unpackb(original, raw=False)
    no_special_text, no_byte = list(pieces), list(pieces)
    no_special_text[-1] = b""
    no_byte[pieces.index(b"~")] = b""
    cases = [(zstandard.ZstdCompressor().compress(msgpack.packb(p)), len(msgpack.packb(p)))
             for p in (no_special_text, no_byte)]
    cases.append((zstandard.ZstdCompressor(write_content_size=False).compress(original), 16 << 30))
    for data, raw_length in cases:
        tree = pristine.tree()
        _vocabulary_section(tree)["raw_length"] = raw_length
        m = fuzzlib.with_section(pristine, tree, section["name"], data, "rewritten")
        with workspace.apply(m) as path:
            v = fuzzlib.judge_bundle(path, m, pristine, pristine_view)
        assert v.outcome == "refused", v


def test_found_special_token_prompt_is_one_line(pristine, mxwr):
    """--initial_prompt holding a special token's text was an internal error (tiktoken's ValueError)."""
    failure, what, proc = fuzzlib.run_cli(mxwr, ["run", "--initial_prompt", "<|endoftext|>", str(pristine.path),
                                                 str(AUDIO)], 300)
    assert failure is None and proc.returncode == 1 and "special token" in what, what
