"""The bundle's manifest as typed, frozen records: read once, checked once, used everywhere.

`Manifest.from_dict` validates everything the runtime relies on — types, ranges, the model's
dimensions against the build shape, every graph's recorded signature against its spec
(`mxwr.graphspec`) for those dimensions, the section table (aligned, non-overlapping, inside the
data area) and the names that tie them together — before anything is allocated or handed to
MAX. `to_dict` is what the writer stores. `schemas/manifest.schema.json` is the published form
of the same contract (a test keeps the two in agreement); `schemas/FORMAT.md` is the spec.
"""

from __future__ import annotations

import contextvars
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from .constants import HOP_LENGTH, N_FFT, N_FRAMES, N_SAMPLES, SAMPLE_RATE
from .dims import ModelDims, Shape
from .errors import BundleError
from .graphspec import GROUPED, REQUIRED, SPECS, Geometry, Layout, Port, bind
from .quantization import SCHEMES, stored_tensors

# 4.0: a row per window in the prefill and step, the group graphs (fork, group_step) for several
# sequences a window, the CPU's text summary; every field of 3.1 and 3.2 required.
FORMAT_MAJOR = 4
FORMAT_MINOR = 1
ALIGN = 64  # sections, and tensors within them, start on 64-byte boundaries
DTYPES = ("float32", "float16", "bfloat16")  # compute dtypes of a target
# How a target's weights are stored (`quantization`: its tensors).
QUANTIZATIONS = SCHEMES
TENSOR_DTYPES = {"float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int8": 1, "uint8": 1}  # item sizes
SECTION_KINDS = ("weights", "mef", "vocabulary", "mel_filters")
ENCODINGS = ("raw", "zstd")
MAX_NAME = 256  # characters in any name
MAX_SECTIONS = 1024
MAX_TENSORS = 1 << 16  # per section
MAX_RAW_LENGTH = 16 << 30  # bytes a section may decode to
MAX_DECODED = 2 << 30  # bytes a compressed section (a graph, the vocabulary) may decode to: allocated whole
MAX_TOKEN_LIST = 1 << 16
TARGET_NAME = re.compile(r"^(cpu|[a-z]+:[a-z0-9_]+)$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_SIGNATURE_SLOT = 4096  # bytes: room for an Ed25519 block (112) and any later algorithm's
MAX_CPU_FEATURES = 64
# A newer minor of the format may add fields: they are ignored then, and refused otherwise.
_NEWER_MINOR = contextvars.ContextVar("newer_minor", default=False)


def _fail(what: str) -> BundleError:
    return BundleError(f"bundle manifest has {what}")


def _short(value: Any) -> str:
    """A value as an error message may show it: bounded, whatever the file holds."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _map(d: Any, what: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise _fail(f"a malformed {what}")
    missing = [k for k in required if k not in d]
    if missing:
        raise _fail(f"a {what} without {', '.join(missing)}")
    unknown = [k for k in d if k not in required and k not in optional]
    if unknown and not _NEWER_MINOR.get():
        raise _fail(f"a {what} with unknown fields {_short(unknown)}")
    return d


def _int(value: Any, what: str, low: int = 0, high: int = 1 << 62) -> int:
    if type(value) is not int or not low <= value <= high:
        raise _fail(f"a malformed {what} ({_short(value)})")
    return value


def _str(value: Any, what: str, limit: int = MAX_NAME) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise _fail(f"a malformed {what} ({_short(value)})")
    return value


def _list(value: Any, what: str, limit: int) -> list[Any]:
    if not isinstance(value, list) or len(value) > limit:
        raise _fail(f"a malformed {what}")
    return value


class _Record:
    """A manifest record's fields as the manifest spells them (nested records and tuples as
    maps and lists); records whose form differs say so in their own `to_dict`."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.compare}


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ----------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True)
class TensorEntry(_Record):
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int  # from the start of its section
    nbytes: int

    @classmethod
    def from_dict(cls, d: Any, section: str, length: int) -> "TensorEntry":
        d = _map(d, "tensor entry", ("name", "dtype", "shape", "offset", "nbytes"))
        name = _str(d["name"], "tensor name")
        shape = tuple(_int(n, "tensor shape") for n in _list(d["shape"], "tensor shape", 8))
        entry = cls(name, d["dtype"], shape, _int(d["offset"], "tensor offset"), _int(d["nbytes"], "tensor size"))
        itemsize = TENSOR_DTYPES.get(entry.dtype) if isinstance(entry.dtype, str) else None
        count = 1
        for n in shape:
            count *= n
        if (itemsize is None or entry.nbytes != count * itemsize or entry.offset % ALIGN
                or entry.offset + entry.nbytes > length):
            raise BundleError(f"bundle manifest's tensor {_short(name)} does not fit section {_short(section)}")
        return entry


@dataclass(frozen=True)
class Section(_Record):
    """One entry of the section table: where a section's bytes lie and what they hold."""

    name: str
    kind: str
    offset: int  # from the start of the file
    length: int  # bytes stored
    encoding: str
    raw_length: int  # bytes once decoded
    sha256: str  # of the stored bytes
    tensors: tuple[TensorEntry, ...] | None = None  # raw tensor sections

    @property
    def end(self) -> int:
        return self.offset + self.length

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if self.tensors is None:
            del d["tensors"]
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "Section":
        d = _map(d, "section entry", ("name", "kind", "offset", "length", "encoding", "raw_length", "sha256"),
                 ("tensors",))
        name = _str(d["name"], "section name")
        s = cls(name, d["kind"], _int(d["offset"], "section offset"), _int(d["length"], "section length"),
                d["encoding"], _int(d["raw_length"], "section raw_length", high=MAX_RAW_LENGTH),
                _str(d["sha256"], "section sha256"))
        if s.kind not in SECTION_KINDS or s.encoding not in ENCODINGS or not SHA256.match(s.sha256):
            raise _fail(f"a malformed section entry {_short(name)}")
        if s.offset % ALIGN:
            raise BundleError(f"bundle section {_short(name)} at {s.offset} is not {ALIGN}-byte aligned")
        if s.encoding == "zstd" and s.raw_length > MAX_DECODED:
            raise BundleError(f"bundle section {_short(name)} claims a raw_length of {s.raw_length} bytes "
                              f"(compressed sections decode to at most {MAX_DECODED})")
        if s.encoding == "raw" and s.raw_length != s.length:
            raise BundleError(f"bundle section {_short(name)} is raw but its raw_length differs from its length")
        if "tensors" in d:
            entries = _list(d["tensors"], "tensor table", MAX_TENSORS)
            s = replace(s, tensors=tuple(TensorEntry.from_dict(t, name, s.length) for t in entries))
            # Each tensor is its own bytes, as each section is: an entry moved onto another's bytes,
            # or a second entry of one name, would bind other weights than the writer's, silently.
            ordered = sorted(s.tensors, key=lambda t: t.offset)
            if len({t.name for t in s.tensors}) != len(s.tensors) or any(
                    after.offset < before.offset + before.nbytes for before, after in zip(ordered, ordered[1:])):
                raise BundleError(f"bundle section {_short(name)} has tensors that overlap or share a name")
        return s


def _section_table(entries: Any, data_end: int | None) -> tuple[Section, ...]:
    sections = tuple(Section.from_dict(s) for s in _list(entries, "section table", MAX_SECTIONS))
    if not sections:
        raise _fail("no section table")
    names = [s.name for s in sections]
    if len(set(names)) != len(names):
        raise _fail("two sections of one name")
    for s in sections:
        if s.offset < ALIGN or (data_end is not None and s.end > data_end):
            raise BundleError(f"bundle is truncated or corrupt: section {_short(s.name)} at "
                              f"[{s.offset}, {s.end}) lies outside the data area")
    ordered = sorted(sections, key=lambda s: s.offset)
    for before, after in zip(ordered, ordered[1:]):
        if after.offset < before.end:
            raise BundleError(f"bundle is corrupt: sections {_short(before.name)} and {_short(after.name)} overlap")
    return sections


# ----------------------------------------------------------------------------------------------
# Targets and their graphs


@dataclass(frozen=True)
class RecordedPort(Port, _Record):
    """A port of a compiled graph as the manifest records it: the spec's, plus where it lives."""

    device: str = "cpu"

    @classmethod
    def from_dict(cls, d: Any) -> "RecordedPort":
        d = _map(d, "graph port", ("name", "kind", "dtype", "shape", "device"))
        shape = tuple(_int(n, "port shape") for n in _list(d["shape"], "port shape", 8))
        return cls(_str(d["name"], "port name"), _str(d["dtype"], "port dtype"), shape, d["kind"], d["device"])

    @property
    def spec(self) -> Port:
        return Port(self.name, self.dtype, self.shape, self.kind)


@dataclass(frozen=True)
class GraphEntry:
    """One compiled graph: its MEF section and its signature, equal to its role's spec."""

    role: str
    section: str
    inputs: tuple[RecordedPort, ...]
    outputs: tuple[RecordedPort, ...]

    def input(self, name: str) -> RecordedPort:
        return next(p for p in self.inputs if p.name == name)

    def bind(self, values: Mapping[str, Any]) -> list[Any]:
        """Inputs by name -> the positional order the compiled graph takes."""
        return bind(self.inputs, values, self.role)

    def name_outputs(self, values: list[Any]) -> dict[str, Any]:
        return dict(zip((p.name for p in self.outputs), values, strict=True))

    def to_dict(self) -> dict[str, Any]:
        return {"section": self.section, "inputs": [p.to_dict() for p in self.inputs],
                "outputs": [p.to_dict() for p in self.outputs]}

    @classmethod
    def from_dict(cls, role: str, d: Any) -> "GraphEntry":
        d = _map(d, f"{role} graph entry", ("section", "inputs", "outputs"))
        ports = [tuple(RecordedPort.from_dict(p) for p in _list(d[k], f"{role} graph signature", 4096))
                 for k in ("inputs", "outputs")]
        return cls(role, _str(d["section"], "graph section"), *ports)


@dataclass(frozen=True)
class Target(_Record):
    name: str  # "cpu" or "<api>:<arch>", e.g. "cuda:sm_90a"
    dtype: str
    weights_section: str
    layout: Layout
    graphs: dict[str, GraphEntry]
    quantization: str = "none"  # QUANTIZATIONS
    gpu_index: int | None = field(default=None, compare=False)  # set once matched to a host GPU

    @property
    def is_gpu(self) -> bool:
        return self.name != "cpu"

    @classmethod
    def from_dict(cls, d: Any) -> "Target":
        d = _map(d, "target entry", ("name", "dtype", "weights_section", "layout", "graphs", "quantization"))
        name = _str(d["name"], "target name")
        quantization = d["quantization"]
        if not TARGET_NAME.match(name) or d["dtype"] not in DTYPES or quantization not in QUANTIZATIONS:
            raise _fail(f"a malformed target entry {_short(name)}")
        if quantization != "none" and (name != "cpu" or d["dtype"] != "float32"):
            raise _fail(f"target {_short(name)} with {quantization} weights: those are a float32 CPU target's")
        layout = Layout.from_dict(d["layout"])
        graphs = d["graphs"]
        if not isinstance(graphs, dict) or any(role not in SPECS for role in graphs):
            raise _fail(f"target {_short(name)} with unknown graph roles "
                        f"{_short(list(graphs) if isinstance(graphs, dict) else graphs)}")
        entries = {role: GraphEntry.from_dict(role, graphs[role]) for role in SPECS if role in graphs}
        return cls(name, d["dtype"], _str(d["weights_section"], "weights section name"), layout, entries, quantization)

    def check(self, dims: ModelDims, shape: Shape, n_alignment_heads: int) -> None:
        """Every graph's signature is its spec's for these dimensions, on this target's device."""
        missing = [r for r in REQUIRED if r not in self.graphs]
        if missing:
            raise _fail(f"target {self.name} without the {', '.join(missing)} graph")
        if shape.group > 1 and any(r not in self.graphs for r in GROUPED):
            missing = [r for r in GROUPED if r not in self.graphs]
            raise BundleError(f"bundle decodes {shape.group} sequences per window but has no {', '.join(missing)} graph")
        geometry = Geometry(dims, shape, self.dtype, self.layout, n_alignment_heads)
        device = "gpu" if self.is_gpu else "cpu"
        for role, graph in self.graphs.items():
            inputs, outputs = SPECS[role].signature(geometry)
            if [p.spec for p in graph.inputs] != inputs or [p.spec for p in graph.outputs] != outputs:
                raise BundleError(f"bundle's {role} graph for {self.name} was compiled for other dimensions "
                                  f"or another shape than the manifest states")
            if any(p.device != device for p in (*graph.inputs, *graph.outputs)):
                raise BundleError(f"bundle's {role} graph for {self.name} has ports off the target's device")


# ----------------------------------------------------------------------------------------------
# Tokenizer, audio, provenance


@dataclass(frozen=True)
class Host(_Record):
    """The kind of machine that built the bundle (no host name: a bundle is shipped to others)."""

    system: str  # platform.system(), e.g. Linux
    machine: str  # platform.machine(), e.g. x86_64
    cpu: str  # the CPU's model name
    cpu_features: tuple[str, ...]  # the instruction-set extensions MAX's CPU code may use, of those known

    @classmethod
    def from_dict(cls, d: Any) -> "Host":
        d = _map(d, "producer's host entry", tuple(f.name for f in fields(cls)))
        features = tuple(_str(f, "host cpu feature", 32) for f in _list(d["cpu_features"], "host cpu features",
                                                                        MAX_CPU_FEATURES))
        return cls(_str(d["system"], "host system"), _str(d["machine"], "host machine"), _str(d["cpu"], "host cpu"),
                   features)


@dataclass(frozen=True)
class Producer(_Record):
    """Who built the bundle, with which MAX, and on what kind of machine."""

    name: str
    version: str  # the compiler's (mxwc's) version
    max_version: str  # the MAX that compiled the graphs
    created: str
    host: Host | None = None  # required when read (`Manifest.from_dict`)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if self.host is None:  # a manifest being checked without it, given back as it was
            del d["host"]
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "Producer":
        d = _map(d, "producer entry", ("name", "version", "max_version", "created"), ("host",))
        host = Host.from_dict(d["host"]) if "host" in d else None
        return cls(*(_str(d[k], f"producer {k}") for k in ("name", "version", "max_version", "created")), host)


@dataclass(frozen=True)
class ModelInfo(_Record):
    """The model's name, where its weights came from, and the digest of the files read."""

    name: str
    source: str
    source_sha256: str | None = None  # sha256 of the weight file(s), concatenated in order; required when read

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if self.source_sha256 is None:  # a manifest being checked without it, given back as it was
            del d["source_sha256"]
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "ModelInfo":
        d = _map(d, "model entry", ("name", "source"), ("source_sha256",))
        digest = None
        if "source_sha256" in d:
            digest = _str(d["source_sha256"], "model source_sha256", 64)
            if not SHA256.match(digest):
                raise _fail(f"a malformed model source_sha256 ({_short(digest)})")
        return cls(_str(d["name"], "model name"), _str(d["source"], "model source", 4096), digest)


@dataclass(frozen=True)
class SignatureSlot(_Record):
    """Bytes the writer reserves (zeros) for a signature block, which `mxwc sign` writes in place:
    signing changes neither the file's size nor any byte that the signature covers."""

    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length

    @classmethod
    def from_dict(cls, d: Any, data_end: int | None) -> "SignatureSlot":
        d = _map(d, "signature slot", ("offset", "length"))
        slot = cls(_int(d["offset"], "signature slot offset"),
                   _int(d["length"], "signature slot length", ALIGN, MAX_SIGNATURE_SLOT))
        if slot.offset % ALIGN or slot.length % ALIGN:
            raise BundleError(f"bundle's signature slot at {slot.offset} is not {ALIGN}-byte aligned")
        if slot.offset < ALIGN or (data_end is not None and slot.end > data_end):
            raise BundleError(f"bundle is truncated or corrupt: its signature slot at [{slot.offset}, {slot.end}) "
                              f"lies outside the data area")
        return slot


# openai-whisper's pre-tokenizer, the same for its gpt2 and multilingual encodings: the one
# pattern a bundle's tokenizer may name (tiktoken compiles it; nothing else from the file is).
OPENAI_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
SPECIAL_IDS = ("sot", "eot", "sot_prev", "sot_lm", "no_timestamps", "timestamp_begin", "transcribe", "translate")


@dataclass(frozen=True)
class Tokenizer(_Record):
    kind: str
    encoding: str
    multilingual: bool
    special: dict[str, int | None]  # SPECIAL_IDS, and no_speech (None where the model has none)
    languages: dict[str, int]  # language code -> token id, in openai-whisper's order
    non_speech_tokens: tuple[int, ...]
    blank_tokens: tuple[int, ...]
    pattern: str  # the BPE pre-tokenizer's regular expression
    n_mergeable: int  # ids below it are byte-pair ranks
    vocabulary_section: str

    @classmethod
    def from_dict(cls, d: Any, n_vocab: int) -> "Tokenizer":
        names = tuple(f.name for f in fields(cls))
        d = _map(d, "tokenizer entry", names)
        special = _map(d["special"], "tokenizer's special ids", (*SPECIAL_IDS, "no_speech"))
        languages = d["languages"]
        if not isinstance(languages, dict) or len(languages) > 1024 or not all(
            isinstance(k, str) and len(k) <= 16 for k in languages
        ):
            raise _fail("a malformed tokenizer's language table")
        ids = [*(special[k] for k in SPECIAL_IDS), *languages.values()]
        ids += [special["no_speech"]] if special["no_speech"] is not None else []
        lists = [tuple(_list(d[k], f"tokenizer's {k}", MAX_TOKEN_LIST)) for k in ("non_speech_tokens", "blank_tokens")]
        if not all(type(i) is int and 0 <= i < n_vocab for i in [*ids, *lists[0], *lists[1]]):
            raise BundleError("bundle manifest has token ids outside the vocabulary")
        if type(d["multilingual"]) is not bool or d["kind"] != "tiktoken-bytes" or d["encoding"] not in ("gpt2", "multilingual"):
            raise _fail("a malformed tokenizer entry")
        if d["pattern"] != OPENAI_PATTERN:
            raise _fail("a tokenizer pattern other than openai-whisper's")
        if d["multilingual"] != (n_vocab >= 51865):  # openai-whisper's rule; decoding branches on the flag
            raise _fail("a tokenizer whose multilingual flag disagrees with the vocabulary size")
        return cls(d["kind"], d["encoding"], d["multilingual"], dict(special), dict(languages), *lists,
                   _str(d["pattern"], "tokenizer pattern", 4096), _int(d["n_mergeable"], "n_mergeable", 1, n_vocab),
                   _str(d["vocabulary_section"], "vocabulary section name"))


@dataclass(frozen=True)
class Audio(_Record):
    """The front end the graphs were traced for: openai-whisper's, the one this runtime computes."""

    sample_rate: int
    n_fft: int
    hop_length: int
    n_samples: int
    n_frames: int
    mel_filters_section: str

    @classmethod
    def ours(cls, mel_filters_section: str = "mel_filters") -> "Audio":
        return cls(SAMPLE_RATE, N_FFT, HOP_LENGTH, N_SAMPLES, N_FRAMES, mel_filters_section)

    @classmethod
    def from_dict(cls, d: Any) -> "Audio":
        d = _map(d, "audio entry", tuple(f.name for f in fields(cls)))
        known = {f.name: d[f.name] for f in fields(cls)}  # a newer minor's fields are ignored, not passed on
        audio = cls(**{**known, "mel_filters_section": _str(d["mel_filters_section"], "mel filters section name")})
        if audio != cls.ours(audio.mel_filters_section):
            raise BundleError(f"bundle's audio front end {_short(audio.to_dict())} is not the one mxwr computes")
        return audio


# ----------------------------------------------------------------------------------------------
# The manifest


@dataclass(frozen=True)
class Manifest(_Record):
    format_version: tuple[int, int]
    producer: Producer
    model: ModelInfo
    dims: ModelDims
    shape: Shape
    targets: tuple[Target, ...]
    tokenizer: Tokenizer
    audio: Audio
    alignment_heads: tuple[tuple[int, int], ...] | None  # [layer, head] pairs the align graph reads
    sections: tuple[Section, ...] = ()
    signature: SignatureSlot | None = None  # the writer fills it in; required when read

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if self.signature is None:  # not filled in yet
            del d["signature"]
        return d

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)

    @classmethod
    def from_dict(cls, d: Any, data_end: int | None = None) -> "Manifest":
        """Validates a manifest as read (or about to be written); `data_end`: where the sections
        must end (the manifest's offset in the file)."""
        version = d.get("format_version") if isinstance(d, dict) else None
        if not (isinstance(version, list) and len(version) == 2 and all(type(v) is int for v in version)
                and version[0] == FORMAT_MAJOR):
            raise _fail(f"a format_version other than {FORMAT_MAJOR}.x ({_short(version)})")
        newer = _NEWER_MINOR.set(version[1] > FORMAT_MINOR)
        try:
            return cls._from_dict(_map(d, "manifest", tuple(f.name for f in fields(cls) if f.name != "signature"),
                                       ("signature",)), data_end)
        finally:
            _NEWER_MINOR.reset(newer)

    @classmethod
    def _from_dict(cls, d: dict[str, Any], data_end: int | None) -> "Manifest":
        version = d["format_version"]
        dims = ModelDims.from_dict(d["dims"])
        shape = Shape.from_dict(d["shape"], dims)
        heads = d["alignment_heads"]
        if heads is not None:
            pairs = _list(heads, "alignment head list", dims.n_text_layer * dims.n_text_head)
            if not all(isinstance(h, list) and len(h) == 2 and type(h[0]) is int and type(h[1]) is int
                       and 0 <= h[0] < dims.n_text_layer and 0 <= h[1] < dims.n_text_head for h in pairs):
                raise _fail("alignment heads outside the model's layers and heads")
            heads = tuple((h[0], h[1]) for h in pairs)
        targets = tuple(Target.from_dict(t) for t in _list(d["targets"], "target list", 64))
        if not targets:
            raise BundleError("bundle manifest lists no compiled targets")
        if len({t.name for t in targets}) != len(targets):
            raise _fail("two targets of one name")
        m = cls(tuple(version), Producer.from_dict(d["producer"]), ModelInfo.from_dict(d["model"]), dims, shape,
                targets, Tokenizer.from_dict(d["tokenizer"], dims.n_vocab), Audio.from_dict(d["audio"]), heads,
                _section_table(d["sections"], data_end))
        if "signature" in d:
            slot = SignatureSlot.from_dict(d["signature"], data_end)
            hit = next((s for s in m.sections if s.offset < slot.end and slot.offset < s.end), None)
            if hit is not None:
                raise BundleError(f"bundle is corrupt: its signature slot overlaps section {_short(hit.name)}")
            m = replace(m, signature=slot)
        # Every manifest has them (so a bundle can always be signed); None only while a writer builds one.
        missing = [what for what, value in (("producer host", m.producer.host), ("signature slot", m.signature),
                                            ("model source_sha256", m.model.source_sha256)) if value is None]
        if missing:
            raise _fail(f"format {version[0]}.{version[1]} but no {', '.join(missing)}")
        m._check_references()
        return m

    def _check_references(self) -> None:
        """Every name the records use refers to a section of the right kind, and every graph's
        signature is its spec's."""

        def need(name: str, kind: str, what: str) -> Section:
            s = self.section(name)
            if s is None or s.kind != kind:
                raise BundleError(f"bundle has no {kind} section {_short(name)} for {what}")
            return s

        need(self.tokenizer.vocabulary_section, "vocabulary", "the vocabulary")
        filters = need(self.audio.mel_filters_section, "mel_filters", "the mel filterbank")
        expected = {"mel_filters": (self.dims.n_mels, N_FFT // 2 + 1), "stft_basis": (N_FFT, 2 * (N_FFT // 2 + 1))}
        if {t.name: (t.dtype, t.shape) for t in filters.tensors or ()} != {k: ("float32", v) for k, v in expected.items()}:
            raise BundleError("bundle's mel filterbank section does not hold the filters this model needs")
        for target in self.targets:
            weights = need(target.weights_section, "weights", f"target {target.name}")
            stored = {t.name: (t.dtype, t.shape) for t in weights.tensors or ()}
            expected = stored_tensors(self.dims, target.dtype, target.quantization)
            if {k: shape for k, (_, shape) in stored.items()} != {k: shape for k, (_, shape) in expected.items()}:
                raise BundleError(f"bundle's weights for {target.name} are not the tensors the model's "
                                  f"dimensions need (openai-whisper's state dict)")
            if stored != expected:
                what = target.dtype if target.quantization == "none" else f"{target.quantization} and float32"
                raise BundleError(f"bundle's weights for {target.name} are not all {what} as the target stores them")
            for graph in target.graphs.values():
                need(graph.section, "mef", f"the {graph.role} graph of {target.name}")
            if "align" in target.graphs and self.alignment_heads is None:
                raise _fail("an align graph but no alignment heads")
            target.check(self.dims, self.shape, len(self.alignment_heads or ()))
