"""Helpers that more than one test module uses (fixtures stay in conftest.py): where the dev
clips are, running the console scripts, and the openai-whisper references the parity tests
compare against."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT.parent / "shared" / "data" / "dev"
BIN = Path(sys.executable).parent


def dev_manifest() -> list[dict]:
    if not DEV.is_dir():
        pytest.fail(f"dev audio not found at {DEV} (shared/ must sit beside the checkout)")
    return [json.loads(line) for line in (DEV / "manifest.jsonl").read_text().splitlines() if line.strip()]


def short_clips() -> list[Path]:
    """The dev clips that fit one window (30 s or less), the sample clip first."""
    clips = [DEV / "jfk.flac"]
    clips += [DEV / row["file"] for row in dev_manifest() if row["duration_s"] <= 30.0]
    return clips


def run_cli(*args: str, python_bin: Path = BIN, check: bool = False, env: dict | None = None,
            **kwargs) -> subprocess.CompletedProcess:
    """Runs `mxwr`/`mxwc` (the console scripts of the given environment)."""
    proc = subprocess.run([str(python_bin / args[0]), *args[1:]], capture_output=True, text=True,
                          env=env, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def __getattr__(name: str):
    """CLIPS (every dev clip, the sample clip first) and IDS (their names), read from the dev
    manifest on first use, so that a module needing neither imports this one without shared/."""
    if name in ("CLIPS", "IDS"):
        CLIPS = [DEV / "jfk.flac"] + [DEV / row["file"] for row in dev_manifest()]
        IDS = [c.name for c in CLIPS]
        globals().update(CLIPS=CLIPS, IDS=IDS)
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


WORD_TOLERANCE = 0.02  # seconds


def reference(model, clip, **options) -> dict:
    import whisper

    return whisper.transcribe(model, str(clip), fp16=False, verbose=None, **options)


_REFERENCES: dict = {}


def reference_with_attempts(model, clip, **options) -> tuple[dict, list[tuple[float, list[int]]]]:
    """openai-whisper's result and every decode() it made: (temperature, tokens); run once per
    model, clip and options in a test session."""
    key = (id(model), str(clip), tuple(sorted(options.items())))
    if key not in _REFERENCES:
        _REFERENCES[key] = _reference_with_attempts(model, clip, **options)
    return _REFERENCES[key]


def _reference_with_attempts(model, clip, **options):
    attempts = []
    decode = model.decode

    def recording(mel, opts):
        result = decode(mel, opts)
        attempts.append((opts.temperature, list(result.tokens)))
        return result

    model.decode = recording
    try:
        return reference(model, clip, **options), attempts
    finally:
        del model.decode


def ours_with_attempts(transcriber, clip, **options) -> tuple[dict, list[tuple[float, list[int]]]]:
    from mxwr import decoding

    attempts = []
    run = decoding.DecodingTask.run

    def recording(task, ctx):
        results = run(task, ctx)
        attempts.append((task.options.temperature, results[0].tokens))
        return results

    decoding.DecodingTask.run = recording
    try:
        return transcriber.transcribe(clip, **options), attempts
    finally:
        decoding.DecodingTask.run = run


def assert_parity(transcriber, model, clip, words: bool = False, **options) -> None:
    """Same segments as openai-whisper. Where openai-whisper falls back to sampling
    (temperature > 0) its output is drawn from torch's random generator, which no other
    program reproduces: there both must have made the same deterministic attempts, reached the
    same fallback at the same point, and each sample must be a valid result."""
    theirs, their_attempts = reference_with_attempts(model, clip, word_timestamps=words, **options)
    ours, our_attempts = ours_with_attempts(transcriber, clip, word_timestamps=words, **options)
    sampled = next((i for i, (t, _) in enumerate(their_attempts) if t > 0), None)
    if sampled is None:
        assert [t for t, _ in our_attempts] == [t for t, _ in their_attempts]
        assert_same_result(ours, theirs, words=words)
        return
    assert our_attempts[:sampled] == their_attempts[:sampled]
    assert our_attempts[sampled][0] == their_attempts[sampled][0]  # the same fallback, at the same window
    assert all(s["temperature"] in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0) for s in ours["segments"])


def assert_same_result(ours: dict, theirs: dict, words: bool = False) -> None:
    assert ours["language"] == theirs["language"]
    assert [s["text"] for s in ours["segments"]] == [s["text"] for s in theirs["segments"]]
    assert ours["text"] == theirs["text"]
    for a, b in zip(ours["segments"], theirs["segments"], strict=True):
        assert a["tokens"] == b["tokens"]
        assert (a["id"], a["seek"], a["temperature"]) == (b["id"], b["seek"], b["temperature"])
        assert a["start"] == pytest.approx(b["start"], abs=1e-6) and a["end"] == pytest.approx(b["end"], abs=1e-6)
        for key in ("avg_logprob", "compression_ratio", "no_speech_prob"):
            assert a[key] == pytest.approx(b[key], abs=1e-3), key
        if words:
            assert [w["word"] for w in a["words"]] == [w["word"] for w in b["words"]]
            for wa, wb in zip(a["words"], b["words"]):
                assert abs(wa["start"] - wb["start"]) <= WORD_TOLERANCE, (wa, wb)
                assert abs(wa["end"] - wb["end"]) <= WORD_TOLERANCE, (wa, wb)
                assert wa["probability"] == pytest.approx(wb["probability"], abs=1e-3)


def reference_tokens(model, path) -> list[int]:
    import whisper

    audio = whisper.load_audio(str(path))
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio))
    options = whisper.DecodingOptions(language="en", without_timestamps=True, temperature=0, fp16=False)
    return list(model.decode(mel, options).tokens)


DECODE_ARGS = ("--independent_windows", "True", "--without_timestamps", "True", "--beam_size", "None",
               "--temperature", "0")


def assert_one_line_error(proc, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("mxwr: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


def rewrite_bundle(path: Path, edit=None, sections=None, minor: int | None = None) -> None:
    """Rewrites a bundle in place as a forger would: the manifest edited by `edit(manifest)`, each
    named section's bytes replaced by `sections[name](bytes)` (of the same length), and every
    checksum (the sections', the manifest's in the header) recomputed to match; `minor` rewrites
    the header's format minor."""
    import hashlib

    import msgpack

    from mxwr.bundle import HEADER

    data = bytearray(path.read_bytes())
    magic, major, old_minor, flags, offset, length, _ = HEADER.unpack_from(data, 0)
    manifest = msgpack.unpackb(bytes(data[offset : offset + length]), raw=False)
    for entry in manifest["sections"]:
        change = (sections or {}).get(entry["name"])
        if change is not None:
            start, end = entry["offset"], entry["offset"] + entry["length"]
            new = change(bytes(data[start:end]))
            assert len(new) == entry["length"]
            data[start:end] = new
            entry["sha256"] = hashlib.sha256(new).hexdigest()
    if edit is not None:
        edit(manifest)
    blob = msgpack.packb(manifest, use_bin_type=True)
    data[offset:] = blob
    HEADER.pack_into(data, 0, magic, major, old_minor if minor is None else minor, flags, offset, len(blob),
                     hashlib.sha256(blob).digest())
    path.write_bytes(bytes(data))
