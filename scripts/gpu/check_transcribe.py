#!/usr/bin/env python3
"""transcribe() (timestamps, host-side logit rules, seeking) on the GPU against the CPU.

    .venv/bin/python scripts/gpu/check_transcribe.py record artifacts/tiny.en.mxw CLIPS_DIR expected.json  # CPU host
    python3 scripts/gpu/check_transcribe.py check GPU_BUNDLE CLIPS_DIR expected.json                       # device

Greedy at temperature 0 (no sampled fallback), so both sides are deterministic: an fp32 GPU
bundle must give the CPU's segments (text, tokens, times) exactly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2] / "runtime")]

from mxwr.transcribe import Transcriber  # noqa: E402


def segments(t: Transcriber, clip: Path) -> list:
    result = t.transcribe(clip, temperature=0.0)
    return json.loads(json.dumps([(s["start"], s["end"], s["text"], s["tokens"]) for s in result["segments"]]))


def main() -> None:
    mode, bundle, clips, expected = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    files = sorted(clips.glob("*.wav"))
    if mode == "record":
        t = Transcriber(bundle, device="cpu")
        expected.write_text(json.dumps({c.name: segments(t, c) for c in files}))
        return
    t = Transcriber(bundle, device="gpu")
    want = json.loads(expected.read_text())
    same = 0
    for clip in files:
        ok = segments(t, clip) == want[clip.name]
        same += ok
        print(f"{clip.name:32s} {'same' if ok else 'DIFFERENT'}")
    print(f"transcribe() on {t.model.target.name} ({t.model.target.dtype}) equals the CPU's on {same}/{len(files)} clips")


if __name__ == "__main__":
    main()
