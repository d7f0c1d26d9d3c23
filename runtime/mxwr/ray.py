"""Transcription at scale on Ray Data (the `ray` extra: `pip install 'mxw[ray]'`).

    import ray
    from mxwr.ray import transcribe_dataset

    ray.init()                     # RAY_ADDRESS, or ray.init(address="ray://head:10001"), or local
    ds = transcribe_dataset("/data/calls", "/models/tiny.en.mxw", actors=8)
    ds.write_parquet("/data/transcripts")

A pool of `actors` Ray actors each loads the bundle once (each with `gpus_per_actor` GPUs: by
default one when the bundle has a GPU target and the cluster has GPUs) and transcribes one file
per call with `Transcriber.transcribe` (openai-whisper's `transcribe()` and its options). The
result is a dataset with one row per file: the input's columns (but `bytes`), and

    path        the audio file
    text        the transcript (openai-whisper's result["text"])
    language    the language decoded in
    duration_s  the audio's length
    result      openai-whisper's whole result (text, segments with their tokens, language) as JSON,
                as `mxwr run --output_format json` prints it
    error       None, or why this file failed (the others go on): one line

The input: a file or folder path, a list of them (folders walked as `mxwr run` walks them), or a
Ray dataset with a `path` column (files every node can read) or with `bytes` and `path`
columns (`ray.data.read_binary_files(..., include_paths=True)`, from any filesystem Ray Data
reads: the audio travels in the dataset). The bundle's path must be readable on every node.

This module is named after the package it uses; inside it, `ray` is Ray (absolute imports).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from typing import Any

try:
    import pyarrow as pa
    import ray
    import ray.data
except ImportError as e:  # the base install has no Ray: say which extra brings it
    raise ImportError(f"mxwr.ray needs Ray Data: pip install 'mxw[ray]' ({e})") from e

from mxwr.errors import MxwError

SCHEMA = pa.schema([
    ("path", pa.string()), ("text", pa.string()), ("language", pa.string()), ("duration_s", pa.float64()),
    ("result", pa.string()), ("error", pa.string()),
])
_RESULTS = tuple(name for name in SCHEMA.names if name != "path")


def transcribe_dataset(paths_or_dataset: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | ray.data.Dataset,
                       bundle: str | os.PathLike[str], *, actors: int = 1, cpus_per_actor: float = 1.0,
                       gpus_per_actor: float | None = None, device: str = "auto",
                       max_duration: float | None = 86400.0, require_signature: str | os.PathLike[str] | None = None,
                       batch_size: int = 1, **options: Any) -> ray.data.Dataset:
    """The files' transcripts as a (lazy) Ray dataset, one row per file (see the module's doc).

    `options`: `Transcriber.transcribe`'s, i.e. openai-whisper's `transcribe()` keywords and
    `DecodingOptions` fields (its defaults: greedy, the temperature fallback); checked here,
    before anything runs. `device`: "auto" is "gpu" when the actors get GPUs, else "cpu".
    `batch_size`: files per call of an actor (1 spreads a few long files best).
    """
    _check_options(options)
    bundle = os.path.abspath(bundle)  # the workers' working folder is not the driver's
    gpus, device = _placement(bundle, gpus_per_actor, device)
    resources: dict[str, Any] = {"num_cpus": cpus_per_actor}
    if gpus > 0:
        resources["num_gpus"] = gpus
    return _dataset(paths_or_dataset).map_batches(
        _TranscribeFiles, batch_format="pyarrow", batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors), **resources,
        fn_constructor_kwargs={"bundle": bundle, "device": device, "max_duration": max_duration,
                               "require_signature": None if require_signature is None else os.path.abspath(require_signature),
                               "options": options})


class _TranscribeFiles:
    """A Ray actor: the bundle loaded once, then each batch of files transcribed in turn."""

    def __init__(self, bundle: str, device: str, max_duration: float | None, require_signature: str | None,
                 options: dict[str, Any]):
        from mxwr.transcribe import Transcriber

        self.transcriber = Transcriber(bundle, device=device, max_duration=max_duration,
                                       require_signature=require_signature)
        self.options = options

    def __call__(self, batch: pa.Table) -> pa.Table:
        if "path" not in batch.column_names:
            raise MxwError(f"mxwr.ray needs a 'path' column (the dataset has {batch.column_names})")
        paths = batch.column("path").to_pylist()
        data = batch.column("bytes").to_pylist() if "bytes" in batch.column_names else [None] * len(paths)
        rows = [self._one(path, audio) for path, audio in zip(paths, data)]
        kept = [name for name in batch.column_names if name not in ("bytes", *_RESULTS)]
        out = batch.select(kept)
        for name in _RESULTS:
            field = SCHEMA.field(name)
            out = out.append_column(field, pa.array([row[name] for row in rows], type=field.type))
        return out

    def _one(self, path: str, audio: bytes | None) -> dict[str, Any]:
        """One file's row; its failure is its row's error, and the job goes on."""
        try:
            if audio is None:
                return self._transcribe(path)
            # The dataset holds the file's bytes: they are read from a temporary copy, named with
            # the file's extension (what ffmpeg may go by), and errors name the original path.
            with tempfile.NamedTemporaryFile(suffix=os.path.splitext(path)[1]) as copy:
                copy.write(audio)
                copy.flush()
                try:
                    return self._transcribe(copy.name)
                except MxwError as e:
                    raise MxwError(str(e).replace(copy.name, path)) from None
        except MxwError as e:
            error = str(e)
        except OSError as e:
            error = f"{type(e).__name__}: {e}"
        except MemoryError:
            error = "out of memory"
        except Exception as e:  # a bug of ours: this file fails, the others may well not
            error = f"internal error ({type(e).__name__}: {e}); please report it"
        return {"text": None, "language": None, "duration_s": None, "result": None, "error": " ".join(error.split())}

    def _transcribe(self, path: str) -> dict[str, Any]:
        from mxwr.audio import open_audio
        from mxwr.constants import SAMPLE_RATE
        from mxwr.writers import render

        with open_audio(path, max_duration=self.transcriber.max_duration) as stream:
            duration = stream.n_samples / SAMPLE_RATE
            result = self.transcriber.transcribe(stream, **self.options)
        return {"text": result["text"], "language": result["language"], "duration_s": duration,
                "result": render("json", result), "error": None}


def _check_options(options: dict[str, Any]) -> None:
    """A wrong keyword is the caller's error now, not every row's later."""
    import inspect
    from dataclasses import fields

    from mxwr.decoding import DecodingOptions
    from mxwr.transcribe import Transcriber

    known = {p for p in inspect.signature(Transcriber.transcribe).parameters if p not in ("self", "audio",
                                                                                         "decode_options")}
    known |= {f.name for f in fields(DecodingOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"transcribe_dataset() got unexpected options {unknown}")


def _placement(bundle: str, gpus_per_actor: float | None, device: str) -> tuple[float, str]:
    """(GPUs per actor, the actors' device), checked against the bundle's targets here, on the
    driver: a mismatch is one error now, not every actor failing on its node.

    By default an actor gets one GPU when the bundle has a GPU target and the cluster has GPUs;
    device "auto" is then "gpu", else "cpu" (on a GPU node, an actor without a GPU of its own
    stays off the GPUs, which Ray gives to others)."""
    from mxwr.bundle import BundleReader

    with BundleReader(bundle) as reader:
        targets = reader.manifest.targets
    names = ", ".join(t.name for t in targets)
    has_gpu, has_cpu = any(t.is_gpu for t in targets), any(not t.is_gpu for t in targets)
    if gpus_per_actor is not None and not gpus_per_actor >= 0:
        raise MxwError(f"gpus_per_actor must be 0 or more, not {gpus_per_actor}")
    gpus = gpus_per_actor
    if gpus is None:
        gpus = 0.0
        if has_gpu:
            if not ray.is_initialized():
                ray.init()  # what Ray Data would do on first use: RAY_ADDRESS, else a local instance
            if ray.cluster_resources().get("GPU", 0) > 0:
                gpus = 1.0
            elif not has_cpu:
                raise MxwError(f"{bundle} has GPU targets only ({names}) and the Ray cluster has no GPUs")
    if device == "auto":
        device = "gpu" if gpus > 0 else "cpu"
    if device == "cpu" and not has_cpu:
        raise MxwError(f"{bundle} has no CPU target (its targets: {names}): give the actors GPUs (gpus_per_actor)")
    if device.startswith("gpu"):
        if not has_gpu:
            raise MxwError(f"device {device}: {bundle} has no GPU target (its targets: {names})")
        if gpus == 0:
            raise MxwError(f"device {device} needs GPUs for the actors (gpus_per_actor more than 0)")
    return gpus, device


def _dataset(paths_or_dataset: Any) -> ray.data.Dataset:
    if isinstance(paths_or_dataset, ray.data.Dataset):
        return paths_or_dataset
    from mxwr.batch import collect

    given = [paths_or_dataset] if isinstance(paths_or_dataset, (str, os.PathLike)) else list(paths_or_dataset)
    given = [os.fspath(p) for p in given]
    if not given:
        raise MxwError("transcribe_dataset() was given no audio files")

    def warn(message: str) -> None:
        import warnings

        warnings.warn(message, stacklevel=3)

    files = [os.path.abspath(item.path) for item in collect(given, warn)]  # absolute: see the bundle's
    # A block per file (up to Ray's default): the actors take files as they free up, so a few
    # long files do not queue behind one another on one actor.
    return ray.data.from_items([{"path": p} for p in files], override_num_blocks=min(len(files), 200))
