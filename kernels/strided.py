"""The strided region copy: one kernel for slice-assign (scatter) and slicing (gather);
and the fills of words the driver's memset cannot write (8-byte patterns, regions).

Both sides are flat 1-D arrays of raw words with a region description: an element offset
and per-axis strides over a shared region shape (C order). A stride of 0 broadcasts (a
scalar or a row written to many rows); negative strides walk backwards. Element ``j`` of
the region is ``dst[dst_offset + <unravel(j), dst_strides>] = src[src_offset + <unravel(j),
src_strides>]``: the unravel is the element function, written once.
"""

from __future__ import annotations

from numba import int32, int64, uint32, uint64

from . import cast
from ._targets import element
from .cast import convert_word
from .declare import UNSIGNED, Array, Kernel, Scalar, kernel
from .intrinsics import mulhi32, mulhi64, shl32, shr32


@element
def region_offsets_wide(j, shape, magic, shift, a_strides, b_strides, axes):
    """Offsets of element ``j`` (C order over the first ``axes`` axes of ``shape``) under
    two sets of strides, without a division: each axis but the first takes its index as
    the remainder of ``j // shape[d]``, computed as ``mulhi64(2 * j, magic[d]) >>
    shift[d]`` (the 64-bit magic numbers of ``varstore.region_axes.division_magic``); the
    first axis' index is the quotient left over. For ``j`` below 2**63."""
    j = uint64(j)
    a = int64(0)
    b = int64(0)
    for d in range(axes - 1, 0, -1):
        q = mulhi64(j + j, uint64(magic[d])) >> uint64(shift[d])
        i = int64(j - q * uint64(shape[d]))
        a += i * int64(a_strides[d])
        b += i * int64(b_strides[d])
        j = q
    if axes > 0:
        a += int64(j) * int64(a_strides[0])
        b += int64(j) * int64(b_strides[0])
    return a, b


@element
def region_offsets_narrow(j, shape, magic, shift, a_strides, b_strides, axes):
    """As :func:`region_offsets_wide` in 32-bit arithmetic (``mulhi32``, the 32-bit magic
    numbers), for arrays of fewer than 2**31 elements: every index and offset then fits
    an int32."""
    j = uint32(j)
    a = int32(0)
    b = int32(0)
    for d in range(axes - 1, 0, -1):
        q = shr32(mulhi32(shl32(j, 1), uint32(magic[d])), shift[d])
        i = int32(uint32(j - uint32(q * uint32(shape[d]))))
        a = int32(a + int32(i * int32(a_strides[d])))
        b = int32(b + int32(i * int32(b_strides[d])))
        j = q
    if axes > 0:
        a = int32(a + int32(int32(j) * int32(a_strides[0])))
        b = int32(b + int32(int32(j) * int32(b_strides[0])))
    return int64(a), int64(b)


@element
def region_fits(offset, strides, shape, axes, size):
    """Whether every element of a region (``offset``, ``strides`` over ``shape``, in
    elements) lies inside an array of ``size`` elements."""
    low = int64(offset)
    high = int64(offset)
    for d in range(axes):
        reach = int64(shape[d] - 1) * int64(strides[d])
        if reach > 0:
            high += reach
        else:
            low += reach
    return low >= 0 and high < size


@element
def same_word(x):
    """The word itself: a copy."""
    return x


# ---------------------------------------------------------------------------- kernels
# dst and src are flat arrays of words. Region scalars: element offsets, strides per
# axis (in elements, any sign, 0 broadcasts), the region's shape (at least one axis;
# ``varstore.regions`` merges the axes that can be merged first), per axis the magic
# multiplier and shift that divide by its extent (``region_axes.division_magic``; 32-bit ones
# when ``narrow``, 64-bit ones otherwise; axis 0 is never divided), and ``narrow`` (1 when
# both arrays have fewer than 2**31 elements: the unravel then runs in 32-bit arithmetic,
# several times cheaper on a GPU). Neither path divides: on a GPU a 64-bit division is a
# long software routine and even a 32-bit one some twenty instructions, per element. (A
# 2-D launch, rows from blocks, would spare the division of the last axis only, and give
# the region template a launch geometry of its own.) The loop runs over region elements
# start .. stop (C order); on the CPU both are multiples of the last axis' extent.

_REGION = (Array("dst", "out", words=UNSIGNED), Array("src", words=UNSIGNED))
_REGION_SCALARS = (Scalar("dst_offset", "i64"), Scalar("dst_strides", "axes"), Scalar("src_offset", "i64"),
                   Scalar("src_strides", "axes"), Scalar("shape", "axes"), Scalar("magic", "axes"),
                   Scalar("shift", "axes"), Scalar("narrow", "u32"))
_CONVERSION = Scalar("conversion", "conversion")

copy_region = kernel("copy_region", "region", same_word, _REGION, _REGION_SCALARS, unroll=True, wide=True,
                     doc="dst[region] = src[region]: slice-assign (scatter) and slicing (gather).")
copy_region_converting = kernel("copy_region_converting", "region", convert_word,
                                (Array("dst", "out", words=UNSIGNED), Array("src")),
                                _REGION_SCALARS + (_CONVERSION,),
                                doc="As copy_region, each element converted by cast.convert_word.")
scatter_indexed = kernel("scatter_indexed", "scatter", convert_word,
                         (Array("dst", "out", words=UNSIGNED), Array("index", word="int64"), Array("src")),
                         (Scalar("src_strides", "axes"), Scalar("shape", "axes"), Scalar("magic", "axes"),
                          Scalar("shift", "axes"), Scalar("narrow", "u32"), _CONVERSION),
                         doc="dst[index[j]] = convert(src[<unravel(j over shape), src_strides>]): where an index "
                             "repeats the last write wins on the CPU, one of them (unspecified) on a GPU. The "
                             "unravel is the region's (magic numbers; narrow when index and src have fewer than "
                             "2**31 elements: dst is reached through the int64 index).")
gather_indexed = kernel("gather_indexed", "gather", same_word,
                        (Array("dst", "out", words=UNSIGNED), Array("index", word="int64"),
                         Array("src", words=UNSIGNED)),
                        doc="dst[j] = src[index[j]].")


def _region_cast(whole: Kernel) -> Kernel:
    """The region form of a whole-array cast kernel of ``kernels.cast``: the same element
    function, arrays and scalars, on the region loop. A strided write that converts goes
    through the one of its pair of dtypes (``varstore.casting.region_plan``): the
    element math is inlined, and on the CPU a row from a contiguous source is converted
    in stages (template option ``stage``: a vectorized loop into a buffer, then strided
    stores), where ``copy_region_converting`` picks the conversion per element at run
    time (on the CPU that made ``v[::2, 1::3] = b`` from float64 into bfloat16 0.6-1.0x
    ml_dtypes' time)."""
    arrays = {a.name: a for a in whole.arrays}
    return kernel(f"copy_region_{whole.name}", "region", whole.element,
                  (Array("dst", "out", words=Kernel.allowed_words(arrays["dst"])),
                   Array("src", words=Kernel.allowed_words(arrays["src"]))),
                  _REGION_SCALARS + whole.scalars, stage=True, wide=True,
                  doc=f"dst[region] = {whole.name}(src[region]): {whole.doc}")


#: Whole-array cast kernel name -> its region form (see :func:`_region_cast`).
REGION_CASTS = {k.name: _region_cast(k) for k in (cast.encode_f32, cast.encode_f64, cast.encode_int64, cast.decode,
                                                   cast.decode_f64, cast.transcode, cast.widen_f32, cast.narrow_f64,
                                                   cast.float_to_int, cast.float_to_uint64)}



@element
def the_word(word):
    """The fill's word, stored as the destination's word (its low bits)."""
    return word


_WORD = Scalar("word", "u64")
fill_words = kernel("fill_words", "elementwise", the_word, (Array("dst", "out", words=UNSIGNED),), (_WORD,),
                    doc="dst[i] = word: a contiguous fill of a pattern the driver's memset cannot write (8 bytes, "
                        "e.g. float64 1.0), 16 bytes per store.")
fill_region = kernel("fill_region", "region", the_word, (Array("dst", "out", words=UNSIGNED),),
                     (Scalar("dst_offset", "i64"), Scalar("dst_strides", "axes"), Scalar("shape", "axes"),
                      Scalar("magic", "axes"), Scalar("shift", "axes"), Scalar("narrow", "u32"), _WORD), wide=True,
                     doc="dst[region] = word: a scalar written to a region (v[::2, 1::3] = 1.5); a region of one "
                         "axis with stride 1 (v[0, :] = 0) 16 bytes per store.")

# Regions of several axes whose last one every array walks with stride 1, row by row
# (template option ``rows``: a warp per row, 16-byte groups). Their loops hold more
# registers (54-56 against 24 for a copy): apart from copy_region and fill_region, whose
# strided loops keep a GPU's every thread slot (``varstore.region_axes.contiguous_rows``
# picks these). On the CPU they run the general kernels' compiled loops (``cpu_loop_of``).
copy_rows = kernel("copy_rows", "region", same_word, _REGION, _REGION_SCALARS, rows=True, cpu_loop_of=copy_region,
                   doc="As copy_region, for regions whose rows are contiguous on both sides: v[:, 8:520] = b.")
fill_rows = kernel("fill_rows", "region", the_word, fill_region.arrays, fill_region.scalars, rows=True,
                   cpu_loop_of=fill_region,
                   doc="As fill_region, for regions whose rows are contiguous: v[:, 8:520] = 0.")

KERNELS = (copy_region, copy_region_converting, scatter_indexed, gather_indexed, *REGION_CASTS.values(), fill_words,
           fill_region, copy_rows, fill_rows)
