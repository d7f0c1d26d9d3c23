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
