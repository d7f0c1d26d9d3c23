"""The decoder step's attention on tiled GPU targets: one query per (row, head) over stored
keys and values, as one kernel.

MAX's graph ops spend five to seven kernels on it (scores, max, exp, sum, P.V, each a launch
with little work at one query); here one block per (row, head) does all of it in shared memory.
The arithmetic is `graphs.single_query_attention`'s: float32 products and sums, an additive
float32 key mask, softmax in float32, P rounded to the model dtype before P.V.
"""

import extensibility
from extensibility import InputTensor, OutputTensor
from max.gpu import barrier, block_idx, thread_idx
from max.gpu.host import DeviceContext
from max.gpu.primitives import warp
from std.math import exp
from std.memory import stack_allocation
from std.sys import size_of
from std.utils.numerics import neg_inf

comptime THREADS = 512  # one block per (row, head): many loads in flight, registers to spare
comptime WARPS = THREADS // 32
comptime F32 = DType.float32


def attend_gpu[
    dtype: DType, slots: Int, dh: Int, k_width: Int, v_width: Int, v_transposed: Bool
](
    dst: UnsafePointer[Scalar[dtype], MutAnyOrigin],
    q: UnsafePointer[Scalar[dtype], MutAnyOrigin],
    k: UnsafePointer[Scalar[dtype], MutAnyOrigin],
    v: UnsafePointer[Scalar[dtype], MutAnyOrigin],
    mask: UnsafePointer[Float32, MutAnyOrigin],
):
    # Every global read is an aligned 16-byte vector (rows and offsets are multiples of 16 bytes):
    # one block per head has few warps to hide memory latency with.
    comptime VEC = 16 // size_of[dtype]()
    comptime ALIGN_F32 = VEC * 4
    comptime assert dh % VEC == 0 and k_width % VEC == 0 and v_width % VEC == 0 and slots % VEC == 0
    var rh = Int(block_idx.x)  # row * heads + head
    var tid = Int(thread_idx.x)
    var lane = tid % 32
    var wid = tid // 32
    var qs = stack_allocation[dh, Float32, alignment=ALIGN_F32, address_space=AddressSpace.SHARED]()
    var p = stack_allocation[slots, Float32, alignment=ALIGN_F32, address_space=AddressSpace.SHARED]()
    var scratch = stack_allocation[WARPS * dh, Float32, alignment=ALIGN_F32, address_space=AddressSpace.SHARED]()
    if tid < dh:
        qs[tid] = q[rh * dh + tid].cast[F32]()
    barrier()

    # Scores, a thread per key slot (its row read as whole vectors); masked slots are not read.
    var kb = k + rh * slots * k_width
    var top = neg_inf[F32]()
    for j in range(tid, slots, THREADS):
        var s = mask[j]
        if s > neg_inf[F32]():
            var acc = SIMD[F32, VEC](0)
            comptime for c in range(dh // VEC):
                acc += (qs + c * VEC).load[width=VEC, alignment=ALIGN_F32]() * (kb + j * k_width + c * VEC).load[width=VEC, alignment=16]().cast[F32]()
            s += acc.reduce_add()
        p[j] = s
        top = max(top, s)
    top = warp.max(top)
    if lane == 0:
        scratch[wid] = top
    barrier()
    top = scratch[0]
    for i in range(1, WARPS):
        top = max(top, scratch[i])
    barrier()

    var total: Float32 = 0
    for j in range(tid, slots, THREADS):
        var e = exp(p[j] - top)
        p[j] = e
        total += e
    total = warp.sum(total)
    if lane == 0:
        scratch[wid] = total
    barrier()
    total = scratch[0]
    for i in range(1, WARPS):
        total += scratch[i]
    barrier()
    for j in range(tid, slots, THREADS):
        p[j] = (p[j] / total).cast[dtype]().cast[F32]()  # rounded to the model dtype, as P is
    barrier()

    var vb = v + rh * slots * v_width
    comptime if v_transposed:
        # v [width, slots]: a warp per output column, each lane a vector of slots at a time;
        # the slot loop unrolled, so a lane has all its loads in flight at once.
        comptime steps = slots // (32 * VEC)
        comptime assert slots % (32 * VEC) == 0
        for d in range(wid, dh, WARPS):
            var acc = SIMD[F32, VEC](0)
            comptime for i in range(steps):
                var j = (i * 32 + lane) * VEC
                acc += (p + j).load[width=VEC, alignment=ALIGN_F32]() * (vb + d * slots + j).load[width=VEC, alignment=16]().cast[F32]()
            var column = warp.sum(acc.reduce_add())
            if lane == 0:
                dst[rh * dh + d] = column.cast[dtype]()
    else:
        # v [slots, width]: thread (group, chunk) sums a vector of columns over its group's
        # slots, skipping zero weights (the cache past the position). A warp holds 32 // chunks
        # groups: they add up by shuffles, then the warps through shared memory.
        comptime chunks = dh // VEC
        comptime groups = THREADS // chunks
        comptime assert 32 % chunks == 0
        var c = tid % chunks
        var g = tid // chunks
        var acc = SIMD[F32, VEC](0)
        for j in range(g, slots, groups):
            var pj = p[j]
            if pj != 0:
                acc += pj * (vb + j * v_width + c * VEC).load[width=VEC, alignment=16]().cast[F32]()
        comptime for e in range(VEC):
            var x = acc[e]
            var offset = chunks
            while offset < 32:
                x += warp.shuffle_xor(x, UInt32(offset))
                offset *= 2
            acc[e] = x
        if lane < chunks:
            (scratch + wid * dh + c * VEC).store[alignment=ALIGN_F32](acc)
        barrier()
        if tid < dh:
            var o: Float32 = 0
            for i in range(WARPS):
                o += scratch[i * dh + tid]
            dst[rh * dh + tid] = o.cast[dtype]()


def attend_cpu[
    dtype: DType, slots: Int, dh: Int, k_width: Int, v_width: Int, v_transposed: Bool
](
    rh: Int,
    dst: UnsafePointer[Scalar[dtype], MutAnyOrigin],
    q: UnsafePointer[Scalar[dtype], MutAnyOrigin],
    k: UnsafePointer[Scalar[dtype], MutAnyOrigin],
    v: UnsafePointer[Scalar[dtype], MutAnyOrigin],
    mask: UnsafePointer[Float32, MutAnyOrigin],
    p: UnsafePointer[Float32, MutAnyOrigin],
):
    """The same for one (row, head), serially: what CPU tests run of the GPU's step graph."""
    var kb = k + rh * slots * k_width
    var top = neg_inf[F32]()
    for j in range(slots):
        var s = mask[j]
        if s > neg_inf[F32]():
            var acc: Float32 = 0
            for d in range(dh):
                acc += q[rh * dh + d].cast[F32]() * kb[j * k_width + d].cast[F32]()
            s += acc
        p[j] = s
        top = max(top, s)
    var total: Float32 = 0
    for j in range(slots):
        p[j] = exp(p[j] - top)
        total += p[j]
    for j in range(slots):
        p[j] = (p[j] / total).cast[dtype]().cast[F32]()
    var vb = v + rh * slots * v_width
    for d in range(dh):
        var acc: Float32 = 0
        for j in range(slots):
            comptime if v_transposed:
                acc += p[j] * vb[d * slots + j].cast[F32]()
            else:
                acc += p[j] * vb[j * v_width + d].cast[F32]()
        dst[rh * dh + d] = acc.cast[dtype]()


@extensibility.register("mxw_single_query_attention")
struct SingleQueryAttention:
    """q [R, heads, 1, dh] over k [R, heads, slots, k_width >= dh] and v [R, heads, slots,
    v_width >= dh] (`v_transposed`: [R, heads, v_width, slots]), with an additive float32 key
    mask [slots] (0 or -inf) -> [R, heads, 1, dh]. Shapes come as parameters: the graph knows
    them all when it is traced."""

    @staticmethod
    def execute[
        target: StaticString,
        heads: Int,
        slots: Int,
        dh: Int,
        k_width: Int,
        v_width: Int,
        v_transposed: Bool,
    ](
        output: OutputTensor,
        q: InputTensor[dtype=output.dtype, rank=4, ...],
        k: InputTensor[dtype=output.dtype, rank=4, ...],
        v: InputTensor[dtype=output.dtype, rank=4, ...],
        mask: InputTensor[dtype=DType.float32, rank=1, ...],
        ctx: DeviceContext,
    ) raises:
        comptime dtype = output.dtype
        comptime assert dh <= THREADS and THREADS % dh == 0, "head width must divide the block"
        comptime assert target == "cpu" or dtype.is_half_float(), "the GPU kernel is for 16-bit targets"
        var blocks = q.dim_size(0) * heads
        comptime if target == "gpu":
            comptime kernel = attend_gpu[dtype, slots, dh, k_width, v_width, v_transposed]
            ctx.enqueue_function[kernel](
                output.unsafe_ptr(), q.unsafe_ptr(), k.unsafe_ptr(), v.unsafe_ptr(), mask.unsafe_ptr(),
                grid_dim=blocks, block_dim=THREADS,
            )
        else:
            var p = List[Float32](length=slots, fill=0)
            for rh in range(blocks):
                attend_cpu[dtype, slots, dh, k_width, v_width, v_transposed](
                    rh, output.unsafe_ptr(), q.unsafe_ptr(), k.unsafe_ptr(), v.unsafe_ptr(),
                    mask.unsafe_ptr(), p.unsafe_ptr().unsafe_origin_cast[MutAnyOrigin](),
                )
