"""The .mxw bundle: one file holding compiled graphs, weights, vocabulary and mel filters.

Layout (schemas/FORMAT.md is the normative description):

    [0, 64)          header: magic, format version, manifest offset/length/sha256
    [64, ...)        sections, each starting on a 64-byte boundary
    [manifest ...]   msgpack manifest (at the end, so sections can be streamed to disk)

Every section carries a sha256 in the manifest and is checked before it is used. Nothing read
from the file is executed: the manifest is plain msgpack data, tensors are raw little-endian
arrays, and every offset and size is checked against the file before it is followed.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgpack
import numpy as np
import zstandard

from .errors import BundleError

MAGIC = b"\x89MXW\r\n\x1a\n"  # PNG-style: catches text-mode transfers and truncation at byte 1
FORMAT_MAJOR = 2  # 2.0: the step graph takes its position on the device
FORMAT_MINOR = 0
READABLE_MAJORS = (1, 2)  # 1.x: the step's position is a host input (1.1: shape.group, reorder, align)
ALIGN = 64
HEADER = struct.Struct("<8sHHIQQ32s")  # magic, major, minor, flags, manifest offset, length, sha256
HEADER_SIZE = 64
MAX_MANIFEST_BYTES = 64 << 20

# dtypes a tensor section may hold; bfloat16 has no numpy type and is read as raw uint16.
NUMPY_DTYPES = {
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),
    "int64": np.dtype("<i8"),
    "int32": np.dtype("<i4"),
}


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int  # relative to the start of its section
    nbytes: int


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
        self._sections: list[dict[str, Any]] = []

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
        self._sections.append(
            {
                "name": name,
                "kind": kind,
                "offset": offset,
                "length": len(data),
                "encoding": encoding,
                "raw_length": raw_length,
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )

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
            table.append(
                {
                    "name": tname,
                    "dtype": dtype_name,
                    "shape": list(array.shape),
                    "offset": pos - start,
                    "nbytes": len(data),
                }
            )
            pos += len(data)
        self._sections.append(
            {
                "name": name,
                "kind": kind,
                "offset": start,
                "length": pos - start,
                "encoding": "raw",
                "raw_length": pos - start,
                "sha256": digest.hexdigest(),
                "tensors": table,
            }
        )

    def finish(self, manifest: dict[str, Any]) -> Path:
        manifest = dict(manifest, sections=self._sections)
        manifest["format_version"] = [FORMAT_MAJOR, FORMAT_MINOR]
        blob = msgpack.packb(manifest, use_bin_type=True)
        offset = self._pad()
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
        if any(s["name"] == name for s in self._sections):
            raise ValueError(f"duplicate section {name!r}")


def _dtype_name(array: np.ndarray) -> str:
    for name, dt in NUMPY_DTYPES.items():
        if name != "bfloat16" and array.dtype == dt:
            return name
    raise ValueError(f"unsupported tensor dtype {array.dtype}")


# ----------------------------------------------------------------------------------------------
# Reading


class BundleReader:
    """Opens a bundle read-only (memory-mapped) and hands out verified sections.

    Each section's sha256 is checked the first time it is used; tensors are zero-copy numpy views
    into the mapping, so the reader must outlive every model bound to its weights.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        try:
            self._file = open(self.path, "rb")
        except FileNotFoundError:
            raise BundleError(f"bundle not found: {self.path}") from None
        except IsADirectoryError:
            raise BundleError(f"bundle path is a directory: {self.path}") from None
        except OSError as e:
            raise BundleError(f"cannot open bundle {self.path}: {e.strerror}") from None
        size = os.fstat(self._file.fileno()).st_size
        if size < HEADER_SIZE:
            self._file.close()
            raise BundleError(f"{self.path} is not an mxw bundle (only {size} bytes)")
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        self.size = size
        self.manifest = self._read_manifest()
        self._sections = self._read_section_table()
        self._verified: set[str] = set()

    # -- header and manifest ---------------------------------------------------------------

    def _read_manifest(self) -> dict[str, Any]:
        magic, major, minor, _flags, offset, length, digest = HEADER.unpack_from(self._map, 0)
        if magic != MAGIC:
            raise BundleError(f"{self.path} is not an mxw bundle (bad magic bytes)")
        if major not in READABLE_MAJORS:
            raise BundleError(
                f"{self.path} has bundle format {major}.{minor}; this mxwr reads formats "
                f"{', '.join(f'{m}.x' for m in READABLE_MAJORS)} — "
                f"{'upgrade mxwr' if major > FORMAT_MAJOR else 'rebuild the bundle'}"
            )
        if length > MAX_MANIFEST_BYTES or offset < HEADER_SIZE or offset + length > self.size:
            raise BundleError(
                f"{self.path} is truncated or corrupt: manifest at [{offset}, {offset + length}) "
                f"but the file has {self.size} bytes"
            )
        blob = self._map[offset : offset + length]
        if hashlib.sha256(blob).digest() != digest:
            raise BundleError(f"{self.path} is corrupt: manifest checksum mismatch")
        try:
            manifest = msgpack.unpackb(blob, raw=False, strict_map_key=True)
        except Exception as e:  # msgpack raises several types; all mean the same to the user
            raise BundleError(f"{self.path} is corrupt: unreadable manifest ({e})") from None
        if not isinstance(manifest, dict):
            raise BundleError(f"{self.path} is corrupt: manifest is not a map")
        self._manifest_offset = offset
        return manifest

    def _read_section_table(self) -> dict[str, dict[str, Any]]:
        sections = self.manifest.get("sections")
        if not isinstance(sections, list):
            raise BundleError(f"{self.path} is corrupt: manifest has no section table")
        table: dict[str, dict[str, Any]] = {}
        for s in sections:
            try:
                name, offset, length = s["name"], s["offset"], s["length"]
                ok = (
                    isinstance(name, str) and isinstance(offset, int) and isinstance(length, int)
                    and isinstance(s["sha256"], str) and s["encoding"] in ("raw", "zstd")
                    and isinstance(s["raw_length"], int)
                )
            except (KeyError, TypeError):
                ok = False
            if not ok:
                raise BundleError(f"{self.path} is corrupt: malformed section entry")
            if offset < HEADER_SIZE or length < 0 or offset + length > self._manifest_offset:
                raise BundleError(
                    f"{self.path} is truncated or corrupt: section {name!r} at "
                    f"[{offset}, {offset + length}) lies outside the data area"
                )
            table[name] = s
        return table

    # -- sections ----------------------------------------------------------------------------

    def has_section(self, name: str) -> bool:
        return name in self._sections

    def section(self, name: str) -> dict[str, Any]:
        try:
            return self._sections[name]
        except KeyError:
            raise BundleError(f"{self.path} has no section {name!r}") from None

    def _raw(self, name: str) -> memoryview:
        s = self.section(name)
        view = memoryview(self._map)[s["offset"] : s["offset"] + s["length"]]
        if name not in self._verified:
            if hashlib.sha256(view).hexdigest() != s["sha256"]:
                raise BundleError(f"{self.path} is corrupt: section {name!r} checksum mismatch")
            self._verified.add(name)
        return view

    def read_bytes(self, name: str) -> bytes:
        """A verified section's contents, decompressed."""
        s = self.section(name)
        data = self._raw(name)
        if s["encoding"] == "zstd":
            try:
                out = zstandard.ZstdDecompressor().decompress(data, max_output_size=s["raw_length"])
            except zstandard.ZstdError as e:
                raise BundleError(f"{self.path} is corrupt: section {name!r}: {e}") from None
        else:
            out = bytes(data)
        if len(out) != s["raw_length"]:
            raise BundleError(f"{self.path} is corrupt: section {name!r} has the wrong length")
        return out

    def read_msgpack(self, name: str) -> Any:
        try:
            return msgpack.unpackb(self.read_bytes(name), raw=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
            raise BundleError(f"{self.path} is corrupt: section {name!r}: {e}") from None

    def tensor_entries(self, name: str) -> list[TensorEntry]:
        s = self.section(name)
        entries = []
        for t in s.get("tensors") or []:
            try:
                entry = TensorEntry(
                    t["name"], t["dtype"], tuple(int(d) for d in t["shape"]), int(t["offset"]),
                    int(t["nbytes"]),
                )
            except (KeyError, TypeError, ValueError):
                raise BundleError(f"{self.path} is corrupt: malformed tensor entry") from None
            dtype = NUMPY_DTYPES.get(entry.dtype)
            count = int(np.prod(entry.shape, dtype=np.int64))
            if (
                dtype is None or any(d < 0 for d in entry.shape)
                or entry.nbytes != count * dtype.itemsize
                or entry.offset < 0 or entry.offset % ALIGN
                or entry.offset + entry.nbytes > s["length"]
            ):
                raise BundleError(
                    f"{self.path} is corrupt: tensor {entry.name!r} does not fit section {name!r}"
                )
            entries.append(entry)
        return entries

    def read_tensors(self, name: str) -> dict[str, np.ndarray]:
        """Zero-copy, read-only views of a verified tensor section."""
        view = self._raw(name)
        out = {}
        for e in self.tensor_entries(name):
            out[e.name] = np.frombuffer(
                view, dtype=NUMPY_DTYPES[e.dtype], count=e.nbytes // NUMPY_DTYPES[e.dtype].itemsize,
                offset=e.offset,
            ).reshape(e.shape)
        return out

    def verify(self) -> None:
        """Checks every section's checksum (what `mxwr inspect --verify` does)."""
        for name in self._sections:
            self._raw(name)

    def close(self) -> None:
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
