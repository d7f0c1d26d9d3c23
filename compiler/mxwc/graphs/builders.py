"""The graph builders, one per role of `mxwr.graphspec.SPECS`: each takes a `GraphContext`
and returns its traced graph, its inputs and outputs named and typed by the role's spec."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from max.dtype import DType
from max.graph import BufferValue, Graph, TensorValue, ops

from mxwr.constants import HOP_LENGTH, N_FFT, N_FRAMES
from mxwr.graphspec import SPECS, cache_names, round_up, summary_width

from .attention import attention, causal_mask, merge_heads, single_query_attention, split_heads
from .context import GraphContext
from .decoder import decoder_blocks
from .kernels import cache_fork, cache_reorder, cache_write, encoder_attention, step_self_attention
from .layers import conv1d, embed, head_scale, layer_norm, linear, mlp
from .layout import cross_layout
from .logits import logits_and_choice, tied_logits


def _caches(ctx: GraphContext, inputs: Mapping[str, Any], prefix: str = "") -> list[Any]:
    """The self-attention caches: layer i's K at i, its V at n_text_layer + i."""
    return [inputs[prefix + name] for name in cache_names(ctx.dims.n_text_layer)]


def _choice(ctx: GraphContext, p: Any, x: TensorValue, inputs: Mapping[str, Any]) -> dict[str, TensorValue]:
    """The decoder graphs' outputs for final hidden states x [R, d] (`logits_and_choice`)."""
    return logits_and_choice(p, x, inputs["suppress"], inputs.get("text_end"), ctx.layout, summary_width(ctx.shape))


def stft_basis() -> np.ndarray:
    """The Hann-windowed real DFT [N_FFT, 2 * (N_FFT // 2 + 1)]: frames @ basis gives the real
    parts in the first half of the columns and the imaginary parts in the second."""
    n = np.arange(N_FFT)
    k = np.arange(N_FFT // 2 + 1)
    window = np.hanning(N_FFT + 1)[:-1]  # torch.hann_window (periodic)
    angle = 2 * np.pi * np.outer(n, k) / N_FFT
    return (np.concatenate([np.cos(angle), -np.sin(angle)], axis=1) * window[:, None]).astype(np.float32)


def frontend_graph(ctx: GraphContext) -> Graph:
    """openai-whisper's `log_mel_spectrogram` on the device, so a GPU target never computes mel
    on the host: frames (hop 160, width 400) times the windowed DFT basis, |.|^2, the mel
    filterbank, log10, the (max - 8) floor and the (x + 4) / 4 scaling. Always float32.
    """
    batch = ctx.shape.batch
    with ctx.open("frontend") as (graph, inputs):
        p = ctx.params(DType.float32)
        # Frame t is samples [160 t, 160 t + 400): two whole hop-sized blocks and half of a third.
        n_blocks = N_FRAMES + 2
        blocks = ops.reshape(inputs["padded_audio"][:, : n_blocks * HOP_LENGTH], [batch, n_blocks, HOP_LENGTH])
        rest = N_FFT - 2 * HOP_LENGTH
        frames = ops.concat(
            [blocks[:, 0:N_FRAMES, :], blocks[:, 1 : N_FRAMES + 1, :], blocks[:, 2 : N_FRAMES + 2, :rest]], axis=-1
        )  # [B, 3000, 400]; torch.stft's 3001st frame is dropped
        spec = frames @ p("stft_basis")  # [B, 3000, 2 * bins]
        bins = N_FFT // 2 + 1
        real, imag = spec[:, :, :bins], spec[:, :, bins:]
        mel = (real * real + imag * imag) @ ops.transpose(p("mel_filters"), 0, 1)  # [B, 3000, n_mels]
        floor = ops.constant(1e-10, DType.float32, ctx.device)
        log_spec = ops.log(ops.max(mel, floor)) * float(1 / np.log(10))
        top = ops.max(ops.max(log_spec, axis=-1), axis=-2)  # [B, 1, 1]
        log_spec = ops.max(log_spec, top - 8.0)
        ctx.output(graph, mel=ops.permute((log_spec + 4.0) / 4.0, [0, 2, 1]))
    return graph


def encoder_graph(ctx: GraphContext) -> Graph:
    """The audio encoder, then every decoder layer's cross K and V: they depend only on the
    audio, so they are computed once per window and stored as the layout says."""
    dims, tile = ctx.dims, ctx.layout.tile
    with ctx.open("encoder") as (graph, inputs):
        p = ctx.params()
        mel = ops.cast(inputs["mel"], ctx.dtype)
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
            attended = encoder_attention(q, k, v) if ctx.layout.cpu_kernels else attention(q, k, v, tile=tile)
            x = x + linear(p, f"{name}.attn.out", merge_heads(attended))
            x = x + mlp(p, name, layer_norm(p, f"{name}.mlp_ln", x))
        features = layer_norm(p, "encoder.ln_post", x)

        stored = ctx.geometry.cross_slots_width
        text_scale = head_scale(dims.n_text_state, dims.n_text_head)
        cross_k, cross_v = [], []
        for i in range(dims.n_text_layer):
            name = f"decoder.blocks.{i}.cross_attn"
            k = linear(p, f"{name}.key", features, bias=False)
            cross_k.append(cross_layout(split_heads(k, dims.n_text_head) * text_scale, stored))
            v = split_heads(linear(p, f"{name}.value", features), dims.n_text_head)
            cross_v.append(cross_layout(v, stored, transposed=ctx.layout.cross_v_transposed))
        ctx.output(graph, audio_features=ops.cast(features, DType.float32), cross_k=ops.stack(cross_k, 0),
                   cross_v=ops.stack(cross_v, 0))
    return graph


def prefill_graph(ctx: GraphContext) -> Graph:
    """prompt_len tokens of the prompt at positions offset.. -> logits at two of them (the last
    real one, to sample the first token, and start-of-transcript, for the no-speech probability)
    and the greedy next token. A prompt longer than prompt_len runs as consecutive chunks: each
    writes its keys/values into the caches at its positions and attends to every position before
    them. Slots past the real prompt hold padding, which later writes replace before anything
    attends to them.
    """
    dims, layout, device = ctx.dims, ctx.layout, ctx.device
    rows, P, S = ctx.shape.batch, ctx.shape.prompt_len, ctx.shape.max_seq
    with ctx.open("prefill") as (graph, inputs):
        p = ctx.params()
        L, cache = dims.n_text_layer, _caches(ctx, inputs)
        offset = inputs["offset"]
        # Slot s of the caches takes the chunk's key/value s - offset, where that is one of its P;
        # query t sees slots 0..offset + t (and never the padding past max_seq on tiled targets).
        slots = ops.range(0, S, 1, dtype=DType.int64, device=device)
        within = ops.min(ops.max(slots - offset, ops.constant(0, DType.int64, device)),
                         ops.constant(P - 1, DType.int64, device))
        here = ops.reshape((slots >= offset) & (slots < offset + P), [1, 1, S, 1])
        keys_seen = round_up(S, layout.tile) if layout.tile else S
        queries = ops.reshape(ops.range(0, P, 1, dtype=DType.int64, device=device), [P, 1]) + offset
        key_slots = ops.reshape(ops.range(0, keys_seen, 1, dtype=DType.int64, device=device), [1, keys_seen])
        hidden = (key_slots > queries) | (key_slots >= S)
        mask = ops.where(hidden, ops.constant(float("-inf"), DType.float32, device),
                         ops.constant(0.0, DType.float32, device))

        def self_attend(i: int, q: TensorValue, k: TensorValue, v: TensorValue) -> TensorValue:
            written = []
            for buffer, x in ((cache[i], k), (cache[L + i], v)):
                updated = ops.where(here, ops.gather(x, within, axis=2), ops.buffer_load(buffer))
                ops.buffer_store(buffer, updated)
                written.append(updated)
            return attention(q, *written, mask, layout.tile)

        x = embed(p, "decoder.token_embedding.weight", inputs["tokens"])
        # Positions past the context (a last chunk's padding) read the last embedding: never attended.
        positions = ops.min(ops.reshape(queries, [P]), ops.constant(dims.n_text_ctx - 1, DType.int64, device))
        x = x + ops.gather(p("decoder.positional_embedding"), positions, axis=0)
        x = decoder_blocks(ctx, p, x, inputs["cross_k"], inputs["cross_v"], self_attend)
        chosen = ops.gather(x, inputs["logit_positions"], axis=1)  # [B, 2, d]
        # Both positions of every window as rows of their own; the choice is the last position's.
        out = _choice(ctx, p, ops.reshape(chosen, [2 * rows, dims.n_text_state]), inputs)
        logits = ops.reshape(out.pop("logits"), [rows, 2, dims.n_vocab])
        ctx.output(graph, logits=logits, **{name: value[::2] for name, value in out.items()})
    return graph


def step_graph(ctx: GraphContext, role: str = "step") -> Graph:
    """One token per row at `position` -> logits, the greedy next token and its log-probability,
    having written the token's keys/values into the caches at `position`. Nothing runs on the
    host and the position is read on the device, so the graph can be recorded once as a device
    graph and replayed at every position; only the token need cross to the host.

    `step` has a row per window; `group_step` a row per sequence (beams, samples), the G rows of
    a window attending to its cross K/V together.
    """
    dims, layout, device = ctx.dims, ctx.layout, ctx.device
    group = ctx.shape.group if role == "group_step" else 1
    with ctx.open(role) as (graph, inputs):
        p = ctx.params()
        L, cache = dims.n_text_layer, _caches(ctx, inputs)
        position = inputs["position"]

        # Attend to cache slots 0..position; later slots hold stale or padding entries.
        n_slots = ctx.shape.max_seq
        slots = ops.range(0, n_slots, 1, dtype=DType.int64, device=device)
        ninf = ops.constant(float("-inf"), DType.float32, device)
        zero = ops.constant(0.0, DType.float32, device)
        mask = ops.where(slots > position, ninf, zero)
        if not layout.cache_kernel:
            # The new key/value goes to slot `position` by selection, not by a slice store: a
            # slice's bounds are host values, which a recorded device graph could not change.
            here = ops.reshape(slots == position, [1, 1, n_slots, 1])

        def self_attend(i: int, q: TensorValue, k: TensorValue, v: TensorValue) -> TensorValue:
            if layout.cpu_kernels:  # writes the slot, then reads slots 0..position alone
                return step_self_attention(cache[i], cache[L + i], q, k, v, position)
            if layout.cache_kernel:  # the new slot alone, in place; the attention reads the caches where they are
                cache_write(cache[i], cache[L + i], k, v, position)
                keys, values = ops.buffer_load(cache[i]), ops.buffer_load(cache[L + i])
            else:
                keys = ops.where(here, k, ops.buffer_load(cache[i]))
                values = ops.where(here, v, ops.buffer_load(cache[L + i]))
                ops.buffer_store(cache[i], keys)
                ops.buffer_store(cache[L + i], values)
            if layout.single_query:
                return single_query_attention(q, keys, values, mask)
            return attention(q, keys, values, mask, layout.tile)

        x = embed(p, "decoder.token_embedding.weight", ops.unsqueeze(inputs["token"], 1))
        x = x + ops.gather(p("decoder.positional_embedding"), position, axis=0)
        x = decoder_blocks(ctx, p, x, inputs["cross_k"], inputs["cross_v"], self_attend, group, step=True)
        ctx.output(graph, **_choice(ctx, p, ops.squeeze(x, 1), inputs))
    return graph


def group_step_graph(ctx: GraphContext) -> Graph:
    return step_graph(ctx, "group_step")


def fork_graph(ctx: GraphContext) -> Graph:
    """Each window's caches into every sequence of the window (beam search, best-of), once its
    prompt is in them: sequence r takes window r // group. Our kernel copies the `length` slots
    written so far; the graph ops copy whole caches."""
    group = ctx.shape.group
    with ctx.open("fork") as (graph, inputs):
        for source, dest in zip(_caches(ctx, inputs), _caches(ctx, inputs, "group_")):
            if ctx.layout.cpu_kernels:
                cache_fork(dest, source, inputs["length"])
            else:
                b, h, s, dh = (int(n) for n in source.shape)
                repeated = ops.broadcast_to(ops.unsqueeze(source, 1), [b, group, h, s, dh])
                ops.buffer_store(dest, ops.reshape(repeated, [b * group, h, s, dh]))
        ctx.output(graph)
    return graph


def reorder_graph(ctx: GraphContext) -> Graph:
    """Beam search keeps the best continuations, which may come from any beam of the window; the
    caches follow them on the device (row r takes row source_rows[r]), so no cache ever crosses
    to the host. Our kernel copies the `length` slots written so far, of the rows that move; the
    graph ops gather whole caches."""
    with ctx.open("reorder") as (graph, inputs):
        rows = inputs["source_rows"]
        for cache in _caches(ctx, inputs):
            if ctx.layout.cpu_kernels:
                cache_reorder(cache, rows, inputs["length"])
            else:
                ops.buffer_store(cache, ops.gather(ops.buffer_load(cache), rows, axis=0))
        ctx.output(graph)
    return graph


def align_graph(ctx: GraphContext) -> Graph:
    """A whole token sequence, padded -> the alignment heads' cross-attention scores (q k^T before
    softmax, as openai-whisper's hooks capture them) and, at each position t, the probability of
    tokens[t + 1] under the softmax of the logits over the text tokens (ids below end-of-text),
    as `find_alignment` weighs words. Padding never reaches a real position: the self-attention
    is causal.
    """
    if ctx.alignment is None:
        raise ValueError("the align graph needs the alignment heads and the end-of-text id")
    heads, eot = ctx.alignment.heads, ctx.alignment.eot
    batch, S, device = ctx.shape.batch, ctx.shape.max_seq, ctx.device
    with ctx.open("align") as (graph, inputs):
        p = ctx.params()
        tokens = inputs["tokens"]
        mask = causal_mask(S, ctx.layout.tile, device)
        x = embed(p, "decoder.token_embedding.weight", tokens)
        x = x + ops.slice_tensor(p("decoder.positional_embedding"), [slice(0, S), slice(None)])
        scores: dict[int, TensorValue] = {}
        attend = lambda i, q, k, v: attention(q, k, v, mask, ctx.layout.tile)  # noqa: E731
        x = decoder_blocks(ctx, p, x, inputs["cross_k"], inputs["cross_v"], attend, scores=scores)
        qk = ops.stack([scores[layer][:, head, :, :] for layer, head in heads], axis=1)

        logits = tied_logits(p, x)[:, :, :eot]  # [B, S, eot]
        log_z = ops.log(ops.sum(ops.exp(logits - ops.max(logits, axis=-1)), axis=-1)) + ops.max(logits, axis=-1)
        following = ops.concat([tokens[:, 1:], ops.constant(np.zeros((batch, 1), np.int64), DType.int64, device)], axis=1)
        following = ops.min(following, ops.constant(eot - 1, DType.int64, device))  # special ids: never read
        flat = ops.reshape(logits, [batch * S * eot])
        index = ops.reshape(following, [batch * S]) + ops.range(0, batch * S * eot, eot, dtype=DType.int64, device=device)
        picked = ops.reshape(ops.gather(flat, index, axis=0), [batch, S, 1])
        ctx.output(graph, alignment_scores=ops.cast(qk, DType.float32),
                   next_token_probs=ops.squeeze(ops.exp(picked - log_z), -1))
    return graph


BUILDERS: dict[str, Callable[[GraphContext], Graph]] = {
    "frontend": frontend_graph, "encoder": encoder_graph, "prefill": prefill_graph, "step": step_graph,
    "fork": fork_graph, "group_step": group_step_graph, "reorder": reorder_graph, "align": align_graph,
}
if BUILDERS.keys() != SPECS.keys():
    raise ImportError(f"graph builders {sorted(BUILDERS)} do not match the specs' roles {sorted(SPECS)}")
