"""Ed25519 signatures of .mxw bundles: keys, signing in place, and the checks that `mxwc verify`,
`mxwr inspect` and `mxwr run --require-signature` share (schemas/FORMAT.md, "Signature").

A signature covers a domain-separation string, its own block's prefix (magic, version,
algorithm, length, the signer's public key) and the bundle's 64-byte header. The header holds
the manifest's sha256, and the manifest every section's sha256 and the signature slot's place,
so a valid signature plus matching checksums (`BundleReader.verify`) vouch for every byte of
the file but the signature itself. The crypto comes from `cryptography` (the `sign` extra),
imported only when a key is used: the base runtime reads signed and unsigned bundles without it.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .bundle import (ED25519, ED25519_BLOCK, HEADER_SIZE, SIGNATURE_MAGIC, SIGNATURE_PREFIX, SIGNATURE_VERSION,
                     BundleReader, SignatureBlock)
from .errors import BundleError, MxwError
from .validate import contents

# Prepended to what is signed, so that an mxw bundle signature can never be taken for a
# signature of anything else made with the same key.
DOMAIN = b"mxw bundle signature v1\0"
MAX_KEY_FILE = 16 << 10  # bytes: a PEM Ed25519 key is about 120; anything far larger is not one
ENV_VAR = "MXW_REQUIRE_SIGNATURE"
_NEED_EXTRA = "signing needs the 'cryptography' package: install mxw's sign extra (pip install 'mxw[sign]')"


class SigningError(MxwError):
    """A key file is missing or malformed, or a bundle cannot be signed."""


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise SigningError(_NEED_EXTRA) from None
    return ed25519


def fingerprint(public_key: bytes) -> str:
    """A short name for a raw public key, for messages (checks compare the whole key)."""
    return "ed25519:" + hashlib.sha256(public_key).hexdigest()[:32]


def signed_message(block_prefix: bytes, header: bytes) -> bytes:
    if len(header) != HEADER_SIZE:
        raise ValueError("a bundle header is 64 bytes")
    return DOMAIN + block_prefix + header


# ----------------------------------------------------------------------------------------------
# Keys: PEM, the private key as unencrypted PKCS#8, the public key as SubjectPublicKeyInfo
# (what `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` read and write).


def _read_key_file(path: str | os.PathLike[str], what: str) -> bytes:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if not stat.S_ISREG(mode):  # a FIFO would block; a device would never end
                raise SigningError(f"{what} {path} is not a regular file")
            data = f.read(MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise SigningError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise SigningError(f"{what} {path} is a directory") from None
    except OSError as e:
        raise SigningError(f"cannot read {what} {path}: {e.strerror}") from None
    if len(data) > MAX_KEY_FILE:
        raise SigningError(f"{what} {path} is not a PEM Ed25519 key (larger than {MAX_KEY_FILE} bytes)")
    return data


def load_private_key(path: str | os.PathLike[str], warn: Callable[[str], None] | None = None) -> Any:
    """An Ed25519 private key from a PEM file that `generate_key` (or openssl) wrote."""
    ed25519 = _crypto()
    from cryptography.hazmat.primitives import serialization

    data = _read_key_file(path, "private key file")
    if b"PUBLIC KEY" in data:
        raise SigningError(f"{path} is a public key; signing takes the private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:  # malformed PEM/DER, or an encrypted key
        raise SigningError(f"{path} is not an unencrypted PEM private key ({str(e).splitlines()[0][:80]})") from None
    except Exception as e:  # cryptography reports some unsupported key types with its own exceptions
        raise SigningError(f"{path} is not an Ed25519 private key ({type(e).__name__})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SigningError(f"{path} is not an Ed25519 private key")
    if warn is not None and os.stat(path).st_mode & 0o077:
        warn(f"private key file {path} is readable by other users (chmod 600 {path})")
    return key


def load_public_key(path: str | os.PathLike[str]) -> bytes:
    """The raw 32-byte Ed25519 public key in a PEM file (KEY.pub from `generate_key`)."""
    ed25519 = _crypto()
    from cryptography.hazmat.primitives import serialization

    data = _read_key_file(path, "public key file")
    if b"PRIVATE KEY" in data:
        raise SigningError(f"{path} is a private key; give the public key (the .pub file)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise SigningError(f"{path} is not a PEM public key ({str(e).splitlines()[0][:80]})") from None
    except Exception as e:
        raise SigningError(f"{path} is not an Ed25519 public key ({type(e).__name__})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SigningError(f"{path} is not an Ed25519 public key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def generate_key(out: str | os.PathLike[str], force: bool = False) -> tuple[Path, Path, str]:
    """Writes a new private key to `out` (mode 0600) and its public key to `out`.pub; returns
    both paths and the key's fingerprint. Existing files are kept unless `force`."""
    ed25519 = _crypto()
    from cryptography.hazmat.primitives import serialization

    private_path, public_path = Path(out), Path(f"{out}.pub")
    if not force:
        for p in (private_path, public_path):
            if os.path.lexists(p):
                raise SigningError(f"{p} exists; keygen overwrites no key (pass --force to replace it)")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public = key.public_key()
    public_pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        _write_new(private_path, private_pem, 0o600)
        _write_new(public_path, public_pem, 0o644)
    except OSError as e:
        raise SigningError(f"cannot write {e.filename or out}: {e.strerror}") from None
    return private_path, public_path, fingerprint(raw)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Writes `data` to a fresh file created with `mode` (never readable by others in between)."""
    tmp = path.with_name(path.name + ".partial")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits away; never adds any to 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# Signing


def sign_bundle(path: str | os.PathLike[str], key_path: str | os.PathLike[str],
                warn: Callable[[str], None] | None = None) -> str:
    """Signs the bundle at `path` in place with the private key at `key_path` (replacing any
    signature); returns the key's fingerprint. The bundle is fully checked first: a corrupt
    bundle is never signed. Only the signature slot's bytes are written."""
    key = load_private_key(key_path, warn)  # before touching the bundle
    from cryptography.hazmat.primitives import serialization

    public_key = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    with BundleReader(path) as reader:
        slot = reader.manifest.signature  # every manifest a reader accepts has one
        reader.verify()
        header = reader.header
    prefix = SIGNATURE_PREFIX.pack(SIGNATURE_MAGIC, SIGNATURE_VERSION, ED25519, ED25519_BLOCK.size) + public_key
    block = (prefix + key.sign(signed_message(prefix, header))).ljust(slot.length, b"\0")
    try:
        with open(path, "r+b") as f:
            if f.read(HEADER_SIZE) != header:  # changed since it was checked: sign nothing stale
                raise SigningError(f"{path} changed while it was being signed")
            f.seek(slot.offset)
            f.write(block)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise SigningError(f"cannot write the signature into {path}: {e.strerror}") from None
    with BundleReader(path) as reader:  # read back what was written, as a verifier will
        check_signature(reader, public_key)
    return fingerprint(public_key)


# ----------------------------------------------------------------------------------------------
# Verifying


def check_signature(reader: BundleReader, public_key: bytes) -> None:
    """Raises BundleError unless the bundle carries a valid signature by `public_key` (raw
    Ed25519). This covers the header and hence the manifest; the sections are covered once
    their checksums are checked too (`verify_bundle`)."""
    ed25519 = _crypto()
    from cryptography.exceptions import InvalidSignature

    block = reader.signature
    if block is None:
        raise BundleError(f"{reader.path} is not signed, and a signature by {fingerprint(public_key)} is required")
    if block.public_key is None or block.signature is None:
        raise BundleError(f"{reader.path} is signed with {block.algorithm_name} (block version {block.version}), "
                          f"which this mxwr cannot check: upgrade mxwr")
    if block.public_key != public_key:
        raise BundleError(f"{reader.path} is signed by another key ({fingerprint(block.public_key)}), "
                          f"not by {fingerprint(public_key)}")
    try:  # with the key the user trusts, never the key the file names
        ed25519.Ed25519PublicKey.from_public_bytes(public_key).verify(
            block.signature, signed_message(block.signed_part, reader.header))
    except InvalidSignature:
        raise BundleError(f"{reader.path} has been modified since it was signed: its signature by "
                          f"{fingerprint(public_key)} does not verify") from None


def verify_bundle(reader: BundleReader, public_key: bytes | None = None,
                  report: Callable[[str, str | None], None] | None = None) -> None:
    """The whole check of an opened bundle (its header and manifest were checked on opening):
    with `public_key`, its signature first, then every section's checksum and the padding, then
    what the sections hold (`validate.contents`).
    `report(what, problem or None)` hears each result; raises BundleError on the first problem.
    Reads no graph into MAX: nothing here needs MAX."""
    if public_key is not None:
        try:
            check_signature(reader, public_key)
        except BundleError as e:
            if report is not None:
                report("signature", str(e))
            raise
        if report is not None:
            report(f"signature ed25519 by {fingerprint(public_key)}", None)
    reader.verify(report)
    try:
        contents(reader)
    except BundleError as e:
        if report is not None:
            report("contents", str(e))
        raise
    if report is not None:
        report("contents (mel filterbank, vocabulary, weights)", None)


def require_signature(reader: BundleReader, public_key_path: str | os.PathLike[str]) -> None:
    """What `mxwr run --require-signature PUBKEY` does to an opened bundle before any graph is
    read: the signature by that key, then every checksum. Raises MxwError."""
    verify_bundle(reader, load_public_key(public_key_path))


def describe(block: SignatureBlock | None) -> dict[str, Any] | None:
    """A signature block as `mxwr inspect` shows it."""
    if block is None:
        return None
    return {"algorithm": block.algorithm_name, "version": block.version,
            "public_key": block.public_key.hex() if block.public_key is not None else None,
            "fingerprint": fingerprint(block.public_key) if block.public_key is not None else None}
