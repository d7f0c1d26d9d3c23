#!/usr/bin/env python3
"""Two GPU bundles' logits, step by step, on the same token sequences (on the device).

    PYTHONPATH=/root/site python3 scripts/gpu/compare_logits.py A.mxw B.mxw CLIPS_DIR

Each clip's first window is decoded greedily with bundle A (no timestamps); then both bundles
read that sequence position by position (the prompt through the prefill, every later token
through the step graph) and their float32 logits are compared at each position: how many
differ, by how much, and whether the argmax differs. A graph change that keeps the arithmetic
shows no differing logit at all; one that changes rounding somewhere shows it here, at the
graph's own outputs, before any transcript moves.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[2] / "runtime")]

from mxwr.audio import load_audio  # noqa: E402
from mxwr.decoding import DecodingOptions, DecodingTask  # noqa: E402
from mxwr.dims import N_SAMPLES  # noqa: E402
from mxwr.transcribe import Transcriber  # noqa: E402


def logits_along(t: Transcriber, audio: np.ndarray, tokens: list[int], task: DecodingTask) -> np.ndarray:
    """[positions, V]: the logits after each token of `tokens` (initial tokens first)."""
    model = t.model
    ctx = model.encode(t._mels([audio[:N_SAMPLES]]))
    cache = model.new_cache()
    n_initial = len(task.initial_tokens)
    prompt = np.array([tokens[:n_initial]] * model.rows, dtype=np.int64)
    out = model.prefill(ctx, cache, prompt, task.sot_index, task.suppress_first)
    rows = [out.logits.to_numpy()[0, 0].copy()]
    for pos in range(n_initial, len(tokens)):
        out = model.step(ctx, cache, np.array([tokens[pos]] * model.rows, np.int64), pos, task.suppress)
        rows.append(out.logits.to_numpy()[0].copy())
    return np.stack(rows)


def main() -> None:
    a_path, b_path, clips = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    a, b = Transcriber(a_path, device="gpu"), Transcriber(b_path, device="gpu")
    options = DecodingOptions(without_timestamps=True)
    task_a, task_b = DecodingTask(a.model, a.special, options), DecodingTask(b.model, b.special, options)
    total = differing = argmax_moved = 0
    for clip in sorted(clips.glob("*.wav")):
        audio = load_audio(clip)
        sampled = next(a.decode_windows([audio[:N_SAMPLES]], options))["segments"][0]["tokens"]
        tokens = task_a.initial_tokens + sampled
        la, lb = logits_along(a, audio, tokens, task_a), logits_along(b, audio, tokens, task_b)
        finite = np.isfinite(la) & np.isfinite(lb)
        diff = np.where(finite, np.abs(la - lb), 0.0)
        n_diff = int((la != lb).sum())
        moved = int((la.argmax(-1) != lb.argmax(-1)).sum())
        total, differing, argmax_moved = total + la.size, differing + n_diff, argmax_moved + moved
        print(f"{clip.name:32s} {len(la):4d} positions: {n_diff:8d} of {la.size} logits differ, "
              f"max |diff| {diff.max():.3g}, argmax differs at {moved}")
    print(f"all clips: {differing} of {total} logits differ ({differing / total:.2e}); "
          f"argmax differs at {argmax_moved} positions")


if __name__ == "__main__":
    main()
