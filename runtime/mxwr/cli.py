"""`mxwr`: the edge runtime's command line."""

from __future__ import annotations

import json
import sys

import click

from .errors import MxwError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mxw", prog_name="mxwr")
def cli() -> None:
    """Run Whisper from a compiled .mxw bundle (no PyTorch needed)."""


@cli.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=str))
@click.argument("audio", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--output-format", "-f", type=click.Choice(["txt", "json"]), default="txt", show_default=True,
              help="txt: the transcript; json: text, token ids, segments (one JSON object per file).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, gpu or gpu:N.")
@click.option("--language", default=None, help="Spoken language (e.g. en); detected when omitted.")
@click.option("--task", type=click.Choice(["transcribe", "translate"]), default="transcribe", show_default=True)
def run(bundle: str, audio: tuple[str, ...], output_format: str, device: str, language: str | None,
        task: str) -> None:
    """Transcribe AUDIO file(s) with BUNDLE."""
    from .decoding import DecodingOptions
    from .transcribe import Transcriber

    transcriber = Transcriber(bundle, device=device)
    options = DecodingOptions(task=task, language=language)
    for result in transcriber.transcribe_files(list(audio), options):
        if output_format == "json":
            click.echo(json.dumps(result, ensure_ascii=False))
        else:
            click.echo(result["text"])


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
            "format_version": m.get("format_version"),
            "producer": m.get("producer"),
            "model": m.get("model"),
            "dims": m.get("dims"),
            "shape": m.get("shape"),
            "targets": [{"name": t.get("name"), "dtype": t.get("dtype")} for t in m.get("targets", [])],
            "sections": [{k: s.get(k) for k in ("name", "kind", "length", "encoding")} for s in m["sections"]],
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
