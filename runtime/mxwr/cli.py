"""`mxwr`: the edge runtime's command line."""

from __future__ import annotations

import json
import os
import sys

import numpy as np

import click

from .errors import MxwError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mxw", prog_name="mxwr")
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
@_opt("--verbose", type=_bool, default=False, show_default=True,
      help="Print each segment as it is decoded (to stderr).")
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
@_opt("--independent_windows", type=_bool, default=False, show_default=True,
      help="mxw: decode each 30-second window on its own (openai-whisper's decode() on pad_or_trim of the window), "
           "batched across files for bundles built with --batch N.")
@click.pass_context
def run(ctx: click.Context, bundle: str, audio: tuple[str, ...], output_dir: str | None, output_format: str | None,
        device: str, verbose: bool, **args) -> None:
    """Transcribe AUDIO file(s) with BUNDLE, as openai-whisper's `whisper` command does."""
    from .transcribe import Transcriber
    from .writers import format_timestamp, get_writer, render

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
    transcriber = Transcriber(bundle, device=device)
    special, model = transcriber.special, transcriber.model
    if not special.multilingual:
        if args["language"] not in (None, "en", "English"):
            click.echo(f"mxwr: warning: {model_name(transcriber)} is an English-only model but received "
                       f"'{args['language']}'; using English instead", err=True)
        args["language"] = "en"
    defaults = [size for size in ("beam_size", "best_of")  # openai-whisper's CLI defaults, unservable here
                if args[size] is not None and model.group == 1 and ctx.get_parameter_source(size).name == "DEFAULT"]
    for size in defaults:
        args[size] = None
    if args["beam_size"] is None and args["patience"] is not None:
        args["patience"] = None

    temperature = args.pop("temperature")
    increment = args.pop("temperature_increment_on_fallback")
    temperatures = tuple(np.arange(temperature, 1.0 + 1e-6, increment)) if increment is not None else (temperature,)
    args["temperature"] = tuple(float(t) for t in temperatures)

    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        writer = get_writer(output_format or "all", output_dir)
    output_format = output_format or "txt"  # on stdout
    for path, result in zip(audio, _results(transcriber, audio, args)):
        if verbose:
            for seg in result["segments"]:
                click.echo(f"[{format_timestamp(seg['start'])} --> {format_timestamp(seg['end'])}] {seg['text']}", err=True)
        if output_dir is not None:
            writer(result, path, writer_options)
        elif output_format == "json":
            click.echo(render("json", result))
        elif output_format == "txt":
            click.echo(result["text"].strip())
        else:
            click.echo(render(output_format, result, writer_options), nl=False)
    if defaults:  # after the output, so that an error stays the only line on stderr
        click.echo("mxwr: note: this bundle decodes one sequence per window, so no beam search or best-of "
                   "(mxwc build --beams 5 gives openai-whisper's defaults)", err=True)


def use_cores(n: int | None) -> None:
    """Pins the process to n of the cores it may use (0 or None: all), before MAX starts: MAX
    sizes its CPU thread pool by them (its own num_threads option aborts in MAX 26.7)."""
    if n is None or n == 0:
        return
    if n < 0:
        raise click.BadParameter("must be 0 (all cores) or more", param_hint="--threads")
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:n])


def _results(transcriber, audio: tuple[str, ...], args: dict):
    """transcribe() per file; or, with --independent_windows, openai-whisper's decode() on each
    30-second window (no seeking, no conditioning, the first temperature only), with every
    file's windows batched together on a bundle built with --batch N."""
    from .decoding import DecodingOptions

    if not args.pop("independent_windows"):
        return (transcriber.transcribe(path, **args) for path in audio)
    t = args["temperature"][0]
    fields = ["task", "language", "length_penalty", "suppress_tokens", "seed", "without_timestamps"]
    fields += ["beam_size", "patience"] if t == 0 else ["best_of"]  # as transcribe()'s fallback does
    options = DecodingOptions(temperature=t, **{k: args[k] for k in fields})
    return transcriber.decode_files(list(audio), options)


def model_name(transcriber) -> str:
    return transcriber.bundle.manifest.model.name


@cli.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=str))
@click.option("--verify/--no-verify", default=True, show_default=True, help="Check every section's sha256.")
def inspect(bundle: str, verify: bool) -> None:
    """Print BUNDLE's manifest summary (and verify its checksums)."""
    from .bundle import BundleReader

    with BundleReader(bundle) as reader:
        if verify:
            reader.verify()
        m = reader.manifest
        summary = {
            "format_version": list(m.format_version),
            "producer": m.producer.to_dict(),
            "model": m.model.to_dict(),
            "dims": m.dims.to_dict(),
            "shape": m.shape.to_dict(),
            "targets": [{"name": t.name, "dtype": t.dtype, "layout": t.layout.to_dict(), "graphs": list(t.graphs)}
                        for t in m.targets],
            "sections": [{"name": s.name, "kind": s.kind, "length": s.length, "encoding": s.encoding}
                         for s in m.sections],
            "verified": verify,
        }
        click.echo(json.dumps(summary, indent=2))


def run_cli(group: click.Group, prog: str, errors: tuple[type[Exception], ...]) -> None:
    """Runs a click group; `errors` (bad input) become one line on stderr and exit code 1."""
    try:
        group(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except errors as e:
        message = " ".join(str(e).split())  # always one line
        click.echo(f"{prog}: error: {message}", err=True)
        sys.exit(1)


def main() -> None:
    run_cli(cli, "mxwr", (MxwError,))


if __name__ == "__main__":
    main()
