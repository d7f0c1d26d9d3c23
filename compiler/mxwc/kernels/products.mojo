"""Products of a few rows with a stored float32 weight on the CPU: y [rows, n] = x [rows, k] times
w [n, k] transposed (+ a bias): the decoder steps' linears and their logits against the tied
embedding. (An int8 target's: kernels/vnni.mojo.)

A decoder step reads every weight once per token, so its time is the weights' bytes over the
memory's bandwidth, which MAX's matmul of one row (or five) with a transposed weight reaches
well under half of (BENCHMARKS.md). Each weight row is read once for a block of rows of x; the
weight's rows are split into ranges over MAX's CPU thread pool, and a task keeps its range in
cache while blocks of x pass over it.
"""

import extensibility
from extensibility import InputTensor, OutputTensor
from max.algorithm import parallelize
from max.gpu.host import DeviceContext
from std.memory import stack_allocation

from .vnni import vnni_matmul, vnni_products

comptime F32 = DType.float32
comptime WIDTH = 16  # float32 lanes of an AVX-512 register
comptime TASKS = 64  # ranges of weight rows handed to the thread pool
comptime WIDE_ROWS = 64  # past this many rows of x, int8 products run as packed tiles (vnni_matmul)
comptime BLOCK = 8  # rows of x per pass over a task's weight rows (more rows: more passes, from cache)


@always_inline
def block_products[R: Int, k: Int](
    y: UnsafePointer[Float32, MutAnyOrigin],
    n: Int,
    x: UnsafePointer[Float32, MutAnyOrigin],
    row: UnsafePointer[Float32, MutAnyOrigin],
):
    """y[r * n] = x[r] . row for R consecutive rows of x, each 16-value chunk of the weight row
    loaded once for all R rows. Sums per row: SUMS, in flight together (a dot product is a chain
    of adds)."""
    comptime CHUNKS = k // WIDTH
    comptime SUMS = 4 if R == 1 else 2
    comptime assert CHUNKS % SUMS == 0, "the reduction dimension must be a multiple of 64"
    var acc = stack_allocation[R * SUMS, SIMD[F32, WIDTH]]()
    comptime for i in range(R * SUMS):
        acc[i] = SIMD[F32, WIDTH](0)
    comptime for c in range(0, CHUNKS, SUMS):
        comptime for s in range(SUMS):
            comptime chunk = c + s
            var w = (row + chunk * WIDTH).load[width=WIDTH]()
            comptime for r in range(R):
                acc[r * SUMS + s] += w * (x + r * k + chunk * WIDTH).load[width=WIDTH]()
    comptime for r in range(R):
        var total = acc[r * SUMS]
        comptime for s in range(1, SUMS):
            total += acc[r * SUMS + s]
        y[r * n] = total.reduce_add()


def products[rows: Int, k: Int, n: Int, tasks: Int = TASKS](
    y: UnsafePointer[Float32, MutAnyOrigin],
    x: UnsafePointer[Float32, MutAnyOrigin],
    w: UnsafePointer[Float32, MutAnyOrigin],
):
    """y = x w^T over every core. A task takes a range of weight rows and passes blocks of x's
    rows over it."""
    comptime FULL = rows // BLOCK
    comptime REST = rows % BLOCK
    var per = (n + tasks - 1) // tasks

    def part(task: Int) {imm y, imm x, imm w, imm per}:
        var first = task * per
        var last = min(first + per, n)
        for b in range(FULL):
            for j in range(first, last):
                block_products[BLOCK, k](y + b * BLOCK * n + j, n, x + b * BLOCK * k, w + j * k)
        comptime if REST > 0:
            for j in range(first, last):
                block_products[REST, k](y + FULL * BLOCK * n + j, n, x + FULL * BLOCK * k, w + j * k)

    parallelize(part, tasks)


def add_bias[rows: Int, n: Int](y: UnsafePointer[Float32, MutAnyOrigin], bias: UnsafePointer[Float32, MutAnyOrigin]):
    for r in range(rows):
        var j = 0
        while j + WIDTH <= n:
            (y + r * n + j).store((y + r * n + j).load[width=WIDTH]() + (bias + j).load[width=WIDTH]())
            j += WIDTH
        while j < n:
            y[r * n + j] += bias[j]
            j += 1


@extensibility.register("mxw_linear")
struct Linear:
    """x [rows, k] float32 times the float32 weight [n, k] (openai-whisper's [out, in]), plus
    the bias [n] -> y [rows, n] float32."""

    @staticmethod
    def execute[target: StaticString, rows: Int, k: Int, n: Int](
        y: OutputTensor[dtype=DType.float32, rank=2, ...],
        x: InputTensor[dtype=DType.float32, rank=2, ...],
        w: InputTensor[dtype=DType.float32, rank=2, ...],
        bias: InputTensor[dtype=DType.float32, rank=1, ...],
        ctx: DeviceContext,
    ) raises:
        comptime assert target == "cpu", "the small-row products are the CPU's"
        # A task a few weight rows: the linears' weights are narrow (n of 384 to 1536).
        products[rows, k, n, 16](y.unsafe_ptr(), x.unsafe_ptr(), w.unsafe_ptr())
        add_bias[rows, n](y.unsafe_ptr(), bias.unsafe_ptr())


@extensibility.register("mxw_linear_int8")
struct LinearInt8:
    """x [rows, k] float32 times the int8 weight [n, k] (openai-whisper's [out, in]) with its
    groups' scales [n, k / group], plus the bias [n] -> y [rows, n] float32; x rounded to 8 bits
    a group at a time (kernels/vnni.mojo)."""

    @staticmethod
    def execute[target: StaticString, rows: Int, k: Int, n: Int, group: Int](
        y: OutputTensor[dtype=DType.float32, rank=2, ...],
        x: InputTensor[dtype=DType.float32, rank=2, ...],
        w: InputTensor[dtype=DType.int8, rank=2, ...],
        scale: InputTensor[dtype=DType.float32, rank=2, ...],
        bias: InputTensor[dtype=DType.float32, rank=1, ...],
        ctx: DeviceContext,
    ) raises:
        comptime assert target == "cpu", "int8 weights are a CPU target's"
        comptime assert group == 64, "the VNNI products take groups of 64"
        comptime if rows <= WIDE_ROWS:
            vnni_products[rows, k, n, 16](y.unsafe_ptr(), x.unsafe_ptr(), w.unsafe_ptr(), scale.unsafe_ptr())
            add_bias[rows, n](y.unsafe_ptr(), bias.unsafe_ptr())
        else:
            vnni_matmul[rows, k, n](y.unsafe_ptr(), x.unsafe_ptr(), w.unsafe_ptr(), scale.unsafe_ptr(), bias.unsafe_ptr())
