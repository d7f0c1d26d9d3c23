"""One decoder step's logits as openai-whisper's logit filters and token choosers see them.

openai-whisper masks logits [N, V] in place (`logits[k, lo:hi] = -inf`), takes their
log-softmax and picks tokens. Two views give the same answers:

- `DenseLogits`: every logit on the host, in numpy (sampling at temperature > 0 draws from the
  whole distribution; GPU targets).
- `SplitLogits`: the text tokens (ids below end-of-text) summarized by the graph under the
  suppress mask it was given (their best few and their log-sum-exp, `graphspec._choice`), the
  special tokens (end-of-text, timestamps, ...) as logits on the host. Every mask openai-whisper's
  rules put on text tokens is the graph's mask or all of them, so a step costs the host a few
  thousand logits a row, not the vocabulary.

Log-probabilities are float32, as torch's `log_softmax(logits.float())`; the normalizer is
summed in float64.
"""

from __future__ import annotations

import numpy as np

from .errors import MxwError

NEG_INF = np.float32(-np.inf)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """float32 in, float32 out, as torch's `log_softmax(logits.float())`."""
    x = np.asarray(x, dtype=np.float32)
    top = x.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0)
    shifted = x - top
    return (shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))).astype(np.float32)


def logsumexp(x: np.ndarray) -> np.float64:
    """log(sum(exp(x))) of float32 values, summed in float64; -inf for none or all -inf."""
    if x.size == 0:
        return np.float64(-np.inf)
    top = np.float64(x.max())
    if not np.isfinite(top):
        return top
    return top + np.log(np.exp(x.astype(np.float64) - top).sum())


def top_k(x: np.ndarray, k: int) -> np.ndarray:
    """The indices of the k largest values of x, largest first and the lower index first among
    equals (torch.topk's order where values differ; it leaves equals to its implementation):
    the first k of a stable descending sort, without sorting all of x."""
    if k >= len(x):
        return np.argsort(-x, kind="stable")[:k]
    threshold = np.partition(x, len(x) - k)[len(x) - k]  # the k-th largest value
    above = np.flatnonzero(x > threshold)
    tied = np.flatnonzero(x == threshold)[: k - len(above)]  # the lowest ids among equals
    chosen = np.concatenate([above, tied])
    return chosen[np.argsort(-x[chosen], kind="stable")]


class DenseLogits:
    """Every logit of N rows, float32, on the host."""

    def __init__(self, logits: np.ndarray):
        self.logits = np.array(logits, dtype=np.float32)  # a copy: masked in place
        self.rows = len(self.logits)
        self._logprobs: np.ndarray | None = None

    def mask_ids(self, ids: np.ndarray) -> None:
        self.logits[:, ids] = NEG_INF
        self._logprobs = None

    def mask(self, row: int | slice, lo: int, hi: int | None = None) -> None:
        self.logits[row, lo:hi] = NEG_INF
        self._logprobs = None

    def logprobs(self) -> np.ndarray:
        if self._logprobs is None:
            self._logprobs = log_softmax(self.logits)
        return self._logprobs

    def logsumexp_logprobs(self, row: int, lo: int, hi: int | None = None) -> np.float32:
        """openai-whisper's `logsumexp(logprobs[row, lo:hi])`, in float32."""
        x = self.logprobs()[row, lo:hi]
        top = x.max()
        if not np.isfinite(top):
            return top
        return np.float32(top + np.log(np.exp(x - top).sum(dtype=np.float32)))

    def max_logprob(self, row: int, lo: int, hi: int | None = None) -> np.float32:
        return self.logprobs()[row, lo:hi].max()

    def argmax(self) -> np.ndarray:
        return self.logits.argmax(axis=-1)

    def logprob(self, rows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        return self.logprobs()[rows, tokens]

    def top_k(self, row: int, k: int) -> np.ndarray:
        return top_k(self.logprobs()[row], k)

    def finite(self) -> bool:
        return not np.isnan(self.logits).any()


class SplitLogits:
    """N rows of logits: the text tokens [0, text_end) as the graph summarized them under its
    suppress mask (`masked`: the text ids that mask made -inf), the rest as logits."""

    def __init__(self, special: np.ndarray, text_end: int, top_ids: np.ndarray, top_logits: np.ndarray,
                 text_logsumexp: np.ndarray, masked: frozenset[int]):
        self.special = np.array(special, dtype=np.float32)  # [N, V - text_end], masked in place
        self.text_end = text_end
        self.top_ids, self.top_logits = top_ids, top_logits  # [N, K], largest first
        self.text_logsumexp = text_logsumexp.astype(np.float64)
        self.masked = masked
        self.rows = len(self.special)
        self.text_gone = np.zeros(self.rows, dtype=bool)  # every text token masked
        self._normalizer: np.ndarray | None = None

    def mask_ids(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids)
        text = ids[ids < self.text_end]
        if not self.masked.issuperset(text.tolist()):
            raise MxwError("internal: a logit rule masks text tokens that the graph's suppress mask does not")
        self.special[:, ids[ids >= self.text_end] - self.text_end] = NEG_INF
        self._normalizer = None

    def mask(self, row: int | slice, lo: int, hi: int | None = None) -> None:
        hi = self.text_end + self.special.shape[1] if hi is None else hi
        if lo < self.text_end:
            if lo != 0 or hi < self.text_end:
                raise MxwError("internal: a logit rule masks part of the text tokens")
            self.text_gone[row] = True
        self.special[row, max(lo, self.text_end) - self.text_end : max(hi, self.text_end) - self.text_end] = NEG_INF
        self._normalizer = None

    def _text_lse(self) -> np.ndarray:
        return np.where(self.text_gone, -np.inf, self.text_logsumexp)

    def normalizer(self) -> np.ndarray:
        """Each row's log-sum-exp of every (masked) logit, float64."""
        if self._normalizer is None:
            top = self.special.max(axis=1)
            shift = np.where(np.isfinite(top), top, np.float32(0))
            with np.errstate(divide="ignore"):
                sums = np.exp((self.special - shift[:, None]).astype(np.float64)).sum(axis=1)
                special = np.log(sums) + shift
            self._normalizer = np.logaddexp(self._text_lse(), special)
        return self._normalizer

    def _logprob(self, row: int, logits: np.ndarray) -> np.ndarray:
        return (logits - self.normalizer()[row]).astype(np.float32)

    def logsumexp_logprobs(self, row: int, lo: int, hi: int | None = None) -> np.float32:
        """`logsumexp(logprobs[row, lo:hi])`; lo at or past text_end, or 0 with hi past it."""
        if lo < self.text_end and lo != 0:
            raise MxwError("internal: a logit rule sums part of the text tokens")
        hi = self.text_end + self.special.shape[1] if hi is None else hi
        parts = [logsumexp(self.special[row, max(lo, self.text_end) - self.text_end : hi - self.text_end])]
        if lo < self.text_end:
            parts.append(self._text_lse()[row])
        return np.float32(np.logaddexp.reduce(parts) - self.normalizer()[row])

    def max_logprob(self, row: int, lo: int, hi: int | None = None) -> np.float32:
        """`logprobs[row, lo:hi].max()`; the same ranges as `logsumexp_logprobs`."""
        if lo < self.text_end and lo != 0:
            raise MxwError("internal: a logit rule takes the largest of part of the text tokens")
        hi = self.text_end + self.special.shape[1] if hi is None else hi
        values = [self.special[row, max(lo, self.text_end) - self.text_end : hi - self.text_end].max(initial=NEG_INF)]
        if lo < self.text_end and not self.text_gone[row]:
            values.append(self.top_logits[row, 0])
        return self._logprob(row, np.float32(max(values)))

    def _candidates(self, row: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to k of the row's best text tokens and k of its best special ones: ids, logits."""
        special = top_k(self.special[row], k) if k < self.special.shape[1] else np.argsort(-self.special[row], kind="stable")
        ids, logits = [special + self.text_end], [self.special[row, special]]
        if not self.text_gone[row]:
            if k > self.top_ids.shape[1]:
                raise MxwError(f"internal: the graph summarizes {self.top_ids.shape[1]} text tokens a row, not {k}")
            ids.insert(0, self.top_ids[row, :k])
            logits.insert(0, self.top_logits[row, :k])
        return np.concatenate(ids), np.concatenate(logits)

    def argmax(self) -> np.ndarray:
        """Each row's largest logit (the lowest id among equals), as `logits.argmax(-1)`."""
        best = []
        for row in range(self.rows):
            ids, logits = self._candidates(row, 1)
            best.append(ids[np.lexsort((ids, -logits))[0]])
        return np.array(best, dtype=np.int64)

    def top_k(self, row: int, k: int) -> np.ndarray:
        """`top_k` of the row's log-probabilities: largest first, the lower id first among equals."""
        ids, logits = self._candidates(row, k)
        return ids[np.lexsort((ids, -self._logprob(row, logits)))[:k]]

    def logprob(self, rows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        rows, tokens = np.asarray(rows), np.asarray(tokens)
        special = tokens >= self.text_end
        values = self.special[rows, np.where(special, tokens - self.text_end, 0)]
        if not special.all():
            found = self.top_ids[rows] == tokens[:, None]
            if not (found.any(axis=1) | special).all() or (self.text_gone[rows] & ~special).any():
                raise MxwError("internal: a text token outside the graph's summary was chosen")
            values = np.where(special, values, self.top_logits[rows, found.argmax(axis=1)])
        return (values - self.normalizer()[rows]).astype(np.float32)

    def finite(self) -> bool:
        return not (np.isnan(self.special).any() or np.isnan(self.text_logsumexp).any()
                    or np.isnan(self.top_logits).any())

