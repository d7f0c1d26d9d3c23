#!/usr/bin/env python3
"""Load test of `mxwr serve` on localhost: latency percentiles and throughput at 1, 4 and 16
concurrent clients, each posting the same clip to /v1/audio/transcriptions.

    .venv/bin/python scripts/load_server.py artifacts/tiny.en.mxw            # starts a server
    .venv/bin/python scripts/load_server.py --url http://127.0.0.1:8000      # targets a running one

Bounded: at most --requests requests and --time-limit seconds per concurrency level (whichever
comes first), and only 127.0.0.1 / localhost. Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", nargs="?", help="bundle to serve (a server is started on 127.0.0.1)")
    ap.add_argument("--url", help="a running server instead, on 127.0.0.1 or localhost")
    ap.add_argument("--api-key", default=None, help="its --api-key, if it has one")
    ap.add_argument("--clip", default=str(ROOT / "samples" / "jfk.wav"), help="audio posted by every request")
    ap.add_argument("--concurrency", default="1,4,16", help="comma-separated client counts")
    ap.add_argument("--requests", type=int, default=32, help="requests per level, at most")
    ap.add_argument("--time-limit", type=float, default=120.0, help="seconds per level, at most")
    ap.add_argument("--response-format", default="json")
    ap.add_argument("--server-args", default="", help="extra `mxwr serve` options when starting one")
    args = ap.parse_args()
    if (args.bundle is None) == (args.url is None):
        ap.error("give a BUNDLE or --url, not both")
    levels = [int(c) for c in args.concurrency.split(",")]
    if args.requests < 1 or args.requests > 10_000 or args.time_limit <= 0 or args.time_limit > 3600:
        ap.error("--requests must be 1..10000 and --time-limit 0..3600 s")

    server = None
    if args.url is not None:
        host = urllib.parse.urlsplit(args.url).hostname
        if host not in LOCAL_HOSTS:
            ap.error(f"--url must be on {' or '.join(LOCAL_HOSTS)}, not {host}")
        url = args.url.rstrip("/")
    else:
        server, url = start_server(args.bundle, args.server_args.split(), max(levels))
    try:
        data = Path(args.clip).read_bytes()
        duration = clip_duration(Path(args.clip))
        health = json.loads(urllib.request.urlopen(url + "/health", timeout=30).read())
        model = get_json(url + "/v1/models", args.api_key)["data"][0]
        post(url, data, args)  # warm-up: first-use costs are not a client's latency
        rows = [run_level(url, data, duration, c, args) for c in levels]
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)

    print(f"\nserver: {url}, model {model['id']} ({model['target']}, {model['dtype']}, batch {model['batch']}, "
          f"beams {model['beams']}), {'independent windows' if health['independent_windows'] else 'transcribe()'}, "
          f"concurrency limit {health['concurrency']}, queue {health['max_queue']}; "
          f"clip {Path(args.clip).name} ({duration:.2f} s), response_format {args.response_format}; "
          f"per level at most {args.requests} requests / {args.time_limit:g} s\n")
    print("| clients | requests | errors | p50 latency (s) | p90 (s) | p99 (s) | requests/s | audio s/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clients']} | {r['ok']} | {r['errors']} | {r['p50']:.2f} | {r['p90']:.2f} | {r['p99']:.2f} | "
              f"{r['rps']:.2f} | {r['audio_rate']:.1f} |")


def start_server(bundle: str, extra: list[str], clients: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mxwr = Path(sys.executable).parent / "mxwr"
    log = tempfile.NamedTemporaryFile(prefix="mxwr-serve-", suffix=".log", delete=False)
    # The queue holds every client: the figures measure decoding, not 429s.
    cmd = [str(mxwr), "serve", bundle, "--host", "127.0.0.1", "--port", str(port),
           "--max-queue", str(max(32, clients)), *extra]
    print("starting:", " ".join(cmd), f"(log: {log.name})", file=sys.stderr)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"mxwr serve exited ({proc.returncode}); see {log.name}")
        try:
            if urllib.request.urlopen(url + "/health", timeout=5).status == 200:
                return proc, url
        except (OSError, urllib.error.HTTPError):
            pass
        time.sleep(0.2)
    proc.terminate()
    sys.exit("mxwr serve did not become healthy in 300 s")


def clip_duration(path: Path) -> float:
    try:
        with wave.open(str(path)) as w:
            return w.getnframes() / w.getframerate()
    except wave.Error:  # not a WAV: ask ffprobe
        out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                              f"file:{path}"], capture_output=True, text=True, check=True)
        return float(out.stdout)


def get_json(url: str, key: str | None) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return json.loads(urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30).read())


def post(url: str, data: bytes, args) -> int:
    boundary = "mxwloadboundary"
    fields = {"model": "whisper-1", "response_format": args.response_format}
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                    for k, v in fields.items())
    body += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{os.path.basename(args.clip)}"'
             f"\r\nContent-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    if args.api_key:
        headers["Authorization"] = f"Bearer {args.api_key}"
    request = urllib.request.Request(url + "/v1/audio/transcriptions", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=args.time_limit + 60) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def run_level(url: str, data: bytes, duration: float, clients: int, args) -> dict:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    remaining = [args.requests]
    start = time.monotonic()
    stop_at = start + args.time_limit

    def client() -> None:
        while time.monotonic() < stop_at:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            t0 = time.monotonic()
            status = post(url, data, args)
            with lock:
                if status == 200:
                    latencies.append(time.monotonic() - t0)
                else:
                    errors[0] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.time_limit + 120)
    wall = time.monotonic() - start
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, round(p / 100 * (len(latencies) - 1)))]

    row = dict(clients=clients, ok=len(latencies), errors=errors[0], p50=pct(50), p90=pct(90), p99=pct(99),
               rps=len(latencies) / wall, audio_rate=len(latencies) * duration / wall)
    print(f"clients {clients}: {row['ok']} ok, {row['errors']} errors in {wall:.1f} s", file=sys.stderr)
    return row


if __name__ == "__main__":
    main()
