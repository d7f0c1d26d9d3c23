#!/usr/bin/env python3
"""Long-form memory: peak resident memory of `transcribe()` on a long file, mxw against
openai-whisper (same weights, fp32 CPU), each engine in its own process.

    .venv/bin/python scripts/bench_memory.py artifacts/tiny.en.mxw [--hours 3] [--clip 0,30,10770,10800]

The file is the dev clips end to end, repeated to `--hours` (16 kHz, 16-bit WAV, written once
to a temporary folder). Both engines read the whole file (mxw streams it: a first pass for the
log-mel's global maximum, then window by window; openai-whisper loads it and its log-mel whole)
but decode only the `--clip` ranges (openai-whisper's clip_timestamps), so the run stays short
and the figure is the memory that the file's length costs. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT.parent / "shared" / "data" / "dev"


def write_long_wav(path: Path, hours: float) -> float:
    sys.path[:0] = [str(ROOT / "runtime")]
    from mxwr.audio import load_audio

    speech = np.concatenate([load_audio(p) for p in sorted(DEV.glob("*.wav")) if not p.name.startswith("ns_")])
    pcm = (np.clip(speech, -1, 1 - 1 / 32768) * 32768).astype("<i2")
    total = int(hours * 3600 * 16000)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        written = 0
        while written < total:
            piece = pcm[: total - written]
            w.writeframes(piece.tobytes())
            written += len(piece)
    return total / 16000


def engine(name: str, bundle: str, audio: str, clip: str) -> dict:
    import resource

    start = time.perf_counter()
    if name == "mxw":
        sys.path[:0] = [str(ROOT / "runtime")]
        from mxwr.transcribe import Transcriber

        result = Transcriber(bundle, device="cpu").transcribe(audio, clip_timestamps=clip)
    else:
        import whisper

        sys.path[:0] = [str(ROOT / "runtime"), str(ROOT / "compiler")]
        from mxwc.conformance import weights_from_bundle
        from mxwc.reference import openai_whisper_model
        from mxwr.bundle import BundleReader

        model = openai_whisper_model(weights_from_bundle(BundleReader(bundle)))
        result = whisper.transcribe(model, audio, fp16=False, clip_timestamps=clip, verbose=None)
    return {
        "seconds": time.perf_counter() - start,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "segments": [(round(s["start"], 2), round(s["end"], 2), s["text"]) for s in result["segments"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("--hours", type=float, default=3.0)
    parser.add_argument("--clip", default=None, help="clip_timestamps (default: the first and last 30 s)")
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--audio", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        print("RESULT " + json.dumps(engine(args.engine, args.bundle, args.audio, args.clip)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        audio = Path(tmp) / "long.wav"
        duration = write_long_wav(audio, args.hours)
        clip = args.clip or f"0,30,{duration - 30:.0f},{duration:.0f}"
        results = {}
        for name in ("mxw", "openai-whisper"):
            proc = subprocess.run([sys.executable, __file__, args.bundle, "--engine", name, "--audio", str(audio),
                                   "--clip", clip], capture_output=True, text=True)
            line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
            results[name] = json.loads(line[7:]) if line else {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    print(f"{args.hours:g} h of 16 kHz speech ({audio.name}, {duration * 32000 / 2**20:.0f} MiB as 16-bit PCM); "
          f"clip_timestamps {clip}")
    print()
    print("| engine | peak RSS (MiB) | wall (s) |")
    print("|---|---|---|")
    for name, r in results.items():
        if "error" in r:
            print(f"| {name} | failed: {r['error']} | |")
        else:
            print(f"| {name} | {r['peak_rss_mib']:.0f} | {r['seconds']:.1f} |")
    if all("segments" in r for r in results.values()):
        same = results["mxw"]["segments"] == results["openai-whisper"]["segments"]
        print(f"\nsegments equal: {same} ({len(results['mxw']['segments'])} segments)")


if __name__ == "__main__":
    main()
