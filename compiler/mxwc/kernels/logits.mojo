"""The decoder's last step on 16-bit GPU targets: logits over the vocabulary and the greedy
token, in two kernels.

MAX runs the product with the tied embedding as a split-K gemv (33 us for tiny.en's 51864 x 384
on an H100, about a third of the bandwidth) and the greedy choice as three reductions, each
after a memset (16 us). Here every 16 lanes read one embedding row as 16-byte vectors and keep
the best logit they saw with the running softmax sum relative to it; one block per row then
merges those into the token and its log-probability, reading no logit again.

The arithmetic is the graph's: float32 dot products rounded to the model dtype (the product's
output type, as openai-whisper's fp16 logits), then float32; the greedy token is the lowest id
among the largest of logits + suppress, its log-probability -log(sum(exp(x - max x))).
"""

import extensibility
from extensibility import InputTensor, OutputTensor
from max.gpu import barrier, block_idx, thread_idx
from max.gpu.host import DeviceContext
from max.gpu.primitives import warp
from std.math import exp, log
from std.memory import stack_allocation
from std.sys import size_of
from std.utils.numerics import neg_inf

comptime F32 = DType.float32
comptime LOGIT_THREADS = 256
comptime LANES = 16  # per embedding row
comptime GROUPS = LOGIT_THREADS // LANES
comptime GREEDY_THREADS = 256
comptime GREEDY_WARPS = GREEDY_THREADS // 32


def logit_blocks(vocab: Int, per_block: Int) -> Int:
    return (vocab + per_block - 1) // per_block


@always_inline
def better(value: Float32, index: Int32, best: Float32, best_index: Int32) -> Bool:
    """Larger wins; of equal values, the lower id (torch.argmax's choice)."""
    return value > best or (value == best and index < best_index)


@always_inline
def rescaled(total: Float32, old_top: Float32, new_top: Float32) -> Float32:
    """A sum of exp(x - old_top) as a sum of exp(x - new_top), new_top >= old_top; an empty
    sum (old_top -inf) stays 0."""
    return total * exp(old_top - new_top) if total != 0 else Float32(0)


struct Best(TrivialRegisterPassable):
    """The best filtered logit seen, its id, and the sum of exp(x - value) over every x seen:
    what softmax and argmax need, combined in any grouping (online softmax)."""

    var value: Float32
    var index: Int32
    var total: Float32

    @always_inline
    def __init__(out self, value: Float32, index: Int32, total: Float32):
        self.value, self.index, self.total = value, index, total

    @always_inline
    def add(mut self, value: Float32, index: Int32):
        """One more logit, with an id above every id seen so far."""
        if value > self.value:
            self.total = rescaled(self.total, self.value, value) + 1
            self.value, self.index = value, index
        elif value > neg_inf[F32]():
            self.total += exp(value - self.value)

    @always_inline
    def merge(mut self, other: Best):
        """Commutative: both lanes of a shuffle reach the same result."""
        if better(other.value, other.index, self.value, self.index):
            self.total = rescaled(self.total, self.value, other.value) + other.total
            self.value, self.index = other.value, other.index
        else:
            self.total += rescaled(other.total, other.value, self.value)


def logits_gpu[dtype: DType, rows: Int, d: Int, vocab: Int, per_block: Int](
    logits: UnsafePointer[Float32, MutAnyOrigin],
    best_value: UnsafePointer[Float32, MutAnyOrigin],
    best_index: UnsafePointer[Int32, MutAnyOrigin],
    best_total: UnsafePointer[Float32, MutAnyOrigin],
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
    var top_t = stack_allocation[GROUPS * rows, Float32, address_space=AddressSpace.SHARED]()
    for i in range(tid, rows * d, LOGIT_THREADS):
        xs[i] = x[i].cast[F32]()

    # Every row's loads first, then the sums: a group has all its memory requests in flight.
    var w = stack_allocation[ROWS_EACH * CHUNKS, SIMD[dtype, VEC]]()
    comptime for i in range(ROWS_EACH):
        var v = min(block * per_block + i * GROUPS + group, vocab - 1)
        comptime for c in range(CHUNKS):
            w[i * CHUNKS + c] = (e + v * d + (c * LANES + lane) * VEC).load[width=VEC, alignment=16]()
    barrier()

    var best = stack_allocation[rows, Best]()
    comptime for r in range(rows):
        best[r] = Best(neg_inf[F32](), Int32(vocab), 0)
    comptime for i in range(ROWS_EACH):
        var v = block * per_block + i * GROUPS + group
        comptime for r in range(rows):
            var acc = SIMD[F32, VEC](0)
            comptime for c in range(CHUNKS):
                acc += (xs + r * d + (c * LANES + lane) * VEC).load[width=VEC, alignment=32]() * w[i * CHUNKS + c].cast[F32]()
            var s = acc.reduce_add()
            comptime for k in range(4):  # over the 16 lanes of the row: each ends with the sum
                s += warp.shuffle_xor(s, UInt32(8 >> k))
            var logit = s.cast[dtype]().cast[F32]()
            if v < vocab:
                if lane == 0:
                    logits[r * vocab + v] = logit
                best[r].add(logit + suppress[v], Int32(v))  # a group's ids only grow
    if lane == 0:
        comptime for r in range(rows):
            top_v[group * rows + r] = best[r].value
            top_i[group * rows + r] = best[r].index
            top_t[group * rows + r] = best[r].total
    barrier()
    if tid < rows:
        var b = Best(top_v[tid], top_i[tid], top_t[tid])
        for g in range(1, GROUPS):
            b.merge(Best(top_v[g * rows + tid], top_i[g * rows + tid], top_t[g * rows + tid]))
        best_value[tid * blocks + block] = b.value
        best_index[tid * blocks + block] = b.index
        best_total[tid * blocks + block] = b.total


def greedy_gpu[rows: Int, vocab: Int, blocks: Int](
    token: UnsafePointer[Int64, MutAnyOrigin],
    logprob: UnsafePointer[Float32, MutAnyOrigin],
    best_value: UnsafePointer[Float32, MutAnyOrigin],
    best_index: UnsafePointer[Int32, MutAnyOrigin],
    best_total: UnsafePointer[Float32, MutAnyOrigin],
):
    """One block per row merges the first kernel's per-block results."""
    var r = Int(block_idx.x)
    var tid = Int(thread_idx.x)
    var lane = tid % 32
    var wid = tid // 32
    var sv = stack_allocation[GREEDY_WARPS, Float32, address_space=AddressSpace.SHARED]()
    var si = stack_allocation[GREEDY_WARPS, Int32, address_space=AddressSpace.SHARED]()
    var st = stack_allocation[GREEDY_WARPS, Float32, address_space=AddressSpace.SHARED]()
    var b = Best(neg_inf[F32](), Int32(vocab), 0)
    for i in range(tid, blocks, GREEDY_THREADS):
        b.merge(Best(best_value[r * blocks + i], best_index[r * blocks + i], best_total[r * blocks + i]))
    comptime for k in range(5):
        var offset = UInt32(16 >> k)
        b.merge(Best(warp.shuffle_xor(b.value, offset), warp.shuffle_xor(b.index, offset),
                     warp.shuffle_xor(b.total, offset)))
    if lane == 0:
        sv[wid] = b.value
        si[wid] = b.index
        st[wid] = b.total
    barrier()
    if tid == 0:
        var all = Best(sv[0], si[0], st[0])
        for i in range(1, GREEDY_WARPS):
            all.merge(Best(sv[i], si[i], st[i]))
        token[r] = Int64(all.index)
        logprob[r] = -log(all.total)


def logits_cpu[dtype: DType, rows: Int, d: Int, vocab: Int](
    logits: UnsafePointer[Float32, MutAnyOrigin],
    token: UnsafePointer[Int64, MutAnyOrigin],
    logprob: UnsafePointer[Float32, MutAnyOrigin],
    x: UnsafePointer[Scalar[dtype], MutAnyOrigin],
    e: UnsafePointer[Scalar[dtype], MutAnyOrigin],
    suppress: UnsafePointer[Float32, MutAnyOrigin],
):
    """The same, serially: what CPU tests run of the GPU's graphs."""
    for r in range(rows):
        var top = neg_inf[F32]()
        var at = Int32(vocab)
        for v in range(vocab):
            var acc: Float32 = 0
            for j in range(d):
                acc += x[r * d + j].cast[F32]() * e[v * d + j].cast[F32]()
            var logit = acc.cast[dtype]().cast[F32]()
            logits[r * vocab + v] = logit
            if logit + suppress[v] > top:
                top = logit + suppress[v]
                at = Int32(v)
        var total: Float32 = 0
        for v in range(vocab):
            total += exp(logits[r * vocab + v] + suppress[v] - top)
        token[r] = Int64(at)
        logprob[r] = -log(total)


@extensibility.register("mxw_logits_greedy")
struct LogitsGreedy:
    """x [rows, d] (final hidden states) times the embedding [vocab, d] -> logits [rows, vocab]
    float32, the greedy token [rows] int64 under an additive suppress mask [vocab] (0 or -inf)
    and its log-probability [rows]. best_value/best_index/best_total [rows, blocks] are the first
    kernel's per-block results (per_block embedding rows each), outputs only so that the graph
    owns their memory."""

    @staticmethod
    def execute[target: StaticString, rows: Int, d: Int, vocab: Int, per_block: Int](
        logits: OutputTensor[dtype=DType.float32, rank=2, ...],
        token: OutputTensor[dtype=DType.int64, rank=1, ...],
        logprob: OutputTensor[dtype=DType.float32, rank=1, ...],
        best_value: OutputTensor[dtype=DType.float32, rank=2, ...],
        best_index: OutputTensor[dtype=DType.int32, rank=2, ...],
        best_total: OutputTensor[dtype=DType.float32, rank=2, ...],
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
                logits.unsafe_ptr(), best_value.unsafe_ptr(), best_index.unsafe_ptr(), best_total.unsafe_ptr(),
                x.unsafe_ptr(), e.unsafe_ptr(), suppress.unsafe_ptr(),
                grid_dim=logit_blocks(vocab, per_block), block_dim=LOGIT_THREADS,
            )
            comptime second = greedy_gpu[rows, vocab, logit_blocks(vocab, per_block)]
            ctx.enqueue_function[second](
                token.unsafe_ptr(), logprob.unsafe_ptr(),
                best_value.unsafe_ptr(), best_index.unsafe_ptr(), best_total.unsafe_ptr(),
                grid_dim=rows, block_dim=GREEDY_THREADS,
            )
        else:
            logits_cpu[dtype, rows, d, vocab](
                logits.unsafe_ptr(), token.unsafe_ptr(), logprob.unsafe_ptr(),
                x.unsafe_ptr(), e.unsafe_ptr(), suppress.unsafe_ptr(),
            )
