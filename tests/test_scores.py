"""openai-whisper's logit rules and token choices on our two views of a step's logits
(`mxwr.scores`): every logit on the host, or the text tokens summarized as the graphs summarize
them (their best few and their log-sum-exp under the suppress mask) and the special tokens'
logits. Both must choose what openai-whisper's own filters and decoders choose, in torch, on
the same logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mxwr.decoding import ApplyTimestampRules, SuppressBlank, SuppressTokens, suppress_token_ids, DecodingOptions
from mxwr.scores import DenseLogits, SplitLogits, logsumexp
from mxwr.tokens import SpecialTokens

ROWS, K = 5, 6  # a beam group and its summary width (beam_size + 1)


@pytest.fixture(scope="module")
def tokenizers(tiny_bundle):
    import whisper.tokenizer

    from mxwr.bundle import BundleReader

    with BundleReader(tiny_bundle) as reader:
        special = SpecialTokens.from_bundle(reader)
    return special, whisper.tokenizer.get_tokenizer(multilingual=False)


def summary(logits: np.ndarray, mask: np.ndarray, text_end: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the graphs give (`graphspec._choice`), computed here in numpy."""
    text = logits[:, :text_end] + mask[:text_end]
    ids = np.stack([np.argsort(-row, kind="stable")[:K] for row in text])
    return ids, np.take_along_axis(text, ids, 1), np.array([logsumexp(row) for row in text], np.float32)


def sampled_so_far(special: SpecialTokens) -> list[list[int]]:
    """Tokens after the initial ones that reach every branch of the timestamp rules."""
    ts, text = special.timestamp_begin, 400
    return [[], [ts], [ts, text], [ts, text, ts + 10], [ts, text, ts + 10, ts + 10], [ts + 3, text, text, ts + 7]]


def test_both_views_choose_what_openai_whisper_chooses(tokenizers):
    import whisper.decoding as wd

    special, tokenizer = tokenizers
    sample_begin = 3
    options = DecodingOptions()
    suppress = suppress_token_ids(options, special)
    rng = np.random.default_rng(0)
    V = 51864
    checked = 0
    cases = sampled_so_far(special)
    for sampled in cases:
        tokens = np.array([list(range(1, sample_begin + 1)) + sampled] * ROWS, dtype=np.int64)
        first = not sampled
        begin = sample_begin
        for _ in range(2):
            logits = (rng.standard_normal((ROWS, V)) * 3).astype(np.float32)
            logits[:, special.timestamp_begin:] += 2.0  # timestamps competitive with text
            logits[0, 40] = logits[0, 41] = logits[0].max() + 1  # a tie among the best text tokens

            # openai-whisper, in torch
            theirs = torch.from_numpy(logits.copy())
            t_tokens = torch.from_numpy(tokens)
            filters = [wd.SuppressBlank(tokenizer, begin), wd.SuppressTokens(suppress),
                       wd.ApplyTimestampRules(tokenizer, begin, 50)]
            for f in filters:
                f.apply(theirs, t_tokens)
            their_logprobs = torch.log_softmax(theirs.float(), dim=-1)
            their_greedy = theirs.argmax(dim=-1)
            their_top = their_logprobs.topk(K)

            # ours, both views
            mask_ids = suppress + ((list(special.blank) + [special.eot]) if first else [])
            mask = np.zeros(V, np.float32)
            mask[mask_ids] = -np.inf
            ids, values, lse = summary(logits, mask, special.eot)
            views = {"dense": DenseLogits(logits),
                     "split": SplitLogits(logits[:, special.eot:], special.eot, ids, values, lse, frozenset(mask_ids))}
            rules = [SuppressBlank(special, begin), SuppressTokens(suppress), ApplyTimestampRules(special, begin, 50)]
            for name, view in views.items():
                for rule in rules:
                    rule.apply(view, tokens)
                greedy = view.argmax()
                assert greedy.tolist() == their_greedy.tolist(), (name, sampled)
                np.testing.assert_allclose(view.logprob(np.arange(ROWS), greedy),
                                           their_logprobs[torch.arange(ROWS), their_greedy].numpy(), atol=1e-5, err_msg=name)
                for row in range(ROWS):
                    # torch.topk leaves the order of equal values to its implementation; ours puts
                    # the lower id first. The same tokens, in the same order where they differ.
                    finite = torch.isfinite(their_top.values[row]).numpy()
                    top = view.top_k(row, K)
                    ours = view.logprob(np.full(K, row), top)
                    assert set(top[finite].tolist()) == set(their_top.indices[row][finite].tolist()), (name, row)
                    assert all((a, i) <= (b, j) for a, b, i, j in zip(-ours[:-1], -ours[1:], top[:-1], top[1:]))
                    np.testing.assert_allclose(ours[finite], their_top.values[row].numpy()[finite], atol=1e-5,
                                               err_msg=name)
                checked += 1
    assert checked == 2 * 2 * len(cases)


def test_a_split_view_refuses_what_the_graph_did_not_summarize(tokenizers):
    from mxwr.errors import MxwError

    special, _ = tokenizers
    V = 51864
    logits = np.zeros((1, V), np.float32)
    ids, values, lse = summary(logits, np.zeros(V, np.float32), special.eot)
    view = SplitLogits(logits[:, special.eot:], special.eot, ids, values, lse, frozenset([220]))
    view.mask_ids(np.array([220, special.eot]))  # the graph's mask and a special token: fine
    with pytest.raises(MxwError, match="suppress mask"):
        view.mask_ids(np.array([221]))  # a text token the graph did not mask
    with pytest.raises(MxwError, match="part of the text"):
        view.mask(0, 100, 200)
