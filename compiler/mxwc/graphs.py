"""The three MAX graphs of a Whisper model, traced at fixed shapes.

- `encoder_graph`: log-mel [B, n_mels, 3000] -> audio features, and every decoder layer's
  cross-attention K and V (computed once per window, never again per token).
- `prefill_graph`: the start-of-transcript prompt, padded to a fixed length -> logits of its last
  real position; writes the prompt's keys/values into the self-attention caches.
- `step_graph`: one token at a given position -> logits; writes that position of the caches in
  place (mutable buffers) and attends over them.
- `reorder_graph` (bundles built for several sequences per window, e.g. beam search): permutes
  the rows of the self-attention caches in place, on the device.
- `align_graph` (word timestamps): a whole token sequence -> the alignment heads' cross-attention
  scores and each next token's probability, as openai-whisper's `find_alignment` reads them.

Weights are graph weights named as in openai-whisper's state dict and kept in its layout
(linear weights [out, in], conv weights [out, in, k]); they are bound at load time, so one
compiled graph serves every checkpoint of the same shape. The arithmetic follows
openai-whisper's `model.py`: q and k each scaled by d_head^-0.25, LayerNorm and softmax in fp32,
exact (erf) GELU. On 16-bit GPU targets the step's cache write and the decoders' logits and
greedy token are custom ops of our own (`kernels/`, Mojo): the same arithmetic, the float32
sums of the logits in another order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from max.dtype import DType
from max.graph import BufferType, BufferValue, DeviceRef, Graph, TensorType, TensorValue, Weight, ops

from mxwr.constants import HOP_LENGTH, N_FFT, N_FRAMES, N_SAMPLES
from mxwr.dims import ModelDims

LN_EPS = 1e-5
MATMUL_TILE = 128  # see `attention`
KERNELS = Path(__file__).parent / "kernels"  # our own Mojo kernels (ops.custom), built into the graphs
LOGITS_MAX_ROWS = 4  # see `logits_and_greedy`
# Embedding rows per 256-thread block of the logits kernel: 4 for each of its 16-lane groups,
# whose loads are all in flight before any sum (H100: 32 or 128 were slower).
LOGIT_ROWS_PER_BLOCK = 64


@dataclass(frozen=True)
class GraphShape:
    """What is fixed at build time, besides the model's own dimensions."""

    batch: int  # windows per call (the encoder's batch)
    max_seq: int  # self-attention cache length, <= n_text_ctx
    prompt_len: int  # prefill length; longer prompts continue through the step graph
    group: int = 1  # sequences decoded per window (beams, best-of samples)

    @property
    def rows(self) -> int:
        """The decoder graphs' batch: every sequence of every window."""
        return self.batch * self.group


class Params:
    """Hands out graph weights by state-dict name, with the shapes of the weights to be bound."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], dtype: DType, device: DeviceRef):
        self._shapes = shapes
        self._dtype = dtype
        self._device = device
        self._values: dict[str, TensorValue] = {}

    def __call__(self, name: str) -> TensorValue:
        if name not in self._values:
            weight = Weight(name, self._dtype, self._shapes[name], self._device)
            self._values[name] = Graph.current.add_weight(weight)
        return self._values[name]


# ----------------------------------------------------------------------------------------------
# Layers


def linear(p: Params, name: str, x: TensorValue, bias: bool = True) -> TensorValue:
    y = times_weight(x, ops.transpose(p(f"{name}.weight"), 0, 1))
    return y + p(f"{name}.bias") if bias else y


def times_weight(x: TensorValue, w: TensorValue) -> TensorValue:
    """x [..., K] @ w [K, N].

    On tiled targets a product of several rows runs as a batch of two halves against two copies
    of w: MAX 26.7 hands a 16-bit matmul on NVIDIA to cuBLAS, and each such call zero-fills a
    32 MiB workspace first (10 us, twice the matmul), with the bias a kernel of its own; its
    batched matmul runs its own tensor-core kernel with the bias and GELU fused in. The copy of
    w costs one small kernel. On the H100 the prefill (32 rows) went from 835 to 645 us of GPU
    time and from 206 to 146 kernels; the encoder (1500 rows) from 1280 to 1250 us (its kernel is
    slower than cuBLAS's, but without the memsets). One row (the step) keeps the plain product,
    which MAX runs as a gemv.
    """
    rows = int(np.prod([int(d) for d in x.shape[:-1]]))
    k, n = (int(d) for d in w.shape)
    # The batched tiled kernel's own conditions (N a multiple of the tile, K of 32 and >= 128).
    tiled = tile_of(x.dtype, x.device) is not None and n % MATMUL_TILE == 0 and k % 32 == 0 and k >= MATMUL_TILE
    if not tiled or rows < 2 or rows % 2:
        return x @ w
    pair = ops.concat([ops.unsqueeze(w, 0), ops.unsqueeze(w, 0)], axis=0)
    y = ops.reshape(x, [2, rows // 2, k]) @ pair
    return ops.reshape(y, [*(int(d) for d in x.shape[:-1]), n])


def layer_norm(p: Params, name: str, x: TensorValue) -> TensorValue:
    # openai-whisper's LayerNorm runs in fp32 whatever the model dtype.
    gamma = ops.cast(p(f"{name}.weight"), DType.float32)
    beta = ops.cast(p(f"{name}.bias"), DType.float32)
    return ops.cast(ops.layer_norm(ops.cast(x, DType.float32), gamma, beta, LN_EPS), x.dtype)


def conv1d(p: Params, name: str, x: TensorValue, stride: int) -> TensorValue:
    """Kernel-3, padding-1 conv on channels-last x [B, T, C_in] -> [B, T / stride, C_out]."""
    weight = p(f"{name}.weight")  # [C_out, C_in, 3]
    if x.device != DeviceRef.CPU():
        return conv1d_as_matmul(weight, x, stride) + p(f"{name}.bias")
    rscf = ops.unsqueeze(ops.permute(weight, [2, 1, 0]), 0)  # [1, 3, C_in, C_out]
    y = ops.conv2d(ops.unsqueeze(x, 1), rscf, stride=(1, stride), padding=(0, 0, 1, 1))
    return ops.squeeze(y, 1) + p(f"{name}.bias")


def conv1d_as_matmul(weight: TensorValue, x: TensorValue, stride: int) -> TensorValue:
    """The same conv as one matmul over the three shifted copies of x (im2col): on GPUs MAX's
    direct conv kernel is an order of magnitude slower than its matmul for these shapes."""
    b, t, c = (int(d) for d in x.shape)
    zeros = ops.constant(np.zeros((b, 1, c), np.float32), DType.float32, x.device).cast(x.dtype)
    padded = ops.concat([zeros, x, zeros], axis=1)  # [B, T + 2, C_in]
    taps = ops.concat([padded[:, k : k + t, :] for k in range(3)], axis=-1)  # [B, T, 3 C_in]
    if stride > 1:
        taps = ops.reshape(taps, [b, t // stride, stride, 3 * c])[:, :, 0, :]
    kernel = ops.reshape(ops.permute(weight, [2, 1, 0]), [3 * c, int(weight.shape[0])])  # [3 C_in, C_out]
    return times_weight(taps, kernel)


def split_heads(x: TensorValue, n_head: int) -> TensorValue:
    b, t, d = x.shape
    return ops.permute(ops.reshape(x, [b, t, n_head, int(d) // n_head]), [0, 2, 1, 3])


def merge_heads(x: TensorValue) -> TensorValue:
    b, h, t, dh = x.shape
    return ops.reshape(ops.permute(x, [0, 2, 1, 3]), [b, t, int(h) * int(dh)])


def attention(q: TensorValue, k: TensorValue, v: TensorValue, mask: TensorValue | None = None,
              tile: int | None = None):
    """Softmax(q k^T + mask) v over [B, H, T, dh] heads; q and k arrive pre-scaled.

    With `tile` (GPU targets) the operands are zero-padded to [.., round_up(S), round_up(dh)]
    first (k and v may arrive padded): MAX's batched matmul on NVIDIA runs its tiled kernel only
    when N is a multiple of 128 and K >= 128, and every whisper head is 64 wide, so unpadded
    attention falls to a naive kernel ~50x slower. Zero columns add nothing to q k^T; padded
    key slots are masked (a given mask must already span them); the result is sliced back.
    """
    if tile is not None:
        dh, keys = int(q.shape[-1]), int(k.shape[-2])
        width, slots = round_up(int(k.shape[-1]), tile), round_up(keys, tile)
        q, k, v = pad_to(q, -1, width), pad_to(pad_to(k, -1, width), -2, slots), pad_to(pad_to(v, -1, width), -2, slots)
        if mask is None and slots > keys:
            mask = key_mask(keys, slots, q.device)
    scores = ops.cast(q @ ops.transpose(k, -1, -2), DType.float32)
    if mask is not None:
        scores = scores + mask
    out = ops.cast(ops.softmax(scores), v.dtype) @ v
    return out if tile is None else out[..., :dh]


def single_query_attention(q: TensorValue, k: TensorValue, v: TensorValue, mask: TensorValue | None = None,
                           v_transposed: bool = False) -> TensorValue:
    """`attention` for one query per head (the decoder step), q [R, H, 1, dh] over k, v
    [R, H, S, w >= dh] (tile-padded widths are read up to dh), as float32 products and sums.
    `v_transposed`: v arrives as [R, H, w, S], so P.V sums along rows, like q k^T.

    A batched matmul with one query row wastes its 128-row tile and, for P.V, runs a handful of
    thread blocks down the whole key axis; the sums spread over every (head, key) and fuse their
    operands' slicing and casts. P is rounded to the model dtype first, as the matmul path does.
    """
    r, h, _, dh = (int(d) for d in q.shape)
    f32 = DType.float32
    k = k[..., :dh]
    slots = int(k.shape[-2])
    scores = ops.reshape(ops.sum(ops.cast(q, f32) * ops.cast(k, f32), axis=-1), [r, h, 1, slots])
    if mask is not None:
        scores = scores + mask
    weights = ops.cast(ops.cast(ops.softmax(scores), v.dtype), f32)
    if v_transposed:
        out = ops.reshape(ops.sum(weights * ops.cast(v[:, :, :dh, :], f32), axis=-1), [r, h, 1, dh])
    else:
        out = ops.sum(ops.reshape(weights, [r, h, slots, 1]) * ops.cast(v[..., :dh], f32), axis=-2)
    return ops.cast(out, v.dtype)


def split_single(x: TensorValue, n_head: int) -> TensorValue:
    """`split_heads` of one position [R, 1, d]: a reshape, the order in memory is already right."""
    r, _, d = (int(s) for s in x.shape)
    return ops.reshape(x, [r, n_head, 1, d // n_head])


def merge_single(x: TensorValue) -> TensorValue:
    r, h, _, dh = (int(s) for s in x.shape)
    return ops.reshape(x, [r, 1, h * dh])


def causal_mask(n: int, dtype: DType, device: DeviceRef) -> TensorValue:
    """[n, keys] f32: query t sees keys 0..t; keys spans n, padded to the tile on GPUs."""
    tile = tile_of(dtype, device)
    keys = n if tile is None else round_up(n, tile)
    return ops.constant(np.triu(np.full((n, keys), -np.inf, dtype=np.float32), 1), DType.float32, device)


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def tile_of(dtype: DType, device: DeviceRef) -> int | None:
    """The padding granularity of attention operands (see `attention`): none on CPU, and none
    for float32 on GPUs, where the tiled kernel's other summation order changed one dev clip's
    tokens (pv_test_de) while the untiled kernels give the CPU's tokens on every clip."""
    return None if device == DeviceRef.CPU() or dtype == DType.float32 else MATMUL_TILE


def pad_to(x: TensorValue, axis: int, size: int) -> TensorValue:
    """x with zeros appended along `axis` up to `size`."""
    n = int(x.shape[axis])
    if n == size:
        return x
    shape = [int(d) for d in x.shape]
    shape[axis] = size - n
    zeros = ops.broadcast_to(ops.constant(0.0, x.dtype, x.device), shape)
    return ops.concat([x, zeros], axis=axis)


def key_mask(keys: int, slots: int, device: DeviceRef) -> TensorValue:
    """[slots] f32: 0 for the first `keys` key slots, -inf for the padding after them."""
    mask = np.zeros(slots, np.float32)
    mask[keys:] = -np.inf
    return ops.constant(mask, DType.float32, device)


def head_scale(dims_state: int, n_head: int) -> float:
    return float((dims_state // n_head) ** -0.25)


def mlp(p: Params, name: str, x: TensorValue) -> TensorValue:
    return linear(p, f"{name}.mlp.2", ops.gelu(linear(p, f"{name}.mlp.0", x)))


# ----------------------------------------------------------------------------------------------
# Front end (log-mel on the device)


def stft_basis() -> np.ndarray:
    """The Hann-windowed real DFT [N_FFT, 2 * (N_FFT // 2 + 1)]: frames @ basis gives the real
    parts in the first half of the columns and the imaginary parts in the second."""
    n = np.arange(N_FFT)
    k = np.arange(N_FFT // 2 + 1)
    window = np.hanning(N_FFT + 1)[:-1]  # torch.hann_window (periodic)
    angle = 2 * np.pi * np.outer(n, k) / N_FFT
    return (np.concatenate([np.cos(angle), -np.sin(angle)], axis=1) * window[:, None]).astype(np.float32)


def frontend_graph(
    dims: ModelDims, shape: GraphShape, shapes: Mapping[str, tuple[int, ...]], dtype: DType,
    device: DeviceRef,
) -> Graph:
    """Reflect-padded audio [B, N_SAMPLES + N_FFT] f32 -> log-mel [B, n_mels, 3000] f32.

    openai-whisper's `log_mel_spectrogram` on the device, so a GPU target never computes mel on
    the host: frames (hop 160, width 400) times the windowed DFT basis, |.|^2, the mel
    filterbank, log10, the (max - 8) floor and the (x + 4) / 4 scaling. Always float32.
    """
    audio_type = TensorType(DType.float32, [shape.batch, N_SAMPLES + N_FFT], device)
    with Graph("frontend", input_types=[audio_type]) as graph:
        p = Params(shapes, DType.float32, device)
        # Frame t is samples [160 t, 160 t + 400): two whole hop-sized blocks and half of a third.
        n_blocks = N_FRAMES + 2
        blocks = ops.reshape(graph.inputs[0].tensor[:, : n_blocks * HOP_LENGTH], [shape.batch, n_blocks, HOP_LENGTH])
        rest = N_FFT - 2 * HOP_LENGTH
        frames = ops.concat(
            [blocks[:, 0:N_FRAMES, :], blocks[:, 1 : N_FRAMES + 1, :], blocks[:, 2 : N_FRAMES + 2, :rest]], axis=-1
        )  # [B, 3000, 400]; torch.stft's 3001st frame is dropped
        spec = frames @ p("stft_basis")  # [B, 3000, 2 * bins]
        bins = N_FFT // 2 + 1
        real, imag = spec[:, :, :bins], spec[:, :, bins:]
        mel = (real * real + imag * imag) @ ops.transpose(p("mel_filters"), 0, 1)  # [B, 3000, n_mels]
        floor = ops.constant(1e-10, DType.float32, device)
        log_spec = ops.log(ops.max(mel, floor)) * float(1 / np.log(10))
        top = ops.max(ops.max(log_spec, axis=-1), axis=-2)  # [B, 1, 1]
        log_spec = ops.max(log_spec, top - 8.0)
        graph.output(ops.permute((log_spec + 4.0) / 4.0, [0, 2, 1]))
    return graph


# ----------------------------------------------------------------------------------------------
# Encoder


def encoder_graph(
    dims: ModelDims, shape: GraphShape, shapes: Mapping[str, tuple[int, ...]], dtype: DType,
    device: DeviceRef,
) -> Graph:
    mel_type = TensorType(DType.float32, [shape.batch, dims.n_mels, N_FRAMES], device)
    with Graph("encoder", input_types=[mel_type]) as graph:
        p = Params(shapes, dtype, device)
        mel = ops.cast(graph.inputs[0].tensor, dtype)
        x = ops.permute(mel, [0, 2, 1])  # channels-last for the convolutions
        x = ops.gelu(conv1d(p, "encoder.conv1", x, stride=1))
        x = ops.gelu(conv1d(p, "encoder.conv2", x, stride=2))
        x = x + p("encoder.positional_embedding")
        scale = head_scale(dims.n_audio_state, dims.n_audio_head)
        for i in range(dims.n_audio_layer):
            name = f"encoder.blocks.{i}"
            h = layer_norm(p, f"{name}.attn_ln", x)
            q = split_heads(linear(p, f"{name}.attn.query", h), dims.n_audio_head) * scale
            k = split_heads(linear(p, f"{name}.attn.key", h, bias=False), dims.n_audio_head) * scale
            v = split_heads(linear(p, f"{name}.attn.value", h), dims.n_audio_head)
            x = x + linear(p, f"{name}.attn.out", merge_heads(attention(q, k, v, tile=tile_of(dtype, device))))
            x = x + mlp(p, name, layer_norm(p, f"{name}.mlp_ln", x))
        features = layer_norm(p, "encoder.ln_post", x)

        # Cross-attention keys/values depend only on the audio: compute them once per window.
        text_scale = head_scale(dims.n_text_state, dims.n_text_head)
        cross_k, cross_v = [], []
        for i in range(dims.n_text_layer):
            name = f"decoder.blocks.{i}.cross_attn"
            k = linear(p, f"{name}.key", features, bias=False)
            cross_k.append(_cross_layout(split_heads(k, dims.n_text_head) * text_scale))
            v = split_heads(linear(p, f"{name}.value", features), dims.n_text_head)
            cross_v.append(_cross_layout(v, transposed=tile_of(dtype, device) is not None))
        graph.output(
            ops.cast(features, DType.float32), ops.stack(cross_k, 0), ops.stack(cross_v, 0)
        )
    return graph


# ----------------------------------------------------------------------------------------------
# Decoder


def _cache_type(dims: ModelDims, shape: GraphShape, dtype: DType, device: DeviceRef) -> BufferType:
    # Never padded: the step reads it with `single_query_attention`, which needs no tile, and
    # the prefill attends over its own keys/values before it stores them.
    d_head = dims.n_text_state // dims.n_text_head
    return BufferType(dtype, [shape.rows, dims.n_text_head, shape.max_seq, d_head], device)


def _cross_types(dims: ModelDims, shape: GraphShape, dtype: DType, device: DeviceRef) -> list[TensorType]:
    """Cross K and V as stored (`_cross_layout`)."""
    d_head = dims.n_text_state // dims.n_text_head
    slots, width = _tiled(dims.n_audio_ctx, d_head, dtype, device)
    lead = [dims.n_text_layer, shape.batch, dims.n_text_head]
    v = [width, slots] if tile_of(dtype, device) is not None else [slots, width]
    return [TensorType(dtype, [*lead, slots, width], device), TensorType(dtype, [*lead, *v], device)]


def _tiled(slots: int, width: int, dtype: DType, device: DeviceRef) -> tuple[int, int]:
    """Key/value slots and head width as stored: padded to the matmul tile on GPUs (`attention`)."""
    tile = tile_of(dtype, device)
    return (slots, width) if tile is None else (round_up(slots, tile), round_up(width, tile))


def _cross_layout(x: TensorValue, transposed: bool = False) -> TensorValue:
    """One layer's cross K or V [B, H, n_audio_ctx, dh] as stored: padded on tiled targets, where
    V is also `transposed` to [B, H, width, slots], so that the step's P.V sums along rows."""
    slots, width = _tiled(int(x.shape[-2]), int(x.shape[-1]), x.dtype, x.device)
    x = pad_to(pad_to(x, -1, width), -2, slots)
    return ops.transpose(x, -1, -2) if transposed else x


def cross_attention(group: int, n_audio_ctx: int, single_query: bool = False):
    """Attention of the decoder's queries [B*G, H, T, dh] over one window's cross K/V [B, H, S, dh].

    The G sequences of a window share its audio: their queries are folded into the query
    length, so the cross K/V are stored (and read) once per window, not once per sequence.
    `single_query` (the step on tiled targets, one sequence per window): `single_query_attention`.
    """

    def attend(q: TensorValue, k: TensorValue, v: TensorValue) -> TensorValue:
        tile = tile_of(q.dtype, q.device)
        # Stored cross K/V may be padded (GPU): their padding slots are masked out. Tiled
        # targets store V transposed (`_cross_layout`).
        mask = None if tile is None else key_mask(n_audio_ctx, int(k.shape[-2]), q.device)
        if single_query and group == 1:
            return single_query_attention(q, k, v, mask, v_transposed=tile is not None)
        if tile is not None:
            v = ops.transpose(v, -1, -2)
        if group == 1:
            return attention(q, k, v, mask, tile)
        rows, h, t, dh = (int(d) for d in q.shape)
        b = rows // group
        folded = ops.reshape(ops.permute(ops.reshape(q, [b, group, h, t, dh]), [0, 2, 1, 3, 4]), [b, h, group * t, dh])

        def unfold(x: TensorValue) -> TensorValue:
            last = int(x.shape[-1])
            return ops.reshape(ops.permute(ops.reshape(x, [b, h, group, t, last]), [0, 2, 1, 3, 4]), [rows, h, t, last])

        return unfold(attention(folded, k, v, mask, tile))

    return attend


def _decoder(
    p: Params, dims: ModelDims, x: TensorValue, cross_k: TensorValue, cross_v: TensorValue,
    self_attend, group: int = 1, scores: dict[int, TensorValue] | None = None,
    single_query: bool = False,
) -> TensorValue:
    """The decoder blocks on embedded tokens x [B*G, T, d]; returns the final hidden states.

    `scores`, when given, receives each layer's cross-attention scores (q k^T, before softmax;
    ungrouped decoders only). `single_query` (T = 1: the step on tiled targets) splits and merges
    heads by reshapes and attends over the cross K/V with `single_query_attention`.
    """
    n_head = dims.n_text_head
    scale = head_scale(dims.n_text_state, n_head)
    cross = cross_attention(group, dims.n_audio_ctx, single_query)
    split, merge = (split_single, merge_single) if single_query else (split_heads, merge_heads)
    for i in range(dims.n_text_layer):
        name = f"decoder.blocks.{i}"
        h = layer_norm(p, f"{name}.attn_ln", x)
        q = split(linear(p, f"{name}.attn.query", h), n_head) * scale
        k = split(linear(p, f"{name}.attn.key", h, bias=False), n_head) * scale
        v = split(linear(p, f"{name}.attn.value", h), n_head)
        x = x + linear(p, f"{name}.attn.out", merge(self_attend(i, q, k, v)))
        h = layer_norm(p, f"{name}.cross_attn_ln", x)
        q = split(linear(p, f"{name}.cross_attn.query", h), n_head) * scale
        if scores is not None:
            keys = cross_k[i]
            qk = pad_to(q, -1, int(keys.shape[-1])) @ ops.transpose(keys, -1, -2)
            scores[i] = qk if int(keys.shape[-2]) == dims.n_audio_ctx else qk[..., : dims.n_audio_ctx]
        x = x + linear(p, f"{name}.cross_attn.out", merge(cross(q, cross_k[i], cross_v[i])))
        x = x + mlp(p, name, layer_norm(p, f"{name}.mlp_ln", x))
    return layer_norm(p, "decoder.ln", x)


def _logits(p: Params, x: TensorValue) -> TensorValue:
    # The output projection is tied to the token embedding, as in openai-whisper.
    embedding = p("decoder.token_embedding.weight")
    return ops.cast(x @ ops.transpose(embedding, 0, 1), DType.float32)


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


def logits_and_greedy(p: Params, x: TensorValue, suppress: TensorValue) -> tuple[TensorValue, TensorValue, TensorValue]:
    """Final hidden states x [R, d] -> (logits [R, V] f32, greedy token [R], its log-probability [R]).

    On tiled targets, for a few rows, two kernels of our own (kernels/logits.mojo) instead of
    MAX's split-K gemv and the three reductions of `greedy`: the same arithmetic (float32 sums
    rounded to the model dtype; the lowest id of the largest filtered logit). On the H100 a
    batch-1 step's 49 us for these became 30 us. Its sums run on CUDA cores, so a batch's 16 or
    more rows stay with MAX's matmul (the kernel made batch-16 throughput 18% lower).
    """
    rows, d = (int(n) for n in x.shape)
    embedding = p("decoder.token_embedding.weight")
    vocab = int(embedding.shape[0])
    if not logits_kernel_fits(rows, d, x.dtype, x.device):
        logits = _logits(p, x)
        return (logits, *greedy(logits, suppress))
    blocks = -(-vocab // LOGIT_ROWS_PER_BLOCK)
    f32 = DType.float32
    out_types = [TensorType(f32, [rows, vocab], x.device), TensorType(DType.int64, [rows], x.device),
                 TensorType(f32, [rows], x.device), TensorType(f32, [rows, blocks], x.device),
                 TensorType(DType.int32, [rows, blocks], x.device)]
    outputs = ops.custom("mxw_logits_greedy", x.device, [x, embedding, suppress], out_types,
                         {"rows": rows, "d": d, "vocab": vocab, "per_block": LOGIT_ROWS_PER_BLOCK})
    return outputs[0].tensor, outputs[1].tensor, outputs[2].tensor


def uses_kernels(dtype: DType, device: DeviceRef) -> bool:
    """Our own kernels serve the 16-bit GPU targets (and CPU tests that force their tiling)."""
    return tile_of(dtype, device) is not None


def logits_kernel_fits(rows: int, d: int, dtype: DType, device: DeviceRef) -> bool:
    return uses_kernels(dtype, device) and d % MATMUL_TILE == 0 and rows <= LOGITS_MAX_ROWS


def decoder_input_types(dims: ModelDims, shape: GraphShape, dtype: DType, device: DeviceRef):
    """Caches (K then V for each layer) and cross K/V, shared by the prefill and step graphs."""
    caches = [_cache_type(dims, shape, dtype, device) for _ in range(2 * dims.n_text_layer)]
    cross = _cross_types(dims, shape, dtype, device)
    return caches, cross


def prefill_graph(
    dims: ModelDims, shape: GraphShape, shapes: Mapping[str, tuple[int, ...]], dtype: DType,
    device: DeviceRef,
) -> Graph:
    """Inputs: tokens [B, P] int64 (the prompt, padded), logit_positions [2] int64, suppress
    [n_vocab] f32 (0 or -inf, for the first sampled token), caches, cross K/V.

    Outputs logits [B, 2, n_vocab] at the two given positions — the last real prompt position
    (to sample the first token) and the start-of-transcript position (for the no-speech
    probability) — and the greedy next token [B] with its log-probability [B]. Positions past the real prompt hold padding; their cache entries are
    overwritten by the step graph before anything attends to them.
    """
    P = shape.prompt_len
    caches, cross = decoder_input_types(dims, shape, dtype, device)
    inputs = [
        TensorType(DType.int64, [shape.rows, P], device),
        TensorType(DType.int64, [2], device),
        TensorType(DType.float32, [dims.n_vocab], device),
        *caches,
        *cross,
    ]
    with Graph("prefill", input_types=inputs, custom_extensions=[KERNELS] if uses_kernels(dtype, device) else []) as graph:
        p = Params(shapes, dtype, device)
        tokens, logit_positions, suppress = (v.tensor for v in graph.inputs[:3])
        cache = [v.buffer for v in graph.inputs[3 : 3 + len(caches)]]
        cross_k, cross_v = (v.tensor for v in graph.inputs[3 + len(caches) :])
        L = dims.n_text_layer

        tile = tile_of(dtype, device)
        mask = causal_mask(P, dtype, device)

        def self_attend(i: int, q, k, v):
            for buffer, x in ((cache[i], k), (cache[L + i], v)):
                ops.buffer_store_slice(buffer, x, [slice(None), slice(None), slice(0, P), slice(None)])
            return attention(q, k, v, mask, tile)

        x = ops.gather(p("decoder.token_embedding.weight"), tokens, axis=0)
        positions = ops.slice_tensor(p("decoder.positional_embedding"), [slice(0, P), slice(None)])
        x = _decoder(p, dims, x + positions, cross_k, cross_v, self_attend, shape.group)
        chosen = ops.gather(x, logit_positions, axis=1)  # [B, 2, d]
        if logits_kernel_fits(2 * shape.rows, dims.n_text_state, dtype, device):
            # Both positions of every row as rows of their own; the token is the last position's.
            flat = ops.reshape(chosen, [2 * shape.rows, dims.n_text_state])
            logits, token, logprob = logits_and_greedy(p, flat, suppress)
            graph.output(ops.reshape(logits, [shape.rows, 2, dims.n_vocab]), token[::2], logprob[::2])
        else:
            logits = _logits(p, chosen)  # [B, 2, V]
            graph.output(logits, *greedy(logits[:, 0, :], suppress))
    return graph


def step_graph(
    dims: ModelDims, shape: GraphShape, shapes: Mapping[str, tuple[int, ...]], dtype: DType,
    device: DeviceRef,
) -> Graph:
    """Inputs: token [B] int64, position [1] int64, suppress [n_vocab] f32, caches (mutated in
    place), cross K/V — all on the device.

    Outputs logits [B, n_vocab] for the token at `position`, the greedy next token [B] and its
    log-probability [B], having written the token's keys/values into the caches at `position`.
    Only the token (and its log-probability) need cross to the host. Nothing runs on the host:
    the graph can be recorded once as a device graph and replayed at every position.
    """
    caches, cross = decoder_input_types(dims, shape, dtype, device)
    inputs = [
        TensorType(DType.int64, [shape.rows], device),
        TensorType(DType.int64, [1], device),
        TensorType(DType.float32, [dims.n_vocab], device),
        *caches,
        *cross,
    ]
    kernels = uses_kernels(dtype, device)
    with Graph("step", input_types=inputs, custom_extensions=[KERNELS] if kernels else []) as graph:
        p = Params(shapes, dtype, device)
        token, position, suppress = (v.tensor for v in graph.inputs[:3])
        cache: list[BufferValue] = [v.buffer for v in graph.inputs[3 : 3 + len(caches)]]
        cross_k, cross_v = (v.tensor for v in graph.inputs[3 + len(caches) :])
        L = dims.n_text_layer

        # Attend to cache slots 0..position; later slots hold stale or padding entries.
        n_slots = int(caches[0].shape[-2])
        slots = ops.range(0, n_slots, 1, dtype=DType.int64, device=device)
        ninf = ops.constant(float("-inf"), DType.float32, device)
        zero = ops.constant(0.0, DType.float32, device)
        mask = ops.where(slots > position, ninf, zero)
        if not kernels:
            # The new key/value goes to slot `position` by selection, not by a slice store: a
            # slice's bounds are host values, which a recorded device graph could not change.
            here = ops.reshape(slots == position, [1, 1, n_slots, 1])

        # On tiled targets one query per row is cheaper as sums than as a batched matmul.
        single_query = kernels

        def self_attend(i: int, q, k, v):
            if kernels:  # the new slot alone, in place; the attention reads the caches where they are
                r, h, s, dh = (int(n) for n in caches[i].shape)
                ops.inplace_custom("mxw_cache_write", device, [cache[i], cache[L + i], k, v, position],
                                   parameters={"rows_heads": r * h, "slots": s, "dh": dh})
                keys, values = ops.buffer_load(cache[i]), ops.buffer_load(cache[L + i])
            else:
                keys = ops.where(here, k, ops.buffer_load(cache[i]))
                values = ops.where(here, v, ops.buffer_load(cache[L + i]))
                ops.buffer_store(cache[i], keys)
                ops.buffer_store(cache[L + i], values)
            if single_query:
                return single_query_attention(q, keys, values, mask)
            return attention(q, keys, values, mask, tile_of(dtype, device))

        x = ops.gather(p("decoder.token_embedding.weight"), ops.unsqueeze(token, 1), axis=0)
        x = x + ops.gather(p("decoder.positional_embedding"), position, axis=0)
        x = _decoder(p, dims, x, cross_k, cross_v, self_attend, shape.group, single_query=single_query)
        graph.output(*logits_and_greedy(p, ops.squeeze(x, 1), suppress))
    return graph


def reorder_graph(
    dims: ModelDims, shape: GraphShape, shapes: Mapping[str, tuple[int, ...]], dtype: DType,
    device: DeviceRef,
) -> Graph:
    """Inputs: source_rows [B*G] int64, caches (permuted in place: row r takes row source_rows[r]).

    Beam search keeps the best continuations, which may come from any beam of the window; the
    caches follow them on the device, so no cache ever crosses to the host.
    """
    caches, _ = decoder_input_types(dims, shape, dtype, device)
    inputs = [TensorType(DType.int64, [shape.rows], device), *caches]
    with Graph("reorder", input_types=inputs) as graph:
        rows = graph.inputs[0].tensor
        for value in graph.inputs[1:]:
            ops.buffer_store(value.buffer, ops.gather(ops.buffer_load(value.buffer), rows, axis=0))
        graph.output()
    return graph


def align_graph(
    dims: ModelDims, shape: GraphShape, shapes: Mapping[str, tuple[int, ...]], dtype: DType,
    device: DeviceRef, heads: list[list[int]], eot: int,
) -> Graph:
    """Inputs: tokens [B, max_seq] int64 (a whole sequence, padded), cross K/V.

    Outputs the alignment heads' cross-attention scores [B, n_heads, max_seq, n_audio_ctx] f32
    (q k^T before softmax, as openai-whisper's hooks capture them) and next_token_probs
    [B, max_seq] f32: at position t, the probability of tokens[t + 1] under the softmax of the
    logits over the text tokens (ids below end-of-text), as `find_alignment` weighs words.
    Padding never reaches a real position: the self-attention is causal.
    """
    S = shape.max_seq
    inputs = [TensorType(DType.int64, [shape.batch, S], device), *_cross_types(dims, shape, dtype, device)]
    with Graph("align", input_types=inputs) as graph:
        p = Params(shapes, dtype, device)
        tokens, cross_k, cross_v = (v.tensor for v in graph.inputs)
        mask = causal_mask(S, dtype, device)
        x = ops.gather(p("decoder.token_embedding.weight"), tokens, axis=0)
        x = x + ops.slice_tensor(p("decoder.positional_embedding"), [slice(0, S), slice(None)])
        scores: dict[int, TensorValue] = {}
        attend = lambda i, q, k, v: attention(q, k, v, mask, tile_of(dtype, device))  # noqa: E731
        x = _decoder(p, dims, x, cross_k, cross_v, attend, scores=scores)
        qk = ops.stack([scores[layer][:, head, :, :] for layer, head in heads], axis=1)

        logits = _logits(p, x)[:, :, :eot]  # [B, S, eot]
        log_z = ops.log(ops.sum(ops.exp(logits - ops.max(logits, axis=-1)), axis=-1)) + ops.max(logits, axis=-1)
        following = ops.concat([tokens[:, 1:], ops.constant(np.zeros((shape.batch, 1), np.int64), DType.int64, device)], axis=1)
        following = ops.min(following, ops.constant(eot - 1, DType.int64, device))  # special ids: never read
        flat = ops.reshape(logits, [shape.batch * S * eot])
        index = ops.reshape(following, [shape.batch * S]) + ops.range(0, shape.batch * S * eot, eot, dtype=DType.int64, device=device)
        picked = ops.reshape(ops.gather(flat, index, axis=0), [shape.batch, S, 1])
        graph.output(ops.cast(qk, DType.float32), ops.squeeze(ops.exp(picked - log_z), -1))
    return graph
