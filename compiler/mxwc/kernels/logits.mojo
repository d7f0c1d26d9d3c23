"""The decoders' last step on 16-bit GPU targets, for a few rows: logits over the vocabulary
and the greedy token, in two kernels.

MAX runs the product with the tied embedding as a split-K gemv that uses a fraction of the
memory bandwidth, and the greedy choice as three reductions, each after a memset. Here every 16
lanes read one embedding row as 16-byte vectors and keep the best logit they saw; one block per
row then finds the best of those and the softmax sum (BENCHMARKS.md has the times).

The arithmetic is the graph's: float32 dot products rounded to the model dtype (the product's
output type, as openai-whisper's fp16 logits), then float32; the greedy token is the lowest id
among the largest of logits + suppress, its log-probability -log(sum(exp(x - max x))).
"""

import extensibility
from extensibility import InputTensor, OutputTensor
from max.gpu import barrier, block_idx, thread_idx
from max.gpu.host import DeviceContext
from max.gpu.primitives import warp
from max.algorithm import parallelize
from std.math import exp, log
from std.memory import stack_allocation
from std.sys import size_of
from std.utils.numerics import neg_inf

from .products import products
from .vnni import vnni_products

comptime F32 = DType.float32
comptime LOGIT_THREADS = 256
comptime LANES = 16  # per embedding row
comptime GROUPS = LOGIT_THREADS // LANES
comptime GREEDY_THREADS = 1024
comptime GREEDY_WARPS = GREEDY_THREADS // 32


def logit_blocks(vocab: Int, per_block: Int) -> Int:
    return (vocab + per_block - 1) // per_block


@always_inline
def better(value: Float32, index: Int32, best: Float32, best_index: Int32) -> Bool:
    """Larger wins; of equal values, the lower id (torch.argmax's choice)."""
    return value > best or (value == best and index < best_index)


def logits_gpu[dtype: DType, rows: Int, d: Int, vocab: Int, per_block: Int](
    logits: UnsafePointer[Float32, MutAnyOrigin],
    best_value: UnsafePointer[Float32, MutAnyOrigin],
    best_index: UnsafePointer[Int32, MutAnyOrigin],
    x: UnsafePointer[Scalar[dtype], MutAnyOrigin],
    e: UnsafePointer[Scalar[dtype], MutAnyOrigin],
    suppress: UnsafePointer[Float32, MutAnyOrigin],
):
    comptime VEC = 16 // size_of[dtype]()
    comptime CHUNKS = d // (LANES * VEC)
    comptime assert d % (LANES * VEC) == 0, "the model width must be a multiple of 128"
    comptime blocks = logit_blocks(vocab, per_block)
    # A group's rows have their loads in flight together.
    comptime ROWS_EACH = per_block // GROUPS
    comptime assert per_block % GROUPS == 0, "a block's rows must split evenly over its groups"
    var tid = Int(thread_idx.x)
    var lane = tid % LANES
    var group = tid // LANES
    var block = Int(block_idx.x)
    var xs = stack_allocation[rows * d, Float32, alignment=64, address_space=AddressSpace.SHARED]()
    var top_v = stack_allocation[GROUPS * rows, Float32, address_space=AddressSpace.SHARED]()
    var top_i = stack_allocation[GROUPS * rows, Int32, address_space=AddressSpace.SHARED]()
    for i in range(tid, rows * d, LOGIT_THREADS):
        xs[i] = x[i].cast[F32]()

    # Every row's loads first, then the sums: a group has all its memory requests in flight.
    var w = stack_allocation[ROWS_EACH * CHUNKS, SIMD[dtype, VEC]]()
    comptime for i in range(ROWS_EACH):
        var v = min(block * per_block + i * GROUPS + group, vocab - 1)
        comptime for c in range(CHUNKS):
            w[i * CHUNKS + c] = (e + v * d + (c * LANES + lane) * VEC).load[width=VEC, alignment=16]()
    barrier()

    var best = stack_allocation[rows, Float32]()
    var at = stack_allocation[rows, Int32]()
    comptime for r in range(rows):
        best[r] = neg_inf[F32]()
        at[r] = Int32(vocab)
    comptime for i in range(ROWS_EACH):
        var v = block * per_block + i * GROUPS + group
        comptime for r in range(rows):
            var acc = SIMD[F32, VEC](0)
            comptime for c in range(CHUNKS):
                acc += (xs + r * d + (c * LANES + lane) * VEC).load[width=VEC, alignment=32]() * w[i * CHUNKS + c].cast[F32]()
            var s = acc.reduce_add()
            comptime for k in range(4):  # over the 16 lanes of the row
                s += warp.shuffle_xor(s, UInt32(8 >> k))
            var logit = s.cast[dtype]().cast[F32]()
            if v < vocab:
                if lane == 0:
                    logits[r * vocab + v] = logit
                var value = logit + suppress[v]
                if value > best[r]:  # a group's ids only grow
                    best[r] = value
                    at[r] = Int32(v)
    if lane == 0:
        comptime for r in range(rows):
            top_v[group * rows + r] = best[r]
            top_i[group * rows + r] = at[r]
    barrier()
    if tid < rows:
        var b = top_v[tid]
        var bi = top_i[tid]
        for g in range(1, GROUPS):
            if better(top_v[g * rows + tid], top_i[g * rows + tid], b, bi):
                b = top_v[g * rows + tid]
                bi = top_i[g * rows + tid]
        best_value[tid * blocks + block] = b
        best_index[tid * blocks + block] = bi


def greedy_gpu[rows: Int, vocab: Int, blocks: Int](
    token: UnsafePointer[Int64, MutAnyOrigin],
    logprob: UnsafePointer[Float32, MutAnyOrigin],
    logits: UnsafePointer[Float32, MutAnyOrigin],
    suppress: UnsafePointer[Float32, MutAnyOrigin],
    best_value: UnsafePointer[Float32, MutAnyOrigin],
    best_index: UnsafePointer[Int32, MutAnyOrigin],
):
    var r = Int(block_idx.x)
    var tid = Int(thread_idx.x)
    var lane = tid % 32
    var wid = tid // 32
    var sv = stack_allocation[GREEDY_WARPS, Float32, address_space=AddressSpace.SHARED]()
    var si = stack_allocation[GREEDY_WARPS, Int32, address_space=AddressSpace.SHARED]()
    var top = neg_inf[F32]()
    var at = Int32(vocab)
    for b in range(tid, blocks, GREEDY_THREADS):
        if better(best_value[r * blocks + b], best_index[r * blocks + b], top, at):
            top = best_value[r * blocks + b]
            at = best_index[r * blocks + b]
    comptime for k in range(5):
        var other = warp.shuffle_xor(top, UInt32(16 >> k))
        var other_at = warp.shuffle_xor(at, UInt32(16 >> k))
        if better(other, other_at, top, at):
            top = other
            at = other_at
    if lane == 0:
        sv[wid] = top
        si[wid] = at
    barrier()
    top = sv[0]
    at = si[0]
    for i in range(1, GREEDY_WARPS):
        if better(sv[i], si[i], top, at):
            top = sv[i]
            at = si[i]
    barrier()

    # Each thread's terms in id order, their loads issued UNROLL at a time.
    comptime UNROLL = 8
    var total: Float32 = 0
    var v = tid
    while v + (UNROLL - 1) * GREEDY_THREADS < vocab:
        var x = SIMD[F32, UNROLL](0)
        comptime for u in range(UNROLL):
            x[u] = logits[r * vocab + v + u * GREEDY_THREADS] + suppress[v + u * GREEDY_THREADS]
        comptime for u in range(UNROLL):
            total += exp(x[u] - top)
        v += UNROLL * GREEDY_THREADS
    while v < vocab:
        total += exp(logits[r * vocab + v] + suppress[v] - top)
        v += GREEDY_THREADS
    total = warp.sum(total)
    if lane == 0:
        sv[wid] = total
    barrier()
    if tid == 0:
        var sum: Float32 = 0
        for i in range(GREEDY_WARPS):
            sum += sv[i]
        token[r] = Int64(at)
        logprob[r] = -log(sum)


def logits_cpu_16bit[dtype: DType, rows: Int, d: Int, vocab: Int](
    logits: UnsafePointer[Float32, MutAnyOrigin],
    x: UnsafePointer[Scalar[dtype], MutAnyOrigin],
    e: UnsafePointer[Scalar[dtype], MutAnyOrigin],
):
    """What CPU tests run of a 16-bit GPU target's graphs: float32 sums in order, each logit
    rounded to the model dtype, as the GPU kernel's."""
    for r in range(rows):
        for v in range(vocab):
            var acc: Float32 = 0
            for j in range(d):
                acc += x[r * d + j].cast[F32]() * e[v * d + j].cast[F32]()
            logits[r * vocab + v] = acc.cast[dtype]().cast[F32]()


@always_inline
def consider[top: Int](
    value: Float32, id: Int, text_end: Int,
    mut best: Float32, mut at: Int,
    top_values: UnsafePointer[Float32, MutAnyOrigin], top_ids: UnsafePointer[Int, MutAnyOrigin],
):
    """One logit + suppress, in id order: the largest so far (the first of equals), and, below
    text_end, the `top` largest so far (largest first; of equals, the lower id first)."""
    if value > best:
        best = value
        at = id
    comptime if top > 0:
        if id < text_end and value > top_values[top - 1]:
            var j = top - 1
            while j > 0 and top_values[j - 1] < value:
                top_values[j] = top_values[j - 1]
                top_ids[j] = top_ids[j - 1]
                j -= 1
            top_values[j] = value
            top_ids[j] = id


def cpu_choice[rows: Int, vocab: Int, top: Int](
    logits: UnsafePointer[Float32, MutAnyOrigin],
    suppress: UnsafePointer[Float32, MutAnyOrigin],
    text_end: Int,
    token: UnsafePointer[Int64, MutAnyOrigin],
    logprob: UnsafePointer[Float32, MutAnyOrigin],
    text_top_ids: UnsafePointer[Int64, MutAnyOrigin],
    text_top_logits: UnsafePointer[Float32, MutAnyOrigin],
    text_logsumexp: UnsafePointer[Float32, MutAnyOrigin],
):
    """Each row, under the additive suppress mask: the greedy token (the lowest id of the
    largest logit) and its log-probability; with `top` > 0, also the `top` largest of the text
    logits (ids below text_end; largest first, the lower id first among equals, -inf past the
    unmasked ones) and the log-sum-exp of all of them. A row per task.

    Sums of exponentials in float64: one float32 running sum of 51864 terms drops the smallest
    ones whole (-4e-4 on a log-probability)."""
    comptime W = 16  # float32 lanes of an AVX-512 register
    comptime W64 = 8  # float64 lanes
    comptime F64 = DType.float64
    var end = min(max(text_end, 0), vocab)

    def row(r: Int) {imm logits, imm suppress, imm end, imm token, imm logprob, imm text_top_ids,
                     imm text_top_logits, imm text_logsumexp}:
        var x = logits + r * vocab
        var best = neg_inf[F32]()
        var at = vocab
        var top_values = stack_allocation[top + 1, Float32]().unsafe_origin_cast[MutAnyOrigin]()
        var top_at = stack_allocation[top + 1, Int]().unsafe_origin_cast[MutAnyOrigin]()
        for j in range(top + 1):
            top_values[j] = neg_inf[F32]()
            top_at[j] = 0
        # A chunk of 16 is looked at id by id only when it holds a new best or a new top value.
        var v = 0
        while v + W <= vocab:
            var values = (x + v).load[width=W]() + (suppress + v).load[width=W]()
            var largest = values.reduce_max()
            var wanted = largest > best
            comptime if top > 0:
                wanted = wanted or (v < end and largest > top_values[top - 1])
            if wanted:
                for i in range(W):
                    consider[top](values[i], v + i, end, best, at, top_values, top_at)
            v += W
        while v < vocab:
            consider[top](x[v] + suppress[v], v, end, best, at, top_values, top_at)
            v += 1

        var shift = best.cast[F64]()
        var text = SIMD[F64, W64](0)
        v = 0
        while v + W64 <= end:
            text += exp(((x + v).load[width=W64]() + (suppress + v).load[width=W64]()).cast[F64]() - shift)
            v += W64
        var text_total = text.reduce_add()
        while v < end:
            text_total += exp((x[v] + suppress[v]).cast[F64]() - shift)
            v += 1
        var rest = SIMD[F64, W64](0)
        while v + W64 <= vocab:
            rest += exp(((x + v).load[width=W64]() + (suppress + v).load[width=W64]()).cast[F64]() - shift)
            v += W64
        var rest_total = rest.reduce_add()
        while v < vocab:
            rest_total += exp((x[v] + suppress[v]).cast[F64]() - shift)
            v += 1
        token[r] = Int64(at)
        logprob[r] = (-log(text_total + rest_total)).cast[F32]()
        comptime if top > 0:
            for j in range(top):
                text_top_ids[r * top + j] = Int64(top_at[j])
                text_top_logits[r * top + j] = top_values[j]
            text_logsumexp[r] = (shift + log(text_total)).cast[F32]()

    parallelize(row, rows)


@extensibility.register("mxw_logits_greedy")
struct LogitsGreedy:
    """x [rows, d] (final hidden states) times the embedding [vocab, d] -> logits [rows, vocab]
    float32, the greedy token [rows] int64 under an additive suppress mask [vocab] (0 or -inf)
    and its log-probability [rows]. best_value/best_index [rows, blocks] are the first kernel's
    per-block results (per_block embedding rows each), outputs only so that the graph owns
    their memory."""

    @staticmethod
    def execute[target: StaticString, rows: Int, d: Int, vocab: Int, per_block: Int](
        logits: OutputTensor[dtype=DType.float32, rank=2, ...],
        token: OutputTensor[dtype=DType.int64, rank=1, ...],
        logprob: OutputTensor[dtype=DType.float32, rank=1, ...],
        best_value: OutputTensor[dtype=DType.float32, rank=2, ...],
        best_index: OutputTensor[dtype=DType.int32, rank=2, ...],
        x: InputTensor[rank=2, ...],
        e: InputTensor[dtype=x.dtype, rank=2, ...],
        suppress: InputTensor[dtype=DType.float32, rank=1, ...],
        ctx: DeviceContext,
    ) raises:
        comptime dtype = x.dtype
        comptime if target == "gpu":
            comptime assert dtype.is_half_float(), "the GPU kernels are for 16-bit targets"
            comptime first = logits_gpu[dtype, rows, d, vocab, per_block]
            ctx.enqueue_function[first](
                logits.unsafe_ptr(), best_value.unsafe_ptr(), best_index.unsafe_ptr(),
                x.unsafe_ptr(), e.unsafe_ptr(), suppress.unsafe_ptr(),
                grid_dim=logit_blocks(vocab, per_block), block_dim=LOGIT_THREADS,
            )
            comptime second = greedy_gpu[rows, vocab, logit_blocks(vocab, per_block)]
            ctx.enqueue_function[second](
                token.unsafe_ptr(), logprob.unsafe_ptr(), logits.unsafe_ptr(), suppress.unsafe_ptr(),
                best_value.unsafe_ptr(), best_index.unsafe_ptr(),
                grid_dim=rows, block_dim=GREEDY_THREADS,
            )
        else:
            comptime if dtype == F32:
                products[rows, d, vocab](logits.unsafe_ptr(), x.unsafe_ptr().bitcast[Float32](),
                                         e.unsafe_ptr().bitcast[Float32]())
            else:
                logits_cpu_16bit[dtype, rows, d, vocab](logits.unsafe_ptr(), x.unsafe_ptr(), e.unsafe_ptr())
            var none_i = best_index.unsafe_ptr().bitcast[Int64]()
            cpu_choice[rows, vocab, 0](logits.unsafe_ptr(), suppress.unsafe_ptr(), vocab, token.unsafe_ptr(),
                                       logprob.unsafe_ptr(), none_i, best_value.unsafe_ptr(), best_value.unsafe_ptr())


@extensibility.register("mxw_logits_choice")
struct LogitsChoice:
    """The CPU's: x [rows, d] (final hidden states, float32) times the embedding [vocab, d] ->
    logits [rows, vocab], and under the additive suppress mask [vocab] (0 or -inf) the greedy
    token [rows] with its log-probability [rows], the best `top` text tokens (ids below
    text_end [1]) [rows, top] with their logits, and the text logits' log-sum-exp [rows]."""

    @staticmethod
    def execute[target: StaticString, rows: Int, d: Int, vocab: Int, top: Int](
        logits: OutputTensor[dtype=DType.float32, rank=2, ...],
        token: OutputTensor[dtype=DType.int64, rank=1, ...],
        logprob: OutputTensor[dtype=DType.float32, rank=1, ...],
        text_top_ids: OutputTensor[dtype=DType.int64, rank=2, ...],
        text_top_logits: OutputTensor[dtype=DType.float32, rank=2, ...],
        text_logsumexp: OutputTensor[dtype=DType.float32, rank=1, ...],
        x: InputTensor[dtype=DType.float32, rank=2, ...],
        e: InputTensor[dtype=DType.float32, rank=2, ...],
        suppress: InputTensor[dtype=DType.float32, rank=1, ...],
        text_end: InputTensor[dtype=DType.int64, rank=1, ...],
        ctx: DeviceContext,
    ) raises:
        comptime assert target == "cpu", "the logits kernel with a text summary is the CPU's"
        products[rows, d, vocab](logits.unsafe_ptr(), x.unsafe_ptr(), e.unsafe_ptr())
        cpu_choice[rows, vocab, top](
            logits.unsafe_ptr(), suppress.unsafe_ptr(), Int(text_end.unsafe_ptr()[0]), token.unsafe_ptr(),
            logprob.unsafe_ptr(), text_top_ids.unsafe_ptr(), text_top_logits.unsafe_ptr(), text_logsumexp.unsafe_ptr(),
        )


@extensibility.register("mxw_logits_choice_int8")
struct LogitsChoiceInt8:
    """`mxw_logits_choice` against an int8 embedding [vocab, d] with its groups' scales
    [vocab, d / group], x rounded to 8 bits a group at a time (kernels/vnni.mojo)."""

    @staticmethod
    def execute[target: StaticString, rows: Int, d: Int, vocab: Int, top: Int, group: Int](
        logits: OutputTensor[dtype=DType.float32, rank=2, ...],
        token: OutputTensor[dtype=DType.int64, rank=1, ...],
        logprob: OutputTensor[dtype=DType.float32, rank=1, ...],
        text_top_ids: OutputTensor[dtype=DType.int64, rank=2, ...],
        text_top_logits: OutputTensor[dtype=DType.float32, rank=2, ...],
        text_logsumexp: OutputTensor[dtype=DType.float32, rank=1, ...],
        x: InputTensor[dtype=DType.float32, rank=2, ...],
        e: InputTensor[dtype=DType.int8, rank=2, ...],
        scale: InputTensor[dtype=DType.float32, rank=2, ...],
        suppress: InputTensor[dtype=DType.float32, rank=1, ...],
        text_end: InputTensor[dtype=DType.int64, rank=1, ...],
        ctx: DeviceContext,
    ) raises:
        comptime assert target == "cpu", "int8 weights are a CPU target's"
        comptime assert group == 64, "the VNNI products take groups of 64"
        vnni_products[rows, d, vocab](logits.unsafe_ptr(), x.unsafe_ptr(), e.unsafe_ptr(), scale.unsafe_ptr())
        cpu_choice[rows, vocab, top](
            logits.unsafe_ptr(), suppress.unsafe_ptr(), Int(text_end.unsafe_ptr()[0]), token.unsafe_ptr(),
            logprob.unsafe_ptr(), text_top_ids.unsafe_ptr(), text_top_logits.unsafe_ptr(), text_logsumexp.unsafe_ptr(),
        )

