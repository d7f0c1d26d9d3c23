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


comptime CPU_WIDTH = 16  # float32 lanes of an AVX-512 register
comptime CPU_SUMS = 4  # independent sums in flight per row: a dot product is a chain of adds
comptime CPU_TASKS = 64  # vocabulary ranges handed to MAX's CPU thread pool


def cpu_products[rows: Int, d: Int, vocab: Int](
    logits: UnsafePointer[Float32, MutAnyOrigin],
    x: UnsafePointer[Float32, MutAnyOrigin],
    e: UnsafePointer[Float32, MutAnyOrigin],
):
    """logits [rows, vocab] = x [rows, d] times the embedding [vocab, d], float32. Each embedding
    row is read once from memory for all rows of x, in vectors, over every core; each dot
    product keeps CPU_SUMS sums so that its adds need not wait on each other."""
    comptime CHUNKS = d // CPU_WIDTH
    comptime assert CHUNKS % CPU_SUMS == 0, "the model width must be a multiple of 64"
    var per = (vocab + CPU_TASKS - 1) // CPU_TASKS

    def part(task: Int) {imm logits, imm x, imm e, imm per}:
        for v in range(task * per, min(task * per + per, vocab)):
            var row = e + v * d
            comptime for r in range(rows):
                var a0 = SIMD[F32, CPU_WIDTH](0)
                var a1 = SIMD[F32, CPU_WIDTH](0)
                var a2 = SIMD[F32, CPU_WIDTH](0)
                var a3 = SIMD[F32, CPU_WIDTH](0)
                comptime for c in range(0, CHUNKS, CPU_SUMS):
                    a0 += chunk_product(row, x + r * d, c)
                    a1 += chunk_product(row, x + r * d, c + 1)
                    a2 += chunk_product(row, x + r * d, c + 2)
                    a3 += chunk_product(row, x + r * d, c + 3)
                logits[r * vocab + v] = ((a0 + a1) + (a2 + a3)).reduce_add()

    parallelize(part, CPU_TASKS)


@always_inline
def chunk_product(
    row: UnsafePointer[Float32, MutAnyOrigin], x: UnsafePointer[Float32, MutAnyOrigin], c: Int
) -> SIMD[F32, CPU_WIDTH]:
    """Chunk c of one embedding row times the same chunk of x."""
    return (row + c * CPU_WIDTH).load[width=CPU_WIDTH]() * (x + c * CPU_WIDTH).load[width=CPU_WIDTH]()


def logits_cpu[dtype: DType, rows: Int, d: Int, vocab: Int](
    logits: UnsafePointer[Float32, MutAnyOrigin],
    token: UnsafePointer[Int64, MutAnyOrigin],
    logprob: UnsafePointer[Float32, MutAnyOrigin],
    x: UnsafePointer[Scalar[dtype], MutAnyOrigin],
    e: UnsafePointer[Scalar[dtype], MutAnyOrigin],
    suppress: UnsafePointer[Float32, MutAnyOrigin],
):
    """The same on the CPU: the products (`cpu_products`), then the greedy choice, serially."""
    comptime if dtype == F32:
        cpu_products[rows, d, vocab](logits, x.bitcast[Float32](), e.bitcast[Float32]())
    else:  # 16-bit: what CPU tests run of the GPU's graphs, summed in order
        for r in range(rows):
            for v in range(vocab):
                var acc: Float32 = 0
                for j in range(d):
                    acc += x[r * d + j].cast[F32]() * e[v * d + j].cast[F32]()
                logits[r * vocab + v] = acc.cast[dtype]().cast[F32]()
    cpu_greedy[rows, vocab](logits, token, logprob, suppress)


def cpu_greedy[rows: Int, vocab: Int](
    logits: UnsafePointer[Float32, MutAnyOrigin],
    token: UnsafePointer[Int64, MutAnyOrigin],
    logprob: UnsafePointer[Float32, MutAnyOrigin],
    suppress: UnsafePointer[Float32, MutAnyOrigin],
):
    """Each row's greedy token (the lowest id of the largest logit + suppress) and its
    log-probability, a row per task."""
    comptime W = 8  # float64 lanes of an AVX-512 register

    def row(r: Int) {imm logits, imm token, imm logprob, imm suppress}:
        var x = logits + r * vocab
        var top = neg_inf[F32]()
        var at = Int32(vocab)
        for v in range(vocab):
            if x[v] + suppress[v] > top:
                top = x[v] + suppress[v]
                at = Int32(v)
        # In float64: one float32 running sum of 51864 terms drops the smallest ones whole
        # (-4e-4 on a log-probability); the GPU's sums are short per thread, then a tree.
        var sums = SIMD[DType.float64, W](0)
        var v = 0
        while v + W <= vocab:
            var terms = ((x + v).load[width=W]() + (suppress + v).load[width=W]() - top).cast[DType.float64]()
            sums += exp(terms)
            v += W
        var total = sums.reduce_add()
        while v < vocab:
            total += exp((x[v] + suppress[v] - top).cast[DType.float64]())
            v += 1
        token[r] = Int64(at)
        logprob[r] = (-log(total)).cast[F32]()

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
            logits_cpu[dtype, rows, d, vocab](
                logits.unsafe_ptr(), token.unsafe_ptr(), logprob.unsafe_ptr(),
                x.unsafe_ptr(), e.unsafe_ptr(), suppress.unsafe_ptr(),
            )
