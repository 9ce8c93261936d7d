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
from numba import float32, float64, uint32, uint64

from ._targets import element
from .access import load_word, store_word
from .cast import (  # noqa: F401 (SAME: the route callers compare with)
    F32_TO_SMALL,
    SAME,
    SMALL_TO_F32,
    convert_word,
    decode_to_f32_bits,
    encode_from_f32_bits,
    x86_nan32,
    x86_nan64,
)
from .declare import UNSIGNED, Array, Scalar, kernel

#: Elements per chunk: big enough to amortize a chunk's table reads, small enough that a
#: bucket of many small tensors still spreads over every SM.
CHUNK = 1 << 14

#: How :func:`apply_staged` does arithmetic on a staging word.
STAGE_F32 = 0
STAGE_F64 = 1
STAGE_INT = 2  # two's complement words: adding the words wraps, as integers do


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
    mean), plus ``old`` (the tensor's current value as a staging word) where ``add``. A
    NaN result takes its bits by the CPU's rule (``cast.x86_nan32``: ``old``'s quieted,
    else ``r``'s), on a GPU too, whose float operations give every NaN one pattern."""
    if kind == STAGE_F32:  # (a NaN is rare: a branch to its bits, cheaper here than selects on every word)
        rb = np.uint32(r)
        if divisor != 1:
            q = float32(rb.view(np.float32) / float32(divisor))
            rb = x86_nan32(q, rb, rb) if q != q else np.float32(q).view(np.uint32)  # (NaN: r's, quieted)
        if add:
            ob = np.uint32(old)
            total = float32(ob.view(np.float32) + np.uint32(rb).view(np.float32))
            return uint64(x86_nan32(total, ob, rb) if total != total else np.float32(total).view(np.uint32))
        return uint64(rb)
    if kind == STAGE_F64:
        rb = np.uint64(r)
        if divisor != 1:
            q = float64(rb.view(np.float64) / float64(divisor))
            rb = x86_nan64(q, rb, rb) if q != q else np.float64(q).view(np.uint64)
        if add:
            ob = np.uint64(old)
            total = float64(ob.view(np.float64) + np.uint64(rb).view(np.float64))
            return x86_nan64(total, ob, rb) if total != total else np.float64(total).view(np.uint64)
        return rb
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
    slower (the `sync/pack_*` ops of `varstore bench`). On a GPU, branches on values uniform across threads cost
    little, and the CUDA loops keep the one element function."""
    old = load_word(address, index, like) if add else uint64(0)
    store_word(address, index, apply_staged(old, r, add, divisor, kind), like)


@element
def pack_chunk_element(j, address, start, step, negate, like, kind, route, src_fmt, dst_fmt, lo, hi, mask):
    """Staging word ``j`` of a pack: the tensor's element ``(j - start) * step``."""
    return pack_element(address, (j - start) * step, like, negate, kind, route, src_fmt, dst_fmt, lo, hi, mask)


@element
def pack_chunk_same(j, address, start, step, negate, like, kind, route, src_fmt, dst_fmt, lo, hi, mask):
    """:func:`pack_chunk_element` where the tensor's words are the staging words (the
    conversion switch left in a CPU loop made it 2.8x slower)."""
    return pack_staged(load_word(address, (j - start) * step, like), negate, kind, mask)


@element
def pack_chunk_small(j, address, start, step, negate, like, kind, route, src_fmt, dst_fmt, lo, hi, mask):
    """:func:`pack_chunk_element` where the tensor is a small float (float16, bfloat16,
    float8) and the staging float32 (route SMALL_TO_F32): the decode inline, where the
    conversion switch calls it, which left the CPU loop several times slower."""
    w = load_word(address, (j - start) * step, like)
    return pack_staged(uint64(decode_to_f32_bits(w, src_fmt)), negate, kind, mask)


@element
def unpack_chunk_element(j, r, address, start, add, like_src, like_dst, divisor, kind,
                         t_route, t_src, t_dst, t_lo, t_hi, t_mask, f_route, f_src, f_dst, f_lo, f_hi, f_mask):
    """Apply staging word ``r`` (index ``j``) to the tensor's element ``j - start``."""
    unpack_element(address, j - start, r, like_src, like_dst, add, divisor, kind,
                   (t_route, t_src, t_dst, t_lo, t_hi, t_mask), (f_route, f_src, f_dst, f_lo, f_hi, f_mask))


@element
def unpack_chunk_unchanged(j, r, address, start, add, like_src, like_dst, divisor, kind,
                           t_route, t_src, t_dst, t_lo, t_hi, t_mask, f_route, f_src, f_dst, f_lo, f_hi, f_mask):
    """:func:`unpack_chunk_element` where both conversions are SAME."""
    unpack_unchanged(address, j - start, r, like_dst, add, divisor, kind)


@element
def unpack_chunk_small(j, r, address, start, add, like_src, like_dst, divisor, kind,
                       t_route, t_src, t_dst, t_lo, t_hi, t_mask, f_route, f_src, f_dst, f_lo, f_hi, f_mask):
    """:func:`unpack_chunk_element` where the tensor is a small float and the staging
    float32 (routes SMALL_TO_F32 and back, F32_TO_SMALL): the decode and the encode
    inline (see :func:`pack_chunk_small`)."""
    i = j - start
    rb = np.uint32(r)
    if divisor != 1:
        rb = x86_nan32(float32(rb.view(np.float32) / float32(divisor)), rb, rb)
    if add:
        ob = np.uint32(decode_to_f32_bits(load_word(address, i, like_src), t_src))
        rb = x86_nan32(float32(ob.view(np.float32) + np.uint32(rb).view(np.float32)), ob, rb)
    store_word(address, i, uint64(uint64(encode_from_f32_bits(rb, f_dst)) & uint64(f_mask)), like_dst)


# ---------------------------------------------------------------------------- kernels
# Tables: chunk_tensor, chunk_first (first staging element), chunk_count, one row per
# chunk; per tensor: tensor_address (uint64, bytes), tensor_start (its first staging
# element), tensor_step (1, or 0 for a one-element source that fills the tensor),
# tensor_negate (pack) / tensor_add (unpack).
# ``like*`` give the tensors' word types. The loop runs over chunks start .. stop.

_STAGING = UNSIGNED  # float32/int32 or 64-bit staging words, or any raw words (broadcasts)
_CHUNKS = (Array("chunk_tensor", word="int64"), Array("chunk_first", word="int64"),
           Array("chunk_count", word="int64"))

pack = kernel("pack", "chunks", pack_chunk_element,
              (Array("staging", "out", words=_STAGING), *_CHUNKS, Array("tensor_address", word="uint64"),
               Array("tensor_start", word="int64"), Array("tensor_step", word="int64"),
               Array("tensor_negate", word="int64"), Array("like", "type")),
              (Scalar("kind", "i64"), Scalar("conversion", "conversion"), Scalar("same", "u32"),
               Scalar("small", "u32")),
              row=("tensor_address", "tensor_start", "tensor_step", "tensor_negate"),
              fast=(("same", pack_chunk_same), ("small", pack_chunk_small)),
              doc="Tensors -> one staging buffer (same: the conversion is SAME; small: SMALL_TO_F32).")
unpack = kernel("unpack", "chunks", unpack_chunk_element,
                (Array("staging", words=_STAGING), *_CHUNKS, Array("tensor_address", word="uint64"),
                 Array("tensor_start", word="int64"), Array("tensor_add", word="int64"), Array("like_src", "type"),
                 Array("like_dst", "type", words=UNSIGNED)),
                (Scalar("divisor", "i64"), Scalar("kind", "i64"), Scalar("to_stage", "conversion"),
                 Scalar("from_stage", "conversion"), Scalar("unchanged", "u32"), Scalar("small", "u32")),
                row=("tensor_address", "tensor_start", "tensor_add"),
                fast=(("unchanged", unpack_chunk_unchanged), ("small", unpack_chunk_small)),
                doc="Staging buffer -> tensors: each element becomes [old +] staging / divisor, converted "
                    "(unchanged: both conversions SAME; small: SMALL_TO_F32 and F32_TO_SMALL).")


def pack_paths(conversion) -> dict:
    """The pack launch's path flags for ``conversion`` (the route to the staging words):
    ``same`` and ``small``, the CPU loop's fast paths."""
    return {"same": int(conversion[0] == SAME), "small": int(conversion[0] == SMALL_TO_F32)}


def unpack_paths(to_stage, from_stage) -> dict:
    """The unpack launch's path flags: ``unchanged`` and ``small``."""
    return {"unchanged": int(to_stage[0] == SAME and from_stage[0] == SAME),
            "small": int(to_stage[0] == SMALL_TO_F32 and from_stage[0] == F32_TO_SMALL)}


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
