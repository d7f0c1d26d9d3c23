"""`mxwr run` on folders and many files (real processes, over a copy of dev clips): one output
per clip, the same outputs as running each clip alone, a summary with the real-time factor, a
second run with --skip_existing that skips them, and an unreadable file reported while the others
finish."""

from __future__ import annotations

import os
import pty
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from support import BIN, DECODE_ARGS, DEV, assert_one_line_error, run_cli

FORMATS = ("json", "srt", "tsv", "txt", "vtt")
# Where each clip goes in the folder: the top, and a subfolder (its outputs go to the same one).
LAYOUT = {
    "jfk.flac": "",  # through ffmpeg
    "sr_english_one_two_three.wav": "",  # 44.1 kHz: resampled
    "ls_tc_1089-134686-0001.wav": "sub",
    "ns_empty_pv.wav": "sub",  # no speech: its outputs are written all the same
}
SUMMARY = re.compile(r"mxwr: (\d+) files: (\d+) transcribed, (\d+) skipped, (\d+) failed; ([\d.]+) h of audio "
                     r"\(([\d.]+) s\) in ([\d.]+) s wall; RTF (\S+)")


def summary(stderr: str) -> tuple:
    lines = [line for line in stderr.splitlines() if SUMMARY.fullmatch(line)]
    assert len(lines) == 1 and stderr.rstrip().endswith(lines[0]), stderr  # one, and last
    return SUMMARY.fullmatch(lines[0]).groups()


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("mxwr: error: ")]


def outputs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> Path:
    """The input folder: the clips, an unreadable .wav, and files a walk leaves out."""
    root = tmp_path_factory.mktemp("batch")
    folder = root / "in"
    for name, sub in LAYOUT.items():
        (folder / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(DEV / name, folder / sub / name)
    (folder / "sub" / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(64))
    (folder / "notes.txt").write_text("not audio")
    (folder / ".hidden.wav").write_bytes(b"not audio either")  # hidden: left out
    return folder


@pytest.fixture(scope="module")
def alone(tiny_bundle, job) -> dict[str, bytes]:
    """Each clip's outputs from `mxwr run` on that clip alone (keyed as the batch writes them)."""
    found = {}
    for name, sub in LAYOUT.items():
        out = job.parent / "alone" / name
        run_cli("mxwr", "run", str(tiny_bundle), str(job / sub / name), "--output_dir", str(out), check=True)
        found.update({os.path.join(sub, key): data for key, data in outputs(out).items()})
    return found


@pytest.fixture(scope="module")
def first_run(tiny_bundle, job):
    out = job.parent / "out"
    started = time.monotonic()
    proc = run_cli("mxwr", "run", str(tiny_bundle), str(job), "--output_dir", str(out))
    return proc, out, time.monotonic() - started


def test_batch_writes_each_clip_as_alone_and_reports_the_bad_file(first_run, alone):
    proc, out, elapsed = first_run
    assert proc.returncode == 1, proc.stderr  # some file failed
    assert proc.stdout == ""
    (line,) = errors(proc.stderr)
    assert "broken.wav" in line
    expected = {os.path.join(sub, f"{Path(name).stem}.{fmt}") for name, sub in LAYOUT.items() for fmt in FORMATS}
    written = outputs(out)
    assert set(written) == expected  # one set per clip, none for the broken file, no staging left
    assert written == alone  # byte for byte what each clip gives on its own

    files, transcribed, skipped, failed, hours, seconds, wall, rtf = summary(proc.stderr)
    assert (int(files), int(transcribed), int(skipped), int(failed)) == (5, 4, 0, 1)
    import whisper  # the clips' lengths as openai-whisper reads them

    length = sum(len(whisper.load_audio(str(DEV / name))) / 16000 for name in LAYOUT)
    assert float(seconds) == pytest.approx(length, abs=0.1)
    assert float(hours) == pytest.approx(length / 3600, abs=0.001)
    assert 0 < float(wall) <= elapsed + 0.1
    assert float(rtf) == pytest.approx(float(wall) / float(seconds), abs=0.01)


def test_second_run_skips_what_exists(tiny_bundle, job, first_run):
    _, out, _ = first_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    (out / "sub" / "ns_empty_pv.vtt").unlink()  # one output missing: that clip runs again
    proc = run_cli("mxwr", "run", str(tiny_bundle), str(job), "--output_dir", str(out), "--skip_existing")
    assert proc.returncode == 1, proc.stderr  # the broken file still fails
    (line,) = errors(proc.stderr)
    assert "broken.wav" in line
    files, transcribed, skipped, failed, *_ = summary(proc.stderr)
    assert (int(files), int(transcribed), int(skipped), int(failed)) == (5, 1, 3, 1)
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert set(after) == set(before)
    rewritten = {p.relative_to(out).as_posix() for p in after if after[p] != before.get(p)}
    assert rewritten == {f"sub/ns_empty_pv.{fmt}" for fmt in FORMATS}

    proc = run_cli("mxwr", "run", str(tiny_bundle), str(job), "--output_dir", str(out), "--skip_existing",
                   "--output_format", "txt")  # all there now
    *_, seconds, _, rtf = summary(proc.stderr)
    assert "4 skipped" in proc.stderr and float(seconds) == 0 and rtf == "n/a"


def test_same_name_twice_fails_rather_than_overwrite(tiny_bundle, job, alone, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(DEV / "sr_english_one_two_three.wav", tmp_path / "a" / "clip.wav")
    shutil.copy(DEV / "ls_tc_1089-134686-0001.wav", tmp_path / "b" / "clip.wav")
    out = tmp_path / "out"
    proc = run_cli("mxwr", "run", str(tiny_bundle), str(tmp_path / "a" / "clip.wav"), str(tmp_path / "b" / "clip.wav"),
                   "--output_dir", str(out), "--output_format", "txt")
    assert proc.returncode == 1
    (line,) = errors(proc.stderr)
    assert str(tmp_path / "b" / "clip.wav") in line and "overwrite" in line
    assert outputs(out) == {"clip.txt": alone["sr_english_one_two_three.txt"]}  # the first one's


def test_one_failing_file_is_still_one_line(tiny_bundle, job, tmp_path):
    proc = run_cli("mxwr", "run", str(tiny_bundle), str(job / "sub" / "broken.wav"), "--output_dir", str(tmp_path))
    assert_one_line_error(proc, "broken.wav")
    assert proc.returncode == 1


def test_a_folder_without_audio_is_one_line(tiny_bundle, tmp_path):
    (tmp_path / "notes.txt").write_text("not audio")
    assert_one_line_error(run_cli("mxwr", "run", str(tiny_bundle), str(tmp_path)), "no audio files", str(tmp_path))


def on_terminal(*args: str) -> tuple[int, str]:
    """Runs mxwr with stderr (and stdin) on a pseudo-terminal; (exit status, what it showed)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([str(BIN / "mxwr"), *args], stdin=follower, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    return proc.wait(timeout=120), shown.decode(errors="replace")


def test_progress_line_only_on_a_terminal(tiny_bundle, tmp_path, first_run):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(DEV / "sr_english_one_two_three.wav", folder)
    (folder / "broken.wav").write_bytes(b"not a wav")
    status, shown = on_terminal("run", str(tiny_bundle), str(folder), "--output_dir", str(tmp_path / "out"))
    assert status == 1
    assert "] 2/2 files, 0:00:02 of audio" in shown  # files, and the 2.7 s of audio done
    assert "\r\x1b[K[" in shown  # drawn in place
    assert "mxwr: error: " in shown and "mxwr: 2 files: 1 transcribed" in shown
    status, shown = on_terminal("run", str(tiny_bundle), str(folder), "--output_dir", str(tmp_path / "out2"),
                                "--verbose", "False")
    assert status == 1 and "files, " not in shown and "\r" not in shown.replace("\r\n", "\n")
    assert "mxwr: 2 files: 1 transcribed" in shown
    assert "\r" not in first_run[0].stderr  # not a terminal: no progress line


def test_independent_windows_isolate_a_failure_too(tiny_bundle, tmp_path):
    """--independent_windows decodes the files' windows together: a file that cannot be read
    fails alone, and the others' results are those of a job without it."""
    clips = [DEV / "sr_english_one_two_three.wav", DEV / "ls_tc_1089-134686-0001.wav"]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not a wav")
    args = ("--output_format", "json", *DECODE_ARGS)
    clean = run_cli("mxwr", "run", str(tiny_bundle), *map(str, clips), *args, check=True)
    proc = run_cli("mxwr", "run", str(tiny_bundle), str(clips[0]), str(broken), str(clips[1]), *args)
    assert proc.returncode == 1
    (line,) = errors(proc.stderr)
    assert str(broken) in line
    assert proc.stdout == clean.stdout and len(proc.stdout.splitlines()) == 2
    assert summary(proc.stderr)[:4] == ("3", "2", "0", "1")
