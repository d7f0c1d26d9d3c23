#!/usr/bin/env python3
"""Per-graph numerical comparison of a bundle against openai-whisper on the same weights.

    .venv/bin/python scripts/conformance.py artifacts/tiny.en.mxw [AUDIO ...]
    .venv/bin/python scripts/conformance.py tiny.en-int8.mxw --float32-weights tiny.en   # a quantized bundle

The first place to look when a transcript differs: each row names the graph it measures.
Exits non-zero when any row is over its limit.
"""

import sys
from pathlib import Path

import click

from mxwc.conformance import compare, format_table

DEFAULT_AUDIO = Path(__file__).resolve().parent.parent / "samples" / "jfk.wav"


@click.command()
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False))
@click.argument("audio", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--language", default=None)
@click.option("--float32-weights", "original", metavar="MODEL", default=None,
              help="A quantized bundle's original weights (e.g. tiny.en): also report each graph's error "
                   "against openai-whisper on them (no limits).")
def main(bundle: str, audio: tuple[str, ...], language: str | None, original: str | None) -> None:
    reference = None
    if original is not None:
        from mxwc.weights import load_weights
        reference = load_weights(original, lambda _: None, offline=True)
    failed = False
    for path in audio or (str(DEFAULT_AUDIO),):
        rows = compare(bundle, path, language)
        print(f"== {path}: against openai-whisper on the bundle's weights")
        print(format_table(rows))
        failed |= not all(r.ok for r in rows)
        if reference is not None:
            print(f"== {path}: against openai-whisper on the float32 weights of {original}")
            print(format_table(compare(bundle, path, language, reference)))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
