"""The decoder step's self-attention cache write (GPU targets and the CPU): the new key and value go to
slot `position` of their caches, in place, in one small kernel.

In MAX's graph ops the write is a select over the whole cache and a store of all of it (three
kernels a layer, each touching every slot); here only the new slot is written, and the
attention then reads the caches where they are. The position is read on the device, so a
recorded device graph replays at every position.
"""

import extensibility
from extensibility import IO, InputTensor, IOSpec, ManagedTensorSlice
from max.gpu import block_idx, thread_idx
from max.gpu.host import DeviceContext
from std.memory import alloc

comptime THREADS = 256
comptime MUTABLE = IOSpec[True, IO.Input]()  # a graph buffer, written in place


def write_gpu[dtype: DType, rows_heads: Int, slots: Int, dh: Int](
    keys: UnsafePointer[Scalar[dtype], MutAnyOrigin],
    values: UnsafePointer[Scalar[dtype], MutAnyOrigin],
    k: UnsafePointer[Scalar[dtype], MutAnyOrigin],
    v: UnsafePointer[Scalar[dtype], MutAnyOrigin],
    position: UnsafePointer[Int64, MutAnyOrigin],
):
    var i = Int(block_idx.x) * THREADS + Int(thread_idx.x)
    if i < rows_heads * dh:
        var at = (i // dh) * slots * dh + Int(position[0]) * dh + i % dh
        keys[at] = k[i]
        values[at] = v[i]


@extensibility.register("mxw_cache_write")
struct CacheWrite:
    """keys, values [R, H, slots, dh] (mutated) <- k, v [R, H, 1, dh] at slot position [1].
    Shapes come as parameters (rows_heads = R * H): the graph knows them when it is traced."""

    @staticmethod
    def execute[target: StaticString, rows_heads: Int, slots: Int, dh: Int](
        keys: ManagedTensorSlice[io_spec=MUTABLE, ...],
        values: ManagedTensorSlice[io_spec=MUTABLE, ...],
        k: InputTensor[dtype=keys.dtype, rank=4, ...],
        v: InputTensor[dtype=keys.dtype, rank=4, ...],
        position: InputTensor[dtype=DType.int64, rank=1, ...],
        ctx: DeviceContext,
    ) raises:
        comptime dtype = keys.dtype
        comptime assert values.dtype == dtype, "the key and value caches share a dtype"
        var values_ptr = values.unsafe_ptr().bitcast[Scalar[dtype]]()
        comptime if target == "gpu":
            comptime kernel = write_gpu[dtype, rows_heads, slots, dh]
            ctx.enqueue_function[kernel](
                keys.unsafe_ptr(), values_ptr, k.unsafe_ptr(), v.unsafe_ptr(), position.unsafe_ptr(),
                grid_dim=(rows_heads * dh + THREADS - 1) // THREADS, block_dim=THREADS,
            )
        else:
            var p = Int(position.unsafe_ptr()[0])
            for i in range(rows_heads * dh):
                var at = (i // dh) * slots * dh + p * dh + i % dh
                keys.unsafe_ptr()[at] = k.unsafe_ptr()[i]
                values_ptr[at] = v.unsafe_ptr()[i]


@always_inline
def copy_slots(dest: UnsafePointer[Float32, MutAnyOrigin], src: UnsafePointer[Float32, MutAnyOrigin], n: Int):
    """dest[0..n) <- src[0..n), float32."""
    comptime W = 16
    var i = 0
    while i + W <= n:
        (dest + i).store((src + i).load[width=W]())
        i += W
    while i < n:
        dest[i] = src[i]
        i += 1


@extensibility.register("mxw_cache_fork")
struct CacheFork:
    """Each window's cache [batch, heads, slots, dh] into every sequence of the window: row r of
    dest [batch * group, heads, slots, dh] (mutated) takes row r // group, slots 0..length-1
    (the CPU's: the slots past `length` are never read before a step writes them)."""

    @staticmethod
    def execute[target: StaticString, batch: Int, group: Int, heads: Int, slots: Int, dh: Int](
        dest: ManagedTensorSlice[io_spec=MUTABLE, ...],
        source: InputTensor[dtype=DType.float32, rank=4, ...],
        length: InputTensor[dtype=DType.int64, rank=1, ...],
        ctx: DeviceContext,
    ) raises:
        comptime assert target == "cpu", "the fork kernel is the CPU's"
        var n = min(max(Int(length.unsafe_ptr()[0]), 0), slots)
        var d = dest.unsafe_ptr().bitcast[Float32]()
        var s = source.unsafe_ptr()
        for r in range(batch * group):
            for h in range(heads):
                copy_slots(d + (r * heads + h) * slots * dh, s + ((r // group) * heads + h) * slots * dh, n * dh)


@extensibility.register("mxw_cache_reorder")
struct CacheReorder:
    """Beam search: row r of the cache [rows, heads, slots, dh] (mutated) takes row
    source_rows[r], slots 0..length-1 (the CPU's: later slots are never read before a step
    writes them); rows that keep their own are not copied."""

    @staticmethod
    def execute[target: StaticString, rows: Int, heads: Int, slots: Int, dh: Int](
        cache: ManagedTensorSlice[io_spec=MUTABLE, ...],
        source_rows: InputTensor[dtype=DType.int64, rank=1, ...],
        length: InputTensor[dtype=DType.int64, rank=1, ...],
        ctx: DeviceContext,
    ) raises:
        comptime assert target == "cpu", "the reorder kernel is the CPU's"
        var n = min(max(Int(length.unsafe_ptr()[0]), 0), slots)
        var c = cache.unsafe_ptr().bitcast[Float32]()
        var src = source_rows.unsafe_ptr()
        var moved = 0
        for r in range(rows):
            var s = Int(src[r])
            if s < 0 or s >= rows:
                raise Error("a reorder's source row is outside the cache")
            if s != r:
                moved += 1
        if moved == 0 or n == 0:
            return
        # Every moved row's source first, then into place: a row may be another's source.
        var row_floats = heads * n * dh
        var scratch = alloc[Float32](moved * row_floats).unsafe_origin_cast[MutAnyOrigin]()
        var m = 0
        for r in range(rows):
            var s = Int(src[r])
            if s != r:
                for h in range(heads):
                    copy_slots(scratch + m * row_floats + h * n * dh, c + (s * heads + h) * slots * dh, n * dh)
                m += 1
        m = 0
        for r in range(rows):
            if Int(src[r]) != r:
                for h in range(heads):
                    copy_slots(c + (r * heads + h) * slots * dh, scratch + m * row_floats + h * n * dh, n * dh)
                m += 1
        scratch.free()
