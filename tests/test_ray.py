"""mxwr.ray on a local Ray instance (this machine): the same transcripts as `mxwr run` on the dev
clips, through `mxwr cluster` (a real process) and through `transcribe_dataset` on a dataset of
the files' bytes; a file that fails is its row's error, and the others finish."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from support import CLIPS, DEV, assert_one_line_error, assert_same_result, run_cli


def in_fresh_python(code: str, *args: str) -> object:
    """Runs `code` in a new interpreter and returns what it prints as JSON: pyarrow (under Ray
    Data) crashes in a process that has loaded torch and MAX, as the test process has."""
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


READ_PARQUET = """
import json, sys
import pyarrow.parquet as pq
print(json.dumps(pq.read_table(sys.argv[1]).to_pylist()))
"""

TRANSCRIBE_DATASET = """
import json, sys
import ray
from mxwr.ray import transcribe_dataset

folder, bundle, out = sys.argv[1:]
ray.init(address="local", num_cpus=2, include_dashboard=False)
try:
    files = ray.data.read_binary_files(folder, include_paths=True)
    results = transcribe_dataset(files, bundle, actors=1).materialize()
    results.write_json(out)
    print(json.dumps(results.take_all()))
finally:
    ray.shutdown()
"""


@pytest.fixture(scope="module")
def mxwr_run(tiny_bundle) -> dict[str, dict]:
    """`mxwr run --output_format json` on every dev clip: openai-whisper's result per clip."""
    proc = run_cli("mxwr", "run", str(tiny_bundle), *map(str, CLIPS), "--output_format", "json", check=True)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(CLIPS)
    return {clip.name: json.loads(line) for clip, line in zip(CLIPS, lines)}


def test_cluster_gives_mxwr_run_transcripts(tiny_bundle, mxwr_run, tmp_path):
    out = tmp_path / "results"
    proc = run_cli("mxwr", "cluster", str(tiny_bundle), str(DEV), "--output_dir", str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = in_fresh_python(READ_PARQUET, str(out))
    assert sorted(r["path"] for r in rows) == sorted(str(c) for c in CLIPS)  # the folder's audio, once each
    for row in rows:
        expected = mxwr_run[row["path"].rsplit("/", 1)[-1]]
        assert row["error"] is None
        # Segment for segment, token for token (the log-probabilities to 1e-3: an actor may run
        # on fewer threads than `mxwr run`, which may reorder a float sum).
        assert_same_result(json.loads(row["result"]), expected)
        assert (row["text"], row["language"]) == (expected["text"], expected["language"])
        assert row["duration_s"] > 0
    last = proc.stderr.strip().splitlines()[-1]
    assert re.match(rf"mxwr: {len(CLIPS)} files: {len(CLIPS)} transcribed, 0 skipped, 0 failed; .* RTF \d", last), last


def test_transcribe_dataset_from_bytes(tiny_bundle, mxwr_run, tmp_path):
    """A dataset of the files' contents (as from any filesystem Ray Data reads); an unreadable one
    fails alone, and JSONL holds the same rows."""
    folder = tmp_path / "in"
    folder.mkdir()
    names = ["jfk.flac", "sr_english_one_two_three.wav", "ls_tc_1089-134686-0001.wav"]
    for name in names:
        shutil.copy(DEV / name, folder)
    (folder / "broken.wav").write_bytes(b"not a wav")
    taken = in_fresh_python(TRANSCRIBE_DATASET, str(folder), str(tiny_bundle), str(tmp_path / "jsonl"))
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in taken}
    assert set(rows) == {*names, "broken.wav"}
    assert rows["broken.wav"]["error"].startswith("cannot decode") and str(folder / "broken.wav") in rows["broken.wav"]["error"]
    assert rows["broken.wav"]["text"] is None and "bytes" not in rows["broken.wav"]
    for name in names:  # transcribe()'s defaults are `mxwr run`'s on a bundle without beams
        assert rows[name]["error"] is None
        assert_same_result(json.loads(rows[name]["result"]), mxwr_run[name])
    written = [json.loads(line) for f in sorted((tmp_path / "jsonl").iterdir()) for line in f.read_text().splitlines()]
    assert sorted(r["path"] for r in written) == sorted(r["path"] for r in rows.values())
    assert all(r["result"] == rows[r["path"].rsplit("/", 1)[-1]]["result"] for r in written)


def test_cluster_refuses_before_starting_ray(tiny_bundle, tmp_path):
    """Bad input is one line before Ray starts: results would be mixed into a folder in use, or
    there is no audio."""
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "old.parquet").write_bytes(b"")
    proc = run_cli("mxwr", "cluster", str(tiny_bundle), str(DEV), "--output_dir", str(tmp_path / "used"), timeout=120)
    assert_one_line_error(proc, "not empty")
    (tmp_path / "empty").mkdir()
    proc = run_cli("mxwr", "cluster", str(tiny_bundle), str(tmp_path / "empty"), "--output_dir", str(tmp_path / "o"),
                   timeout=120)
    assert_one_line_error(proc, "no audio files")
