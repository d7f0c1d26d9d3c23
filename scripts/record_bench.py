#!/usr/bin/env python3
"""Adds a benchmark's markdown table to BENCHMARKS.md under its section, with the date, the
commit and the command that produced it (step 4 of scripts/gpu/README.md; also for the CPU
scripts).

    python3 scripts/record_bench.py --section GPU --table bench_gpu.md \\
        --command "bash scripts/gpu/run_on_device.sh" [--commit SHA] [--note "..."]
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKERS = {"GPU": "_Results are added below by the procedure's step 4._",
           "CPU": "_Results are added below when the script is run._"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", choices=sorted(MARKERS), required=True)
    parser.add_argument("--table", type=Path, required=True, help="the markdown the benchmark printed")
    parser.add_argument("--command", required=True, help="how it was run")
    parser.add_argument("--commit", default=None, help="default: HEAD")
    parser.add_argument("--note", default="")
    parser.add_argument("--date", default=datetime.date.today().isoformat())
    args = parser.parse_args()

    commit = args.commit or subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True).strip()
    entry = [f"### {args.date} — commit `{commit}`", "", f"Command: `{args.command}`", ""]
    if args.note:
        entry += [args.note, ""]
    entry += [args.table.read_text().strip(), ""]
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text()
    marker = MARKERS[args.section]
    if marker not in text:
        raise SystemExit(f"BENCHMARKS.md lost its {args.section} marker line: {marker}")
    path.write_text(text.replace(marker, marker + "\n\n" + "\n".join(entry), 1))
    print(f"recorded in {path} under {args.section}")


if __name__ == "__main__":
    main()
