"""`mxwc`: the compiler's command line."""

from __future__ import annotations

from pathlib import Path

import click

from mxwr.cli import debug_option

from .weights import DEFAULT_MODEL


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mxw", prog_name="mxwc")
@debug_option
def cli() -> None:
    """Compile Whisper checkpoints into .mxw bundles of MAX graphs."""


@cli.command()
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True,
              help="openai-whisper model name, checkpoint path, or CTranslate2 (faster-whisper) model folder.")
@click.option("--max-seq", default=448, show_default=True, type=int, help="Self-attention cache length (<= 448).")
@click.option("--target", "targets", multiple=True, default=["cpu"], show_default=True,
              help="cpu, or cuda:<arch> (e.g. cuda:sm_90a, cuda:sm_80), cross-compiled without a GPU; repeat for several.")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16", "int8", "q4_k", "q6_k"]),
              default="float32", show_default=True,
              help="Weights and compute type of GPU targets (the cpu target computes in float32); int8, q4_k, "
                   "q6_k: a cpu bundle whose matrices are int8 (a scale per 64 values) or GGUF's Q4_K or Q6_K "
                   "blocks (the token embedding int8), float32 otherwise.")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Windows decoded together (fixed at build time).")
@click.option("--prompt-len", default=32, show_default=True, type=int,
              help="Prefill length; longer prompts run through the prefill in chunks of it.")
@click.option("--beams", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Sequences decoded per window (beam search and best-of sampling need --beams >= their size).")
@click.option("--word-timestamps/--no-word-timestamps", default=True, show_default=True,
              help="Compile the alignment graph that word-level timestamps need.")
@click.option("--offline", is_flag=True, help="Do not try OpenAI's download; use the cache or an installed package.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Bundle path [default: artifacts/<model>.mxw].")
def build(model: str, max_seq: int, targets: tuple[str, ...], dtype: str, batch: int, prompt_len: int,
          beams: int, word_timestamps: bool, offline: bool, output: Path | None) -> None:
    """Build a .mxw bundle: load weights, trace and compile the graphs, write the bundle."""
    from .build import BuildOptions, build as run_build

    if output is None:
        output = Path("artifacts") / f"{Path(model).name}.mxw"
    run_build(BuildOptions(model=model, output=output, max_seq=max_seq, targets=tuple(targets),
                           dtype=dtype, batch=batch, prompt_len=prompt_len, group=beams,
                           word_timestamps=word_timestamps, offline=offline),
              log=lambda line: click.echo(line, err=True))


@cli.command()
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Private key file to write (mode 0600); the public key goes to OUT.pub.")
@click.option("--force", is_flag=True, help="Replace existing key files.")
@debug_option
def keygen(out: Path, force: bool) -> None:
    """Make an Ed25519 key pair for signing bundles (PEM: PKCS#8 private key, SubjectPublicKeyInfo public key)."""
    from mxwr.signing import generate_key

    private, public, name = generate_key(out, force=force)
    click.echo(f"wrote {private} (private: keep it secret) and {public} (public: give it to mxwr "
               f"--require-signature); key {name}", err=True)


@cli.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key", "-k", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Private key file (mxwc keygen's KEY).")
@debug_option
def sign(bundle: Path, key: Path) -> None:
    """Sign BUNDLE in place (after checking it whole); only its signature slot is written."""
    from mxwr.signing import sign_bundle

    name = sign_bundle(bundle, key, warn=lambda line: click.echo(f"mxwc: warning: {line}", err=True))
    click.echo(f"signed {bundle} with key {name}", err=True)


@cli.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--pubkey", "-p", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Public key file (KEY.pub) that BUNDLE must be signed by.")
@debug_option
def verify(bundle: Path, pubkey: Path | None) -> None:
    """Check BUNDLE whole without loading any graph: header, manifest, signature (with --pubkey),
    every section's checksum and the padding; one line per result, exit 1 on any failure."""
    from mxwr.bundle import BundleReader
    from mxwr.signing import describe, load_public_key, verify_bundle

    key = load_public_key(pubkey) if pubkey is not None else None

    def report(what: str, problem: str | None) -> None:
        click.echo(f"ok: {what}" if problem is None else f"FAILED: {what}: {problem}")

    with BundleReader(bundle) as reader:  # checks the header and the manifest
        m = reader.manifest
        report(f"header and manifest (format {m.format_version[0]}.{m.format_version[1]}, "
               f"{len(m.sections)} sections)", None)
        if key is None:
            block = describe(reader.signature)
            click.echo("unsigned" if block is None else
                       f"signed: {block['algorithm']} by {block['fingerprint']} (not checked: no --pubkey)")
        verify_bundle(reader, key, report)


def main() -> None:
    from mxwr.cli import run_cli

    from .build import BuildError
    from .ct2 import CT2FormatError
    from .weights import WeightsError

    from mxwr.errors import MxwError

    run_cli(cli, "mxwc", (BuildError, WeightsError, CT2FormatError, MxwError))  # MxwError: bundles and keys


if __name__ == "__main__":
    main()
