"""The strided region copy: one kernel for slice-assign (scatter) and slicing (gather).

Both sides are flat 1-D arrays of raw words with a region description: an element offset
and per-axis strides over a shared region shape (C order). A stride of 0 broadcasts (a
scalar or a row written to many rows); negative strides walk backwards. Element ``j`` of
the region is ``dst[dst_offset + <unravel(j), dst_strides>] = src[src_offset + <unravel(j),
src_strides>]``: the unravel is the element function, written once.
"""

from __future__ import annotations

from numba import int32, int64, uint32, uint64

from ._targets import Kernel, cpu_kernel, cuda_kernel, element
from .cast import convert_word
from .intrinsics import udivmod32


@element
def region_offsets(j, shape, a_strides, b_strides, axes):
    """Offsets of element ``j`` (C order over the first ``axes`` axes of ``shape``) under
    two sets of strides."""
    j = int64(j)
    a = int64(0)
    b = int64(0)
    for d in range(axes - 1, -1, -1):
        n = int64(shape[d])
        i = j % n
        j = j // n
        a += i * int64(a_strides[d])
        b += i * int64(b_strides[d])
    return a, b


@element
def region_offsets32(j, shape, a_strides, b_strides, axes):
    """As :func:`region_offsets` in 32-bit arithmetic, for arrays of fewer than 2**31
    elements (every offset then fits an int32)."""
    j = uint32(j)
    a = int32(0)
    b = int32(0)
    for d in range(axes - 1, -1, -1):
        j, i = udivmod32(j, uint32(shape[d]))
        a = int32(a + int32(int32(i) * int32(a_strides[d])))
        b = int32(b + int32(int32(i) * int32(b_strides[d])))
    return int64(a), int64(b)


@cpu_kernel
def _copy_region_cpu(dst, dst_offset, dst_strides, src, src_offset, src_strides, shape, start, count):
    # Rows of the last axis: one unravel per row, then a plain stride loop. start and
    # count are whole rows here (the launcher's contract).
    last = len(shape) - 1
    inner = shape[last]
    dst_step = dst_strides[last]
    src_step = src_strides[last]
    for r in range(start // inner, (start + count) // inner):
        a, b = region_offsets(r, shape, dst_strides, src_strides, last)
        a += dst_offset
        b += src_offset
        for i in range(inner):
            # Offsets inside a region are never negative: unsigned indices spare numba's
            # negative-index wraparound check on every access.
            dst[uint64(a + i * dst_step)] = src[uint64(b + i * src_step)]


@cuda_kernel
def _copy_region_cuda(dst, dst_offset, dst_strides, src, src_offset, src_strides, shape, start, count):
    narrow = dst.size < 2**31 and src.size < 2**31  # 32-bit unravel: several times cheaper
    for j in range(start + cuda.grid(1), start + count, cuda.gridsize(1)):  # noqa: F821
        if narrow:
            a, b = region_offsets32(j, shape, dst_strides, src_strides, len(shape))
        else:
            a, b = region_offsets(j, shape, dst_strides, src_strides, len(shape))
        dst[uint64(dst_offset + a)] = src[uint64(src_offset + b)]


@cpu_kernel
def _copy_region_converting_cpu(dst, dst_offset, dst_strides, src, src_offset, src_strides, shape, start, count,
                                route, src_fmt, dst_fmt, lo, hi, mask):
    last = len(shape) - 1
    inner = shape[last]
    dst_step = dst_strides[last]
    src_step = src_strides[last]
    for r in range(start // inner, (start + count) // inner):
        a, b = region_offsets(r, shape, dst_strides, src_strides, last)
        a += dst_offset
        b += src_offset
        for i in range(inner):
            x = src[uint64(b + i * src_step)]
            dst[uint64(a + i * dst_step)] = convert_word(x, route, src_fmt, dst_fmt, lo, hi, mask)


@cuda_kernel
def _copy_region_converting_cuda(dst, dst_offset, dst_strides, src, src_offset, src_strides, shape, start, count,
                                 route, src_fmt, dst_fmt, lo, hi, mask):
    narrow = dst.size < 2**31 and src.size < 2**31
    for j in range(start + cuda.grid(1), start + count, cuda.gridsize(1)):  # noqa: F821
        if narrow:
            a, b = region_offsets32(j, shape, dst_strides, src_strides, len(shape))
        else:
            a, b = region_offsets(j, shape, dst_strides, src_strides, len(shape))
        x = src[uint64(src_offset + b)]
        dst[uint64(dst_offset + a)] = convert_word(x, route, src_fmt, dst_fmt, lo, hi, mask)


@cpu_kernel
def _scatter_indexed_cpu(dst, index, src, src_strides, shape, route, src_fmt, dst_fmt, lo, hi, mask):
    # In order: where an index repeats, the last write wins, as in NumPy.
    for j in range(index.size):
        _, b = region_offsets(j, shape, src_strides, src_strides, len(shape))
        dst[uint64(index[j])] = convert_word(src[uint64(b)], route, src_fmt, dst_fmt, lo, hi, mask)


@cuda_kernel
def _scatter_indexed_cuda(dst, index, src, src_strides, shape, route, src_fmt, dst_fmt, lo, hi, mask):
    # Where an index repeats, the writes race: one of them wins, which one is unspecified.
    for j in range(cuda.grid(1), index.size, cuda.gridsize(1)):  # noqa: F821
        _, b = region_offsets(j, shape, src_strides, src_strides, len(shape))
        dst[uint64(index[j])] = convert_word(src[uint64(b)], route, src_fmt, dst_fmt, lo, hi, mask)


@cpu_kernel
def _gather_indexed_cpu(dst, index, src):
    for j in range(index.size):
        dst[j] = src[uint64(index[j])]


@cuda_kernel
def _gather_indexed_cuda(dst, index, src):
    for j in range(cuda.grid(1), index.size, cuda.gridsize(1)):  # noqa: F821
        dst[j] = src[uint64(index[j])]


scatter_indexed = Kernel("scatter_indexed", _scatter_indexed_cpu, _scatter_indexed_cuda, chunked=False)
"""``dst[index[j]] = convert(src[<unravel(j over shape), src_strides>])``: ``(dst words, index
int64, src, src_strides, shape, route, src_fmt, dst_fmt, lo, hi, mask)``, shape the selection's
(at least one axis); the conversion is :func:`.cast.convert_word`'s."""
gather_indexed = Kernel("gather_indexed", _gather_indexed_cpu, _gather_indexed_cuda)
"""``dst[j] = src[index[j]]``: ``(dst words, index int64, src words)``."""

copy_region = Kernel("copy_region", _copy_region_cpu, _copy_region_cuda, chunked=False)
"""``(dst words, dst_offset, dst_strides, src words, src_offset, src_strides, shape, start,
count)``: elements ``start .. start + count`` (C order) of a region of ``shape``; strides
and shape are tuples of ints with one entry per axis (at least one); on the CPU, start
and count are multiples of the last axis' extent."""

copy_region_converting = Kernel("copy_region_converting", _copy_region_converting_cpu, _copy_region_converting_cuda,
                                chunked=False)
"""As :data:`copy_region`, each element converted on the way by :func:`.cast.convert_word`:
``(dst words, dst_offset, dst_strides, src, src_offset, src_strides, shape, start, count,
route, src_fmt, dst_fmt, lo, hi, mask)``."""

KERNELS = (copy_region, copy_region_converting, scatter_indexed, gather_indexed)
