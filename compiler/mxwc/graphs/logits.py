"""The decoders' last step: logits against the tied token embedding, and openai-whisper's greedy
choice under the suppress mask."""

from __future__ import annotations

from max.dtype import DType
from max.graph import TensorValue, ops

from mxwr.graphspec import Layout
from mxwr.quantization import EMBEDDING, SCALE

from .kernels import int8_kernel_fits, logits_choice, logits_choice_int8, logits_greedy, logits_kernel_fits
from .layers import Params


def tied_logits(p: Params, x: TensorValue) -> TensorValue:
    # The output projection is tied to the token embedding, as in openai-whisper.
    return ops.cast(x @ ops.transpose(p.widened(EMBEDDING), 0, 1), DType.float32)


def greedy(logits: TensorValue, suppress: TensorValue) -> tuple[TensorValue, TensorValue]:
    """Argmax over logits [B, V] + suppress [V] (0 or -inf), and its log-probability.

    As openai-whisper's GreedyDecoder: the log-softmax of the filtered logits at the argmax,
    which is -log(sum(exp(x - max x))). Ties go to the lowest token id on every device (MAX's
    argmax leaves GPU ties unspecified), as torch.argmax does.
    """
    x = logits + suppress
    top = ops.max(x, axis=-1)  # [B, 1]
    vocab = int(x.shape[-1])
    ids = ops.range(0, vocab, 1, dtype=DType.int64, device=x.device)
    candidates = ops.where(x == top, ids, ops.constant(vocab, DType.int64, x.device))
    token = ops.squeeze(ops.min(candidates, axis=-1), -1)  # [B]
    logprob = -ops.log(ops.sum(ops.exp(x - top), axis=-1))
    return token, ops.squeeze(logprob, -1)


def text_summary(logits: TensorValue, suppress: TensorValue, text_end: TensorValue,
                 top: int) -> tuple[TensorValue, TensorValue, TensorValue]:
    """The graph ops' `logits_choice` summary, where the kernel does not serve (an int8 target's
    many rows): under the suppress mask, the `top` largest logits of ids below text_end (MAX's
    top-k; its order among equal logits) and the log-sum-exp of those logits."""
    vocab = int(logits.shape[-1])
    ids = ops.range(0, vocab, 1, dtype=DType.int64, device=logits.device)
    ninf = ops.constant(float("-inf"), DType.float32, logits.device)
    text = ops.where(ids < text_end, logits + suppress, ninf)
    values, indices = ops.top_k(text, top, axis=-1)
    largest = ops.max(text, axis=-1)
    lse = ops.log(ops.sum(ops.exp(text - largest), axis=-1)) + largest
    return ops.cast(indices, DType.int64), values, ops.squeeze(lse, -1)


def logits_and_choice(p: Params, x: TensorValue, suppress: TensorValue, text_end: TensorValue | None,
                      layout: Layout, top: int) -> dict[str, TensorValue]:
    """Final hidden states x [R, d] -> the decoder graphs' outputs by name: `logits` [R, V] f32,
    `next_token` [R] and `next_logprob` [R] (openai-whisper's greedy choice under the suppress
    mask), and where the layout summarizes the text tokens, `text_top_ids`/`text_top_logits`
    [R, top] and `text_logsumexp` [R] (`mxwr.graphspec._choice`).

    Where the layout has our kernels and they fit, one kernel does it all (the same arithmetic:
    float32 sums in another order; the lowest id of the largest filtered logit) instead of
    MAX's product with the transposed embedding and the reductions of `greedy`.
    """
    rows, d = (int(n) for n in x.shape)
    int8 = p.encoding(EMBEDDING) is not None  # a quantized target's embedding is int8 (`mxwr.quantization`)
    names = ("logits", "next_token", "next_logprob", "text_top_ids", "text_top_logits", "text_logsumexp")
    if layout.text_summary and text_end is not None:
        if int8 and int8_kernel_fits(rows):
            return dict(zip(names, logits_choice_int8(x, p(EMBEDDING), p(EMBEDDING + SCALE), suppress, text_end, top)))
        if not int8:
            return dict(zip(names, logits_choice(x, p(EMBEDDING), suppress, text_end, top)))
        logits = tied_logits(p, x)
        return dict(zip(names, (logits, *greedy(logits, suppress), *text_summary(logits, suppress, text_end, top))))
    if not int8 and logits_kernel_fits(rows, d, layout):
        return dict(zip(names, logits_greedy(x, p(EMBEDDING), suppress)))
    logits = tied_logits(p, x)
    return dict(zip(names, (logits, *greedy(logits, suppress))))
