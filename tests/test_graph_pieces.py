"""GPU-only graph pieces, checked on the CPU where they can run: the GPU encoder's im2col
convolution must equal the direct convolution the CPU target uses, and the GPU's tile-padded
attention must equal plain attention."""

from __future__ import annotations

import numpy as np
import pytest


def test_conv_as_matmul_equals_direct_conv():
    from max.driver import CPU
    from max.dtype import DType
    from max.engine import InferenceSession
    from max.graph import DeviceRef, Graph, TensorType

    from mxwc.graphs.layers import Params, conv1d, conv1d_as_matmul

    rng = np.random.default_rng(0)
    weights = {"c1.weight": rng.standard_normal((24, 16, 3)).astype(np.float32),
               "c1.bias": np.zeros(24, np.float32),
               "c2.weight": rng.standard_normal((24, 24, 3)).astype(np.float32),
               "c2.bias": np.zeros(24, np.float32)}
    shapes = {k: v.shape for k, v in weights.items()}
    device = DeviceRef.CPU()
    with Graph("conv_paths", input_types=[TensorType(DType.float32, [2, 40, 16], device)]) as graph:
        p = Params(shapes, DType.float32, device)
        x = graph.inputs[0].tensor
        direct1 = conv1d(p, "c1", x, stride=1)  # the CPU path: ops.conv2d
        direct2 = conv1d(p, "c2", direct1, stride=2)
        im2col1 = conv1d_as_matmul(p("c1.weight"), x, stride=1)
        im2col2 = conv1d_as_matmul(p("c2.weight"), im2col1, stride=2)
        graph.output(direct1, direct2, im2col1, im2col2)
    model = InferenceSession(devices=[CPU()]).load(graph, weights_registry=weights)
    x = rng.standard_normal((2, 40, 16)).astype(np.float32)
    d1, d2, m1, m2 = (out.to_numpy() for out in model.execute(x))
    assert d2.shape == m2.shape == (2, 20, 24)
    np.testing.assert_allclose(m1, d1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m2, d2, rtol=1e-5, atol=1e-4)

    # And against numpy's definition of the convolution (kernel 3, padding 1).
    padded = np.pad(x, ((0, 0), (1, 1), (0, 0)))
    expected = sum(padded[:, k : k + 40, :] @ weights["c1.weight"][:, :, k].T for k in range(3))
    np.testing.assert_allclose(d1, expected, rtol=1e-5, atol=1e-4)


def _reference_attention(q, k, v, mask=None):
    scores = q @ np.swapaxes(k, -1, -2) + (0 if mask is None else mask)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    return (probs / probs.sum(-1, keepdims=True)) @ v


def test_tile_padded_attention_equals_plain_attention():
    """GPU targets pad heads to 128 wide and key slots to a multiple of 128 (MAX's fast batched
    matmul needs it); here a 16-tile on the CPU runs the same code."""
    from max.driver import CPU
    from max.dtype import DType
    from max.engine import InferenceSession
    from max.graph import DeviceRef, Graph, TensorType, ops

    from mxwc.graphs.attention import attention
    from mxwc.graphs.layout import key_mask, pad_to
    from mxwr.graphspec import Layout, round_up

    assert Layout.of(False, "float16").tile is Layout.of(True, "float32").tile is None
    assert Layout.of(True, "bfloat16").tile == Layout.of(True, "float16").tile == 128
    B, H, T, S, dh, tile = 2, 3, 5, 21, 8, 16
    device = DeviceRef.CPU()
    types = [TensorType(DType.float32, shape, device) for shape in ([B, H, T, dh], [B, H, S, dh], [B, H, S, dh], [B, H, T, dh])]
    causal = np.triu(np.full((T, T), -np.inf, np.float32), 1)
    with Graph("padded_attention", input_types=types) as graph:
        q, k, v, kt = (x.tensor for x in graph.inputs)
        plain = attention(q, k, v)
        padded = attention(q, k, v, tile=tile)  # k, v padded inside; their padding masked
        # Stored already padded (the cross K/V and caches on GPUs), with an explicit key mask.
        stored_k = pad_to(pad_to(k, -1, tile), -2, round_up(S, tile))
        stored_v = pad_to(pad_to(v, -1, tile), -2, round_up(S, tile))
        stored = attention(q, stored_k, stored_v, key_mask(S, round_up(S, tile), device), tile)
        # Causal self-attention over T keys, the mask spanning the padded key slots.
        mask = ops.constant(np.pad(causal, ((0, 0), (0, tile - T)), constant_values=-np.inf), DType.float32, device)
        self_padded = attention(q, kt, kt, mask, tile)
        graph.output(plain, padded, stored, self_padded)
    model = InferenceSession(devices=[CPU()]).load(graph)
    rng = np.random.default_rng(1)
    q, k, v, kt = (rng.standard_normal([int(d) for d in t.shape]).astype(np.float32) for t in types)
    plain, padded, stored, self_padded = (o.to_numpy() for o in model.execute(q, k, v, kt))
    assert padded.shape == stored.shape == plain.shape == (B, H, T, dh)
    np.testing.assert_allclose(plain, _reference_attention(q, k, v), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(padded, plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stored, plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(self_padded, _reference_attention(q, kt, kt, causal), rtol=1e-5, atol=1e-5)


def test_single_query_attention_equals_reference():
    """The step on tiled GPU targets attends as sums, not batched matmuls: one query per head
    over stored keys/values that may be padded (wider heads, masked slots), and over a cache
    whose later slots a position mask hides."""
    from max.driver import CPU
    from max.dtype import DType
    from max.engine import InferenceSession
    from max.graph import DeviceRef, Graph, TensorType, ops

    from mxwc.graphs.attention import merge_single, single_query_attention, split_single
    from mxwc.graphs.layout import key_mask, pad_to
    from mxwr.graphspec import round_up

    R, H, S, dh, tile, seen = 2, 3, 21, 8, 16, 13
    device = DeviceRef.CPU()
    types = [TensorType(DType.float32, shape, device) for shape in ([R, 1, H * dh], [R, H, S, dh], [R, H, S, dh])]
    with Graph("single_query_attention", input_types=types) as graph:
        x, k, v = (t.tensor for t in graph.inputs)
        q = split_single(x, H)
        stored_k = pad_to(pad_to(k, -1, tile), -2, round_up(S, tile))
        stored_v = pad_to(pad_to(v, -1, tile), -2, round_up(S, tile))
        padded = single_query_attention(q, stored_k, stored_v, key_mask(S, round_up(S, tile), device))
        cache = single_query_attention(q, k, v, key_mask(seen, S, device))  # slots >= seen hidden
        # V stored transposed and padded [R, H, width, slots], as tiled targets store cross V.
        transposed = single_query_attention(q, stored_k, ops.transpose(stored_v, -1, -2),
                                            key_mask(S, round_up(S, tile), device), v_transposed=True)
        graph.output(merge_single(padded), cache, transposed)
    model = InferenceSession(devices=[CPU()]).load(graph)
    rng = np.random.default_rng(2)
    x, k, v = (rng.standard_normal([int(d) for d in t.shape]).astype(np.float32) for t in types)
    padded, cache, transposed = (o.to_numpy() for o in model.execute(x, k, v))
    q = x.reshape(R, 1, H, dh).transpose(0, 2, 1, 3)  # openai-whisper's split of the heads
    expected = _reference_attention(q, k, v)
    assert padded.shape == (R, 1, H * dh)
    np.testing.assert_allclose(padded, expected.transpose(0, 2, 1, 3).reshape(R, 1, H * dh), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cache, _reference_attention(q, k[:, :, :seen], v[:, :, :seen]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(transposed, expected, rtol=1e-5, atol=1e-6)


def test_times_weight_batched_halves_equal_the_plain_product():
    """On tiled targets a many-row product runs as two batched halves against a stacked copy of
    the weight (MAX's own tensor-core kernel instead of cuBLAS); forced here on the CPU. Odd or
    single rows and shapes the tiled kernel does not take keep the plain product."""
    from max.driver import CPU
    from max.dtype import DType
    from max.engine import InferenceSession
    from max.graph import DeviceRef, Graph, TensorType

    from mxwc.graphs.layers import times_weight
    from mxwr.graphspec import TILED

    device = DeviceRef.CPU()
    cases = [((1, 6, 128), (128, 256)), ((3, 5, 128), (128, 128)), ((1, 1, 256), (256, 128)),
             ((2, 4, 96), (96, 128)), ((4, 160), (160, 384))]
    types = [TensorType(DType.float32, shape, device) for case in cases for shape in case]
    with Graph("times_weight", input_types=types) as graph:
        values = [t.tensor for t in graph.inputs]
        graph.output(*(times_weight(values[i], values[i + 1], TILED.tile) for i in range(0, len(values), 2)))
    model = InferenceSession(devices=[CPU()]).load(graph)
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal([int(d) for d in t.shape]).astype(np.float32) for t in types]
    for out, (x, w) in zip(model.execute(*arrays), zip(arrays[::2], arrays[1::2])):
        np.testing.assert_allclose(out.to_numpy(), x @ w, rtol=1e-5, atol=1e-4)


def test_logits_kernel_equals_the_graph_ops():
    """On tiled targets the logits and the greedy token come from our own kernels (their CPU
    implementation here): the products rounded to the model dtype, the lowest id among equal
    best logits, suppressed ids never chosen, the log-probability of the choice; and where
    they do not fit (too many rows) the graph ops, which must agree."""
    from max.driver import CPU
    from max.dtype import DType
    from max.engine import InferenceSession
    from max.graph import DeviceRef, Graph, TensorType

    from mxwc.graphs.kernels import KERNELS, LOGITS_MAX_ROWS, logits_kernel_fits
    from mxwc.graphs.layers import Params
    from mxwc.graphs.logits import logits_and_choice
    from mxwr.graphspec import TILED

    V, d = 51864, 256  # a whisper vocabulary: a long softmax sum, where float32 drops small terms
    device = DeviceRef.CPU()
    rng = np.random.default_rng(5)
    names = ("logits", "next_token", "next_logprob")
    for dtype, np_dtype in ((DType.float32, np.float32), (DType.float16, np.float16)):
        embedding = (rng.standard_normal((V, d)) * 0.1).astype(np_dtype)
        x = rng.standard_normal((4, d)).astype(np_dtype)
        embedding[[130, 620]] = x[0] * 0.5  # a tie at row 0's top: the lower id wins
        embedding[[7]] = x[1] * 0.5  # row 1's top, suppressed below
        wide = LOGITS_MAX_ROWS + 2  # more rows than the kernel takes
        assert not logits_kernel_fits(wide, d, TILED) and logits_kernel_fits(4, d, TILED)
        types = [TensorType(dtype, [4, d], device), TensorType(DType.float32, [V], device),
                 TensorType(dtype, [wide, d], device)]
        with Graph(f"logits_{dtype}", input_types=types, custom_extensions=[KERNELS]) as graph:
            p = Params({"decoder.token_embedding.weight": (V, d)}, dtype, device)
            rows, suppress, many = (t.tensor for t in graph.inputs)
            few, wide_out = (logits_and_choice(p, r, suppress, None, TILED, 1) for r in (rows, many))
            assert set(few) == set(names)
            graph.output(*(few[n] for n in names), *(wide_out[n] for n in names))
        model = InferenceSession(devices=[CPU()]).load(graph, weights_registry={"decoder.token_embedding.weight": embedding})
        suppress = np.zeros(V, np.float32)
        suppress[[7, 300]] = -np.inf
        many = np.concatenate([x] * (wide // 4 + 1))[:wide]
        logits, token, logprob, logits_ops, token_ops, logprob_ops = (o.to_numpy() for o in model.execute(x, suppress, many))

        expected = (x.astype(np.float32) @ embedding.astype(np.float32).T).astype(np_dtype).astype(np.float32)
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
        filtered = expected + suppress
        want = filtered.argmax(-1)  # numpy's argmax: the first of equal maxima
        assert want[0] == 130 and want[1] != 7
        assert token.tolist() == want.tolist() == token_ops[:4].tolist()
        # The log-probability of the choice under the kernel's own logits (its products sum in
        # another order than numpy's), to float64 accuracy: a float32 running sum fails this.
        own = logits + suppress
        top = own.max(-1, keepdims=True)
        exact = -np.log(np.exp((own - top).astype(np.float64)).sum(-1))
        np.testing.assert_allclose(logprob, exact, rtol=0, atol=1e-6)
        np.testing.assert_allclose(logits_ops[:4], logits, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(logprob_ops[:4], exact, rtol=0, atol=2e-5)


def test_cpu_logits_kernel_summarizes_the_text_tokens():
    """The CPU's logits kernel (any number of rows, float32 or int8 embedding) gives, besides
    the greedy choice, each row's best text tokens under the suppress mask (largest first, the
    lower id first among equals) and their log-sum-exp; the graph ops' summary (where the
    kernel does not serve) agrees. Against an int8 embedding the rows are rounded to 8 bits in
    groups of 64 (kernels/vnni.mojo), as `int8_activations` does."""
    from max.driver import CPU
    from max.dtype import DType
    from max.engine import InferenceSession
    from max.graph import DeviceRef, Graph, TensorType

    from mxwc.graphs.kernels import KERNELS
    from mxwc.graphs.layers import Params
    from mxwc.graphs.logits import logits_and_choice, text_summary
    from mxwr.graphspec import CPU as CPU_LAYOUT
    from mxwc.quantize import int8_groups
    from mxwr.quantization import SCALE, widened
    from mxwr.scores import logsumexp

    V, d, text_end, top = 51864, 384, 50256, 6
    device = DeviceRef.CPU()
    rng = np.random.default_rng(6)
    embedding = (rng.standard_normal((V, d)) * 0.1).astype(np.float32)
    x = rng.standard_normal((9, d)).astype(np.float32)  # more rows than a block of the kernel
    embedding[[40, 41, 900]] = x[0] * 0.5  # three-way tie at row 0's text top
    embedding[[50300]] = x[1]  # row 1's best is a special token: not in the text summary
    embedding[[12]] = x[2] * 0.6  # row 2's text best, suppressed below
    q, scale = int8_groups(embedding)
    types = [TensorType(DType.float32, [9, d], device), TensorType(DType.float32, [V], device),
             TensorType(DType.int64, [1], device)]
    name = "decoder.token_embedding.weight"
    outputs = {}
    for kind in ("float32", "int8"):
        with Graph(f"choice_{kind}", input_types=types, custom_extensions=[KERNELS]) as graph:
            p = Params({name: (V, d)}, DType.float32, device, encodings={name: "int8"} if kind == "int8" else {})
            rows, suppress, end = (t.tensor for t in graph.inputs)
            out = logits_and_choice(p, rows, suppress, end, CPU_LAYOUT, top)
            ops_summary = text_summary(out["logits"], suppress, end, top)
            graph.output(*out.values(), *ops_summary)
        weights = {name: embedding} if kind == "float32" else {name: q, name + SCALE: scale}
        model = InferenceSession(devices=[CPU()]).load(graph, weights_registry=weights)
        suppress = np.zeros(V, np.float32)
        suppress[[12, 300]] = -np.inf
        outputs[kind] = [o.to_numpy() for o in model.execute(x, suppress, np.array([text_end]))]

    for kind, (logits, token, logprob, ids, values, lse, ops_ids, ops_values, ops_lse) in outputs.items():
        expected = x @ embedding.T if kind == "float32" else int8_activations(x) @ widened(q, scale).T
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-4)
        own = logits + suppress
        assert token.tolist() == own.argmax(-1).tolist() and token[1] == 50300
        for r in range(len(x)):
            text = own[r, :text_end]
            expected = np.argsort(-text, kind="stable")[:top]  # largest first, ties by lower id
            assert ids[r].tolist() == expected.tolist(), (kind, r)
            assert values[r].tolist() == text[expected].tolist()
            assert abs(lse[r] - logsumexp(text)) < 1e-5
            assert 12 not in ids[r]
            np.testing.assert_allclose(ops_values[r], values[r])  # MAX's top-k: its order among equals
            assert set(ops_ids[r].tolist()) == set(ids[r].tolist()) or r == 0
            assert abs(ops_lse[r] - lse[r]) < 1e-4
        assert ids[0, :3].tolist() == [40, 41, 900]
        np.testing.assert_allclose(logprob, -np.log(np.exp((own - own.max(-1, keepdims=True)).astype(np.float64)).sum(-1)),
                                   atol=1e-6)


def int8_activations(x: np.ndarray) -> np.ndarray:
    """x as the VNNI products see it: each group of 64 values of a row rounded to 8 bits, the
    group's largest |x| at 127."""
    groups = x.reshape(*x.shape[:-1], -1, 64)
    scale = np.abs(groups).max(axis=-1, keepdims=True) / 127
    scale = np.where(scale > 0, scale, 1).astype(np.float32)
    return (np.round(groups / scale) * scale).reshape(x.shape).astype(np.float32)


def kquant_activations(x: np.ndarray) -> np.ndarray:
    """x as MAX's K-quant products see it: zero-padded to blocks of 256, each block rounded to
    8 bits with its largest |x| at 127."""
    cols = x.shape[-1]
    blocks = np.pad(x, ((0, 0), (0, -cols % 256))).reshape(len(x), -1, 256)
    scale = np.abs(blocks).max(axis=-1, keepdims=True) / 127
    scale = np.where(scale > 0, scale, 1).astype(np.float32)
    return (np.round(blocks / scale) * scale).reshape(len(x), -1)[:, :cols].astype(np.float32)


@pytest.mark.parametrize("encoding", ["q4_k", "q6_k"])
def test_kquant_products_read_our_blocks(encoding):
    """A K-quant target's products (MAX's qmatmul) and widened weights (MAX's dequantize) read
    the blocks `kquants.pack` writes as `kquants.unpack` does, for rows of 384 weights (tiny's,
    padded to two blocks) and of 1536; x rounded to 8 bits per block (`kquant_activations`),
    for a step's one row and a prompt's many alike."""
    from max.driver import CPU
    from max.dtype import DType
    from max.engine import InferenceSession
    from max.graph import DeviceRef, Graph, TensorType

    from mxwc import kquants
    from mxwc.graphs.layers import Params, linear

    device = DeviceRef.CPU()
    rng = np.random.default_rng(7)
    for k, n in ((384, 96), (1536, 64)):
        w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
        w[3] = 0  # an all-zero row
        w[5, 7] = 2.0  # an outlier in a block
        bias = rng.standard_normal(n).astype(np.float32)
        xs = [rng.standard_normal(shape + (k,)).astype(np.float32) for shape in ((1, 1), (5, 7))]
        blocks = kquants.pack(w, encoding)
        types = [TensorType(DType.float32, list(x.shape), device) for x in xs]
        with Graph(f"{encoding}_{k}", input_types=types) as graph:
            p = Params({"l.weight": (n, k), "l.bias": (n,)}, DType.float32, device, encodings={"l.weight": encoding})
            graph.output(*(linear(p, "l", x.tensor) for x in graph.inputs), p.widened("l.weight"))
        model = InferenceSession(devices=[CPU()]).load(graph, weights_registry={"l.weight": blocks, "l.bias": bias})
        *ys, widened = (o.to_numpy() for o in model.execute(*xs))
        unpacked = kquants.unpack(blocks, encoding, k)
        np.testing.assert_array_equal(widened, unpacked)
        assert not unpacked[3].any()
        for x, y in zip(xs, ys):
            expected = kquant_activations(x.reshape(-1, k)) @ unpacked.T + bias
            np.testing.assert_allclose(y.reshape(-1, n), expected, rtol=1e-4, atol=1e-4)


def test_cache_write_kernel_writes_one_slot_in_place():
    """The step's cache write on tiled targets: the new key and value land at the position read
    on the device; every other slot of both caches keeps what it held."""
    from max.driver import CPU, Buffer
    from max.dtype import DType
    from max.engine import InferenceSession
    from max.graph import BufferType, DeviceRef, Graph, TensorType, ops

    from mxwc.graphs.kernels import KERNELS, cache_write

    R, H, S, dh = 2, 3, 10, 4
    device = DeviceRef.CPU()
    types = [BufferType(DType.float16, [R, H, S, dh], device), BufferType(DType.float16, [R, H, S, dh], device),
             TensorType(DType.float16, [R, H, 1, dh], device), TensorType(DType.float16, [R, H, 1, dh], device),
             TensorType(DType.int64, [1], device)]
    with Graph("cache_write", input_types=types, custom_extensions=[KERNELS]) as graph:
        keys, values = graph.inputs[0].buffer, graph.inputs[1].buffer
        k, v, position = (t.tensor for t in graph.inputs[2:])
        cache_write(keys, values, k, v, position)
        graph.output(ops.buffer_load(keys) + ops.buffer_load(values))  # read after the write
    model = InferenceSession(devices=[CPU()]).load(graph)
    rng = np.random.default_rng(6)
    key_cache, value_cache = (rng.standard_normal((R, H, S, dh)).astype(np.float16) for _ in range(2))
    k, v = (rng.standard_normal((R, H, 1, dh)).astype(np.float16) for _ in range(2))
    buffers = [Buffer.from_numpy(key_cache.copy()), Buffer.from_numpy(value_cache.copy())]
    (both,) = model.execute(*buffers, k, v, np.array([6], np.int64))
    key_cache[:, :, 6:7], value_cache[:, :, 6:7] = k, v
    np.testing.assert_array_equal(buffers[0].to_numpy(), key_cache)
    np.testing.assert_array_equal(buffers[1].to_numpy(), value_cache)
    np.testing.assert_array_equal(both.to_numpy(), key_cache + value_cache)
