"""`mxwr`: the edge runtime's command line."""

from __future__ import annotations

import json
import os
import sys
from typing import NoReturn

import numpy as np

import click

from .errors import MxwError


def debug_option(group):
    """`--debug` (or MXW_DEBUG=1): an error's full traceback on stderr after its one line."""

    def remember(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        _DEBUG[0] = _DEBUG[0] or value
        return value

    return click.option("--debug", is_flag=True, envvar="MXW_DEBUG", expose_value=False, is_eager=True,
                        callback=remember, help="On an error, print its traceback too.")(group)


_DEBUG = [False]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mxw", prog_name="mxwr")
@debug_option
def cli() -> None:
    """Run Whisper from a compiled .mxw bundle (no PyTorch needed)."""


def _optional(kind):
    """openai-whisper's optional_int / optional_float: the word None means no value."""

    def convert(value):
        if value is None or isinstance(value, kind):
            return value
        return None if str(value) == "None" else kind(value)

    return convert


def _bool(value) -> bool:
    """openai-whisper's str2bool: True or False, spelled so."""
    if isinstance(value, bool):
        return value
    if value in ("True", "False"):
        return value == "True"
    raise click.BadParameter(f"expected True or False, got {value!r}")


def _opt(*names: str, **kwargs):
    """An option spelled as openai-whisper spells it (underscores), with dashes accepted too."""
    spellings = []
    for n in names:
        spellings.append(n)
        if n.startswith("--") and "_" in n:
            spellings.append(n.replace("_", "-"))
    return click.option(*spellings, **kwargs)


@cli.command(context_settings={"max_content_width": 110})
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=str))
@click.argument("audio", nargs=-1, required=True, type=click.Path(path_type=str))
@_opt("--output_dir", "-o", default=None,
      help="Directory to save the outputs, as openai-whisper does; without it the transcript goes to stdout.")
@_opt("--output_format", "-f", type=click.Choice(["txt", "vtt", "srt", "tsv", "json", "all"]), default=None,
      help="Format of the output [default: all with --output_dir, else txt on stdout; json prints one object per file].")
@_opt("--device", default="auto", show_default=True, help="auto, cpu, gpu or gpu:N (the bundle's target for it).")
@_opt("--verbose", type=_bool, default=None,
      help="True: print each segment as it is decoded (to stderr); False: only errors and a batch's summary "
           "[default: neither, and a progress line on a terminal for many files or a folder].")
@_opt("--skip_existing", is_flag=True, default=False,
      help="mxw: with --output_dir, skip each file whose outputs (every one of --output_format) are there.")
@_opt("--task", type=click.Choice(["transcribe", "translate"]), default="transcribe", show_default=True,
      help="X->X speech recognition, or X->English translation.")
@_opt("--language", default=None, help="Language spoken in the audio (e.g. en, de); detected when omitted.")
@_opt("--temperature", type=float, default=0.0, show_default=True, help="Temperature to use for sampling.")
@_opt("--best_of", type=_optional(int), default=5, show_default=True,
      help="Number of candidates when sampling with non-zero temperature (needs a bundle built with --beams N).")
@_opt("--beam_size", type=_optional(int), default=5, show_default=True,
      help="Number of beams in beam search, at temperature zero (needs a bundle built with --beams N); None: greedy.")
@_opt("--patience", type=_optional(float), default=None, help="Patience of beam decoding (1.0: conventional beam search).")
@_opt("--length_penalty", type=_optional(float), default=None,
      help="Token length penalty coefficient (alpha); simple length normalization by default.")
@_opt("--suppress_tokens", default="-1", show_default=True,
      help="Comma-separated token ids to suppress; '-1' suppresses most special characters except common punctuation.")
@_opt("--initial_prompt", default=None, help="Optional text to provide as a prompt for the first window.")
@_opt("--carry_initial_prompt", type=_bool, default=False, show_default=True,
      help="Prepend initial_prompt to every window's prompt.")
@_opt("--condition_on_previous_text", type=_bool, default=True, show_default=True,
      help="Provide the previous output as a prompt for the next window.")
@_opt("--fp16", type=_bool, default=True, show_default=True,
      help="Accepted for compatibility: the bundle's target fixes the compute type (mxwc build --dtype).")
@_opt("--temperature_increment_on_fallback", type=_optional(float), default=0.2, show_default=True,
      help="Temperature increase when decoding fails the thresholds below; None: no fallback.")
@_opt("--compression_ratio_threshold", type=_optional(float), default=2.4, show_default=True,
      help="If the gzip compression ratio is higher, treat the decoding as failed.")
@_opt("--logprob_threshold", type=_optional(float), default=-1.0, show_default=True,
      help="If the average log probability is lower, treat the decoding as failed.")
@_opt("--no_speech_threshold", type=_optional(float), default=0.6, show_default=True,
      help="If <|nospeech|> is likelier than this AND the decoding failed logprob_threshold, the window is silence.")
@_opt("--word_timestamps", type=_bool, default=False, show_default=True,
      help="Extract word-level timestamps and refine the results with them.")
@_opt("--prepend_punctuations", default="\"'“¿([{-", show_default=True,
      help="With word timestamps, merge these punctuation marks with the next word.")
@_opt("--append_punctuations", default="\"'.。,，!！?？:：”)]}、", show_default=True,
      help="With word timestamps, merge these punctuation marks with the previous word.")
@_opt("--highlight_words", type=_bool, default=False, show_default=True,
      help="(requires --word_timestamps True) underline each word as it is spoken in srt and vtt.")
@_opt("--max_line_width", type=_optional(int), default=None,
      help="(requires --word_timestamps True) maximum characters in a line before breaking it.")
@_opt("--max_line_count", type=_optional(int), default=None,
      help="(requires --word_timestamps True) maximum number of lines in a segment.")
@_opt("--max_words_per_line", type=_optional(int), default=None,
      help="(requires --word_timestamps True, no effect with --max_line_width) maximum words in a segment.")
@_opt("--threads", type=_optional(int), default=0, show_default=True,
      help="CPU cores to run on (the process is pinned to that many of those it may use); 0: all of them.")
@_opt("--clip_timestamps", default="0", show_default=True,
      help="Comma-separated start,end,start,end,... (seconds) of the clips to process; the last end defaults to the end.")
@_opt("--hallucination_silence_threshold", type=_optional(float), default=None,
      help="(requires --word_timestamps True) skip silences longer than this (seconds) around a possible hallucination.")
@_opt("--without_timestamps", type=_bool, default=False, show_default=True,
      help="mxw: decode text only (no timestamp tokens; one segment per window).")
@_opt("--seed", type=int, default=0, show_default=True, help="mxw: seed of the sampler at temperature > 0.")
@_opt("--require_signature", metavar="PUBKEY", default=None, envvar="MXW_REQUIRE_SIGNATURE", show_envvar=True,
      help="mxw: refuse BUNDLE unless it is signed by this public key (mxwc keygen's KEY.pub) and matches every "
           "checksum, checked before any graph is loaded; needs the sign extra.")
@_opt("--max_duration", type=_optional(float), default=86400.0, show_default=True,
      help="mxw: refuse audio longer than this many seconds (before decoding it where the header tells); None: no limit.")
@_opt("--independent_windows", type=_bool, default=False, show_default=True,
      help="mxw: decode each 30-second window on its own (openai-whisper's decode() on pad_or_trim of the window), "
           "batched across files for bundles built with --batch N.")
@debug_option
@click.pass_context
def run(ctx: click.Context, bundle: str, audio: tuple[str, ...], output_dir: str | None, output_format: str | None,
        device: str, verbose: bool, **args) -> None:
    """Transcribe AUDIO file(s) with BUNDLE, as openai-whisper's `whisper` command does."""
    from .batch import Job
    from .transcribe import Transcriber

    word_options = ("highlight_words", "max_line_count", "max_line_width", "max_words_per_line")
    if not args["word_timestamps"]:
        for option in word_options:
            if args[option]:
                raise click.UsageError(f"--{option} requires --word_timestamps True")
    if args["max_line_count"] and not args["max_line_width"]:
        click.echo("mxwr: warning: --max_line_count has no effect without --max_line_width", err=True)
    if args["max_words_per_line"] and args["max_line_width"]:
        click.echo("mxwr: warning: --max_words_per_line has no effect with --max_line_width", err=True)
    writer_options = {k: args.pop(k) for k in word_options}
    args.pop("fp16")
    use_cores(args.pop("threads"))
    max_duration = args.pop("max_duration")
    if max_duration is not None and not max_duration > 0:
        raise click.BadParameter("must be more than 0 seconds, or None", param_hint="--max_duration")
    skip_existing = args.pop("skip_existing")
    if skip_existing and output_dir is None:
        raise click.UsageError("--skip_existing needs --output_dir (it skips the files whose outputs are there)")
    # The files first: a folder without audio fails before the bundle is loaded.
    job = Job(audio, output_dir=output_dir, output_format=output_format, writer_options=writer_options,
              verbose=verbose, skip_existing=skip_existing, report=lambda message: _error_line("mxwr", message))
    transcriber = Transcriber(bundle, device=device, max_duration=max_duration,
                              require_signature=args.pop("require_signature"))
    defaults = _decoding_args(ctx, args, multilingual=transcriber.special.multilingual,
                              group=transcriber.model.group, name=model_name(transcriber))
    notes = [] if not defaults else [  # after the output, so that an error stays the only line on stderr
        ("mxwr: note: this bundle decodes one sequence per window, so no beam search or best-of "
         "(mxwc build --beams 5 gives openai-whisper's defaults)")]
    status = job.run(transcriber, args, notes)  # mxwr.batch: output, errors per file, summary
    _OUTPUT_DONE[0] = True  # every output is written and closed: the process may end without teardown
    if status:  # some files of a batch failed, each reported on its own line
        sys.exit(status)


def use_cores(n: int | None) -> None:
    """Pins the process to n of the cores it may use (0 or None: all), before MAX starts: MAX
    sizes its CPU thread pool by them (its own num_threads option aborts in MAX 26.7)."""
    if n is None or n == 0:
        return
    if n < 0:
        raise click.BadParameter("must be 0 (all cores) or more", param_hint="--threads")
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:n])


def model_name(transcriber) -> str:
    return transcriber.bundle.manifest.model.name


def _decoding_args(ctx: click.Context, args: dict, *, multilingual: bool, group: int, name: str) -> list[str]:
    """`run`'s (and `cluster`'s) decoding options made transcribe()'s, in place, as openai-whisper's
    CLI passes them on: English for an English-only model, its beam_size/best_of defaults dropped
    where the bundle decodes one sequence per window (`group` 1), the fallback temperatures.
    Returns the defaults dropped."""
    if not multilingual:
        if args["language"] not in (None, "en", "English"):
            click.echo(f"mxwr: warning: {name} is an English-only model but received "
                       f"'{args['language']}'; using English instead", err=True)
        args["language"] = "en"
    defaults = [size for size in ("beam_size", "best_of")  # openai-whisper's CLI defaults, unservable here
                if args[size] is not None and group == 1 and ctx.get_parameter_source(size).name == "DEFAULT"]
    for size in defaults:
        args[size] = None
    if args["beam_size"] is None and args["patience"] is not None:
        args["patience"] = None

    temperature = args.pop("temperature")
    increment = args.pop("temperature_increment_on_fallback")
    temperatures = tuple(np.arange(temperature, 1.0 + 1e-6, increment)) if increment is not None else (temperature,)
    args["temperature"] = tuple(float(t) for t in temperatures)
    return defaults


# `mxwr cluster` decodes as `mxwr run` does, through these of its options (the same objects: one
# definition, one default); run's output and per-process options (writers, threads) do not apply.
_CLUSTER_RUN_OPTIONS = (
    "device", "task", "language", "temperature", "best_of", "beam_size", "patience", "length_penalty",
    "suppress_tokens", "initial_prompt", "carry_initial_prompt", "condition_on_previous_text",
    "temperature_increment_on_fallback", "compression_ratio_threshold", "logprob_threshold", "no_speech_threshold",
    "word_timestamps", "prepend_punctuations", "append_punctuations", "clip_timestamps",
    "hallucination_silence_threshold", "without_timestamps", "seed", "require_signature", "max_duration",
)


@cli.command(context_settings={"max_content_width": 110})
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=str))
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True, type=click.Path(path_type=str))
@_opt("--output_dir", "-o", required=True,
      help="A new folder for the results: one row per file (path, text, language, duration_s, result: "
           "openai-whisper's result as JSON, error).")
@_opt("--output_format", "-f", type=click.Choice(["parquet", "jsonl"]), default="parquet", show_default=True,
      help="Format of the result files (Ray Data's).")
@_opt("--address", default="local", envvar="RAY_ADDRESS", show_envvar=True,
      help="The Ray cluster (ray.init's address: ray://HEAD:10001, HEAD:6379, auto) [default: a new local Ray "
           "instance on this machine].")
@_opt("--actors", type=click.IntRange(1), default=1, show_default=True,
      help="Ray actors transcribing at once, each with the bundle loaded.")
@_opt("--cpus_per_actor", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True,
      help="CPUs Ray reserves for each actor.")
@_opt("--gpus_per_actor", type=_optional(float), default=None,
      help="GPUs Ray gives each actor [default: 1 when the bundle has a GPU target and the cluster has GPUs, else 0].")
@debug_option
@click.pass_context
def cluster(ctx: click.Context, bundle: str, inputs: tuple[str, ...], output_dir: str, output_format: str,
            address: str, actors: int, cpus_per_actor: float, gpus_per_actor: float | None, **args) -> None:
    """Transcribe INPUT (files, and folders walked as `mxwr run` walks them) on Ray, as `mxwr run` does,
    into a dataset in --output_dir (the ray extra). BUNDLE and the audio must be readable on every node."""
    import logging
    import time

    from .batch import collect, summary_line
    from .bundle import BundleReader

    started = time.monotonic()
    try:  # imported here: the base install has no Ray
        from . import ray as ray_jobs
    except ImportError as e:
        raise MxwError(str(e)) from None
    import ray

    max_duration = args.pop("max_duration")
    if max_duration is not None and not max_duration > 0:
        raise click.BadParameter("must be more than 0 seconds, or None", param_hint="--max_duration")
    if os.path.isdir(output_dir) and os.listdir(output_dir):  # Ray Data would add files beside those there
        raise MxwError(f"{output_dir} is not empty: write the results to a new folder")
    files = [item.path for item in collect(inputs, lambda message: click.echo(f"mxwr: warning: {message}", err=True))]
    key = args.pop("require_signature")
    with BundleReader(bundle) as reader:  # a bad bundle is one line now, before Ray starts
        if key is not None:
            from .signing import require_signature

            require_signature(reader, key)
        m = reader.manifest
    device = args.pop("device")
    defaults = _decoding_args(ctx, args, multilingual=m.tokenizer.multilingual, group=m.shape.group,
                              name=m.model.name)

    local = address == "local"
    # The workers' own output (an actor's traceback) only with --debug: errors come back as lines.
    try:
        ray.init(address=address, logging_level=logging.INFO if _DEBUG[0] else logging.ERROR,
                 log_to_driver=_DEBUG[0], **({"include_dashboard": False} if local else {}))
    except (ConnectionError, ValueError, RuntimeError) as e:  # no cluster there, or a malformed address
        raise MxwError(f"cannot start or reach Ray at {address!r}: {e}") from None
    try:
        # Ray Data's progress log (when not on a terminal) and its failure reports, which end in
        # our one line; with --debug, all of it.
        logging.getLogger("ray.data").setLevel(logging.DEBUG if _DEBUG[0] else logging.CRITICAL)
        ds = ray_jobs.transcribe_dataset(files, bundle, actors=actors, cpus_per_actor=cpus_per_actor,
                                         gpus_per_actor=gpus_per_actor, device=device, max_duration=max_duration,
                                         require_signature=key, **args).materialize()
        (ds.write_parquet if output_format == "parquet" else ds.write_json)(output_dir)
        rows = ds.select_columns(["path", "duration_s", "error"]).take_all()
    except ray.exceptions.RayError as e:  # e.g. an actor could not load the bundle on its node
        raise MxwError(f"the Ray job failed: {_remote_error(e)}") from None
    finally:
        ray.shutdown()
    failed = sorted((r for r in rows if r["error"] is not None), key=lambda r: r["path"])
    for r in failed:
        _error_line("mxwr", r["error"] if r["path"] in r["error"] else f"{r['path']}: {r['error']}")
    if defaults:
        click.echo("mxwr: note: this bundle decodes one sequence per window, so no beam search or best-of "
                   "(mxwc build --beams 5 gives openai-whisper's defaults)", err=True)
    audio = sum(r["duration_s"] for r in rows if r["error"] is None)
    click.echo(summary_line(len(rows), len(rows) - len(failed), 0, len(failed), audio, time.monotonic() - started)
               + f"; results in {output_dir} ({output_format})", err=True)
    if failed:
        sys.exit(1)


cluster.params.extend(p for p in run.params if p.name in _CLUSTER_RUN_OPTIONS)


def _remote_error(e: Exception) -> str:
    """What failed on a Ray worker: Ray's message ends with the worker's traceback, whose last
    line is the exception itself ("mxwr.errors.BundleError: ..." for ours: then its message)."""
    import re

    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    last = lines[-1] if lines else type(e).__name__
    ours = re.fullmatch(r"mxwr\.errors\.\w+: (.*)", last)
    return ours.group(1) if ours else last


@cli.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=str))
@click.option("--verify/--no-verify", default=True, show_default=True, help="Check every section's sha256.")
@click.option("--pubkey", metavar="PUBKEY", default=None,
              help="Also check that BUNDLE is signed by this public key (implies --verify; needs the sign extra).")
@debug_option
def inspect(bundle: str, verify: bool, pubkey: str | None) -> None:
    """Print BUNDLE's manifest summary (and verify its checksums), as `mxwc verify` checks it."""
    from .bundle import BundleReader
    from .signing import describe, load_public_key, verify_bundle

    key = load_public_key(pubkey) if pubkey is not None else None
    with BundleReader(bundle) as reader:
        verify = verify or key is not None
        if verify:
            verify_bundle(reader, key)
        m = reader.manifest
        summary = {
            "format_version": list(m.format_version),
            "producer": m.producer.to_dict(),
            "model": m.model.to_dict(),
            "dims": m.dims.to_dict(),
            "shape": m.shape.to_dict(),
            "targets": [{"name": t.name, "dtype": t.dtype, "quantization": t.quantization,
                         "layout": t.layout.to_dict(), "graphs": list(t.graphs)} for t in m.targets],
            "sections": [{"name": s.name, "kind": s.kind, "length": s.length, "encoding": s.encoding}
                         for s in m.sections],
            "signature": describe(reader.signature),
            "verified": verify,
            "signature_verified": key is not None,
        }
        click.echo(json.dumps(summary, indent=2))


@cli.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=str))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, gpu or gpu:N.")
@click.option("--threads", type=int, default=0, show_default=True, help="CPU cores to run on; 0: all of them.")
@click.option("--api-key", envvar="MXW_API_KEY", show_envvar=True, default=None,
              help="Require `Authorization: Bearer KEY` on /v1/ requests, as OpenAI's clients send it.")
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=25.0, show_default=True,
              help="Largest audio file accepted (MiB); larger: 413.")
@click.option("--max-duration", type=_optional(float), default=3600.0, show_default=True,
              help="Longest audio accepted (seconds; None: no limit); longer: 400.")
@click.option("--max-queue", type=click.IntRange(0), default=32, show_default=True,
              help="Requests that may wait beyond those decoding; more: 429.")
@click.option("--concurrency", type=click.IntRange(1), default=None,
              help="Requests decoding at once, taking turns by window (or sharing a --batch N bundle's batch) "
                   "[default: 4, or the bundle's batch if larger].")
@click.option("--require-signature", metavar="PUBKEY", default=None, envvar="MXW_REQUIRE_SIGNATURE", show_envvar=True,
              help="Refuse BUNDLE unless it is signed by this public key (mxwc keygen's KEY.pub) and matches every "
                   "checksum, checked before the server starts and again when the model loads; needs the sign extra.")
@click.option("--independent-windows", type=click.Choice(["auto", "True", "False"]), default="auto", show_default=True,
              help="Decode as `mxwr run --independent_windows True` (each window on its own, batched across "
                   "requests) rather than transcribe()'s seek loop; auto: on bundles built with --batch N > 1.")
@debug_option
def serve(bundle: str, host: str, port: int, device: str, threads: int, api_key: str | None, max_upload_mb: float,
          max_duration: float | None, max_queue: int, concurrency: int | None, require_signature: str | None,
          independent_windows: str) -> None:
    """Serve OpenAI's audio API (/v1/audio/transcriptions, /v1/audio/translations) with BUNDLE (the serve extra)."""
    try:  # imported here: the base install has no server packages
        from .serve import Limits, serve as run_server
    except ImportError as e:
        raise MxwError(f"mxwr serve needs the serve extra (pip install 'mxw[serve]'): {e}") from None
    from .bundle import BundleReader

    if max_duration is not None and not max_duration > 0:
        raise click.BadParameter("must be more than 0 seconds, or None", param_hint="--max-duration")
    with BundleReader(bundle) as reader:  # a bad bundle is one line now, not after the server has started
        if require_signature is not None:
            from .signing import require_signature as check

            check(reader, require_signature)
    use_cores(threads)
    limits = Limits(max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_duration=max_duration,
                    max_queue=max_queue, concurrency=concurrency,
                    independent_windows=None if independent_windows == "auto" else independent_windows == "True")
    run_server(bundle, host, port, device=device, limits=limits, api_key=api_key, require_signature=require_signature)


MAX_ERROR_LINE = 300  # characters: a message quoting the input never floods a terminal or a log


def run_cli(group: click.Group, prog: str, errors: tuple[type[Exception], ...]) -> None:
    """Runs a click group; `errors` (bad input) become one line on stderr and exit code 1. Any
    other exception is a bug of ours: one line too (exit code 2), and its traceback with --debug."""
    _DEBUG[0] = False
    try:
        group(standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except errors as e:
        _error_line(prog, str(e))
        sys.exit(1)
    except MemoryError:
        _error_line(prog, "out of memory")
        sys.exit(1)
    except Exception as e:
        _error_line(prog, f"internal error ({type(e).__name__}: {e}); please report it, with the "
                          f"traceback that --debug prints")
        sys.exit(2)


def _error_line(prog: str, message: str) -> None:
    if _DEBUG[0]:
        import traceback

        traceback.print_exc()
    line = f"{prog}: error: {' '.join(message.split()) or '(no message)'}"  # always one line
    if len(line) > MAX_ERROR_LINE:
        line = line[: MAX_ERROR_LINE - 3] + "..."
    click.echo(line, err=True)


# Set by `run` once its outputs are written and closed. The interpreter's and MAX's teardown
# after that releases nothing the OS does not, yet is a noticeable part of a short file's wall
# time, so the console entry (`main`) skips it; a caller of `cli` in its own process keeps it.
_OUTPUT_DONE = [False]


def exit_now(status: int) -> NoReturn:
    """Ends the process with `status` once stdout and stderr are flushed, without teardown."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe; the status still tells
            status = status or 1
    os._exit(status)


def main() -> None:
    _OUTPUT_DONE[0] = False
    try:
        run_cli(cli, "mxwr", (MxwError,))
    except SystemExit as e:
        if _OUTPUT_DONE[0] and isinstance(e.code, int):
            exit_now(e.code)
        raise
    if _OUTPUT_DONE[0]:
        exit_now(0)


if __name__ == "__main__":
    main()
