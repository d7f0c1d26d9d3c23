"""The text decoder's blocks, shared by the prefill, step and align graphs; each graph brings
its own self-attention (how it reads and writes the caches)."""

from __future__ import annotations

from collections.abc import Callable

from max.graph import TensorValue, ops

from mxwr.graphspec import Layout

from .attention import attention, merge_heads, merge_single, single_query_attention, split_heads, split_single
from .context import GraphContext
from .kernels import step_cross_attention
from .layers import Params, head_scale, layer_norm, linear, mlp
from .layout import key_mask, pad_to

# (layer, q, k, v) -> the attended values; q and k pre-scaled, all [rows, H, T, dh].
SelfAttention = Callable[[int, TensorValue, TensorValue, TensorValue], TensorValue]
# (layer, q) -> the attended values over that layer's cross K/V.
Attend = Callable[[int, TensorValue], TensorValue]


def cross_attention(cross_k: TensorValue, cross_v: TensorValue, group: int, n_audio_ctx: int, layout: Layout,
                    step: bool = False) -> Attend:
    """Attention of the decoder's queries [B*G, H, T, dh] over layer i of one window's cross K/V
    as stored.

    The G sequences of a window share its audio: their queries are folded into the query
    length, so the cross K/V are stored (and read) once per window, not once per sequence.
    In the step (T = 1), where the layout says so: our kernel (`cpu_kernels`), which reads
    each window's K/V once for its G queries, or, one sequence per window,
    `single_query_attention` (`single_query`).
    """

    def attend(i: int, q: TensorValue) -> TensorValue:
        if step and layout.cpu_kernels:
            return step_cross_attention(q, cross_k, cross_v, i, group)
        return attend_layer(q, cross_k[i], cross_v[i])

    def attend_layer(q: TensorValue, k: TensorValue, v: TensorValue) -> TensorValue:
        # Stored cross K/V padded to the tile: their padding slots are masked out.
        mask = None if layout.tile is None else key_mask(n_audio_ctx, int(k.shape[-2]), q.device)
        if step and layout.single_query and group == 1:
            return single_query_attention(q, k, v, mask, v_transposed=layout.cross_v_transposed)
        if layout.cross_v_transposed:
            v = ops.transpose(v, -1, -2)
        if group == 1:
            return attention(q, k, v, mask, layout.tile)
        rows, h, t, dh = (int(d) for d in q.shape)
        b = rows // group
        folded = ops.reshape(ops.permute(ops.reshape(q, [b, group, h, t, dh]), [0, 2, 1, 3, 4]), [b, h, group * t, dh])

        def unfold(x: TensorValue) -> TensorValue:
            last = int(x.shape[-1])
            return ops.reshape(ops.permute(ops.reshape(x, [b, h, group, t, last]), [0, 2, 1, 3, 4]), [rows, h, t, last])

        return unfold(attention(folded, k, v, mask, layout.tile))

    return attend


def decoder_blocks(
    ctx: GraphContext, p: Params, x: TensorValue, cross_k: TensorValue, cross_v: TensorValue,
    self_attend: SelfAttention, group: int = 1, scores: dict[int, TensorValue] | None = None,
    step: bool = False,
) -> TensorValue:
    """The decoder blocks on embedded tokens x [B*G, T, d]; returns the final hidden states.

    `scores`, when given, receives each layer's cross-attention scores (q k^T, before softmax;
    ungrouped decoders only). `step` (T = 1) splits and merges heads by reshapes and attends
    over the cross K/V as the layout says for the step (`cross_attention`).
    """
    dims = ctx.dims
    n_head = dims.n_text_head
    scale = head_scale(dims.n_text_state, n_head)
    cross = cross_attention(cross_k, cross_v, group, dims.n_audio_ctx, ctx.layout, step)
    split, merge = (split_single, merge_single) if step else (split_heads, merge_heads)
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
        x = x + linear(p, f"{name}.cross_attn.out", merge(cross(i, q)))
        x = x + mlp(p, name, layer_norm(p, f"{name}.mlp_ln", x))
    return layer_norm(p, "decoder.ln", x)
