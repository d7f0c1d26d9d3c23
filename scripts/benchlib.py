"""What the benchmark scripts share."""

from __future__ import annotations

import datetime
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from importlib import metadata


def median_time(fn: Callable[[], object], repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of `fn` over `repeats` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_times(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median wall time of each of `fns`, timed round by round (every fn once per round, in
    turn), so that drift in the machine's speed reaches them all alike; `warmup` untimed rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def pin_threads(n: int | None) -> int:
    """Pins this process (and the children it starts) to `n` of the cores it may use (all of
    them for None), before any thread pool is made: MAX sizes its pool by the affinity. Returns n."""
    cores = sorted(os.sched_getaffinity(0))
    n = len(cores) if n is None else n
    if not 1 <= n <= len(cores):
        raise SystemExit(f"--threads {n}: this process may use {len(cores)} cores")
    os.sched_setaffinity(0, cores[:n])
    return n


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def versions(packages: Sequence[str]) -> str:
    """`name version` of each installed package, comma-separated."""
    out = []
    for p in packages:
        try:
            out.append(f"{p} {metadata.version(p)}")
        except metadata.PackageNotFoundError:
            out.append(f"{p} (not installed)")
    return ", ".join(out)


def today() -> str:
    return datetime.date.today().isoformat()


# A small process that starts the command and reports its wall time and peak RSS. A process's
# ru_maxrss includes the image it was exec'd from (the fork of its parent), so the command is
# started from this launcher, not from the benchmark itself, whose RSS holds every engine.
_LAUNCHER = """
import json, os, sys, time
report, argv = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(argv[0], argv)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(report, "w") as f:
    json.dump({"wall": wall, "maxrss_kib": usage.ru_maxrss, "rc": os.waitstatus_to_exitcode(status)}, f)
"""


def run_child(argv: Sequence[str], **kwargs) -> tuple[float, float, subprocess.CompletedProcess]:
    """Runs `argv` (argv[0] a path) to its end: (wall seconds, its peak resident memory in MiB,
    the process with its output), from a small launcher process (see _LAUNCHER)."""
    import json
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        proc = subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, report, *argv], check=False,
                              capture_output=True, text=True, **kwargs)
        if not os.path.exists(report):
            raise RuntimeError(f"launcher failed: {proc.stderr.strip()}")
        with open(report) as f:
            r = json.load(f)
    return r["wall"], r["maxrss_kib"] / 1024, subprocess.CompletedProcess(argv, r["rc"], proc.stdout, proc.stderr)


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between two word sequences (substitutions, insertions, deletions)."""
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def word_error_rate(pairs: Sequence[tuple[str, str]], normalize: Callable[[str], str]) -> float:
    """Corpus WER of (reference, hypothesis) texts: all word edits over all reference words,
    after `normalize`."""
    edits = words = 0
    for ref, hyp in pairs:
        r, h = normalize(ref).split(), normalize(hyp).split()
        edits += edit_distance(r, h)
        words += len(r)
    return edits / max(words, 1)
