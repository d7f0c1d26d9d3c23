"""Each class of hostile input that once crashed, hung, leaked a traceback or answered wrongly:
rewritten bundles (checksums recomputed, so only the reader's checks of meaning stand between
them and MAX) and odd audio. Each gets one bounded line on stderr and a non-zero exit, or, where
openai-whisper transcribes the input, openai-whisper's transcript."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct

import numpy as np
import pytest

from mxwr.bundle import HEADER, BundleReader
from support import DEV, assert_one_line_error, reference, rewrite_bundle, run_cli

JFK = DEV / "jfk_inaugural.wav"
TIMEOUT = 120  # seconds: a hang fails the test instead of blocking the suite


def mxwr(*args: str, **kwargs):
    return run_cli("mxwr", *args, timeout=TIMEOUT, **kwargs)


def rewritten(bundle, tmp_path, edit=None, sections=None, name="hostile.mxw"):
    """A copy of `bundle` rewritten by `rewrite_bundle` (every checksum recomputed)."""
    out = tmp_path / name
    shutil.copyfile(bundle, out)
    rewrite_bundle(out, edit, sections)
    return out


def section(manifest, kind):
    return next(s for s in manifest["sections"] if s["kind"] == kind)


def tensor(manifest, name):
    return next(t for t in section(manifest, "weights")["tensors"] if t["name"] == name)


def float_wav(path, samples: np.ndarray, rate: int = 16000) -> None:
    data = samples.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


# -- the tensor table: what MAX's loader was once handed unchecked (SIGSEGV, no message) ----------


def _halve_a_shape(m):
    t = tensor(m, "decoder.blocks.0.attn.query.weight")
    t["shape"] = [t["shape"][0], t["shape"][1] // 2]
    t["nbytes"] //= 2


def _retype(m):
    tensor(m, "encoder.conv1.weight")["dtype"] = "int32"  # same item size, so it still fits


def _rename(m):
    tensor(m, "decoder.ln.bias")["name"] = "decoder.ln.offset"


@pytest.mark.parametrize("edit", [_halve_a_shape, _retype, _rename], ids=["shape", "dtype", "name"])
def test_a_mistyped_tensor_entry_is_refused_before_max_sees_it(tiny_bundle, tmp_path, edit):
    proc = mxwr("run", str(rewritten(tiny_bundle, tmp_path, edit)), str(JFK))
    assert proc.returncode == 1, (proc.returncode, proc.stderr)  # not -11 (SIGSEGV)
    assert_one_line_error(proc, "weights")


# -- manifests that disagree with their graphs or their sections ------------------------------------


def test_a_smaller_max_seq_than_compiled_is_refused(tiny_bundle, tmp_path):
    """Once it transcribed, cut short at the smaller length."""
    bad = rewritten(tiny_bundle, tmp_path, lambda m: m["shape"].__setitem__("max_seq", 224))
    for command in ("run", "inspect"):
        args = [str(bad), str(JFK)] if command == "run" else [str(bad)]
        assert_one_line_error(mxwr(command, *args), "compiled for other dimensions")


def test_mel_filters_of_nan_are_refused(tiny_bundle, tmp_path):
    """Once an empty transcript, exit 0."""

    def nan_filters(data: bytes) -> bytes:
        return np.full(len(data) // 4, np.nan, "<f4").tobytes()

    bad = rewritten(tiny_bundle, tmp_path, sections={"mel_filters": nan_filters})
    assert_one_line_error(mxwr("run", str(bad), str(JFK)), "mel filterbank", "non-finite")
    assert_one_line_error(mxwr("inspect", str(bad)), "mel filterbank", "non-finite")  # meaning, not only hashes


def test_nan_weights_give_an_error_not_a_transcript(tiny_bundle, tmp_path):
    def nan_weights(data: bytes) -> bytes:
        return np.full(len(data) // 4, np.nan, "<f4").tobytes()

    with BundleReader(tiny_bundle) as reader:
        weights = reader.manifest.targets[0].weights_section
    bad = rewritten(tiny_bundle, tmp_path, sections={weights: nan_weights})
    assert_one_line_error(mxwr("run", str(bad), str(JFK)), "NaN", "corrupt")
    assert_one_line_error(mxwr("inspect", str(bad)), "weights hold non-finite values")


@pytest.mark.parametrize("edit, needle", [
    (lambda m: m["dims"].__setitem__("n_text_layer", 10**9), "malformed model dimensions"),
    (lambda m: section(m, "vocabulary").__setitem__("raw_length", 10**15), "raw_length"),
    (lambda m: m.__delitem__("dims"), "without dims"),
    (lambda m: m["dims"].__setitem__("n_mels", "80"), "malformed model dimensions"),
    (lambda m: m["tokenizer"].__setitem__("pattern", "(unclosed"), "tokenizer pattern"),
    (lambda m: m.__setitem__("model", ["tiny.en"]), "model entry"),
    (lambda m: m["shape"].__setitem__("batch", 2), "other dimensions"),
], ids=["1e9-layers", "raw-length", "no-dims", "mistyped-dims", "tokenizer-pattern", "model-as-list", "batch"])
def test_manifest_fields_are_checked_before_use(tiny_bundle, tmp_path, edit, needle):
    """Once: memory growing until the host died (10^9 layers), unbounded decompression, and
    KeyError / TypeError / tiktoken's ValueError / AttributeError (inspect) / MAX's ValueError
    on a batch the graph was not compiled for, as tracebacks."""
    bad = rewritten(tiny_bundle, tmp_path, edit)
    for command in ("run", "inspect"):
        args = [str(bad), str(JFK)] if command == "run" else [str(bad)]
        assert_one_line_error(mxwr(command, *args), needle)


def test_a_huge_name_is_not_echoed_whole(tiny_bundle, tmp_path):
    """Once a 52 MB line on stderr."""
    bad = rewritten(tiny_bundle, tmp_path, lambda m: section(m, "vocabulary").__setitem__("name", "v" * (50 << 20)))
    proc = mxwr("inspect", str(bad))
    assert_one_line_error(proc, "section name")
    assert len(proc.stderr) < 400


def test_an_undecodable_manifest_says_why(tiny_bundle, tmp_path):
    """Once `unreadable manifest ()`: the reason is never blank."""
    data = bytearray(tiny_bundle.read_bytes())
    magic, major, minor, flags, offset, length, _ = HEADER.unpack_from(data, 0)
    blob = b"\xc1" * 64  # a byte msgpack never uses
    data[offset:] = blob
    HEADER.pack_into(data, 0, magic, major, minor, flags, offset, len(blob), hashlib.sha256(blob).digest())
    bad = tmp_path / "garbage.mxw"
    bad.write_bytes(bytes(data))
    line = mxwr("inspect", str(bad)).stderr.strip()
    assert "unreadable manifest" in line and "()" not in line, line


@pytest.mark.parametrize("raw", [False, True], ids=["zstd", "msgpack"])
def test_a_corrupt_vocabulary_says_why(tiny_bundle, tmp_path, raw):
    """Once `section 'vocabulary':` with nothing after it (msgpack's FormatError has no message)."""

    def as_raw(m):
        vocabulary = section(m, "vocabulary")
        vocabulary.update(encoding="raw", raw_length=vocabulary["length"])

    fill = b"\xc1" if raw else b"\0"  # a byte msgpack never uses; no zstd frame starts with zeros
    bad = rewritten(tiny_bundle, tmp_path, as_raw if raw else None, sections={"vocabulary": lambda data: fill * len(data)})
    proc = mxwr("run", str(bad), str(JFK))
    assert_one_line_error(proc, "'vocabulary'", "msgpack (FormatError)" if raw else "zstd")
    assert not proc.stderr.strip().endswith(":"), proc.stderr


def test_a_bundle_for_another_max_is_refused_before_loading(tiny_bundle, tmp_path):
    bad = rewritten(tiny_bundle, tmp_path, lambda m: m["producer"].__setitem__("max_version", "25.1.0"))
    from importlib.metadata import version

    assert_one_line_error(mxwr("run", str(bad), str(JFK)), "MAX 25.1.0", f"MAX {version('max')}", "rebuild")


def test_a_bundle_for_another_cpu_is_refused_before_loading(tiny_bundle, tmp_path):
    """A CPU target is compiled for the CPU that built it: on one without an extension its code
    uses, one line saying which, not an illegal instruction."""
    from mxwr.targets import CPU_FEATURES, this_cpu

    _, features = this_cpu()
    lacking = next(f for f in CPU_FEATURES if f not in features)  # e.g. amx_tile on this EPYC
    bad = rewritten(tiny_bundle, tmp_path, lambda m: m["producer"]["host"]["cpu_features"].append(lacking))
    assert_one_line_error(mxwr("run", str(bad), str(JFK)), lacking, "this one lacks", "build the bundle on this kind of CPU")


# -- audio ----------------------------------------------------------------------------------------


def test_non_finite_samples_do_not_blank_the_transcript(tiny_bundle, reference_model, tmp_path):
    """One NaN sample once emptied the whole transcript (exit 0); openai-whisper transcribes such
    a file normally, and so does mxwr now: the same text."""
    from mxwr.audio import load_audio

    samples = load_audio(JFK)
    samples[1000] = np.nan
    samples[50000] = np.inf
    samples[90000] = -np.inf
    path = tmp_path / "nan.wav"
    float_wav(path, samples)
    proc = mxwr("run", str(tiny_bundle), str(path), "--output_format", "json")
    assert proc.returncode == 0, proc.stderr
    import json

    ours = json.loads(proc.stdout)["text"]
    theirs = reference(reference_model, path)["text"]
    assert ours.strip() and ours == theirs


def test_a_wav_claiming_1_hz_is_refused_at_once(tiny_bundle, tmp_path):
    """Once 344 bytes took minutes of CPU (100 KB: hours, and a 6 GB temporary file)."""
    path = tmp_path / "slow.wav"
    float_wav(path, np.zeros(20000, np.float32), rate=1)
    proc = run_cli("mxwr", "run", str(tiny_bundle), str(path), timeout=60)
    assert_one_line_error(proc, "sample rate 1 Hz")


def test_audio_longer_than_max_duration_is_refused(tiny_bundle, tmp_path):
    proc = mxwr("run", str(tiny_bundle), str(JFK), "--max_duration", "5")
    assert_one_line_error(proc, "longer than --max_duration")
    proc = mxwr("run", str(tiny_bundle), str(DEV / "jfk.flac"), "--max_duration", "5")  # through ffmpeg
    assert_one_line_error(proc, "longer than --max_duration")


def test_a_fifo_as_audio_is_refused_without_blocking(tiny_bundle, tmp_path):
    fifo = tmp_path / "audio.wav"
    os.mkfifo(fifo)
    assert_one_line_error(run_cli("mxwr", "run", str(tiny_bundle), str(fifo), timeout=60), "not a regular file")


def test_an_audio_name_is_never_an_ffmpeg_protocol(tiny_bundle, tmp_path, monkeypatch):
    """A file named like an ffmpeg protocol ("concat:a|b", "subfile,...") is read as that file."""
    import shutil

    folder = tmp_path / "concat:x"
    folder.mkdir()
    tricky = folder / "jfk.flac"
    shutil.copyfile(DEV / "jfk.flac", tricky)
    monkeypatch.chdir(tmp_path)
    plain = mxwr("run", str(tiny_bundle), str(DEV / "jfk.flac"))
    proc = mxwr("run", str(tiny_bundle), "concat:x/jfk.flac")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == plain.stdout and proc.stdout.strip()


# -- the command line -----------------------------------------------------------------------------


def test_an_unexpected_exception_is_one_line_and_debug_shows_its_trace(capsys):
    import click

    from mxwr.cli import debug_option, run_cli as run_group

    @click.group()
    @debug_option
    def group():
        pass

    @group.command()
    def boom():
        raise ValueError("x" * 10_000)

    for argv, traced in ((["boom"], False), (["--debug", "boom"], True)):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("sys.argv", ["mxwr", *argv])
            with pytest.raises(SystemExit) as exit_:
                run_group(group, "mxwr", ())
        err = capsys.readouterr().err
        assert exit_.value.code == 2
        last = err.strip().splitlines()[-1]
        assert last.startswith("mxwr: error: internal error (ValueError: xxx") and len(last) <= 300
        assert ("Traceback (most recent call last)" in err) == traced
