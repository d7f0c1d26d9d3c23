"""The decoders' last step: logits against the tied token embedding, and openai-whisper's greedy
choice under the suppress mask."""

from __future__ import annotations

from max.dtype import DType
from max.graph import TensorValue, ops

from mxwr.graphspec import Layout
from mxwr.quantization import SCALE

from .kernels import int8_kernel_fits, logits_greedy, logits_greedy_int8, logits_kernel_fits
from .layers import Params


EMBEDDING = "decoder.token_embedding.weight"


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


def logits_and_greedy(p: Params, x: TensorValue, suppress: TensorValue,
                      layout: Layout) -> tuple[TensorValue, TensorValue, TensorValue]:
    """Final hidden states x [R, d] -> (logits [R, V] f32, greedy token [R], its log-probability [R]).

    Where the layout has our kernels and they fit, `kernels.logits_greedy` instead of MAX's
    split-K gemv and the three reductions of `greedy`: the same arithmetic (float32 sums rounded
    to the model dtype; the lowest id of the largest filtered logit), in fewer and faster kernels.
    """
    rows, d = (int(n) for n in x.shape)
    if p.quantized(EMBEDDING) and int8_kernel_fits(rows):
        return logits_greedy_int8(x, p(EMBEDDING), p(EMBEDDING + SCALE), suppress)
    embedding = p(EMBEDDING)
    if p.quantized(EMBEDDING) or not logits_kernel_fits(rows, d, layout):
        logits = tied_logits(p, x)
        return (logits, *greedy(logits, suppress))
    return logits_greedy(x, embedding, suppress)
