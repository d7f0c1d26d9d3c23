"""Products with int8 weights on the CPU: y [rows, n] = x [rows, k] (float32) times w [n, k]
(int8, one float32 scale per group of a row's values) transposed, the decoders' linears and
logits of an int8 bundle (`mxwr.quantization`).

The decoder step reads every weight once per token, so its time is the weights' bytes over the
memory's bandwidth: int8 weights are a quarter of float32's. Each weight row is read once for a
block of rows of x, widened to float32 in registers, and multiplied in float32; the activations
stay float32 (only the weights are rounded). The vocabulary's rows or the output features are
split into ranges over MAX's CPU thread pool.
"""

import extensibility
from extensibility import InputTensor, OutputTensor
from max.algorithm import parallelize
from max.gpu.host import DeviceContext
from std.memory import stack_allocation

from .logits import cpu_greedy

comptime F32 = DType.float32
comptime WIDTH = 16  # float32 lanes of an AVX-512 register
comptime TASKS = 64  # ranges of output rows handed to the thread pool
comptime BLOCK = 8  # rows of x per pass over a weight row (more rows: more passes, from cache)


@always_inline
def block_products[R: Int, k: Int, group: Int](
    y: UnsafePointer[Float32, MutAnyOrigin],
    n: Int,
    x: UnsafePointer[Float32, MutAnyOrigin],
    row: UnsafePointer[Int8, MutAnyOrigin],
    scales: UnsafePointer[Float32, MutAnyOrigin],
):
    """y[r * n] = x[r] . row for R consecutive rows of x, the weight row's 16-value chunks widened
    and scaled by their group's scale once for all R rows. Sums per row: SUMS, in flight
    together (a dot product is a chain of adds)."""
    comptime CHUNKS = k // WIDTH
    comptime PER_GROUP = group // WIDTH
    comptime SUMS = 4 if R == 1 else 2
    comptime assert CHUNKS % SUMS == 0, "the reduction dimension must be a multiple of 64"
    comptime assert group % WIDTH == 0 and k % group == 0, "groups must be whole chunks and tile a row"
    var acc = stack_allocation[R * SUMS, SIMD[F32, WIDTH]]()
    comptime for i in range(R * SUMS):
        acc[i] = SIMD[F32, WIDTH](0)
    comptime for c in range(0, CHUNKS, SUMS):
        comptime for s in range(SUMS):
            comptime chunk = c + s
            var w = (row + chunk * WIDTH).load[width=WIDTH]().cast[DType.int32]().cast[F32]() * scales[chunk // PER_GROUP]
            comptime for r in range(R):
                acc[r * SUMS + s] += w * (x + r * k + chunk * WIDTH).load[width=WIDTH]()
    comptime for r in range(R):
        var total = acc[r * SUMS]
        comptime for s in range(1, SUMS):
            total += acc[r * SUMS + s]
        y[r * n] = total.reduce_add()


def int8_products[rows: Int, k: Int, n: Int, group: Int](
    y: UnsafePointer[Float32, MutAnyOrigin],
    x: UnsafePointer[Float32, MutAnyOrigin],
    w: UnsafePointer[Int8, MutAnyOrigin],
    scale: UnsafePointer[Float32, MutAnyOrigin],
):
    """y = x w^T, w's row j in groups of `group` values, each scaled by scale[j, g], over every
    core. A task keeps its range of weight rows in cache while blocks of x pass over it."""
    comptime FULL = rows // BLOCK
    comptime REST = rows % BLOCK
    comptime GROUPS = k // group
    var per = (n + TASKS - 1) // TASKS

    def part(task: Int) {imm y, imm x, imm w, imm scale, imm per}:
        var first = task * per
        var last = min(first + per, n)
        for b in range(FULL):
            for j in range(first, last):
                block_products[BLOCK, k, group](y + b * BLOCK * n + j, n, x + b * BLOCK * k, w + j * k,
                                                scale + j * GROUPS)
        comptime if REST > 0:
            for j in range(first, last):
                block_products[REST, k, group](y + FULL * BLOCK * n + j, n, x + FULL * BLOCK * k, w + j * k,
                                               scale + j * GROUPS)

    parallelize(part, TASKS)


@extensibility.register("mxw_linear_int8")
struct LinearInt8:
    """x [rows, k] float32 times the int8 weight [n, k] (openai-whisper's [out, in]) with its
    groups' scales [n, k / group] -> y [rows, n] float32; the bias is the graph's."""

    @staticmethod
    def execute[target: StaticString, rows: Int, k: Int, n: Int, group: Int](
        y: OutputTensor[dtype=DType.float32, rank=2, ...],
        x: InputTensor[dtype=DType.float32, rank=2, ...],
        w: InputTensor[dtype=DType.int8, rank=2, ...],
        scale: InputTensor[dtype=DType.float32, rank=2, ...],
        ctx: DeviceContext,
    ) raises:
        comptime assert target == "cpu", "int8 weights are a CPU target's"
        int8_products[rows, k, n, group](y.unsafe_ptr(), x.unsafe_ptr(), w.unsafe_ptr(), scale.unsafe_ptr())


@extensibility.register("mxw_logits_greedy_int8")
struct LogitsGreedyInt8:
    """`mxw_logits_greedy` against an int8 embedding [vocab, d] with its groups' scales
    [vocab, d / group]: the logits [rows, vocab] float32, the greedy token [rows] under the
    suppress mask and its log-probability [rows]."""

    @staticmethod
    def execute[target: StaticString, rows: Int, d: Int, vocab: Int, group: Int](
        logits: OutputTensor[dtype=DType.float32, rank=2, ...],
        token: OutputTensor[dtype=DType.int64, rank=1, ...],
        logprob: OutputTensor[dtype=DType.float32, rank=1, ...],
        x: InputTensor[dtype=DType.float32, rank=2, ...],
        e: InputTensor[dtype=DType.int8, rank=2, ...],
        scale: InputTensor[dtype=DType.float32, rank=2, ...],
        suppress: InputTensor[dtype=DType.float32, rank=1, ...],
        ctx: DeviceContext,
    ) raises:
        comptime assert target == "cpu", "int8 weights are a CPU target's"
        int8_products[rows, d, vocab, group](logits.unsafe_ptr(), x.unsafe_ptr(), e.unsafe_ptr(), scale.unsafe_ptr())
        cpu_greedy[rows, vocab](logits.unsafe_ptr(), token.unsafe_ptr(), logprob.unsafe_ptr(), suppress.unsafe_ptr())
