"""Multi-tensor kernels: pack many arrays into one flat staging buffer, and apply a
reduced staging buffer back to them, each in one launch.

What a replicated store's ``sync()`` runs around each collective (see
:mod:`varstore.distributed.buckets`). The arrays are reached through tables, one row per
tensor: its byte address, its first element in the staging buffer, and per-tensor flags.
Work is cut into *chunks* of at most :data:`CHUNK` elements of one tensor; a CUDA block
takes whole chunks (block-stride loop) and its threads stride over the chunk's elements,
so no thread searches for its tensor. The CPU loop walks the same chunks in order.

Staging words: the reduction runs on a staging dtype that every engine can add (float32
for float16/bfloat16/float8, int32 for 8- and 16-bit integers, the dtype itself
otherwise), converted by :func:`varstore.kernels.cast.convert_word` as everywhere else.
"""

from __future__ import annotations

import numpy as np
from numba import float32, float64, int64, uint32, uint64

from ._targets import Kernel, cpu_kernel, cuda_kernel, element
from .cast import SAME, convert_word
from .intrinsics import load_at, store_at

#: Elements per chunk: big enough to amortize a chunk's table reads, small enough that a
#: bucket of many small tensors still spreads over every SM.
CHUNK = 1 << 14

#: How :func:`apply_staged` does arithmetic on a staging word.
STAGE_F32 = 0
STAGE_F64 = 1
STAGE_INT = 2  # two's complement words: adding the words wraps, as integers do


@element
def load_word(address, index, like):
    """Element ``index`` of the array at ``address`` (of ``like``'s type)."""
    return load_at(uint64(address), int64(index), like)


@element
def store_word(address, index, value, like):
    """Write ``value`` as element ``index`` of the array at ``address`` (``like``'s type)."""
    store_at(uint64(address), int64(index), value, like)


@element
def negate_staged(w, kind):
    """``-x`` of a staging word ``w`` (float32/float64 bits or an integer word)."""
    if kind == STAGE_F32:
        return uint64(uint32(w) ^ uint32(0x80000000))
    if kind == STAGE_F64:
        return uint64(w) ^ uint64(0x8000000000000000)
    return uint64(0) - uint64(w)


@element
def apply_staged(old, r, add, divisor, kind):
    """The staging word to write back: ``r`` (divided by ``divisor`` when it is not 1: a
    mean), plus ``old`` (the tensor's current value as a staging word) where ``add``."""
    if kind == STAGE_F32:
        v = np.uint32(r).view(np.float32)
        if divisor != 1:
            v = float32(v / float32(divisor))
        if add:
            v = float32(np.uint32(old).view(np.float32) + v)
        return uint64(np.float32(v).view(np.uint32))
    if kind == STAGE_F64:
        d = np.uint64(r).view(np.float64)
        if divisor != 1:
            d = float64(d / float64(divisor))
        if add:
            d = float64(np.uint64(old).view(np.float64) + d)
        return np.float64(d).view(np.uint64)
    return uint64(uint64(r) + uint64(old)) if add else uint64(r)


@element
def pack_element(address, index, like, negate, kind, route, src_fmt, dst_fmt, lo, hi, mask):
    return pack_staged(convert_word(load_word(address, index, like), route, src_fmt, dst_fmt, lo, hi, mask), negate,
                       kind, mask)


@element
def pack_staged(w, negate, kind, mask):
    """The staging word of a tensor's element ``w`` (already a staging word)."""
    return negate_staged(w, kind) & mask if negate else w


@element
def unpack_element(address, index, r, like_src, like_dst, add, divisor, kind, to_stage, from_stage):
    """Write element ``index`` of the tensor at ``address`` from the staging word ``r``.
    (It stores itself: a 64-bit word handed back to a simulated thread would become a
    Python int, which numba cannot type as uint64 on the way in again.)"""
    old = uint64(0)
    if add:
        old = convert_word(load_word(address, index, like_src), to_stage[0], to_stage[1], to_stage[2],
                           to_stage[3], to_stage[4], to_stage[5])
    w = apply_staged(old, r, add, divisor, kind)
    w = convert_word(w, from_stage[0], from_stage[1], from_stage[2], from_stage[3], from_stage[4], from_stage[5])
    store_word(address, index, w, like_dst)


@element
def unpack_unchanged(address, index, r, like, add, divisor, kind):
    """:func:`unpack_element` where the tensor's words are the staging words (both routes
    SAME): the same steps without the conversions. For the CPU loops (pack has its
    twin, :func:`pack_staged`): the conversion switch left in a loop made it 2.8x
    slower (bench_pack.py). On a GPU, branches on values uniform across threads cost
    little, and the CUDA loops keep the one element function."""
    old = load_word(address, index, like) if add else uint64(0)
    store_word(address, index, apply_staged(old, r, add, divisor, kind), like)


# ------------------------------------------------------------------------------ loops
# Tables (one row per tensor): address (uint64, bytes), start (int64: first staging
# element), step (int64: 1, or 0 for a one-element source that fills the tensor), flag
# (uint8: negate for pack, add for unpack). Chunks: tensor (int64), first (int64: first
# staging element), count (int64).


@cpu_kernel
def _pack_cpu(staging, chunk_tensor, chunk_first, chunk_count, address, start, step, negate, like, kind, conversion):
    proto = like[0]
    route, src_fmt, dst_fmt, lo, hi, mask = conversion
    for c in range(chunk_tensor.size):
        # The row in locals: stores through staging may alias the tables for all the
        # compiler knows, so it would reload them for every element.
        t = chunk_tensor[c]
        base, at, stride, neg = start[t], address[t], step[t], negate[t]
        first, end = chunk_first[c], chunk_first[c] + chunk_count[c]
        if route == SAME:  # (see unpack_unchanged)
            for j in range(first, end):
                staging[j] = pack_staged(load_word(at, (j - base) * stride, proto), neg, kind, mask)
        else:
            for j in range(first, end):
                staging[j] = pack_element(at, (j - base) * stride, proto, neg, kind, route, src_fmt, dst_fmt, lo, hi,
                                          mask)


@cuda_kernel
def _pack_cuda(staging, chunk_tensor, chunk_first, chunk_count, address, start, step, negate, like, kind, conversion):
    proto = like[0]
    route, src_fmt, dst_fmt, lo, hi, mask = conversion
    for c in range(cuda.blockIdx.x, chunk_tensor.size, cuda.gridDim.x):  # noqa: F821
        t = chunk_tensor[c]
        base, at, stride, neg = start[t], address[t], step[t], negate[t]
        first = chunk_first[c]
        for j in range(first + cuda.threadIdx.x, first + chunk_count[c], cuda.blockDim.x):  # noqa: F821
            staging[j] = pack_element(at, (j - base) * stride, proto, neg, kind, route, src_fmt, dst_fmt, lo, hi, mask)


@cpu_kernel
def _unpack_cpu(staging, chunk_tensor, chunk_first, chunk_count, address, start, add, like_src, like_dst, divisor,
                kind, to_stage, from_stage):
    src_proto = like_src[0]
    dst_proto = like_dst[0]
    unchanged = to_stage[0] == SAME and from_stage[0] == SAME
    for c in range(chunk_tensor.size):
        t = chunk_tensor[c]
        base, at, plus = start[t], address[t], add[t]  # (locals: see _pack_cpu)
        first, end = chunk_first[c], chunk_first[c] + chunk_count[c]
        if unchanged:
            for j in range(first, end):
                unpack_unchanged(at, j - base, staging[j], dst_proto, plus, divisor, kind)
        else:
            for j in range(first, end):
                unpack_element(at, j - base, staging[j], src_proto, dst_proto, plus, divisor, kind, to_stage,
                               from_stage)


@cuda_kernel
def _unpack_cuda(staging, chunk_tensor, chunk_first, chunk_count, address, start, add, like_src, like_dst, divisor,
                 kind, to_stage, from_stage):
    src_proto = like_src[0]
    dst_proto = like_dst[0]
    for c in range(cuda.blockIdx.x, chunk_tensor.size, cuda.gridDim.x):  # noqa: F821
        t = chunk_tensor[c]
        base, at, plus = start[t], address[t], add[t]
        first = chunk_first[c]
        for j in range(first + cuda.threadIdx.x, first + chunk_count[c], cuda.blockDim.x):  # noqa: F821
            unpack_element(at, j - base, staging[j], src_proto, dst_proto, plus, divisor, kind, to_stage, from_stage)


pack = Kernel("pack", _pack_cpu, _pack_cuda, chunked=False, chunk_table=1)
"""Tensors -> one staging buffer: ``(staging words, chunk_tensor, chunk_first, chunk_count,
address, start, step, negate, like, kind, conversion)``; ``like`` is a one-element array
of the tensors' source word type, ``conversion`` the 6-tuple of ``convert_word``."""
unpack = Kernel("unpack", _unpack_cpu, _unpack_cuda, chunked=False, chunk_table=1)
"""Staging buffer -> tensors: ``(staging words, chunk_tensor, chunk_first, chunk_count,
address, start, add, like_src, like_dst, divisor, kind, to_stage, from_stage)``; each
element becomes ``[old +] staging / divisor``, converted to the tensor's dtype."""


def chunks(counts) -> tuple:
    """``(chunk_tensor, chunk_first, chunk_count)`` (int64 arrays) for tensors of
    ``counts`` elements laid end to end; empty tensors get no chunk."""
    counts = np.asarray(counts, np.int64)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])) if counts.size else counts
    per = -(-counts // CHUNK)
    tensor = np.repeat(np.arange(counts.size, dtype=np.int64), per)
    offset_in_tensor = (np.arange(tensor.size, dtype=np.int64) - np.repeat(np.cumsum(per) - per, per)) * CHUNK
    first = np.repeat(starts, per) + offset_in_tensor
    count = np.minimum(np.repeat(counts, per) - offset_in_tensor, CHUNK)
    return tensor, first, count

KERNELS = (pack, unpack)
