"""The .mxw bundle: one file holding compiled graphs, weights, vocabulary and mel filters.

Layout (schemas/FORMAT.md is the normative description):

    [0, 64)          header: magic, format version, manifest offset/length/sha256
    [64, ...)        sections, each starting on a 64-byte boundary
    [slot]           4 KiB reserved for a signature block (zeros until `mxwc sign` fills it)
    [manifest ...]   msgpack manifest (at the end, so sections can be streamed to disk)

Every section carries a sha256 in the manifest and is checked before it is used. Nothing read
from the file is executed: the manifest is plain msgpack data, tensors are raw little-endian
arrays, and every offset and size is checked against the file before it is followed.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import stat
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import msgpack
import numpy as np
import zstandard

from .errors import BundleError
from .manifest import (ALIGN, FORMAT_MAJOR, FORMAT_MINOR, MAX_SIGNATURE_SLOT, Manifest, Section, SignatureSlot,
                       TensorEntry)

MAGIC = b"\x89MXW\r\n\x1a\n"  # PNG-style: catches text-mode transfers and truncation at byte 1
HEADER = struct.Struct("<8sHHIQQ32s")  # magic, major, minor, flags, manifest offset, length, sha256
HEADER_SIZE = HEADER.size  # 64
MAX_MANIFEST_BYTES = 64 << 20

# The signature block, written into the manifest's signature slot by `mxwc sign` (FORMAT.md,
# "Signature"): magic, block version, algorithm, block length, then the algorithm's fields.
SIGNATURE_MAGIC = b"\x89MXWSIG\n"
SIGNATURE_PREFIX = struct.Struct("<8sHHI")  # magic, version, algorithm, length of the whole block
SIGNATURE_VERSION = 1
ED25519 = 1  # algorithm number
ED25519_BLOCK = struct.Struct("<8sHHI32s64s")  # the prefix, public key (raw), signature
SIGNED_PART = SIGNATURE_PREFIX.size + 32  # what the signature covers of its own block: all but itself

# numpy types of the tensor dtypes; bfloat16 has none and is read as raw uint16.
NUMPY_DTYPES = {
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),
    "int64": np.dtype("<i8"),
    "int32": np.dtype("<i4"),
    "int8": np.dtype("i1"),
    "uint8": np.dtype("u1"),
}


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


# ----------------------------------------------------------------------------------------------
# Writing


class BundleWriter:
    """Streams sections to `path`, then appends the manifest and fills in the header.

    Usage: add sections with `add_bytes` / `add_tensors`, then `finish(manifest)`. The file is
    written under a temporary name and renamed into place, so a failed build leaves no bundle.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._tmp = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: BinaryIO = open(self._tmp, "wb")
        self._f.write(b"\0" * HEADER_SIZE)
        self._sections: list[Section] = []

    def _pad(self) -> int:
        pos = self._f.tell()
        aligned = _align(pos)
        self._f.write(b"\0" * (aligned - pos))
        return aligned

    def add_bytes(self, name: str, kind: str, data: bytes, compress: bool = False) -> None:
        """Adds an opaque section (a MEF, the vocabulary); zstd-compressed when `compress`."""
        self._check_new(name)
        raw_length = len(data)
        encoding = "raw"
        if compress:
            data = zstandard.ZstdCompressor(level=10).compress(data)
            encoding = "zstd"
        offset = self._pad()
        self._f.write(data)
        self._sections.append(Section(name, kind, offset, len(data), encoding, raw_length,
                                      hashlib.sha256(data).hexdigest()))

    def add_tensors(self, name: str, kind: str, arrays: dict[str, np.ndarray], dtype: str | None = None) -> None:
        """Adds a section of raw little-endian tensors, each 64-byte aligned so it can be mmapped.

        `dtype` names the element type when numpy has none for it (bfloat16, stored as uint16 bits).
        """
        self._check_new(name)
        start = self._pad()
        digest = hashlib.sha256()
        table = []
        pos = start
        for tname, array in arrays.items():
            dtype_name = dtype or _dtype_name(array)
            if NUMPY_DTYPES[dtype_name].itemsize != array.dtype.itemsize:
                raise ValueError(f"{tname}: {array.dtype} arrays cannot hold {dtype_name}")
            blob = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False)
            pad = _align(pos) - pos
            if pad:
                self._f.write(b"\0" * pad)
                digest.update(b"\0" * pad)
                pos += pad
            data = blob.tobytes()
            self._f.write(data)
            digest.update(data)
            table.append(TensorEntry(tname, dtype_name, tuple(array.shape), pos - start, len(data)))
            pos += len(data)
        self._sections.append(Section(name, kind, start, pos - start, "raw", pos - start, digest.hexdigest(),
                                      tuple(table)))

    def finish(self, manifest: Manifest) -> Path:
        """Writes `manifest` with this writer's sections, checked as a reader will check it."""
        # The signature slot lies before the manifest, so that a signed bundle still has its manifest
        # at the end and signing rewrites nothing the signature covers.
        slot = SignatureSlot(self._pad(), MAX_SIGNATURE_SLOT)
        self._f.write(b"\0" * slot.length)
        manifest = replace(manifest, format_version=(FORMAT_MAJOR, FORMAT_MINOR), sections=tuple(self._sections),
                           signature=slot)
        offset = self._pad()
        fields = manifest.to_dict()
        Manifest.from_dict(fields, data_end=offset)  # never write what the reader refuses
        blob = msgpack.packb(fields, use_bin_type=True)
        self._f.write(blob)
        self._f.seek(0)
        self._f.write(
            HEADER.pack(
                MAGIC, FORMAT_MAJOR, FORMAT_MINOR, 0, offset, len(blob),
                hashlib.sha256(blob).digest(),
            ).ljust(HEADER_SIZE, b"\0")
        )
        self._f.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._f.close()
        self._tmp.unlink(missing_ok=True)

    def _check_new(self, name: str) -> None:
        if any(s.name == name for s in self._sections):
            raise ValueError(f"duplicate section {name!r}")


def _dtype_name(array: np.ndarray) -> str:
    for name, dt in NUMPY_DTYPES.items():
        if name != "bfloat16" and array.dtype == dt:
            return name
    raise ValueError(f"unsupported tensor dtype {array.dtype}")


# ----------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class SignatureBlock:
    """A signature block as read (its form checked; not yet verified: see `mxwr.signing`)."""

    version: int
    algorithm: int
    signed_part: bytes  # the block's bytes that the signature covers: magic, version, algorithm, length, key
    public_key: bytes | None  # raw Ed25519 key of the signer; None for a later minor's scheme
    signature: bytes | None

    @property
    def algorithm_name(self) -> str:
        return "ed25519" if self.algorithm == ED25519 else f"unknown algorithm {self.algorithm}"


def _zeros(data: mmap.mmap, start: int, end: int, chunk: int = 1 << 20) -> bool:
    """Whether data[start:end] is all zeros, read a chunk at a time (a gap may be large)."""
    for pos in range(start, end, chunk):
        piece = data[pos : min(end, pos + chunk)]
        if piece.count(0) != len(piece):
            return False
    return True


class BundleReader:
    """Opens a bundle read-only (memory-mapped) and hands out verified sections.

    The header and the manifest are checked when the bundle is opened (`Manifest.from_dict`);
    each section's sha256 the first time it is used. Tensors are zero-copy numpy views into the
    mapping, so the reader must outlive every model bound to its weights.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        try:
            mode = os.stat(self.path).st_mode
        except FileNotFoundError:
            raise BundleError(f"bundle not found: {self.path}") from None
        except OSError as e:
            raise BundleError(f"cannot open bundle {self.path}: {e.strerror}") from None
        if stat.S_ISDIR(mode):
            raise BundleError(f"bundle path is a directory: {self.path}")
        if not stat.S_ISREG(mode):  # a FIFO or a device would block or never end
            raise BundleError(f"bundle path is not a regular file: {self.path}")
        try:
            self._file = open(self.path, "rb")
        except OSError as e:
            raise BundleError(f"cannot open bundle {self.path}: {e.strerror}") from None
        size = os.fstat(self._file.fileno()).st_size
        if size < HEADER_SIZE:
            self._file.close()
            raise BundleError(f"{self.path} is not an mxw bundle (only {size} bytes)")
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        self.size = size
        self._verified: set[str] = set()
        self._ahead: dict[str, tuple[threading.Event, list[str]]] = {}  # name -> (done, [its sha256])
        try:
            self.manifest = self._read_manifest()
        except BundleError:
            self.close()
            raise
        self._sections = {s.name: s for s in self.manifest.sections}
        self.header = bytes(self._map[:HEADER_SIZE])  # what a signature covers (with its own block's prefix)
        try:
            self.signature = self._read_signature()
        except BundleError:
            self.close()
            raise

    def _read_signature(self) -> "SignatureBlock | None":
        """The signature slot's block, or None when the slot holds zeros (unsigned). Its form is
        checked here; whether it verifies, by `mxwr.signing`."""
        slot = self.manifest.signature
        if slot is None:
            return None
        data = self._map[slot.offset : slot.end]  # inside the data area and at most 4 KiB (Manifest.from_dict)
        if data.count(0) == len(data):
            return None
        bad = f"{self.path} is corrupt: its signature slot holds"
        if len(data) < SIGNATURE_PREFIX.size or not data.startswith(SIGNATURE_MAGIC):
            raise BundleError(f"{bad} neither zeros nor a signature block")
        _, version, algorithm, length = SIGNATURE_PREFIX.unpack_from(data, 0)
        if not SIGNATURE_PREFIX.size <= length <= len(data) or data.count(0, length) != len(data) - length:
            raise BundleError(f"{bad} a signature block of a wrong length, or bytes after it")
        if (version, algorithm) == (SIGNATURE_VERSION, ED25519):
            if length != ED25519_BLOCK.size:
                raise BundleError(f"{bad} an Ed25519 signature block of {length} bytes (not {ED25519_BLOCK.size})")
            _, _, _, _, public_key, signature = ED25519_BLOCK.unpack_from(data, 0)
            return SignatureBlock(version, algorithm, bytes(data[:SIGNED_PART]), public_key, signature)
        if self.manifest.format_version[1] > FORMAT_MINOR:  # a later minor's scheme: readable, not checkable
            return SignatureBlock(version, algorithm, bytes(data[:SIGNATURE_PREFIX.size]), None, None)
        raise BundleError(f"{bad} a signature block of unknown version {version} or algorithm {algorithm}")

    def _read_manifest(self) -> Manifest:
        magic, major, minor, flags, offset, length, digest = HEADER.unpack_from(self._map, 0)
        if magic != MAGIC:
            raise BundleError(f"{self.path} is not an mxw bundle (bad magic bytes)")
        if major != FORMAT_MAJOR:
            raise BundleError(
                f"{self.path} has bundle format {major}.{minor}; this mxwr reads format {FORMAT_MAJOR}.x — "
                f"{'upgrade mxwr' if major > FORMAT_MAJOR else 'rebuild the bundle'}"
            )
        if flags != 0:
            raise BundleError(f"{self.path} is corrupt: header flags are set (format 2 defines none)")
        if length > MAX_MANIFEST_BYTES or offset < HEADER_SIZE or offset + length != self.size:
            raise BundleError(
                f"{self.path} is truncated or corrupt: manifest at [{offset}, {offset + length}) "
                f"but the file has {self.size} bytes"
            )
        if offset % ALIGN:
            raise BundleError(f"{self.path} is corrupt: the manifest is not {ALIGN}-byte aligned")
        blob = self._map[offset : offset + length]
        self._manifest_offset = offset
        if hashlib.sha256(blob).digest() != digest:
            raise BundleError(f"{self.path} is corrupt: manifest checksum mismatch")
        try:
            fields = msgpack.unpackb(blob, raw=False, strict_map_key=True)
        except Exception as e:  # msgpack raises several types; all mean the same to the user
            raise BundleError(f"{self.path} is corrupt: unreadable manifest ({type(e).__name__}: {e})") from None
        if isinstance(fields, dict) and fields.get("format_version") != [major, minor]:
            raise BundleError(f"{self.path} is corrupt: the manifest's format_version is not the header's")
        try:
            return Manifest.from_dict(fields, data_end=offset)
        except BundleError as e:
            raise BundleError(f"{self.path}: {e}") from None

    # -- sections ----------------------------------------------------------------------------

    def section(self, name: str) -> Section:
        try:
            return self._sections[name]
        except KeyError:
            raise BundleError(f"{self.path} has no section {name!r}") from None

    def verify_ahead(self, names: list[str]) -> None:
        """Starts hashing these sections on a thread (hashlib releases the GIL on large buffers),
        so that their checksums are computed while the caller goes on (a model's load imports
        MAX meanwhile); reading one waits for its digest and compares it as always."""
        todo = [(n, self.section(n)) for n in dict.fromkeys(names) if n not in self._verified and n not in self._ahead]
        if not todo:
            return
        jobs = [(s, *self._ahead.setdefault(n, (threading.Event(), []))) for n, s in todo]

        def hash_all() -> None:
            for s, done, digest in jobs:
                try:
                    with memoryview(self._map) as whole, whole[s.offset : s.end] as view:
                        digest.append(hashlib.sha256(view).hexdigest())
                finally:
                    done.set()

        threading.Thread(target=hash_all, name="mxwr-verify", daemon=True).start()

    def _digest(self, name: str, view: memoryview) -> str:
        ahead = self._ahead.pop(name, None)
        if ahead is not None:
            done, digest = ahead
            done.wait()
            if digest:
                return digest[0]
        return hashlib.sha256(view).hexdigest()

    def _raw(self, name: str) -> memoryview:
        s = self.section(name)
        view = memoryview(self._map)[s.offset : s.end]
        if name not in self._verified:
            if self._digest(name, view) != s.sha256:
                raise BundleError(f"{self.path} is corrupt: section {name!r} checksum mismatch")
            self._verified.add(name)
        return view

    def check(self, name: str) -> None:
        """Refuses a section whose checksum or (compressed) frame header disagrees with the
        manifest, without reading its contents out."""
        self._check_frame(self.section(name), self._raw(name))

    def read_bytes(self, name: str) -> bytes:
        """A verified section's contents, decompressed."""
        s = self.section(name)
        data = self._raw(name)
        self._check_frame(s, data)
        if s.encoding == "zstd":
            with self._zstd_errors(s):
                out = zstandard.ZstdDecompressor().decompress(data, max_output_size=s.raw_length)
        else:
            out = bytes(data)
        if len(out) != s.raw_length:
            raise BundleError(f"{self.path} is corrupt: section {s.name!r} has the wrong length")
        return out

    def _check_frame(self, s: Section, data: memoryview) -> None:
        """A zstd section's frame states its size (the writer's always does): nothing is
        allocated for a frame that disagrees with the manifest."""
        if s.encoding == "zstd":
            with self._zstd_errors(s):
                if zstandard.frame_content_size(data) != s.raw_length:
                    raise BundleError(f"{self.path} is corrupt: section {s.name!r}'s zstd frame is not raw_length bytes")

    @contextmanager
    def _zstd_errors(self, s: Section) -> Iterator[None]:
        try:
            yield
        except zstandard.ZstdError as e:
            raise BundleError(f"{self.path} is corrupt: section {s.name!r}: zstd: {e or 'undecodable'}") from None

    def read_msgpack(self, name: str) -> Any:
        try:
            return msgpack.unpackb(self.read_bytes(name), raw=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
            why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__  # msgpack's may be blank
            raise BundleError(f"{self.path} is corrupt: section {name!r} is not valid msgpack ({why})") from None

    def read_tensors(self, name: str) -> dict[str, np.ndarray]:
        """Zero-copy, read-only views of a verified tensor section."""
        s = self.section(name)
        view = self._raw(name)
        return {
            e.name: np.frombuffer(view, dtype=NUMPY_DTYPES[e.dtype], count=e.nbytes // NUMPY_DTYPES[e.dtype].itemsize,
                                  offset=e.offset).reshape(e.shape)
            for e in s.tensors or ()
        }

    def verify(self, report: Callable[[str, str | None], None] | None = None) -> None:
        """Checks every section's checksum, and that every byte outside the header, the sections,
        the signature slot and the manifest is zero padding: so each byte of a verified bundle is
        covered by a checksum or is the signature. `report(what, problem or None)` hears each
        result (all are checked); raises BundleError naming the first problem."""
        problems = []

        def note(what: str, problem: str | None) -> None:
            if report is not None:
                report(what, problem)
            if problem is not None:
                problems.append(problem)

        for name in self._sections:
            try:
                self._raw(name)
                note(f"section {name}", None)
            except BundleError as e:
                note(f"section {name}", str(e))
        slot = self.manifest.signature
        spans = [(0, HEADER_SIZE), *((s.offset, s.end) for s in self._sections.values()), (self._manifest_offset,
                                                                                          self.size)]
        spans = sorted(spans + ([(slot.offset, slot.end)] if slot is not None else []))  # disjoint (checked on open)
        gaps = [(before[1], after[0]) for before, after in zip(spans, spans[1:]) if before[1] < after[0]]
        dirty = next((start for start, end in gaps if not _zeros(self._map, start, end)), None)
        note("padding", None if dirty is None else f"{self.path} is corrupt: non-zero padding at byte {dirty}")
        if problems:
            raise BundleError(problems[0])

    def close(self) -> None:
        for done, _ in list(self._ahead.values()):  # a hash still running holds a view of the map
            done.wait()
        # Views handed out keep the mapping alive; closing then is left to the garbage collector.
        try:
            self._map.close()
        except BufferError:
            pass
        self._file.close()

    def __enter__(self) -> "BundleReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
