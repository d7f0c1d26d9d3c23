#!/usr/bin/env python3
"""Long fuzz runs of mxwr's bundle reader, manifest validator and audio decoder (scripts/fuzzlib.py).

    nice .venv/bin/python scripts/fuzz.py --cases 100000 --audio-cases 20000 --seed 1

Case i of a run is drawn from (seed, i) alone, so a failure replays by itself:

    .venv/bin/python scripts/fuzz.py --replay bundle:1:4711 [--keep mutant.mxw]

Cases run in worker processes (--jobs), each with its own working copy of the bundle; a worker
that dies is a crash of the case it was on, one that stops reporting is a hang, and either is
restarted at the next case. Every --cli-every'th case also goes through the real CLI (`mxwr
inspect` for bundles, `mxwr run` for audio). Prints a table of outcomes and the reproducers of
the failures; exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzzlib  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WATCHDOG_S = 400  # a worker silent this long is hung (a decode's own timeout is 300 s)


def _choices(kind: str, seed: int, i: int) -> fuzzlib.Choices:
    return fuzzlib.Choices.seeded(f"{seed}:{kind}:{i}")  # str seeds hash the same in every run


class BundleCases:
    def __init__(self, args, workdir: Path):
        self.args = args
        self.pristine = fuzzlib.Pristine(args.bundle)
        self.workspace = fuzzlib.Workspace(self.pristine, workdir / "mutant.mxw")
        from mxwr.bundle import BundleReader

        with BundleReader(self.pristine.path) as reader:
            self.view = fuzzlib.runtime_view(reader.manifest)
        failure, what, proc = fuzzlib.run_cli(args.mxwr, fuzzlib.decode_args(self.pristine.path, args.decode_audio), 300)
        if failure or proc.returncode != 0:
            sys.exit(f"fuzz: the pristine bundle does not decode: {what}")
        self.expected = proc.stdout
        self.decoded: dict[str, tuple] = {}  # view -> the CLI's verdict on it (the same view decodes the same)

    def run(self, i: int) -> dict:
        m = fuzzlib.mutate_bundle(self.pristine, _choices("bundle", self.args.seed, i))
        m.case = f"bundle:{self.args.seed}:{i}"
        with self.workspace.apply(m) as path:
            v = fuzzlib.judge_bundle(path, m, self.pristine, self.view, self.args.time_limit)
            if v.outcome == "accepted":
                key = json.dumps([v.view, m.content, m.refuse])
                if key not in self.decoded:
                    self.decoded[key] = fuzzlib.judge_decode(self.args.mxwr, path, self.args.decode_audio,
                                                             self.expected, m)
                v = self.decoded[key]
            row = {"i": i, "kind": m.kind, "outcome": v.outcome, "failure": v.failure}
            if self.args.cli_every and i % self.args.cli_every == 0:
                cli = fuzzlib.judge_cli_bundle(self.args.mxwr, path)
                row["cli"] = cli.failure or "ok"
                if cli.failure:
                    row["cli_detail"] = cli.detail
        if v.failure:
            row.update(case=m.case, desc=m.describe()[:400], detail=v.detail[:1500])
        return row


class AudioCases:
    def __init__(self, args, workdir: Path):
        from mxwr.audio import load_audio

        self.args = args
        self.corpus = fuzzlib.audio_corpus(args.audio_source)
        self.path = workdir / "mutant.wav"
        self.originals = {}
        for name, data in self.corpus.items():
            self.path.write_bytes(data)
            self.originals[name] = load_audio(self.path)

    def run(self, i: int) -> dict:
        m = fuzzlib.mutate_audio(self.corpus, _choices("audio", self.args.seed, i))
        m.case = f"audio:{self.args.seed}:{i}"
        self.path.write_bytes(m.data)
        v = fuzzlib.judge_audio(self.path, m, self.originals, self.args.time_limit)
        row = {"i": i, "kind": m.kind, "outcome": v.outcome, "failure": v.failure}
        if self.args.cli_every and i % (2 * self.args.cli_every) == 0:  # `mxwr run` loads graphs: ~1 s
            failure, what, _ = fuzzlib.run_cli(self.args.mxwr, ["run", str(self.args.bundle), str(self.path)], 300)
            row["cli"] = failure or "ok"
            if failure:
                row["cli_detail"] = what[:1500]
        if v.failure:
            row.update(case=m.case, desc=m.describe()[:400], detail=v.detail[:1500])
        return row


def worker(args) -> None:
    workdir = Path(tempfile.mkdtemp(prefix=f"fuzz-{args.worker}-", dir=args.workdir))
    cases = (BundleCases if args.worker == "bundle" else AudioCases)(args, workdir)
    try:
        for i in range(args.start, args.stop):
            print(json.dumps(cases.run(i)), flush=True)
            if args.worker == "bundle" and i % 5000 == 4999 and not cases.workspace.intact():
                sys.exit("fuzz: the working copy was not restored (a bug in fuzzlib)")
    finally:
        for f in workdir.iterdir():
            f.unlink()
        workdir.rmdir()


def _spawn(args, kind: str, start: int, stop: int) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--worker", kind, "--start", str(start), "--stop", str(stop)]
    for name in ("seed", "bundle", "audio_source", "decode_audio", "mxwr", "time_limit", "cli_every", "workdir"):
        value = getattr(args, name)
        if value is not None:
            cmd += [f"--{name.replace('_', '-')}", str(value)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)


def campaign(args) -> int:
    ranges = []
    for kind, total in (("bundle", args.cases), ("audio", args.audio_cases)):
        share = -(-total // args.jobs) if total else 0
        ranges += [[kind, a, min(a + share, total)] for a in range(0, total, share or 1) if share]
    rows: list[dict] = []
    running: dict[int, tuple[subprocess.Popen, list]] = {}
    started = time.time()
    pending = list(ranges)
    last_seen: dict[int, float] = {}
    progress = time.time()

    def start_next() -> None:
        while pending and len(running) < args.jobs:
            r = pending.pop(0)
            if r[1] >= r[2]:
                continue
            proc = _spawn(args, *r)
            running[proc.stdout.fileno()] = (proc, r)
            last_seen[proc.stdout.fileno()] = time.time()

    def lost(fd: int, failure: str, detail: str) -> None:
        proc, r = running.pop(fd)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        kind, at = r[0], r[1]  # r[1]: the case in flight (the next one not reported)
        rows.append({"i": at, "kind": "?", "outcome": "failure", "failure": failure, "case": f"{kind}:{args.seed}:{at}",
                     "desc": f"{kind}:{args.seed}:{at} (replay it)", "detail": detail, "stream": kind})
        pending.insert(0, [kind, at + 1, r[2]])

    start_next()
    while running:
        ready, _, _ = select.select(list(running), [], [], 5.0)
        now = time.time()
        for fd in ready:
            proc, r = running[fd]
            line = proc.stdout.readline()
            if not line:
                code = proc.wait()
                if r[1] < r[2]:
                    lost(fd, "crash", f"the worker exited with {code} during the case")
                else:
                    running.pop(fd)
                continue
            row = json.loads(line)
            row["stream"] = r[0]
            rows.append(row)
            r[1] = row["i"] + 1
            last_seen[fd] = now
        for fd in [fd for fd in running if now - last_seen[fd] > WATCHDOG_S]:
            lost(fd, "hang", f"no report for {WATCHDOG_S} s")
        start_next()
        if now - progress > 60:
            progress = now
            print(f"fuzz: {len(rows)} cases in {now - started:.0f} s", file=sys.stderr, flush=True)
    return report(args, rows, time.time() - started)


OUTCOMES = ("refused", "accepted-identical", "accepted-decoded-identical", "accepted-refused-at-load",
            "accepted-content", "accepted")
FAILURES = ("crash", "hang", "traceback", "accepted-corruption", "wrong-transcript", "accepted-hostile",
            "bad-message", "bad-samples", "wrong-audio", "bad-exit")


def report(args, rows: list[dict], seconds: float) -> int:
    print(f"seed {args.seed}, {seconds:.0f} s, {args.jobs} jobs, bundle {args.bundle}")
    failed = [r for r in rows if r["failure"]]
    for stream in ("bundle", "audio"):
        mine = [r for r in rows if r["stream"] == stream]
        if not mine:
            continue
        counts = collections.Counter(r["outcome"] for r in mine)
        fails = collections.Counter(r["failure"] for r in mine if r["failure"])
        cli = collections.Counter(r["cli"] for r in mine if "cli" in r)
        print(f"\n{stream} cases: {len(mine)}")
        print(f"  {'outcome':32} {'cases':>8}")
        for name in OUTCOMES:
            if counts[name] or name in ("refused", "accepted"):
                print(f"  {name:32} {counts[name]:>8}")
        for name in FAILURES:
            print(f"  {'failure: ' + name:32} {fails[name]:>8}")
        print(f"  {'through the CLI':32} {sum(cli.values()):>8}   (failures: {sum(v for k, v in cli.items() if k != 'ok')})")
        kinds = collections.Counter(r["kind"] for r in mine)
        print("  by mutation: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    cli_failed = [r for r in rows if r.get("cli", "ok") != "ok"]
    for r in failed + cli_failed:
        print(f"\nFAIL {r.get('failure') or 'cli ' + r['cli']}: {r.get('desc', r['stream'] + ':' + str(args.seed) + ':' + str(r['i']))}")
        print("  " + (r.get("detail") or r.get("cli_detail") or "").strip().replace("\n", "\n  "))
        print(f"  replay: .venv/bin/python scripts/fuzz.py --replay {r['stream']}:{args.seed}:{r['i']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows))
    return 1 if failed or cli_failed else 0


def replay(args) -> int:
    kind, seed, i = args.replay.split(":")
    args.seed = int(seed)
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-replay-", dir=args.workdir))
    args.cli_every = 1
    cases = (BundleCases if kind == "bundle" else AudioCases)(args, workdir)
    if kind == "bundle":
        m = fuzzlib.mutate_bundle(cases.pristine, _choices(kind, args.seed, int(i)))
        print(f"{args.replay} {m.kind}: {m.detail}")
        if args.keep:
            with cases.workspace.apply(m) as path:
                import shutil

                shutil.copyfile(path, args.keep)
    else:
        m = fuzzlib.mutate_audio(cases.corpus, _choices(kind, args.seed, int(i)))
        print(f"{args.replay} {m.base} {m.kind}: {m.detail}")
        if args.keep:
            Path(args.keep).write_bytes(m.data)
    row = cases.run(int(i))
    print(json.dumps(row, indent=2))
    return 1 if row["failure"] or row.get("cli", "ok") != "ok" else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=1000, help="mutated bundles")
    ap.add_argument("--audio-cases", type=int, default=None, help="mutated audio files (default: --cases / 5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bundle", type=Path, default=ROOT / "artifacts" / "tiny.en.mxw", help="the real bundle mutated")
    ap.add_argument("--audio-source", type=Path, default=ROOT / "samples" / "jfk.wav",
                    help="16-bit WAV the audio corpus is cut from")
    ap.add_argument("--decode-audio", type=Path, default=ROOT / "samples" / "jfk.wav",
                    help="what accepted mutants whose records differ are decoded on")
    ap.add_argument("--mxwr", type=Path, default=Path(sys.executable).parent / "mxwr")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--time-limit", type=float, default=10.0, help="seconds an in-process case may take")
    ap.add_argument("--cli-every", type=int, default=50, help="every Nth bundle case through `mxwr inspect`, "
                    "every 2Nth audio case through `mxwr run` (0: none)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write every case's row here")
    ap.add_argument("--replay", default=None, help="KIND:SEED:CASE, e.g. bundle:1:4711")
    ap.add_argument("--keep", type=Path, default=None, help="with --replay: write the mutant here")
    ap.add_argument("--worker", choices=("bundle", "audio"), help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--stop", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.audio_cases is None:
        args.audio_cases = args.cases // 5
    if args.worker:
        worker(args)
        return 0
    if args.replay:
        return replay(args)
    return campaign(args)


if __name__ == "__main__":
    sys.exit(main())
