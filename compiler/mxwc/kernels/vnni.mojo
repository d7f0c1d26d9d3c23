"""An int8 target's products on x86 VNNI: y [rows, n] = x [rows, k] (float32) times w [n, k]
(int8, a float32 scale per group of 64 values of a row) transposed: a decoder step's few rows
(`vnni_products`) and the encoder's many (`vnni_matmul`).

Widening int8 weights to float32 costs more instructions than the product itself once several
rows share each weight (beam search's five): here the rows are rounded to 8 bits too, in the
same groups of 64 (each group's largest |x| maps to 127), and each group's 64 products of one
row are a single `vpdpbusd` (64 unsigned x signed 8-bit products summed four by four into 16
32-bit lanes). The instruction takes unsigned activations, so x + 128 goes in, and 128 times the
group's sum of weights (a `vpdpbusd` of the weights by 128, once for all rows) comes off first.
Each group's 16 integer sums are then scaled by the weight's and the row's scales, in float32.
"""

from max.algorithm import parallelize
from std.math import round
from std.memory import alloc, bitcast, stack_allocation
from std.sys import llvm_intrinsic

comptime F32 = DType.float32
comptime GROUP = 64  # values per scale, of a weight row and of a row of x: one 512-bit register of int8
comptime LANES = 16  # 32-bit sums of a vpdpbusd
comptime TASKS = 64  # ranges of weight rows handed to the thread pool
comptime BLOCK = 8  # rows of x per pass over a task's weight rows


@always_inline
def dot4(acc: SIMD[DType.int32, LANES], a: SIMD[DType.uint8, GROUP], b: SIMD[DType.int8, GROUP]) -> SIMD[DType.int32, LANES]:
    """acc + each lane's 4 products of unsigned a by signed b (AVX-512 VNNI vpdpbusd)."""
    return llvm_intrinsic["llvm.x86.avx512.vpdpbusd.512", SIMD[DType.int32, LANES]](acc, bitcast[DType.int8, GROUP](a), b)


@always_inline
def quantize_group(values: SIMD[F32, GROUP]) -> Tuple[SIMD[DType.uint8, GROUP], Float32]:
    """A group of 64 values rounded to 8 bits: scale = largest |x| / 127 (1 for zeros),
    q = round(x / scale) + 128, so q in [1, 255] stands for scale * (q - 128)."""
    var top = abs(values).reduce_max()
    var scale = top / 127 if top > 0 else Float32(1)
    return ((round(values / scale) + 128).cast[DType.uint8](), scale)


def quantize_rows[rows: Int, k: Int](
    x: UnsafePointer[Float32, MutAnyOrigin],
    xq: UnsafePointer[UInt8, MutAnyOrigin],
    xs: UnsafePointer[Float32, MutAnyOrigin],
):
    """Each group of 64 values of x rounded by `quantize_group`: xq [rows, k], xs [rows, k / 64]."""
    comptime GROUPS = k // GROUP
    for r in range(rows):
        for g in range(GROUPS):
            var group = quantize_group((x + r * k + g * GROUP).load[width=GROUP]())
            (xq + r * k + g * GROUP).store(group[0])
            xs[r * GROUPS + g] = group[1]


@always_inline
def vnni_block[R: Int, k: Int](
    y: UnsafePointer[Float32, MutAnyOrigin],
    n: Int,
    xq: UnsafePointer[UInt8, MutAnyOrigin],
    xs: UnsafePointer[Float32, MutAnyOrigin],
    row: UnsafePointer[Int8, MutAnyOrigin],
    scales: UnsafePointer[Float32, MutAnyOrigin],
):
    """y[r * n] = x[r] . row for R rows of quantized x, each group of the weight row loaded once."""
    comptime GROUPS = k // GROUP
    var acc = stack_allocation[R, SIMD[F32, LANES]]()
    comptime for r in range(R):
        acc[r] = SIMD[F32, LANES](0)
    var offset = SIMD[DType.uint8, GROUP](128)
    comptime for g in range(GROUPS):
        var w = (row + g * GROUP).load[width=GROUP]()
        var shift = -dot4(SIMD[DType.int32, LANES](0), offset, w)  # 128 * the group's weights, 4 by 4
        var sw = scales[g]
        comptime for r in range(R):
            var sums = dot4(shift, (xq + r * k + g * GROUP).load[width=GROUP](), w)
            acc[r] += sums.cast[F32]() * (sw * xs[r * GROUPS + g])
    comptime for r in range(R):
        y[r * n] = acc[r].reduce_add()


def vnni_products[rows: Int, k: Int, n: Int, tasks: Int = TASKS](
    y: UnsafePointer[Float32, MutAnyOrigin],
    x: UnsafePointer[Float32, MutAnyOrigin],
    w: UnsafePointer[Int8, MutAnyOrigin],
    scale: UnsafePointer[Float32, MutAnyOrigin],
):
    """y = x w^T over every core, x rounded to 8 bits a group at a time. A task takes a range of
    weight rows and passes blocks of x's rows over it."""
    comptime assert k % GROUP == 0, "int8 products need rows of a multiple of 64 values"
    comptime GROUPS = k // GROUP
    comptime FULL = rows // BLOCK
    comptime REST = rows % BLOCK
    var xq = alloc[UInt8](rows * k).unsafe_origin_cast[MutAnyOrigin]()
    var xs = alloc[Float32](rows * GROUPS).unsafe_origin_cast[MutAnyOrigin]()
    quantize_rows[rows, k](x, xq, xs)
    var per = (n + tasks - 1) // tasks

    def part(task: Int) {imm y, imm xq, imm xs, imm w, imm scale, imm per}:
        var first = task * per
        var last = min(first + per, n)
        for b in range(FULL):
            for j in range(first, last):
                vnni_block[BLOCK, k](y + b * BLOCK * n + j, n, xq + b * BLOCK * k, xs + b * BLOCK * GROUPS,
                                     w + j * k, scale + j * GROUPS)
        comptime if REST > 0:
            for j in range(first, last):
                vnni_block[REST, k](y + FULL * BLOCK * n + j, n, xq + FULL * BLOCK * k, xs + FULL * BLOCK * GROUPS,
                                    w + j * k, scale + j * GROUPS)

    parallelize(part, tasks)
    xq.free()
    xs.free()


# The encoder's products: many rows (1500 per window) by every weight row, bounded by arithmetic.
comptime TILE = 16  # rows of x per packed tile: one 32-bit lane each of a vpdpbusd
comptime TILES = 2  # tiles a task's pass holds in registers (32 rows)


def pack_tiles[k: Int](
    x: UnsafePointer[Float32, MutAnyOrigin],
    rows: Int,
    first: Int,
    xq: UnsafePointer[UInt32, MutAnyOrigin],
    xs: UnsafePointer[Float32, MutAnyOrigin],
):
    """Rows first .. first + TILE * TILES of x (those past `rows`: zeros) rounded to 8 bits by
    `quantize_group`, laid out for `vnni_tiles`: xq [tile, k / 4, TILE] holds the 4 bytes of a
    row's quad of values at [tile, quad, row], xs [tile, group, TILE] the scales."""
    comptime GROUPS = k // GROUP
    comptime QUADS = k // 4
    for t in range(TILES):
        for r in range(TILE):
            var row = first + t * TILE + r
            for g in range(GROUPS):
                var values = SIMD[F32, GROUP](0)
                if row < rows:
                    values = (x + row * k + g * GROUP).load[width=GROUP]()
                var group = quantize_group(values)
                var quads = bitcast[DType.uint32, GROUP // 4](group[0])
                comptime for i in range(GROUP // 4):
                    xq[(t * QUADS + g * (GROUP // 4) + i) * TILE + r] = quads[i]
                xs[(t * GROUPS + g) * TILE + r] = group[1]


@always_inline
def vnni_tiles[k: Int, C: Int](
    y: UnsafePointer[Float32, MutAnyOrigin],
    n: Int,
    valid: Int,
    xq: UnsafePointer[UInt32, MutAnyOrigin],
    xs: UnsafePointer[Float32, MutAnyOrigin],
    w: UnsafePointer[Int8, MutAnyOrigin],
    scale: UnsafePointer[Float32, MutAnyOrigin],
    shift: UnsafePointer[Int32, MutAnyOrigin],
    bias: UnsafePointer[Float32, MutAnyOrigin],
):
    """y[r, c] = x[r] . w[c] + bias[c] for the TILES * TILE packed rows (the first `valid` of them
    stored) and C weight rows: each vpdpbusd is a tile's 16 rows by 4 bytes of one weight row
    (broadcast), so no sums across lanes; each group's integer sums are scaled into float32."""
    comptime GROUPS = k // GROUP
    comptime QUADS = k // 4
    comptime ACC = TILES * C
    var total = stack_allocation[ACC, SIMD[F32, LANES]]()
    comptime for a in range(ACC):
        total[a] = SIMD[F32, LANES](0)
    for g in range(GROUPS):
        var sums = stack_allocation[ACC, SIMD[DType.int32, LANES]]()
        comptime for c in range(C):
            var s = SIMD[DType.int32, LANES](-shift[c * GROUPS + g])
            comptime for t in range(TILES):
                sums[t * C + c] = s
        comptime for i in range(GROUP // 4):
            var quad = g * (GROUP // 4) + i
            var tiles = stack_allocation[TILES, SIMD[DType.uint8, GROUP]]()
            comptime for t in range(TILES):
                tiles[t] = bitcast[DType.uint8, GROUP]((xq + (t * QUADS + quad) * TILE).load[width=TILE]())
            comptime for c in range(C):
                var four = (w + c * k + quad * 4).bitcast[Int32]()[0]
                var b = bitcast[DType.int8, GROUP](SIMD[DType.int32, LANES](four))
                comptime for t in range(TILES):
                    sums[t * C + c] = dot4(sums[t * C + c], tiles[t], b)
        comptime for t in range(TILES):
            var rs = (xs + (t * GROUPS + g) * TILE).load[width=TILE]()
            comptime for c in range(C):
                total[t * C + c] += sums[t * C + c].cast[F32]() * (rs * scale[c * GROUPS + g])
    comptime for t in range(TILES):
        comptime for c in range(C):
            var out = total[t * C + c] + bias[c]
            comptime for r in range(TILE):
                if t * TILE + r < valid:
                    y[(t * TILE + r) * n + c] = out[r]


def vnni_matmul[rows: Int, k: Int, n: Int](
    y: UnsafePointer[Float32, MutAnyOrigin],
    x: UnsafePointer[Float32, MutAnyOrigin],
    w: UnsafePointer[Int8, MutAnyOrigin],
    scale: UnsafePointer[Float32, MutAnyOrigin],
    bias: UnsafePointer[Float32, MutAnyOrigin],
):
    """y = x w^T + bias for many rows (the encoder's), x rounded to 8 bits a group at a time as in
    `vnni_products`. A task packs 32 rows of x and passes every weight row over them, C at a time."""
    comptime assert k % GROUP == 0, "int8 products need rows of a multiple of 64 values"
    comptime assert n % 4 == 0, "the int8 products take weight rows four at a time"
    comptime C = 6 if n % 6 == 0 else 4
    comptime GROUPS = k // GROUP
    comptime SPAN = TILE * TILES
    comptime PASSES = (rows + SPAN - 1) // SPAN
    # 128 times each group's sum of weights, what x + 128 adds to every sum
    var shift = alloc[Int32](n * GROUPS).unsafe_origin_cast[MutAnyOrigin]()
    var offset = SIMD[DType.uint8, GROUP](128)

    comptime SUM_TASKS = 8
    comptime PER = (n + SUM_TASKS - 1) // SUM_TASKS

    def sums(task: Int) {imm w, imm shift, imm offset}:
        for j in range(task * PER, min(task * PER + PER, n)):
            for g in range(GROUPS):
                var group = (w + j * k + g * GROUP).load[width=GROUP]()
                shift[j * GROUPS + g] = dot4(SIMD[DType.int32, LANES](0), offset, group).reduce_add()

    parallelize(sums, SUM_TASKS)

    def part(p: Int) {imm y, imm x, imm w, imm scale, imm bias, imm shift}:
        var xq = stack_allocation[TILES * (k // 4) * TILE, UInt32]().unsafe_origin_cast[MutAnyOrigin]()
        var xs = stack_allocation[TILES * GROUPS * TILE, Float32]().unsafe_origin_cast[MutAnyOrigin]()
        var first = p * SPAN
        pack_tiles[k](x, rows, first, xq, xs)
        var valid = min(SPAN, rows - first)
        for j in range(0, n, C):
            vnni_tiles[k, C](y + first * n + j, n, valid, xq, xs, w + j * k, scale + j * GROUPS,
                             shift + j * GROUPS, bias + j)

    parallelize(part, PASSES)
    shift.free()
