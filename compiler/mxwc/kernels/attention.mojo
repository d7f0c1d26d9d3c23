"""The decoder step's attention on the CPU: one query per head, as float32 dot products.

MAX's graph ops attend over every slot of a cache, written or not (the masked ones still cost
their reads), and over the window's cross K/V with a matmul of a handful of query rows. Here a
step's self-attention first writes the token's key and value into slot `position` of the caches
and then reads slots 0..position alone; its cross-attention reads each window's cross K and V
once for all of the window's sequences (beams, samples). Each (row or window, head) is a task of
MAX's CPU thread pool.

The arithmetic is openai-whisper's: scores q.k (q and k arrive pre-scaled by dh^-0.25), their
softmax, and the softmax-weighted sum of the values, all in float32 (in another summation order).
"""

import extensibility
from extensibility import IO, InputTensor, IOSpec, ManagedTensorSlice, OutputTensor
from max.algorithm import parallelize
from max.gpu.host import DeviceContext
from std.math import exp
from std.memory import stack_allocation
from std.utils.numerics import neg_inf

comptime F32 = DType.float32
comptime W = 16  # float32 lanes of an AVX-512 register
comptime MUTABLE = IOSpec[True, IO.Input]()  # a graph buffer, written in place


@always_inline
def dot[dh: Int](a: UnsafePointer[Float32, MutAnyOrigin], b: UnsafePointer[Float32, MutAnyOrigin]) -> Float32:
    comptime assert dh % W == 0, "the head width must be a multiple of 16"
    var acc = SIMD[F32, W](0)
    comptime for c in range(dh // W):
        acc += (a + c * W).load[width=W]() * (b + c * W).load[width=W]()
    return acc.reduce_add()


@always_inline
def softmax_in_place(scores: UnsafePointer[Float32, MutAnyOrigin], n: Int):
    """scores[0..n) <- their softmax (float32, max-shifted)."""
    var top = neg_inf[F32]()
    for i in range(n):
        top = max(top, scores[i])
    var total: Float32 = 0
    var i = 0
    while i + W <= n:
        var e = exp((scores + i).load[width=W]() - top)
        (scores + i).store(e)
        total += e.reduce_add()
        i += W
    while i < n:
        var e = exp(scores[i] - top)
        scores[i] = e
        total += e
        i += 1
    var inv = 1 / total
    i = 0
    while i + W <= n:
        (scores + i).store((scores + i).load[width=W]() * inv)
        i += W
    while i < n:
        scores[i] = scores[i] * inv
        i += 1


def self_attention[rows: Int, heads: Int, slots: Int, dh: Int](
    attended: UnsafePointer[Float32, MutAnyOrigin],
    keys: UnsafePointer[Float32, MutAnyOrigin],
    values: UnsafePointer[Float32, MutAnyOrigin],
    q: UnsafePointer[Float32, MutAnyOrigin],
    k: UnsafePointer[Float32, MutAnyOrigin],
    v: UnsafePointer[Float32, MutAnyOrigin],
    position: Int,
):
    """For each (row, head): k, v into slot `position` of its caches [slots, dh], then q over
    slots 0..position."""
    var n = position + 1

    def task(i: Int) {imm attended, imm keys, imm values, imm q, imm k, imm v, imm n, imm position}:
        var cache_k = keys + i * slots * dh
        var cache_v = values + i * slots * dh
        comptime for c in range(dh // W):
            (cache_k + position * dh + c * W).store((k + i * dh + c * W).load[width=W]())
            (cache_v + position * dh + c * W).store((v + i * dh + c * W).load[width=W]())
        var scores = stack_allocation[slots, Float32]().unsafe_origin_cast[MutAnyOrigin]()
        var query = q + i * dh
        for s in range(n):
            scores[s] = dot[dh](query, cache_k + s * dh)
        softmax_in_place(scores, n)
        var acc = stack_allocation[dh // W, SIMD[F32, W]]()
        comptime for c in range(dh // W):
            acc[c] = SIMD[F32, W](0)
        for s in range(n):
            var weight = scores[s]
            comptime for c in range(dh // W):
                acc[c] += weight * (cache_v + s * dh + c * W).load[width=W]()
        comptime for c in range(dh // W):
            (attended + i * dh + c * W).store(acc[c])

    parallelize(task, rows * heads)


def cross_attention[batch: Int, group: Int, heads: Int, ctx_len: Int, dh: Int](
    attended: UnsafePointer[Float32, MutAnyOrigin],
    q: UnsafePointer[Float32, MutAnyOrigin],
    cross_k: UnsafePointer[Float32, MutAnyOrigin],
    cross_v: UnsafePointer[Float32, MutAnyOrigin],
):
    """For each (window, head): the window's `group` queries (rows b * group ..) over its cross
    K/V [ctx_len, dh], each key and value row read once for all of them."""

    def task(i: Int) {imm attended, imm q, imm cross_k, imm cross_v}:
        var b = i // heads
        var h = i % heads
        var keys = cross_k + i * ctx_len * dh
        var vals = cross_v + i * ctx_len * dh
        var scores = stack_allocation[group * ctx_len, Float32]().unsafe_origin_cast[MutAnyOrigin]()
        for a in range(ctx_len):
            comptime for g in range(group):
                scores[g * ctx_len + a] = dot[dh](q + ((b * group + g) * heads + h) * dh, keys + a * dh)
        comptime for g in range(group):
            softmax_in_place(scores + g * ctx_len, ctx_len)
        var acc = stack_allocation[group * (dh // W), SIMD[F32, W]]()
        comptime for j in range(group * (dh // W)):
            acc[j] = SIMD[F32, W](0)
        for a in range(ctx_len):
            comptime for c in range(dh // W):
                var row = (vals + a * dh + c * W).load[width=W]()
                comptime for g in range(group):
                    acc[g * (dh // W) + c] += scores[g * ctx_len + a] * row
        comptime for g in range(group):
            comptime for c in range(dh // W):
                (attended + ((b * group + g) * heads + h) * dh + c * W).store(acc[g * (dh // W) + c])

    parallelize(task, batch * heads)


@extensibility.register("mxw_step_self_attention")
struct StepSelfAttention:
    """Q, k, v [rows, heads, 1, dh] of one position (q and k pre-scaled); the caches
    [rows, heads, slots, dh] (mutated: k and v go to slot `position`) -> the attended values
    [rows, heads, 1, dh]."""

    @staticmethod
    def execute[target: StaticString, rows: Int, heads: Int, slots: Int, dh: Int](
        attended: OutputTensor[dtype=DType.float32, rank=4, ...],
        keys: ManagedTensorSlice[io_spec=MUTABLE, ...],
        values: ManagedTensorSlice[io_spec=MUTABLE, ...],
        q: InputTensor[dtype=DType.float32, rank=4, ...],
        k: InputTensor[dtype=DType.float32, rank=4, ...],
        v: InputTensor[dtype=DType.float32, rank=4, ...],
        position: InputTensor[dtype=DType.int64, rank=1, ...],
        ctx: DeviceContext,
    ) raises:
        comptime assert target == "cpu", "the step's attention kernels are the CPU's"
        var p = Int(position.unsafe_ptr()[0])
        if p < 0 or p >= slots:
            raise Error("the step's position is outside its caches")
        self_attention[rows, heads, slots, dh](
            attended.unsafe_ptr(), keys.unsafe_ptr().bitcast[Float32](), values.unsafe_ptr().bitcast[Float32](),
            q.unsafe_ptr(), k.unsafe_ptr(), v.unsafe_ptr(), p,
        )


@extensibility.register("mxw_step_cross_attention")
struct StepCrossAttention:
    """Queries [batch * group, heads, 1, dh] (pre-scaled) over layer `layer` of cross K and V
    [layers, batch, heads, ctx_len, dh] (K pre-scaled) -> [batch * group, heads, 1, dh]; the
    group rows of a window attend to its own cross K/V."""

    @staticmethod
    def execute[target: StaticString, batch: Int, group: Int, heads: Int, ctx_len: Int, dh: Int, layer: Int](
        attended: OutputTensor[dtype=DType.float32, rank=4, ...],
        q: InputTensor[dtype=DType.float32, rank=4, ...],
        cross_k: InputTensor[dtype=DType.float32, rank=5, ...],
        cross_v: InputTensor[dtype=DType.float32, rank=5, ...],
        ctx: DeviceContext,
    ) raises:
        comptime assert target == "cpu", "the step's attention kernels are the CPU's"
        comptime offset = layer * batch * heads * ctx_len * dh
        cross_attention[batch, group, heads, ctx_len, dh](
            attended.unsafe_ptr(), q.unsafe_ptr(), cross_k.unsafe_ptr() + offset, cross_v.unsafe_ptr() + offset
        )
