#!/usr/bin/env python3
"""Two GPU bundles' logits, step by step, on the same token sequences (on the device).

    PYTHONPATH=/root/site python3 scripts/gpu/compare_logits.py A.mxw B.mxw CLIPS_DIR [DEVICE]

Each clip's first window is decoded greedily with bundle A (no timestamps); then both bundles
read that sequence position by position (the prompt through the prefill, every later token
through the step graph) and their float32 logits are compared at each position: how many
differ, by how much, and whether the argmax differs. Each bundle's greedy outputs (token,
log-probability) are also checked against numpy's choice on that bundle's own logits, and the
nearest tie between A's two best logits is shown per clip. A graph change that keeps the arithmetic
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
from mxwr.constants import N_SAMPLES  # noqa: E402
from mxwr.transcribe import Transcriber  # noqa: E402


def logits_along(t: Transcriber, audio: np.ndarray, tokens: list[int], task: DecodingTask) -> tuple[np.ndarray, float]:
    """[positions, V]: the logits after each token of `tokens` (initial tokens first); and the
    largest gap between the graphs' greedy choice (token, log-probability) and the same choice
    made here from their logits (inf if a token differs)."""
    model = t.model
    ctx = model.encode(t._mels([audio[:N_SAMPLES]]))
    cache = model.new_cache()
    n_initial = len(task.initial_tokens)
    prompt = np.array([tokens[:n_initial]] * model.batch, dtype=np.int64)
    out = model.prefill(ctx, cache, prompt, task.sot_index, task.suppress_first)
    rows = [out.logits.to_numpy()[0, 0].copy()]  # the prefill's last position
    gap = _greedy_gap(out, rows[-1], task.suppress_first)
    for pos in range(n_initial, len(tokens)):
        out = model.step(ctx, cache, np.array([tokens[pos]] * model.batch, np.int64), pos, task.suppress)
        rows.append(out.logits.to_numpy()[0].copy())
        gap = max(gap, _greedy_gap(out, rows[-1], task.suppress))
    return np.stack(rows), gap


def nearest_tie(logits: np.ndarray, task: DecodingTask) -> str:
    """The smallest gap between the two best filtered logits over the positions, in float16
    steps at that size: how far a change of rounding is from moving a greedy choice."""
    masks = [task.suppress_first.to_numpy()] + [task.suppress.to_numpy()] * (len(logits) - 1)
    filtered = logits + np.stack(masks)
    top2 = np.sort(filtered, axis=-1)[:, -2:]
    gaps = top2[:, 1] - top2[:, 0]
    at = int(gaps.argmin())
    steps = gaps[at] / np.spacing(np.float16(abs(top2[at, 1]))).astype(np.float32)
    return f"{gaps[at]:.3g} ({steps:.0f} float16 steps) at position {at}"


def _greedy_gap(out, logits: np.ndarray, suppress) -> float:
    """How far the graph's greedy outputs for row 0 are from numpy's choice on `logits`."""
    filtered = logits + suppress.to_numpy()
    token = int(out.token.to_numpy()[0])
    if token != int(filtered.argmax()):  # numpy's argmax: the lowest id of equal maxima
        return float("inf")
    top = filtered.max()
    expected = -np.log(np.exp((filtered - top).astype(np.float64)).sum())
    return abs(float(out.logprob.to_numpy()[0]) - expected)


def main() -> None:
    a_path, b_path, clips = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    device = sys.argv[4] if len(sys.argv) > 4 else "gpu"
    a, b = Transcriber(a_path, device=device), Transcriber(b_path, device=device)
    options = DecodingOptions(without_timestamps=True)
    task_a, task_b = DecodingTask(a.model, a.special, options), DecodingTask(b.model, b.special, options)
    total = differing = argmax_moved = 0
    for clip in sorted(clips.glob("*.wav")):
        audio = load_audio(clip)
        sampled = next(a.decode_windows([audio[:N_SAMPLES]], options))["segments"][0]["tokens"]
        tokens = task_a.initial_tokens + sampled
        (la, gap_a), (lb, gap_b) = logits_along(a, audio, tokens, task_a), logits_along(b, audio, tokens, task_b)
        finite = np.isfinite(la) & np.isfinite(lb)
        diff = np.where(finite, np.abs(la - lb), 0.0)
        n_diff = int((la != lb).sum())
        moved = int((la.argmax(-1) != lb.argmax(-1)).sum())
        total, differing, argmax_moved = total + la.size, differing + n_diff, argmax_moved + moved
        print(f"{clip.name:32s} {len(la):4d} positions: {n_diff:8d} of {la.size} logits differ, "
              f"max |diff| {diff.max():.3g}, argmax differs at {moved}; greedy outputs vs numpy on their "
              f"logits: A {gap_a:.2g}, B {gap_b:.2g}; nearest tie in A: {nearest_tie(la, task_a)}")
    print(f"all clips: {differing} of {total} logits differ ({differing / total:.2e}); "
          f"argmax differs at {argmax_moved} positions")


if __name__ == "__main__":
    main()
