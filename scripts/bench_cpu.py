#!/usr/bin/env python3
"""CPU benchmark: mxw against openai-whisper (PyTorch fp32, same weights), in one process.

    .venv/bin/python scripts/bench_cpu.py artifacts/tiny.en.mxw [--repeats 5]

jfk end-to-end latency (audio array -> text, warm, median), encoder time, and decoder time per
token; then transcribe() of the 35 s dev clip (two windows, timestamps, fallback) with each
engine, and, for a bundle built with --beams 5, the same with beam search; prints markdown tables.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np

from benchlib import median_time

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("--audio", default=str(ROOT / "samples" / "jfk.wav"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch
    import whisper

    from mxwc.conformance import weights_from_bundle
    from mxwc.reference import openai_whisper_model
    from mxwr.audio import load_audio
    from mxwr.transcribe import Transcriber

    torch.set_num_threads(torch.get_num_threads())
    audio = load_audio(args.audio)
    t = Transcriber(args.bundle, device="cpu")
    ref = openai_whisper_model(weights_from_bundle(t.bundle))
    options = whisper.DecodingOptions(language="en", without_timestamps=True, temperature=0, fp16=False)

    def ours():
        return next(t.decode_windows([audio]))["segments"][0]

    def theirs():
        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio)))
        return ref.decode(mel, options)

    n_tokens = len(ours()["tokens"]) + 1
    assert ours()["tokens"] == list(theirs().tokens), "transcripts differ: run scripts/conformance.py"
    mel = t.mel(audio)[None]
    rows = []
    for name, e2e, enc in (
        ("mxw (MAX, fp32)", median_time(ours, args.repeats), median_time(lambda: t.model.encode(mel).features.to_numpy(), args.repeats)),
        ("openai-whisper (PyTorch fp32)", median_time(theirs, args.repeats),
         median_time(lambda: ref.encoder(torch.from_numpy(mel)), args.repeats)),
    ):
        rows.append((name, e2e, enc, (e2e - enc) / n_tokens))
    print(f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; "
          f"audio {Path(args.audio).name}, {n_tokens} decoder steps; median of {args.repeats}")
    print()
    print("| engine | jfk end-to-end (ms) | encoder (ms) | decoder per token (ms) |")
    print("|---|---|---|---|")
    for name, e2e, enc, per in rows:
        print(f"| {name} | {e2e * 1e3:.0f} | {enc * 1e3:.0f} | {per * 1e3:.1f} |")
    print()
    print(f"speed-up end to end: {rows[1][1] / rows[0][1]:.2f}×")

    long_clip = ROOT.parent / "shared" / "data" / "dev" / "long_osr_us_000_0034_8k.wav"
    runs = [("transcribe() defaults", {})]
    if t.model.group == 5:
        runs.append(("transcribe(beam_size=5, best_of=5)", {"beam_size": 5, "best_of": 5}))
    print()
    print(f"| {long_clip.name} (35.5 s) | mxw (s) | openai-whisper (s) | same segments |")
    print("|---|---|---|---|")
    for name, options in runs:
        ours_t = median_time(lambda: t.transcribe(long_clip, **options), max(1, args.repeats // 2), warmup=1)
        theirs_t = median_time(lambda: whisper.transcribe(ref, str(long_clip), fp16=False, **options),
                               max(1, args.repeats // 2), warmup=1)
        a = [(x["start"], x["end"], x["text"]) for x in t.transcribe(long_clip, **options)["segments"]]
        b = [(x["start"], x["end"], x["text"]) for x in whisper.transcribe(ref, str(long_clip), fp16=False, **options)["segments"]]
        print(f"| {name} | {ours_t:.2f} | {theirs_t:.2f} | {a == b} |")


if __name__ == "__main__":
    with __import__("torch").no_grad():
        main()
