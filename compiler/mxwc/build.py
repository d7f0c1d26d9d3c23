"""`mxwc build`: weights -> graphs -> compile -> bundle, timing each stage."""

from __future__ import annotations

import datetime
import hashlib
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import msgpack

from mxwr.bundle import BundleWriter
from mxwr.dims import Shape
from mxwr.graphspec import Layout
from mxwr.manifest import (FORMAT_MAJOR, FORMAT_MINOR, MAX_NAME, Audio, GraphEntry, Host, Manifest, ModelInfo,
                           Producer, Target, Tokenizer)
from mxwr.quantization import SCHEMES
from mxwr.targets import CPU_FEATURES, max_version, this_cpu

from . import __version__
from .compile import compile_target, parse_target
from .graphs import Alignment, stft_basis
from .quantize import stored_weights
from .tokenizer import mel_filters, tokenizer_tables
from .weights import load_weights


@dataclass(frozen=True)
class BuildOptions:
    model: str
    output: Path
    max_seq: int = 448
    targets: tuple[str, ...] = ("cpu",)
    dtype: str = "float32"
    batch: int = 1
    prompt_len: int = 32
    group: int = 1  # sequences per window: beam search and best-of need --beams N
    word_timestamps: bool = True  # compile the align graph
    offline: bool = False
    layout: Layout | None = None  # None: each target's own (`Layout.of`)


class BuildError(ValueError):
    pass


@dataclass(frozen=True)
class Storage:
    """How one target computes (`dtype`) and stores its weights (`quantization`)."""

    dtype: str
    quantization: str = "none"

    @property
    def section(self) -> str:
        """The weights section, shared by the targets that store weights alike."""
        return f"weights.{self.dtype if self.quantization == 'none' else self.quantization}"


def target_storage(target: str, dtype: str) -> Storage:
    """--dtype is the GPU targets' compute type; the CPU target computes in float32, and with
    --dtype int8, q4_k or q6_k stores its matrices so (`mxwr.quantization`), its int8 ones
    multiplied by AVX-512 VNNI instructions of the host it is compiled for (this one)."""
    gpu = parse_target(target) is not None
    if dtype != "none" and dtype in SCHEMES:
        if gpu:
            raise BuildError(f"--dtype {dtype} is the cpu target's: build {target} with float16, bfloat16 or float32")
        cpu, features = this_cpu()
        if cpu is not None and "avx512_vnni" not in features:
            raise BuildError(f"--dtype {dtype} needs a CPU with AVX-512 VNNI, which this one ({cpu}) lacks: "
                             "build float32, or build on (and for) a host that has it")
        return Storage("float32", dtype)
    return Storage(dtype if gpu else "float32")


def default_alignment_heads(n_layer: int, n_head: int) -> list[list[int]]:
    """openai-whisper's default when a checkpoint names none: every head of the upper half."""
    return [[layer, head] for layer in range(n_layer // 2, n_layer) for head in range(n_head)]


def source_sha256(files: tuple[Path, ...]) -> str:
    """sha256 of the weight files, concatenated in the order they were read (streamed)."""
    if not files:
        raise BuildError("the weights loader named no source files to record the digest of")
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def build_host() -> Host:
    """What kind of machine builds (OS, architecture, CPU model and features); no host name."""
    cpu, features = this_cpu()
    return Host(platform.system()[:MAX_NAME], platform.machine()[:MAX_NAME], (cpu or "unknown")[:MAX_NAME],
                tuple(f for f in CPU_FEATURES if f in (features or ())))


@contextmanager
def stage(log: Callable[[str], None], what: str) -> Iterator[None]:
    log(f"{what} ...")
    start = time.perf_counter()
    yield
    log(f"{what}: done in {time.perf_counter() - start:.1f} s")


def build(options: BuildOptions, log: Callable[[str], None] = print) -> Path:
    start = time.perf_counter()
    with stage(log, f"loading weights ({options.model})"):
        weights = load_weights(options.model, log, offline=options.offline)
        digest = source_sha256(weights.files)  # right after reading them: the provenance of what was read
        dims = weights.dims
        log(f"  {weights.name}: {sum(v.size for v in weights.tensors.values()) / 1e6:.1f} M parameters "
            f"from {weights.source}")
    expected = dims.weight_shapes()
    shapes = {k: tuple(v.shape) for k, v in weights.tensors.items()}
    if shapes != expected:
        odd = sorted(k for k in shapes.keys() | expected.keys() if shapes.get(k) != expected.get(k))
        raise BuildError(f"{weights.source}: tensors that disagree with the model's dimensions: "
                         f"{', '.join(odd[:5])}{' ...' if len(odd) > 5 else ''}")
    if not 1 <= options.max_seq <= dims.n_text_ctx:
        raise BuildError(f"--max-seq must be between 1 and the model's n_text_ctx ({dims.n_text_ctx})")
    if not 1 <= options.prompt_len <= options.max_seq:
        raise BuildError("--prompt-len must be between 1 and --max-seq")
    for target in options.targets:
        try:
            parse_target(target)
        except ValueError as e:
            raise BuildError(str(e)) from None
    storage = {target: target_storage(target, options.dtype) for target in options.targets}
    if options.group > 1 and options.batch > 1:
        raise BuildError("--beams and --batch cannot both exceed 1: a bundle decodes many windows or many beams")
    shape = Shape(batch=options.batch, max_seq=options.max_seq, prompt_len=options.prompt_len,
                  group=options.group)

    with stage(log, "tokenizer and mel filters"):
        pieces, tokenizer = tokenizer_tables(dims)
        filters = mel_filters(dims.n_mels)
    heads = weights.alignment_heads or default_alignment_heads(dims.n_text_layer, dims.n_text_head)
    alignment = None
    if options.word_timestamps:
        alignment = Alignment(tuple(tuple(h) for h in heads), tokenizer["special"]["eot"])

    frontend = {"mel_filters": filters, "stft_basis": stft_basis()}  # float32 whatever the dtype
    shapes = {k: tuple(v.shape) for k, v in {**weights.tensors, **frontend}.items()}
    compiled, layouts = {}, {}
    for target in options.targets:
        dtype, quantization = storage[target].dtype, storage[target].quantization
        layouts[target] = options.layout or Layout.of(parse_target(target) is not None, dtype)
        what = dtype if quantization == "none" else f"{dtype}, {quantization} weights"
        with stage(log, f"tracing and compiling graphs for {target} ({what})"):
            compiled[target] = compile_target(target, dims, shape, shapes, dtype, layouts[target], log, alignment,
                                              quantization)

    with stage(log, f"writing bundle {options.output}"):
        writer = BundleWriter(options.output)
        try:
            for kind in sorted(set(storage.values()), key=lambda k: k.section):
                arrays = stored_weights(weights.tensors, dims, kind.dtype, kind.quantization)
                writer.add_tensors(kind.section, "weights", arrays, "bfloat16" if kind.dtype == "bfloat16" else None)
            writer.add_tensors("mel_filters", "mel_filters", frontend)
            writer.add_bytes("vocabulary", "vocabulary", msgpack.packb(pieces, use_bin_type=True), compress=True)
            targets = []
            for target, graphs in compiled.items():
                entries = {}
                for g in graphs:
                    section = f"graph.{target}.{g.role}"
                    writer.add_bytes(section, "mef", g.mef, compress=True)
                    entries[g.role] = GraphEntry.from_dict(g.role, {"section": section, **g.signature})
                kind = storage[target]
                targets.append(Target(target, kind.dtype, kind.section, layouts[target], entries, kind.quantization))
            created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            path = writer.finish(Manifest(
                format_version=(FORMAT_MAJOR, FORMAT_MINOR),
                producer=Producer("mxwc", __version__, max_version(), created, build_host()),
                model=ModelInfo(weights.name, weights.source, digest),
                dims=dims,
                shape=shape,
                targets=tuple(targets),
                tokenizer=Tokenizer.from_dict({**tokenizer, "vocabulary_section": "vocabulary"}, dims.n_vocab),
                audio=Audio.ours("mel_filters"),
                alignment_heads=tuple((layer, head) for layer, head in heads),
            ))
        except BaseException:
            writer.abort()
            raise
    log(f"built {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")
    return path
