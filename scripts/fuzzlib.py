"""Mutated bundles and WAV files, and the oracle that judges what mxwr does with each.

tests/test_fuzz.py draws a few thousand cases with hypothesis in CI; scripts/fuzz.py runs long
campaigns from a seed. Both take their random choices through `Choices`, so one mutator serves
both: hypothesis shrinks a failing case towards the first option of every choice, a seed makes a
case reproducible (`scripts/fuzz.py --replay bundle:SEED:CASE`).

A bundle case ends in one of these outcomes:

- refused: an `MxwError` with a bounded one-line message (at open, or reading a section);
- accepted: the reader took it, and then every section whose bytes or record the mutation
  touched reads back as bytes that hash to the manifest's sha256 (else an "accepted corruption"),
  and the manifest's records are, in everything decoding reads, the original's ("identical": the
  transcript is the original's by construction) or they differ, and then the bundle is decoded
  through `mxwr run` and must be refused there with one line or give the original's transcript.
  A mutant whose section contents were changed on purpose, checksums recomputed, is another
  bundle: its transcript is its own, but one no builder could mean (a filterbank of NaN) must
  be refused;
- failure: any other exception (a traceback), a case over its time limit (a hang), an
  allocation over the memory limit, or one of the violations above.

An audio case is refused with a bounded line, or gives finite float32 samples, no more than its
bytes hold at the rate it declares; a rewrite that keeps the audio (a chunk added, a streamed
data size) gives the original's samples exactly.

The bundle mutants are written into one working copy and undone after each case, so a case
costs the bytes it changes, not a copy of a 150 MB file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import mmap
import os
import random
import resource
import shutil
import signal
import struct
import subprocess
import traceback
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import msgpack
import numpy as np
import zstandard

# FORMAT.md's header, spelled out here rather than imported: the oracle should not share the
# reader's reading of the spec.
HEADER = struct.Struct("<8sHHIQQ32s")  # magic, major, minor, flags, manifest offset, length, sha256
MAGIC = b"\x89MXW\r\n\x1a\n"
ALIGN = 64
MESSAGE_LIMIT = 300  # characters of an error message, beyond the paths it names
PROMPT = "President Kennedy's inaugural address."  # decodes go through the BPE tokenizer too


# ----------------------------------------------------------------------------------------------
# Choices


class Choices:
    """A mutator's source of random choices: `below(n)` is an int in [0, n)."""

    def __init__(self, below: Callable[[int], int]):
        self._below = below

    @classmethod
    def seeded(cls, seed: int) -> "Choices":
        rng = random.Random(seed)
        return cls(rng.randrange)

    def below(self, n: int) -> int:
        return self._below(n) if n > 1 else 0

    def pick(self, options):
        options = list(options)
        return options[self.below(len(options))]

    def chance(self, one_in: int) -> bool:
        return self.below(one_in) == 0

    def other(self, old: Any, options) -> Any:
        """One of `options` that is not `old` (a mutation that changes nothing is a wasted case)."""
        return self.pick([o for o in options if o != old] or list(options))

    def weighted(self, table: list[tuple[int, Any]]) -> Any:
        k = self.below(sum(w for w, _ in table))
        for w, value in table:
            if k < w:
                return value
            k -= w
        raise AssertionError

    def blob(self, n: int) -> bytes:
        """n random bytes, from one choice (a long blob would be thousands of hypothesis draws)."""
        return random.Random(self.below(1 << 32)).randbytes(n)


# ----------------------------------------------------------------------------------------------
# The pristine bundle, mutants of it, and the working copy they are written into


def _pack(tree: Any) -> bytes:
    return msgpack.packb(tree, use_bin_type=True)


class Pristine:
    """The real bundle the mutants start from (memory-mapped, never written)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            self.data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.size = len(self.data)
        self.header = HEADER.unpack_from(self.data, 0)
        self.m_offset, self.m_length = self.header[4], self.header[5]
        self.blob = bytes(self.data[self.m_offset : self.m_offset + self.m_length])
        self.manifest = msgpack.unpackb(self.blob, raw=False)
        self.sections = list(self.manifest["sections"])
        self.by_name = {s["name"]: s for s in self.sections}
        self.ints = sorted({v for v in _leaves(self.manifest) if type(v) is int})
        self.strs = sorted({v for v in _leaves(self.manifest) if isinstance(v, str)})
        self.nodes = [n for n in _nodes(self.manifest) if isinstance(n, (dict, list))]

    def tree(self) -> Any:
        """A fresh copy of the manifest to edit."""
        return msgpack.unpackb(self.blob, raw=False)

    def header_for(self, blob: bytes, offset: int | None = None, **fields) -> bytes:
        """The header of a file whose manifest is `blob` at `offset` (default: where it was)."""
        values = dict(zip(("magic", "major", "minor", "flags"), self.header[:4]))
        values.update(fields)
        offset = self.m_offset if offset is None else offset
        return HEADER.pack(values["magic"], values["major"], values["minor"], values["flags"], offset, len(blob),
                           hashlib.sha256(blob).digest())


def _leaves(tree: Any) -> Iterator[Any]:
    for node in _nodes(tree):
        if not isinstance(node, (dict, list)):
            yield node


def _nodes(tree: Any) -> Iterator[Any]:
    yield tree
    children = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, list) else ()
    for child in children:
        yield from _nodes(child)


@dataclass
class Mutant:
    kind: str
    detail: str
    writes: list[tuple[int, bytes]] = field(default_factory=list)  # same-size overwrites inside the file
    tail: tuple[int, bytes] | None = None  # the file from this offset on is these bytes
    content: bool = False  # section bytes changed on purpose, checksums recomputed: another bundle
    refuse: str | None = None  # why the runtime must refuse it by the time it decodes, where it must
    case: str = ""  # the reproducer, set by whoever drew it

    def changed(self) -> list[tuple[int, float]]:
        """Byte ranges [start, end) where the file may differ from the pristine one."""
        spans: list[tuple[int, float]] = [(o, o + len(b)) for o, b in self.writes]
        if self.tail is not None:
            spans.append((self.tail[0], math.inf))
        return spans

    def describe(self) -> str:
        return f"{self.case} {self.kind}: {self.detail}"


class Workspace:
    """A copy of the pristine bundle that each mutant is written into and undone from."""

    def __init__(self, pristine: Pristine, path: str | os.PathLike[str]):
        self.pristine, self.path = pristine, Path(path)
        shutil.copyfile(pristine.path, self.path)

    @contextlib.contextmanager
    def apply(self, m: Mutant) -> Iterator[Path]:
        p = self.pristine
        with open(self.path, "r+b") as f:
            for offset, data in m.writes:
                assert 0 <= offset and offset + len(data) <= p.size, (offset, len(data))
                f.seek(offset)
                f.write(data)
            if m.tail is not None:
                f.truncate(m.tail[0])
                f.seek(m.tail[0])
                f.write(m.tail[1])
        try:
            yield self.path
        finally:
            with open(self.path, "r+b") as f:
                if m.tail is not None:
                    f.truncate(m.tail[0])
                    f.seek(m.tail[0])
                    for start in range(m.tail[0], p.size, 8 << 20):
                        f.write(p.data[start : min(start + (8 << 20), p.size)])
                for offset, data in m.writes:
                    f.seek(offset)
                    f.write(p.data[offset : offset + len(data)])

    def intact(self) -> bool:
        """Whether the working copy is the pristine bundle again (a check on this module)."""
        with open(self.path, "rb") as f:
            return os.fstat(f.fileno()).st_size == self.pristine.size and hashlib.sha256(
                mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)).digest() == hashlib.sha256(self.pristine.data).digest()


# ----------------------------------------------------------------------------------------------
# Bundle mutators


def _position(p: Pristine, c: Choices) -> tuple[int, str]:
    """A byte of the file, from a region chosen first: small regions matter as much as big ones."""
    region = c.pick(("header", "manifest", "edge", "section", "anywhere"))
    if region == "header":
        return c.below(HEADER.size), region
    if region == "manifest":
        return p.m_offset + c.below(p.m_length), region
    s = c.pick(p.sections)
    if region == "edge":  # around a section's first or last byte, padding included
        base = c.pick((s["offset"], s["offset"] + s["length"]))
        return min(max(base + c.below(64) - 32, 0), p.size - 1), f"edge of {s['name']}"
    if region == "section":
        return s["offset"] + c.below(max(s["length"], 1)), s["name"]
    return c.below(p.size), region


def flip(p: Pristine, c: Choices) -> Mutant:
    at, where = _position(p, c)
    n = min(c.pick((1, 1, 2, 4, 8)), p.size - at)
    old = p.data[at : at + n]
    new = bytes(b ^ c.pick((1 << c.below(8), 1 + c.below(255))) for b in old)
    return Mutant("flip", f"{n} byte(s) at {at} ({where}) -> {new.hex()}", writes=[(at, new)])


def truncate(p: Pristine, c: Choices) -> Mutant:
    size = c.pick((c.below(HEADER.size + 1), p.m_offset, p.m_offset - 1 - c.below(64), p.size - 1,
                   p.size - 1 - c.below(p.m_length), _position(p, c)[0]))
    return Mutant("truncate", f"to {size} of {p.size} bytes", tail=(size, b""))


def extend(p: Pristine, c: Choices) -> Mutant:
    n = c.pick((1, 63, 64, 4096))
    data = c.pick((b"\0" * n, c.blob(n), p.blob[:n]))
    return Mutant("extend", f"{n} bytes appended", tail=(p.size, data))


def splice(p: Pristine, c: Choices) -> Mutant:
    """Copies one range over another (same size), or inserts or deletes a range (shifting the rest)."""
    n = c.pick((1, 8, 64, 512, 4096))
    src, dst = _position(p, c)[0], _position(p, c)[0]
    n = min(n, p.size - src, p.size - dst)
    how = c.pick(("copy", "insert", "delete"))
    if how == "copy":
        return Mutant("splice", f"copy [{src}, {src + n}) over {dst}", writes=[(dst, bytes(p.data[src : src + n]))])
    if how == "insert":
        return Mutant("splice", f"insert [{src}, {src + n}) at {dst}",
                      tail=(dst, bytes(p.data[src : src + n]) + p.data[dst:]))
    return Mutant("splice", f"delete [{dst}, {dst + n})", tail=(dst, p.data[dst + n :]))


def header(p: Pristine, c: Choices) -> Mutant:
    """One header field rewritten; the digest recomputed for what the new fields point at, or not."""
    magic, major, minor, flags, offset, length, digest = p.header
    name = c.pick(("magic", "major", "minor", "flags", "offset", "length", "digest"))
    if name == "magic":
        magic = c.pick((b"\x89MXW\n\n\x1a\n", b"\0" * 8, b"PK\x03\x04\0\0\0\0", magic[:7] + b"\0"))
    elif name == "major":
        major = c.pick((0, 1, 2, major + 1, 0xFFFF))
    elif name == "minor":
        minor = c.pick((minor + 1, 2, 0xFFFF))
    elif name == "flags":
        flags = c.pick((1, 2, 1 << 31, 0xFFFFFFFF))
    elif name == "offset":
        offset = c.pick((0, 1, 63, 64, offset - 64, offset - 1, offset + 1, offset + 64, p.size, (1 << 63), (1 << 64) - 1))
    elif name == "length":
        length = c.pick((0, 1, length - 1, length + 1, length + 64, (64 << 20) + 1, (1 << 64) - 1 - offset))
    else:
        digest = c.pick((b"\0" * 32, c.blob(32)))
    if name in ("offset", "length") and c.chance(2) and 0 <= offset and offset + length <= p.size:
        digest = hashlib.sha256(p.data[offset : offset + length]).digest()  # so the next check is reached
    new = HEADER.pack(magic, major, minor, flags, offset, length % (1 << 64), digest)
    return Mutant("header", f"{name} -> {(magic, major, minor, flags, offset, length)[:6]!r}", writes=[(0, new)])


# Values a field may be replaced by: of every type, at and past every limit the spec sets.
def _hostile(p: Pristine, c: Choices) -> Any:
    k = c.below(31)
    if k == 30:
        return "N" * (50 << 20) if c.chance(4) else "N" * 5000  # "huge names"
    if k == 29:
        nested: Any = []
        for _ in range(c.pick((10, 200, 500))):
            nested = [nested]
        return nested
    if k == 28:  # another node of the same manifest: a realistic mix-up
        return json.loads(json.dumps(c.pick(p.nodes)))
    return [None, True, False, 0, -1, 1, 2**31, 2**32, 2**63 - 1, -2**63, 2**64 - 1, 10**9, 0.5, float("nan"),
            float("inf"), -0.0, "", "x", "é", "\x00", "A" * 257, b"\x00\xff", [], [None], [[[]]], {}, {"zz": 1},
            c.pick(p.ints), c.pick(p.strs), 16 << 30][k]


_BAD_PATTERNS = ("(", "[a-", "(?P<x", "\\", "(a+)+$", "\\p{Zzzz}", "(?<=a+)b", "*", "a{99999999}", "(?", "[[:alpha:]")


def _tweak(p: Pristine, c: Choices, value: Any) -> Any:
    """A nearby value of the same type."""
    if type(value) is bool:
        return not value
    if type(value) is int:
        return c.pick((value + 1, value - 1, value + 64, value - 64, value * 2, value // 2, 0, -value,
                       value ^ (1 << c.below(40)), c.pick(p.ints), p.size, p.m_offset, 16 << 30, (16 << 30) + 1,
                       2**62, 10**9))
    if isinstance(value, str):
        return c.pick(("", value[:-1], value + "x", value.upper(), value * 2, c.pick(p.strs), c.pick(_BAD_PATTERNS),
                       value + c.pick(_BAD_PATTERNS), "A" * 257, "A" * 4097))
    if isinstance(value, list) and value:
        v = list(value)
        i, j = c.below(len(v)), c.below(len(v))
        how = c.below(8)
        if how == 0:
            v.append(v[i])
        elif how == 1:
            del v[i]
        elif how == 2:
            v[i], v[j] = v[j], v[i]
        elif how == 3:
            v.reverse()
        elif how == 4:
            v = v + v
        elif how == 5:
            v = v[: len(v) // 2]
        elif how == 6:
            v = [v[i]] * c.pick((2, 1025, 1 << 16 | 1))
        else:
            v = []
        return v
    if isinstance(value, dict):
        d = dict(value)
        how = c.below(4)
        if how == 0:
            d["zz_unknown"] = 1
        elif how == 1 and d:
            del d[c.pick(list(d))]
        elif how == 2 and d:
            key = c.pick(list(d))
            d[key + "_"] = d.pop(key)
        else:
            d = {**d, 7: 1}  # a key that is not a string
        return d
    return _hostile(p, c)


def _walk(c: Choices, tree: Any) -> list[Any]:
    """A path to a node, chosen level by level (so the small top-level records are not drowned by
    the long port and tensor lists): below the first level, stop one time in three."""
    path: list[Any] = []
    node = tree
    while isinstance(node, (dict, list)) and node and (not path or c.below(3)):
        key = c.pick(list(node)) if isinstance(node, dict) else c.below(len(node))
        path.append(key)
        node = node[key]
    return path


def _at(tree: Any, path: list[Any]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def with_manifest(p: Pristine, tree: Any, reseal: bool = True, data: bytes = b"", **fields) -> Mutant:
    """A mutant whose manifest is `tree`, after `data` (new section bytes) at the old manifest's
    offset; the header's digest recomputed unless `reseal` is False."""
    blob = _pack(tree)
    offset = p.m_offset + (-(-len(data) // ALIGN) * ALIGN)
    pad = b"\0" * (offset - p.m_offset - len(data))
    head = p.header_for(blob, offset, **fields)
    if not reseal:
        head = head[:32] + p.header[6]
    return Mutant("", "", writes=[(0, head)], tail=(p.m_offset, data + pad + blob))


def manifest(p: Pristine, c: Choices) -> Mutant:
    """One node of the manifest deleted, replaced or tweaked; re-packed with its checksum recomputed
    (one time in twenty not, which the reader must notice)."""
    tree = p.tree()
    path = _walk(c, tree)
    how = c.pick(("delete", "replace", "tweak", "tweak")) if path else c.pick(("replace", "tweak"))
    if how == "delete":
        parent = _at(tree, path[:-1])
        del parent[path[-1]]
        detail = f"delete {path}"
    else:
        old = _at(tree, path)
        new = _hostile(p, c) if how == "replace" else _tweak(p, c, old)
        if path:
            _at(tree, path[:-1])[path[-1]] = new
        else:
            tree = new
        detail = f"{how} {path}: {_brief(old)} -> {_brief(new)}"
    reseal = not c.chance(20)
    try:
        m = with_manifest(p, tree, reseal)
    except (ValueError, OverflowError, TypeError) as e:  # msgpack cannot pack it (depth, size): a no-op case
        return Mutant("manifest", f"{detail} (unpackable: {type(e).__name__})")
    m.kind, m.detail = "manifest", detail + ("" if reseal else " (old checksum)")
    return m


def tensor_entry(p: Pristine, c: Choices) -> Mutant:
    """One field of one tensor-table entry (weights or mel filters) made wrong in the ways a
    writer or an editor could: another entry's offset or name, a permuted or resized shape, an
    other dtype, a size off by an element. (`manifest` reaches these entries too, but rarely.)"""
    tree = p.tree()
    section = c.pick([s for s in tree["sections"] if s.get("tensors")])
    entries = section["tensors"]
    entry = c.pick(entries)
    other = c.other(entry, entries)
    key = c.pick(("name", "dtype", "shape", "offset", "nbytes"))
    old = entry[key]
    item = {"float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4}.get(entry["dtype"], 4)
    new = c.other(old, {  # lambdas: only the chosen field's options are computed (they need its type)
        "name": lambda: (other["name"], entry["name"] + "x", "", "A" * 300, 7),
        "dtype": lambda: ("float16", "bfloat16", "int32", "int64", "float64", "float32", None),
        "shape": lambda: (old[::-1], old + [1], [1] + old, old[:-1], [n * 2 for n in old], [0], [],
                          [-1] * len(old), [2**31] * len(old), [2**62, 2**62]),
        "offset": lambda: (other["offset"], old + 64, old - 64, old + 1, section["length"], section["length"] - 64,
                           2**62, -64, 0),
        "nbytes": lambda: (old + item, old - item, 0, old * 2, other["nbytes"], section["length"], 2**63),
    }[key]())
    entry[key] = new
    m = with_manifest(p, tree)
    m.kind, m.detail = "tensor-entry", f"{section['name']} {old if key == 'name' else entry['name']}.{key}: " \
                                       f"{_brief(old)} -> {_brief(new)}"
    return m


def graph_port(p: Pristine, c: Choices) -> Mutant:
    """One port of one graph's recorded signature made wrong: its shape, dtype, kind, device or
    name, or two ports swapped (the order is the compiled graph's)."""
    tree = p.tree()
    target = c.pick(tree["targets"])
    role = c.pick(list(target["graphs"]))
    graph = target["graphs"][role]
    side = c.pick([k for k in ("inputs", "outputs") if graph[k]])
    ports = graph[side]
    i = c.below(len(ports))
    j = c.other(i, range(len(ports)))
    key = c.pick(("shape", "dtype", "kind", "device", "name") + (("swap",) if len(ports) > 1 else ()))
    port = ports[i]
    if key == "swap":
        ports[i], ports[j] = ports[j], ports[i]
        detail = f"ports {i} and {j} swapped"
    else:
        old = port[key]
        port[key] = c.other(old, {
            "shape": lambda: ([n + 1 for n in old[:1]] + old[1:], old[::-1], old + [1], old[:-1],
                              [1 << 40] * len(old)),
            "dtype": lambda: ("float16", "int32", "int64", "float32", "bool"),
            "kind": lambda: ("buffer", "tensor", "weights"),
            "device": lambda: ("gpu", "cpu", "tpu"),
            "name": lambda: (ports[j]["name"], old + "_", ""),
        }[key]())
        detail = f"{port['name']}.{key}: {_brief(old)} -> {_brief(port[key])}"
    m = with_manifest(p, tree)
    m.kind, m.detail = "graph-port", f"{target['name']} {role} {side}: {detail}"
    return m


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def newer_minor(p: Pristine, c: Choices) -> Mutant:
    """A newer minor of the same major: the reader must accept it and ignore the unknown fields."""
    from mxwr.manifest import FORMAT_MINOR

    tree = p.tree()
    minor = FORMAT_MINOR + 1 + c.below(3)
    tree["format_version"] = [p.header[1], minor]
    node = c.pick([n for n in _nodes(tree) if isinstance(n, dict)])
    node["zz_from_the_future"] = c.pick((1, "x", [1, 2], {"a": None}))
    m = with_manifest(p, tree, minor=minor)
    m.kind, m.detail = "newer-minor", f"3.{minor} with an unknown field in {sorted(node)[:3]}..."
    return m


def regenerate(p: Pristine, c: Choices) -> Mutant:
    """The dims or shape changed *and* every graph signature rewritten to agree with them: the
    manifest is self-consistent, and only the compiled graphs (or the weights) can tell."""
    from mxwr.dims import ModelDims, Shape
    from mxwr.graphspec import SPECS, Geometry, Layout

    tree = p.tree()
    group, key = c.pick([("shape", k) for k in tree["shape"]] + [("dims", k) for k in tree["dims"]])
    old = tree[group][key]
    tree[group][key] = c.pick((old - 1, old + 1, max(1, old // 2), old * 2))
    detail = f"{group}.{key}: {old} -> {tree[group][key]}, signatures regenerated"
    try:
        dims = ModelDims(**tree["dims"])
        shape = Shape(**tree["shape"])
        heads = len(tree["alignment_heads"] or ())
        for target in tree["targets"]:
            layout = Layout(**target["layout"])
            geometry = Geometry(dims, shape, target["dtype"], layout, heads)
            device = "cpu" if target["name"] == "cpu" else "gpu"
            for role, graph in target["graphs"].items():
                inputs, outputs = SPECS[role].signature(geometry)
                graph["inputs"], graph["outputs"] = ([{"name": q.name, "dtype": q.dtype, "shape": list(q.shape),
                                                       "kind": q.kind, "device": device} for q in ports]
                                                     for ports in (inputs, outputs))
    except Exception as e:  # dims the specs cannot be computed for: left as they are
        detail += f" (not regenerated: {type(e).__name__})"
    m = with_manifest(p, tree)
    m.kind, m.detail = "regenerate", detail
    return m


def with_section(p: Pristine, tree: Any, name: str, new: bytes, how: str, content: bool = True) -> Mutant:
    """Section `name` holding `new` (in place when it is the same length, else after the data),
    its record and checksum updated: a consistent file whose content is another one's."""
    record = next(s for s in tree["sections"] if s["name"] == name)
    record["sha256"] = hashlib.sha256(new).hexdigest()
    if len(new) == record["length"]:
        m = with_manifest(p, tree)
        m.writes.append((record["offset"], new))
    else:
        record["offset"], record["length"] = p.m_offset, len(new)
        if record["encoding"] == "raw":
            record["raw_length"] = len(new)
        m = with_manifest(p, tree, data=new)
    m.kind, m.detail, m.content = "content", f"{name}: {how}, checksum recomputed", content
    return m


_SPECIALS = (float("nan"), float("inf"), float("-inf"), 3.4e38, -3.4e38, 1e-45, -0.0, 0.0)


def mel_values(p: Pristine, c: Choices) -> Mutant:
    """Values of the mel filterbank (or the STFT basis) replaced: NaN, inf, huge, denormal."""
    tree = p.tree()
    section = next(s for s in tree["sections"] if s["kind"] == "mel_filters")
    tensor = c.pick(section["tensors"])
    data = bytearray(p.data[section["offset"] : section["offset"] + section["length"]])
    count = tensor["nbytes"] // 4
    value = c.pick(_SPECIALS)
    n = c.pick((1, 7, count))
    for _ in range(min(n, 64)) if n < count else ():
        struct.pack_into("<f", data, tensor["offset"] + 4 * c.below(count), value)
    if n >= count:
        data[tensor["offset"] : tensor["offset"] + tensor["nbytes"]] = struct.pack("<f", value) * count
    m = with_section(p, tree, section["name"], bytes(data), f"{n} value(s) of {tensor['name']} -> {value}")
    if not math.isfinite(value):  # no filterbank: every mel bin it enters would be NaN or inf
        m.refuse = "a mel filterbank or STFT basis with values that are not finite"
    return m


def vocabulary(p: Pristine, c: Choices) -> Mutant:
    """The vocabulary's msgpack rewritten (entries retyped, dropped, added, huge), re-compressed
    (with or without the frame's content size), or replaced by bytes that are not zstd."""
    tree = p.tree()
    name = tree["tokenizer"]["vocabulary_section"]
    record = next(s for s in tree["sections"] if s["name"] == name)
    stored = bytes(p.data[record["offset"] : record["offset"] + record["length"]])
    pieces = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(stored), raw=False)
    how = c.below(9)
    if how == 0:
        i = c.below(len(pieces))
        pieces[i] = c.pick((None, 7, "text", [b"x"], b"\xff" * 70000))
        what = f"entry {i} retyped"
    elif how == 1:
        pieces = pieces[: c.pick((0, 1, 50000, len(pieces) - 1))]
        what = f"cut to {len(pieces)} entries"
    elif how == 2:
        pieces = pieces + [b"x"] * c.pick((1, 100000))
        what = f"grown to {len(pieces)} entries"
    elif how == 3:
        pieces = c.pick(({"a": b"b"}, b"\0" * 100, 3, None))
        what = f"not a list ({type(pieces).__name__})"
    elif how == 4:
        i = c.below(len(pieces))
        pieces[i] = b""
        what = f"entry {i} emptied"
    elif how == 5:  # the same text, but a frame that does not say its size (a legal zstd frame)
        what = "re-compressed without the frame's content size"
        if c.chance(2):
            record["raw_length"] = c.pick((record["raw_length"] + 1, 1 << 30, 16 << 30))
            what += f", raw_length {record['raw_length']}"
    if how == 6:
        new = c.blob(c.pick((0, 13, 4096)))
        what = "not zstd"
    elif how == 7:
        new = zstandard.ZstdCompressor().compress(c.blob(1000))
        what = "zstd of bytes that are not msgpack"
    elif how == 8:  # a bomb: a small frame of a gigabyte of zeros, raw_length saying so
        new = zstandard.ZstdCompressor(level=1).compress(b"\0" * (64 << 20))
        record["raw_length"] = 64 << 20
        what = "zstd of 64 MiB of zeros"
    else:
        new = zstandard.ZstdCompressor(level=3, write_content_size=how != 5).compress(_pack(pieces))
        if how != 5:
            record["raw_length"] = len(_pack(pieces))
    return with_section(p, tree, name, new, what, content=how not in (5, 8))  # 5, 8: the text, or none, as before


CONTENT = [(3, mel_values), (3, vocabulary)]
BUNDLE_MUTATORS = [(20, flip), (6, truncate), (2, extend), (6, splice), (8, header), (30, manifest),
                   (5, tensor_entry), (5, graph_port), (2, newer_minor), (5, regenerate), *CONTENT]


BUNDLE_KINDS = {"flip", "truncate", "extend", "splice", "header", "manifest", "tensor-entry", "graph-port",
                "newer-minor", "regenerate", "content"}


def mutate_bundle(p: Pristine, c: Choices) -> Mutant:
    return c.weighted(BUNDLE_MUTATORS)(p, c)


# ----------------------------------------------------------------------------------------------
# Time and memory limits of one in-process case


class Hang(Exception):
    """A case ran past its time limit."""


@contextlib.contextmanager
def limits(seconds: float, memory: int | None = 4 << 30) -> Iterator[None]:
    """Interrupts the case after `seconds` (Python code at once, a C call when it returns), and
    makes an allocation of more than `memory` bytes beyond what the process holds fail (as it
    would on a small device) rather than succeed on this machine's overcommit."""
    def expire(signum, frame):
        raise Hang(f"over {seconds:g} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if memory is not None:
        with open("/proc/self/statm") as f:
            held = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = held + memory
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# ----------------------------------------------------------------------------------------------
# The oracle


@dataclass
class Verdict:
    outcome: str  # refused, accepted-identical, accepted-decoded-identical, accepted-refused-at-load,
    #               accepted-content (decoded as another bundle), or failure
    detail: str = ""
    failure: str | None = None  # crash, hang, traceback, accepted-corruption, wrong-transcript, bad-message
    view: str | None = None  # for accepted mutants whose records differ: what decoding reads

    @property
    def ok(self) -> bool:
        return self.failure is None


def _message_problem(e: BaseException, *paths: Path) -> str | None:
    text = str(e)
    for path in paths:
        text = text.replace(str(path), "")
    if "\n" in str(e) or len(text) > MESSAGE_LIMIT or not text.strip():
        return f"error message not one bounded line ({len(str(e))} chars): {str(e)[:200]!r}"
    return None


def _traceback(e: BaseException) -> str:
    return "".join(traceback.format_exception(type(e), e, e.__traceback__)[-6:])


def _touched(s: Any, m: Mutant, p: Pristine) -> bool:
    """Whether section record `s` (as the mutant's manifest has it) may not be the pristine one."""
    original = p.by_name.get(s.name)
    if original is None or s.to_dict() != original:
        return True
    return any(start < s.end and s.offset < end for start, end in m.changed())


def runtime_view(manifest: Any) -> str:
    """What decoding reads of a validated manifest, canonically, by what the runtime's code reads
    (grep runtime/mxwr for each): not the provenance (`producer` but its `max_version`, which the
    loader checks; `model`, which the CLI names in one warning; the signature slot), the minor
    version, `tokenizer.encoding`, the alignment heads' values (compiled into the align graph: only
    their count, in its signature, matters) or a target's `layout` (read only to compute the
    signatures, which are here as recorded); sections by name, each with the checksum of its
    verified bytes rather than where they lie."""
    d = manifest.to_dict()
    d["producer"] = d["producer"]["max_version"]
    for key in ("model", "signature"):
        d.pop(key, None)
    d["format_version"] = d["format_version"][0]
    d["tokenizer"].pop("encoding")
    d["alignment_heads"] = None if d["alignment_heads"] is None else len(d["alignment_heads"])
    for target in d["targets"]:
        target.pop("layout")
    d["sections"] = {s.pop("name"): {**{k: v for k, v in s.items() if k not in ("offset", "length")},
                                      "tensors": sorted(s.get("tensors") or [], key=lambda t: t["name"])}
                     for s in d["sections"]}
    return json.dumps(d, sort_keys=True, default=repr)


def differs(view: str, other: str) -> str:
    """Which records two views differ in (sections by name), e.g. `sections.vocabulary,tokenizer`."""
    a, b = json.loads(view), json.loads(other)
    keys = [k for k in sorted(set(a) | set(b)) if k != "sections" and a.get(k) != b.get(k)]
    keys += [f"sections.{n}" for n in sorted(set(a["sections"]) | set(b["sections"]))
             if a["sections"].get(n) != b["sections"].get(n)]
    return ",".join(keys)


def judge_bundle(path: Path, m: Mutant, p: Pristine, pristine_view: str, seconds: float = 10.0) -> Verdict:
    """The in-process half: open, validate, read what the mutation touched (no graph is loaded)."""
    from mxwr.bundle import BundleReader
    from mxwr.errors import MxwError
    from mxwr.tokens import SpecialTokens

    where = "open"
    try:
        with limits(seconds):
            reader = BundleReader(path)
            try:
                where = "section"
                refused = None
                sections = [s for s in reader.manifest.sections if _touched(s, m, p)]
                with open(path, "rb") as f:
                    for s in sections:
                        try:
                            data = reader.read_tensors(s.name) if s.tensors is not None else reader.read_bytes(s.name)
                        except MxwError as e:
                            refused = refused or e
                            continue
                        f.seek(s.offset)
                        if hashlib.sha256(f.read(s.length)).hexdigest() != s.sha256:
                            return Verdict("failure", f"section {s.name!r} read without its checksum matching",
                                           "accepted-corruption")
                        del data
                if refused is None and (any(s.kind == "vocabulary" for s in sections) or _tokenizer_changed(reader, p)):
                    where = "vocabulary"
                    special = SpecialTokens.from_bundle(reader)
                    special.vocab.decode(range(min(len(special.vocab), 1000)))
                    special.encode(PROMPT)
                view = runtime_view(reader.manifest)
            finally:
                reader.close()
    except MxwError as e:
        problem = _message_problem(e, path)
        if problem:
            return Verdict("failure", problem, "bad-message")
        return Verdict("refused", f"{where}: {e}")
    except Hang as e:
        return Verdict("failure", f"{where}: {e}", "hang")
    except MemoryError:
        return Verdict("failure", f"{where}: an allocation of more than 4 GiB", "traceback")
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # BaseException: a Rust library's panic (pyo3's PanicException) is one
        return Verdict("failure", f"{where}: {_traceback(e)}", "traceback")
    if refused is not None:
        problem = _message_problem(refused, path)
        return Verdict("failure", problem, "bad-message") if problem else Verdict("refused", f"section: {refused}")
    if not _manifest_intact(path):
        return Verdict("failure", "a manifest not matching the header's checksum was read", "accepted-corruption")
    if view == pristine_view:
        return Verdict("accepted-identical", "what decoding reads is the original's")
    return Verdict("accepted", "records differ from the original's", view=view)


def _tokenizer_changed(reader: Any, p: Pristine) -> bool:
    return reader.manifest.tokenizer.to_dict() != p.manifest["tokenizer"]


def _manifest_intact(path: Path) -> bool:
    """The header's digest is the manifest's, and the manifest ends the file (read independently)."""
    with open(path, "rb") as f:
        data = f.read(HEADER.size)
        _, _, _, _, offset, length, digest = HEADER.unpack(data)
        size = os.fstat(f.fileno()).st_size
        if offset + length != size:
            return False
        f.seek(offset)
        return hashlib.sha256(f.read(length)).digest() == digest


# ----------------------------------------------------------------------------------------------
# The real CLI


def run_cli(mxwr: Path, args: list[str], timeout: float) -> tuple[str | None, str, subprocess.CompletedProcess | None]:
    """(failure or None, what happened, the process): exit 0, or 1 with exactly one stderr line
    `mxwr: error: ...`; a signal, a timeout, a traceback or any other exit is a failure."""
    try:
        proc = subprocess.run([str(mxwr), *args], capture_output=True, text=True, timeout=timeout,
                              errors="replace")
    except subprocess.TimeoutExpired:
        return "hang", f"mxwr {args[0]} ran past {timeout:g} s", None
    lines = proc.stderr.strip().splitlines()
    if proc.returncode < 0 or proc.returncode >= 128:
        return "crash", f"mxwr {args[0]} died (exit {proc.returncode}): {proc.stderr[-500:]}", proc
    if "Traceback" in proc.stderr or (proc.returncode == 2 and "internal error" in proc.stderr):
        return "traceback", proc.stderr[-1500:], proc  # exit 2: the CLI's one line for an exception of ours
    if proc.returncode == 0:
        return None, "exit 0", proc
    if lines and lines[-1].startswith("mxwr: error: out of memory"):  # no input here needs gigabytes
        return "memory", lines[-1], proc
    if proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("mxwr: error: "):
        return None, lines[0], proc
    return "bad-exit", f"exit {proc.returncode}, stderr {proc.stderr[-500:]!r}", proc


def decode_args(bundle: Path, audio: Path) -> list[str]:
    return ["run", "-f", "json", "--initial_prompt", PROMPT, "--threads", "0", str(bundle), str(audio)]


def judge_decode(mxwr: Path, bundle: Path, audio: Path, expected: str, m: Mutant, timeout: float = 300) -> Verdict:
    """An accepted mutant whose records differ, decoded by the real CLI."""
    failure, what, proc = run_cli(mxwr, decode_args(bundle, audio), timeout)
    if failure:
        return Verdict("failure", what, failure)
    if proc.returncode == 1:
        return Verdict("accepted-refused-at-load", what)
    if m.refuse:
        return Verdict("failure", f"decoded despite {m.refuse}", "accepted-hostile")
    if proc.stdout == expected:
        return Verdict("accepted-decoded-identical", "the original's transcript")
    if m.content:  # another bundle's content, consistently checksummed: its transcript is its own
        return Verdict("accepted-content", "decoded as the bundle it now is")
    return Verdict("failure", f"transcript differs: {proc.stdout[:300]!r}", "wrong-transcript")


def judge_cli_bundle(mxwr: Path, bundle: Path, timeout: float = 120) -> Verdict:
    failure, what, _ = run_cli(mxwr, ["inspect", str(bundle)], timeout)
    return Verdict("failure", what, failure) if failure else Verdict("cli-ok", what)


# ----------------------------------------------------------------------------------------------
# Audio


SAMPLE_RATE = 16000


def write_wav(frames: np.ndarray, rate: int, encoding: str, extensible: bool = False,
              extra: list[tuple[bytes, bytes]] = ()) -> bytes:
    """A WAV file of frames [n, channels] in [-1, 1); encoding pcm8/16/24/32 or float32/64;
    `extra` chunks go between fmt and data."""
    if encoding == "pcm8":
        data, tag, bits = (np.round(frames * 127) + 128).astype(np.uint8).tobytes(), 1, 8
    elif encoding.startswith("pcm"):
        bits = int(encoding[3:])
        ints = np.round(frames * (2 ** (bits - 1) - 1)).astype("<i4")
        data, tag = ints.view(np.uint8).reshape(*ints.shape, 4)[..., : bits // 8].tobytes(), 1
    else:
        bits = int(encoding[5:])
        data, tag = frames.astype(f"<f{bits // 8}").tobytes(), 3
    channels = frames.shape[1]
    block = channels * bits // 8
    if extensible:
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * block, block, bits, 22, bits, 0)
        fmt += struct.pack("<H", tag) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    return riff([(b"fmt ", fmt), *extra, (b"data", data)])


def riff(chunks: list[tuple[bytes, bytes]], sizes: dict[int, int] | None = None, form: bytes = b"WAVE",
         magic: bytes = b"RIFF", riff_size: int | None = None) -> bytes:
    """Chunks (id, payload) -> a RIFF file; `sizes` overrides chunk i's declared size."""
    body = form
    for i, (cid, payload) in enumerate(chunks):
        size = (sizes or {}).get(i, len(payload))
        body += cid + struct.pack("<I", size % (1 << 32)) + payload + b"\0" * (len(payload) & 1)
    return magic + struct.pack("<I", (len(body) if riff_size is None else riff_size) % (1 << 32)) + body


def audio_corpus(source: Path, flac: bool = True) -> dict[str, bytes]:
    """Real speech (0.25 s of `source`) in every encoding the native decoder reads, at 16 kHz and
    at other rates, and as FLAC (by ffmpeg, which decodes what is not WAV): name -> file bytes."""
    with wave.open(str(source)) as w:
        assert w.getsampwidth() == 2, "the corpus is cut from a 16-bit WAV"
        rate = w.getframerate()
        w.setpos(min(w.getnframes() // 2, 2 * rate))
        pcm = np.frombuffer(w.readframes(rate // 4), "<i2").reshape(-1, w.getnchannels())
    mono = (pcm[:, :1].astype(np.float32) / 32768.0)
    stereo = np.concatenate([mono, mono[::-1] * 0.5], axis=1)
    corpus = {}
    for name, frames, r, enc, ext in [
        ("pcm16", mono, rate, "pcm16", False), ("pcm8", mono, rate, "pcm8", False),
        ("pcm24", mono, rate, "pcm24", False), ("pcm32", mono, rate, "pcm32", False),
        ("float32", mono, rate, "float32", False), ("float64", mono, rate, "float64", False),
        ("stereo16", stereo, rate, "pcm16", False), ("ext-float32", stereo, rate, "float32", True),
        ("pcm16-8k", mono[::2], rate // 2, "pcm16", False), ("float32-44k", mono, 44100, "float32", False),
    ]:
        corpus[name] = write_wav(frames, r, enc, ext)
    if flac and shutil.which("ffmpeg"):
        proc = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "wav", "-i", "-", "-f", "flac", "-"],
                              input=corpus["pcm16"], capture_output=True, check=True)
        corpus["flac"] = proc.stdout
    return corpus


def parse_riff(data: bytes) -> list[tuple[bytes, bytes]] | None:
    """The chunks of a well-formed RIFF file we wrote (for structured mutations)."""
    if data[:4] != b"RIFF":
        return None
    chunks, pos = [], 12
    while pos + 8 <= len(data):
        cid, size = struct.unpack_from("<4sI", data, pos)
        chunks.append((cid, data[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return chunks


@dataclass
class AudioMutant:
    base: str
    kind: str
    detail: str
    data: bytes
    same_as: str | None = None  # a rewrite that keeps the audio: must decode to the base's samples
    case: str = ""

    def describe(self) -> str:
        return f"{self.case} {self.base} {self.kind}: {self.detail}"


_FMT_FIELDS = {"tag": (0, "<H"), "channels": (2, "<H"), "rate": (4, "<I"), "byte_rate": (8, "<I"),
               "block_align": (12, "<H"), "bits": (14, "<H")}


def mutate_audio(corpus: dict[str, bytes], c: Choices) -> AudioMutant:
    base = c.pick(sorted(corpus))
    data = corpus[base]
    chunks = parse_riff(data)
    kind = c.weighted([(12, "fmt"), (6, "sizes"), (6, "layout"), (6, "samples"), (5, "truncate"), (8, "flip"),
                       (3, "splice"), (2, "same")] if chunks else [(5, "truncate"), (8, "flip"), (3, "splice")])
    if kind == "fmt":
        i = next(k for k, (cid, _) in enumerate(chunks) if cid == b"fmt ")
        fmt = bytearray(chunks[i][1])
        name = c.pick(sorted(_FMT_FIELDS) + ["subformat", "size"])
        if name == "size":
            fmt = fmt[: c.pick((0, 2, 14, 15, 17, 24, 25))] if c.chance(2) else fmt + c.blob(c.pick((1, 2, 40)))
            value: Any = len(fmt)
        elif name == "subformat":
            if len(fmt) < 26:
                fmt += b"\0" * (26 - len(fmt))
            value = c.pick((0, 1, 2, 3, 0x55, 0xFFFE, 0xFFFF))
            struct.pack_into("<HH", fmt, 0, 0xFFFE, 22)
            struct.pack_into("<H", fmt, 24, value)
        else:
            offset, code = _FMT_FIELDS[name]
            top = (1 << (8 * struct.calcsize(code))) - 1
            old = struct.unpack_from(code, fmt, offset)[0]
            value = c.pick({"tag": (0, 1, 2, 3, 6, 7, 0x11, 0x55, 0xFFFE, top),
                            "channels": (0, 1, 2, 3, 8, 255, top),
                            "rate": (0, 1, 2, 7, 100, 999, 8000, 16000, 22050, 44100, 192000, 1 << 20, 1 << 31, top),
                            "byte_rate": (0, 1, top), "block_align": (0, 1, 2, 3, old - 1, old + 1, old * 2, top),
                            "bits": (0, 1, 4, 7, 8, 12, 16, 20, 24, 32, 48, 64, top)}[name])
            struct.pack_into(code, fmt, offset, min(max(value, 0), top))
        chunks[i] = (b"fmt ", bytes(fmt))
        return AudioMutant(base, kind, f"fmt {name} -> {value}", riff(chunks))
    if kind == "sizes":
        i = c.below(len(chunks) + 1)
        size = c.pick((0, 1, 15, 16, 0x7FFFFFFF, 0xFFFFFFFF, 0xFFFFFFF0, c.below(1 << 32)))
        if i == len(chunks):
            return AudioMutant(base, kind, f"RIFF size -> {size}", riff(chunks, riff_size=size))
        return AudioMutant(base, kind, f"chunk {i} ({chunks[i][0]!r}) size -> {size}", riff(chunks, sizes={i: size}))
    if kind == "layout":
        how = c.below(8)
        fmt = next(ch for ch in chunks if ch[0] == b"fmt ")
        dat = next(ch for ch in chunks if ch[0] == b"data")
        if how == 0:
            return AudioMutant(base, kind, "data before fmt", riff([dat, fmt]))
        if how == 1:
            other = bytearray(fmt[1])
            struct.pack_into("<I", other, 4, c.pick((1, 8000, 48000)))
            return AudioMutant(base, kind, "a second fmt chunk, after data", riff([fmt, dat, (b"fmt ", bytes(other))]))
        if how == 2:
            return AudioMutant(base, kind, "two data chunks", riff([fmt, dat, (b"data", dat[1][: len(dat[1]) // 2])]))
        if how == 3:
            return AudioMutant(base, kind, "no data chunk", riff([fmt]))
        if how == 4:
            return AudioMutant(base, kind, "no fmt chunk", riff([dat]))
        if how == 5:
            return AudioMutant(base, kind, "RF64 magic", riff(chunks, magic=b"RF64"))
        if how == 6:
            return AudioMutant(base, kind, "form type not WAVE", riff(chunks, form=c.pick((b"WAVX", b"AVI "))))
        junk = (c.pick((b"LIST", b"JUNK", b"\0\0\0\0", b"data")), c.blob(c.pick((0, 1, 3, 4095))))
        return AudioMutant(base, kind, f"a {junk[0]!r} chunk of {len(junk[1])} bytes before data",
                           riff([fmt, junk, dat]), same_as=None if junk[0] == b"data" else base)
    if kind == "same":  # rewrites that keep the audio: odd-sized junk with its pad byte, fmt extension
        fmt = next(ch for ch in chunks if ch[0] == b"fmt ")
        dat = next(ch for ch in chunks if ch[0] == b"data")
        if c.chance(2):
            return AudioMutant(base, kind, "LIST chunk first", riff([(b"LIST", b"INFOISFT\x03\0\0\0ab\0"), fmt, dat]),
                               same_as=base)
        return AudioMutant(base, kind, "data size 0xFFFFFFFF (streamed)", riff([fmt, dat], sizes={1: 0xFFFFFFFF}),
                           same_as=base)
    if kind == "samples":
        i = next(k for k, (cid, _) in enumerate(chunks) if cid == b"data")
        payload = bytearray(chunks[i][1])
        fmt = next(ch[1] for ch in chunks if ch[0] == b"fmt ")
        tag, bits = struct.unpack_from("<H", fmt, 0)[0], struct.unpack_from("<H", fmt, 14)[0]
        if tag == 0xFFFE:
            tag = struct.unpack_from("<H", fmt, 24)[0]
        width = max(bits // 8, 1)
        if tag == 3:
            value = c.pick(_SPECIALS + (1e30, -1e30, 1.0, -1.0) + ((1e300, -1e300, 1.7e308) if bits == 64 else ()))
            raw = struct.pack("<f" if bits == 32 else "<d", value)
        else:
            value = c.pick(("min", "max"))
            raw = (b"\x00" * (width - 1) + b"\x80") if value == "min" else (b"\xff" * (width - 1) + b"\x7f")
            if bits == 8:
                raw = b"\x00" if value == "min" else b"\xff"
        n = len(payload) // width
        count = c.pick((1, 10, n))
        for _ in range(count if count < n else 0):
            k = c.below(n) * width
            payload[k : k + width] = raw
        if count >= n:
            payload = bytearray(raw * n)
        chunks[i] = (b"data", bytes(payload))
        return AudioMutant(base, kind, f"{min(count, n)} sample(s) -> {value}", riff(chunks))
    if kind == "truncate":
        size = c.pick((0, 4, 11, 12, 20, 36, 44, c.below(len(data)), len(data) - 1))
        return AudioMutant(base, kind, f"to {size} of {len(data)} bytes", data[:size])
    if kind == "flip":
        out = bytearray(data)
        head = c.chance(2)
        for _ in range(c.pick((1, 2, 8))):
            k = c.below(min(64, len(out))) if head else c.below(len(out))
            out[k] ^= 1 + c.below(255)
        return AudioMutant(base, kind, f"bytes flipped ({'header' if head else 'anywhere'})", bytes(out))
    src, dst, n = c.below(len(data)), c.below(len(data)), c.pick((1, 4, 16, 256))
    return AudioMutant(base, kind, f"[{src}, +{n}) inserted at {dst}", data[:dst] + data[src : src + n] + data[dst:])


_NATIVE = {(1, 8), (1, 16), (1, 24), (1, 32), (3, 32), (3, 64)}  # what mxwr.wav decodes itself (FORMAT: PCM, float)


def sample_bound(data: bytes) -> int:
    """The most 16 kHz samples a sane decoder gives for these bytes: for PCM or float WAV (as its
    last fmt chunk declares), every byte after the header read as frames at the declared rate;
    for anything else (ffmpeg's), a minute from a file of a few kilobytes."""
    if data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE":
        fmt, pos = None, 12
        while pos + 8 <= len(data):
            cid, size = struct.unpack_from("<4sI", data, pos)
            if cid == b"fmt " and len(data) >= pos + 24:
                fmt = data[pos + 8 : pos + 8 + min(size, 64)]
            pos += 8 + size + (size & 1)
        if fmt is not None and len(fmt) >= 16:
            tag, channels, rate, _, block, bits = struct.unpack_from("<HHIIHH", fmt)
            if tag == 0xFFFE and len(fmt) >= 26:
                tag = struct.unpack_from("<H", fmt, 24)[0]
            if (tag, bits) in _NATIVE and rate > 0 and block > 0:
                return len(data) // block * SAMPLE_RATE // rate + 64
    return 60 * SAMPLE_RATE


def judge_audio(path: Path, m: AudioMutant, originals: dict[str, np.ndarray], seconds: float = 10.0) -> Verdict:
    from mxwr.audio import load_audio
    from mxwr.errors import MxwError

    try:
        with limits(seconds):
            samples = load_audio(path)
    except MxwError as e:
        problem = _message_problem(e, path)
        return Verdict("failure", problem, "bad-message") if problem else Verdict("refused", str(e))
    except Hang as e:
        return Verdict("failure", str(e), "hang")
    except MemoryError:
        return Verdict("failure", "an allocation of more than 4 GiB", "traceback")
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:
        return Verdict("failure", _traceback(e), "traceback")
    if not (isinstance(samples, np.ndarray) and samples.dtype == np.float32 and samples.ndim == 1):
        return Verdict("failure", f"samples of type {type(samples).__name__}", "bad-samples")
    if not np.isfinite(samples).all():
        return Verdict("failure", f"{int((~np.isfinite(samples)).sum())} non-finite samples", "bad-samples")
    bound = sample_bound(m.data)
    if len(samples) > bound:
        return Verdict("failure", f"{len(samples)} samples from {len(m.data)} bytes (at most {bound})", "bad-samples")
    if m.same_as is not None and not np.array_equal(samples, originals[m.same_as]):
        return Verdict("failure", f"decodes differently from {m.same_as}", "wrong-audio")
    return Verdict("accepted", f"{len(samples)} samples")
