#!/usr/bin/env python3
"""Per-graph numerical comparison of a bundle against openai-whisper on the same weights.

    .venv/bin/python scripts/conformance.py artifacts/tiny.en.mxw [AUDIO ...]

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
def main(bundle: str, audio: tuple[str, ...], language: str | None) -> None:
    failed = False
    for path in audio or (str(DEFAULT_AUDIO),):
        rows = compare(bundle, path, language)
        print(f"== {path}")
        print(format_table(rows))
        failed |= not all(r.ok for r in rows)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
