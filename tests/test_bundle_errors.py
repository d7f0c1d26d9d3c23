"""Bad input: each case is a one-line error naming the problem and a non-zero exit."""

from __future__ import annotations

import shutil
import struct

import pytest

from mxwr.bundle import HEADER, BundleReader
from mxwr.manifest import FORMAT_MAJOR
from support import DEV, assert_one_line_error, rewrite_bundle, run_cli

JFK = DEV / "jfk_inaugural.wav"


def sections_of(bundle) -> list[dict]:
    with BundleReader(bundle) as reader:
        return reader.manifest.to_dict()["sections"]


def copy(bundle, tmp_path, name="copy.mxw"):
    out = tmp_path / name
    shutil.copyfile(bundle, out)
    return out


def rewrite_manifest(path, edit) -> None:
    """Rewrites the manifest (with a valid checksum) so only `edit`'s change is wrong."""
    rewrite_bundle(path, edit)


def test_every_section_is_checksummed(tiny_bundle, tmp_path):
    """A corrupted byte in any section is caught, and the error names that section."""
    sections = sections_of(tiny_bundle)
    assert {s["kind"] for s in sections} >= {"weights", "mef", "vocabulary", "mel_filters"}
    for s in sections:
        bad = copy(tiny_bundle, tmp_path, f"{s['name']}.mxw")
        with open(bad, "r+b") as f:
            f.seek(s["offset"] + s["length"] // 2)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0xFF]))
        proc = run_cli("mxwr", "run", str(bad), str(JFK))
        assert_one_line_error(proc, "corrupt", repr(s["name"]))
        bad.unlink()


def test_graphs_loaded_on_demand_are_checked_up_front(tiny_bundle, tmp_path):
    """A graph a run may never load (the front end, word timestamps' align) is not read out when
    the bundle opens, yet a frame that is not what the manifest says is refused then, checksum or
    not (a forger recomputes checksums): one line naming the section, before any output."""
    from mxwr.graphspec import SPECS

    with BundleReader(tiny_bundle) as reader:
        on_demand = [e.section for t in reader.manifest.targets for role, e in t.graphs.items()
                     if SPECS[role].on_demand and reader.section(e.section).encoding == "zstd"]
    assert on_demand
    for name in on_demand:
        bad = copy(tiny_bundle, tmp_path, f"{name}.mxw")
        rewrite_bundle(bad, sections={name: lambda b: bytes([b[0] ^ 0xFF]) + b[1:]})  # the frame's magic
        proc = run_cli("mxwr", "run", str(bad), str(JFK), "--beam_size", "None", "--best_of", "None")
        assert_one_line_error(proc, "corrupt", repr(name), "zstd")
        assert proc.stdout == ""
        bad.unlink()


def test_corrupted_manifest(tiny_bundle, tmp_path):
    bad = copy(tiny_bundle, tmp_path)
    data = bytearray(bad.read_bytes())
    offset = HEADER.unpack_from(data, 0)[4]
    data[offset + 10] ^= 0xFF
    bad.write_bytes(bytes(data))
    assert_one_line_error(run_cli("mxwr", "run", str(bad), str(JFK)), "corrupt", "manifest")


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_file(tiny_bundle, tmp_path, keep):
    bad = copy(tiny_bundle, tmp_path)
    size = bad.stat().st_size
    with open(bad, "r+b") as f:
        f.truncate(int(size * keep))
    assert_one_line_error(run_cli("mxwr", "run", str(bad), str(JFK)), "truncated")


def test_tiny_file_is_not_a_bundle(tmp_path):
    bad = tmp_path / "tiny.mxw"
    bad.write_bytes(b"MXW")
    assert_one_line_error(run_cli("mxwr", "run", str(bad), str(JFK)), "not an mxw bundle")


def test_wrong_magic(tiny_bundle, tmp_path):
    bad = copy(tiny_bundle, tmp_path)
    with open(bad, "r+b") as f:
        f.write(b"PK\x03\x04")
    assert_one_line_error(run_cli("mxwr", "run", str(bad), str(JFK)), "not an mxw bundle", "magic")


@pytest.mark.parametrize("version, advice", [((FORMAT_MAJOR + 1, 0), "upgrade mxwr"),
                                             ((FORMAT_MAJOR - 1, 9), "rebuild the bundle")])
def test_unknown_major_version(tiny_bundle, tmp_path, version, advice):
    bad = copy(tiny_bundle, tmp_path)
    with open(bad, "r+b") as f:
        f.seek(8)
        f.write(struct.pack("<HH", *version))
    assert_one_line_error(run_cli("mxwr", "run", str(bad), str(JFK)), "format %d.%d" % version, advice)


def test_section_offset_outside_the_file(tiny_bundle, tmp_path):
    bad = copy(tiny_bundle, tmp_path)

    def move_weights(manifest):
        manifest["sections"][0]["offset"] = 10**12

    rewrite_manifest(bad, move_weights)
    assert_one_line_error(run_cli("mxwr", "run", str(bad), str(JFK)), "outside the data area")


def test_tensor_entry_outside_its_section(tiny_bundle, tmp_path):
    bad = copy(tiny_bundle, tmp_path)

    def stretch_tensor(manifest):
        weights = next(s for s in manifest["sections"] if s["kind"] == "weights")
        weights["tensors"][0]["offset"] = weights["length"]

    rewrite_manifest(bad, stretch_tensor)
    assert_one_line_error(run_cli("mxwr", "run", str(bad), str(JFK)), "does not fit")


def test_missing_bundle(tmp_path):
    assert_one_line_error(run_cli("mxwr", "run", str(tmp_path / "nope.mxw"), str(JFK)), "not found")


def test_missing_audio(tiny_bundle, tmp_path):
    proc = run_cli("mxwr", "run", str(tiny_bundle), str(tmp_path / "nope.wav"))
    assert_one_line_error(proc, "audio file not found", "nope.wav")


def test_text_file_as_audio(tiny_bundle, tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    assert_one_line_error(run_cli("mxwr", "run", str(tiny_bundle), str(text)), "cannot decode", "notes.wav")


def test_wrong_target_is_refused(tiny_bundle):
    proc = run_cli("mxwr", "run", "--device", "gpu", str(tiny_bundle), str(JFK))
    assert_one_line_error(proc, "targets [cpu]")


def test_misaligned_section_is_refused(tiny_bundle, tmp_path):
    bad = copy(tiny_bundle, tmp_path)

    def shift(manifest):
        manifest["sections"][1]["offset"] += 8  # still inside the file, off the 64-byte grid

    rewrite_manifest(bad, shift)
    assert_one_line_error(run_cli("mxwr", "run", str(bad), str(JFK)), "not 64-byte aligned")


def test_overlapping_sections_are_refused(tiny_bundle, tmp_path):
    """Two sections sharing bytes (a mel filterbank pointed into the weights) are refused
    before either is read: each section is its own bytes."""
    bad = copy(tiny_bundle, tmp_path)

    def overlap(manifest):
        weights = next(s for s in manifest["sections"] if s["kind"] == "weights")
        filters = next(s for s in manifest["sections"] if s["kind"] == "mel_filters")
        filters["offset"] = weights["offset"] + 64

    rewrite_manifest(bad, overlap)
    assert_one_line_error(run_cli("mxwr", "run", str(bad), str(JFK)), "overlap")


@pytest.mark.parametrize("edit, needle", [
    (lambda data: struct.pack_into("<I", data, 12, 1), "header flags"),  # flags must be 0
    (lambda data: data.extend(b"\0" * 64), "truncated or corrupt"),  # the manifest must end the file
])
def test_header_rules_are_enforced(tiny_bundle, tmp_path, edit, needle):
    from mxwr.errors import BundleError

    bad = copy(tiny_bundle, tmp_path)
    data = bytearray(bad.read_bytes())
    edit(data)
    bad.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=needle):
        BundleReader(bad)


def test_manifest_version_must_be_the_headers(tiny_bundle, tmp_path):
    from mxwr.errors import BundleError

    bad = copy(tiny_bundle, tmp_path)
    rewrite_manifest(bad, lambda manifest: manifest.__setitem__("format_version", [2, 99]))
    with pytest.raises(BundleError, match="format_version is not the header's"):
        BundleReader(bad)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    import os

    fifo = tmp_path / "bundle.mxw"
    os.mkfifo(fifo)
    proc = run_cli("mxwr", "inspect", str(fifo), timeout=60)
    assert_one_line_error(proc, "not a regular file")
