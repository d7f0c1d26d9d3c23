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
from std.memory import alloc, stack_allocation
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


# The encoder's attention: every frame attends to every frame of its window, per head, without
# MAX's 1500 x 1500 score tensors (written, read by the softmax, written, read by P.V). A block
# of QUERIES queries takes its scores against every key in registers KEYS keys at a time (the
# keys transposed, so 16 keys' products are one vector FMA per width), its softmax in a buffer of
# its own, and P.V four queries at a time.
comptime QUERIES = 4  # their scores (4 x 1500 floats) stay in L1
comptime KEYS = 64  # four vectors
comptime TASKS_PER_HEAD = 4


@always_inline
def score_block[R: Int, dh: Int](
    scores: UnsafePointer[Float32, MutAnyOrigin],
    stride: Int,
    q: UnsafePointer[Float32, MutAnyOrigin],
    kt: UnsafePointer[Float32, MutAnyOrigin],
    keys: Int,
):
    """scores[r * stride + j] = q[r] . k[j] for R queries and KEYS keys from column j = 0 of kt
    (kt [dh, keys]: key j's value d at d * keys + j)."""
    comptime V = KEYS // W
    var acc = stack_allocation[V * R, SIMD[F32, W]]()
    comptime for i in range(V * R):
        acc[i] = SIMD[F32, W](0)
    comptime for d in range(dh):
        comptime for c in range(V):
            var key = (kt + d * keys + c * W).load[width=W]()
            comptime for r in range(R):
                acc[r * V + c] += q[r * dh + d] * key
    comptime for r in range(R):
        comptime for c in range(V):
            (scores + r * stride + c * W).store(acc[r * V + c])


@always_inline
def weighted_values[R: Int, dh: Int](
    result: UnsafePointer[Float32, MutAnyOrigin],
    p: UnsafePointer[Float32, MutAnyOrigin],
    stride: Int,
    v: UnsafePointer[Float32, MutAnyOrigin],
    keys: Int,
    totals: UnsafePointer[Float32, MutAnyOrigin],
):
    """out[r] = sum_j p[r, j] v[j] / totals[r] for R queries."""
    comptime DV = dh // W
    comptime CHUNK = 16  # keys a pass of the sums stays in registers for
    var sums = stack_allocation[R * DV, SIMD[F32, W]]().unsafe_origin_cast[MutAnyOrigin]()
    comptime for i in range(R * DV):
        sums[i] = SIMD[F32, W](0)
    var j = 0
    while j + CHUNK <= keys:
        _weighted_chunk[R, dh, CHUNK](sums, p + j, stride, v + j * dh)
        j += CHUNK
    while j < keys:
        _weighted_chunk[R, dh, 1](sums, p + j, stride, v + j * dh)
        j += 1
    comptime for r in range(R):
        var inv = 1 / totals[r]
        comptime for c in range(DV):
            (result + r * dh + c * W).store(sums[r * DV + c] * inv)


@always_inline
def _weighted_chunk[R: Int, dh: Int, n: Int](
    sums: UnsafePointer[SIMD[F32, W], MutAnyOrigin],
    p: UnsafePointer[Float32, MutAnyOrigin],
    stride: Int,
    v: UnsafePointer[Float32, MutAnyOrigin],
):
    """sums[r, :] += sum over n keys of p[r, j] v[j], the sums in registers for the n keys."""
    comptime DV = dh // W
    var acc = stack_allocation[R * DV, SIMD[F32, W]]()
    comptime for i in range(R * DV):
        acc[i] = sums[i]
    comptime for j in range(n):
        comptime for c in range(DV):
            var value = (v + j * dh + c * W).load[width=W]()
            comptime for r in range(R):
                acc[r * DV + c] += p[r * stride + j] * value
    comptime for i in range(R * DV):
        sums[i] = acc[i]


def query_block[R: Int, dh: Int](
    result: UnsafePointer[Float32, MutAnyOrigin],
    q: UnsafePointer[Float32, MutAnyOrigin],
    kt: UnsafePointer[Float32, MutAnyOrigin],
    v: UnsafePointer[Float32, MutAnyOrigin],
    n: Int,
    padded: Int,
    scores: UnsafePointer[Float32, MutAnyOrigin],
):
    """R queries over n keys (kt padded to `padded` keys with zeros): scores, softmax, P.V."""
    var j = 0
    while j < padded:
        score_block[R, dh](scores + j, padded, q, kt + j, padded)
        j += KEYS
    var totals = stack_allocation[R, Float32]().unsafe_origin_cast[MutAnyOrigin]()
    comptime for r in range(R):
        var row = scores + r * padded
        var tops = SIMD[F32, W](neg_inf[F32]())
        var t = 0
        while t + W <= n:
            tops = max(tops, (row + t).load[width=W]())
            t += W
        var top = tops.reduce_max()
        while t < n:
            top = max(top, row[t])
            t += 1
        var total: Float32 = 0
        var i = 0
        while i + W <= n:
            var e = exp((row + i).load[width=W]() - top)
            (row + i).store(e)
            total += e.reduce_add()
            i += W
        while i < n:
            var e = exp(row[i] - top)
            row[i] = e
            total += e
            i += 1
        totals[r] = total
    comptime if R >= 4:
        comptime for r0 in range(0, R - R % 4, 4):
            weighted_values[4, dh](result + r0 * dh, scores + r0 * padded, padded, v, n, totals + r0)
    comptime if R % 4 > 0:
        comptime r0 = R - R % 4
        weighted_values[R % 4, dh](result + r0 * dh, scores + r0 * padded, padded, v, n, totals + r0)


def encoder_attention[batch: Int, heads: Int, frames: Int, dh: Int](
    result: UnsafePointer[Float32, MutAnyOrigin],
    q: UnsafePointer[Float32, MutAnyOrigin],
    k: UnsafePointer[Float32, MutAnyOrigin],
    v: UnsafePointer[Float32, MutAnyOrigin],
):
    """softmax(q k^T) v for each (window, head) of q, k, v [batch, heads, frames, dh] (q and k
    pre-scaled); every frame sees every frame."""
    comptime PADDED = (frames + KEYS - 1) // KEYS * KEYS
    comptime BLOCKS = frames // QUERIES
    comptime REST = frames % QUERIES
    comptime assert dh % W == 0, "the head width must be a multiple of 16"
    # Every head's keys transposed, [dh, PADDED], zeros past the last frame.
    var kt = alloc[Float32](batch * heads * dh * PADDED).unsafe_origin_cast[MutAnyOrigin]()

    def transpose(i: Int) {imm kt, imm k}:
        var dest = kt + i * dh * PADDED
        var src = k + i * frames * dh
        for d in range(dh):
            for t in range(frames):
                dest[d * PADDED + t] = src[t * dh + d]
            for t in range(frames, PADDED):
                dest[d * PADDED + t] = 0

    parallelize(transpose, batch * heads)
    var per = (BLOCKS + TASKS_PER_HEAD - 1) // TASKS_PER_HEAD

    def task(i: Int) {imm result, imm q, imm kt, imm v, imm per}:
        var head = i // TASKS_PER_HEAD
        var part = i % TASKS_PER_HEAD
        var scores = alloc[Float32](QUERIES * PADDED).unsafe_origin_cast[MutAnyOrigin]()
        var base = head * frames * dh
        for b in range(part * per, min(part * per + per, BLOCKS)):
            var row = b * QUERIES
            query_block[QUERIES, dh](result + base + row * dh, q + base + row * dh, kt + head * dh * PADDED,
                                     v + base, frames, PADDED, scores)
        comptime if REST > 0:
            if part == TASKS_PER_HEAD - 1:
                comptime row = BLOCKS * QUERIES
                query_block[REST, dh](result + base + row * dh, q + base + row * dh, kt + head * dh * PADDED,
                                      v + base, frames, PADDED, scores)
        scores.free()

    parallelize(task, batch * heads * TASKS_PER_HEAD)
    kt.free()


@extensibility.register("mxw_encoder_attention")
struct EncoderAttention:
    """Queries, keys, values [batch, heads, frames, dh] (queries and keys pre-scaled) ->
    softmax(q k^T) v, the encoder's attention (every frame sees every frame)."""

    @staticmethod
    def execute[target: StaticString, batch: Int, heads: Int, frames: Int, dh: Int](
        attended: OutputTensor[dtype=DType.float32, rank=4, ...],
        q: InputTensor[dtype=DType.float32, rank=4, ...],
        k: InputTensor[dtype=DType.float32, rank=4, ...],
        v: InputTensor[dtype=DType.float32, rank=4, ...],
        ctx: DeviceContext,
    ) raises:
        comptime assert target == "cpu", "the encoder's attention kernel is the CPU's"
        encoder_attention[batch, heads, frames, dh](attended.unsafe_ptr(), q.unsafe_ptr(), k.unsafe_ptr(),
                                                    v.unsafe_ptr())
