"""Beam search's candidate choice: the k best tokens in torch.topk's order, without a full sort."""

from __future__ import annotations

import numpy as np
import torch

from mxwr.scores import top_k


def test_top_k_is_the_stable_sorts_first_k():
    """Descending value, equal values by lower index, -inf included: what a stable descending
    argsort of the whole row gives (the rule openai-whisper's beam search relies on)."""
    rng = np.random.default_rng(0)
    for trial in range(3000):
        n, k = int(rng.integers(1, 60)), int(rng.integers(1, 8))
        x = rng.integers(-3, 3, n).astype(np.float32)  # many ties
        if trial % 3 == 0:
            x[rng.integers(0, n, 3)] = -np.inf
        if trial % 7 == 0:
            x[:] = -np.inf
        assert top_k(x, k).tolist() == np.argsort(-x, kind="stable")[:k].tolist(), (x, k)


def test_top_k_agrees_with_torch_on_a_vocabulary():
    x = np.random.default_rng(1).standard_normal(51864).astype(np.float32)
    assert top_k(x, 6).tolist() == torch.from_numpy(x).topk(6).indices.tolist()
