"""Cast kernels: bit-exact conversions to and from float16, bfloat16 and float8.

The element functions below are the whole math, written once; the declarations at the
end generate the loops that run them on the CPU and on the GPU. Small floats travel as raw integer words (uint16 for
float16/bfloat16, uint8 for float8), so one kernel serves every format: a format is a
tuple of integers (see :data:`FORMATS`) passed at run time. float32 travels as its uint32
bits too: a float32 scalar that crosses into Python (as in the CUDA simulator) is widened
to a double, which quiets signalling NaNs; bits keep every payload exact.

Rounding is to nearest, ties to even. Results match ``ml_dtypes`` bit for bit for a
float32 source (NaN, inf, overflow, subnormals), and NumPy's ``astype(float16)`` for
float16. A float64 source is rounded once, directly (``ml_dtypes`` goes through float32
and can round twice): :func:`f64_to_f32_bits_round_to_odd` keeps the bits needed for
that; an integer source too, past 2**53 through :func:`int_to_f64_round_to_odd`.

Integer arithmetic is wrapped in ``uint32(...)`` at every step and variable shifts use
:mod:`.intrinsics`: numba otherwise widens them to 64 bits, which costs twice the instructions
on a GPU (tests/test_kernels_ptx.py checks the PTX).

Float to integer (ours, for every backend alike): truncation toward zero, NaN gives 0,
and values past the integer's range saturate to its minimum or maximum. NumPy leaves
that case undefined (on x86 it wraps int8 and gives INT_MIN for int32/int64).
"""

from __future__ import annotations

import numpy as np
from numba import float32, float64, int64, uint32, uint64

from ..dtypes import REGISTRY
from ._targets import called, element
from .declare import UNSIGNED, Array, Scalar, kernel
from .intrinsics import shl32, shr32

U32 = uint32
U64 = uint64

# A small float's format travels as eight uint32 fields (see ``varstore.dtypes``, the one
# registry of dtypes): mantissa bits, exponent bits, exponent bias, largest finite
# magnitude word, word for a result too large (inf, or NaN without inf), NaN word, keep
# the NaN payload when encoding (0/1), keep it when decoding (0/1). uint32 keeps the
# arithmetic on them 32-bit in the kernels.
FORMATS = {name: r.format.kernel_args for name, r in REGISTRY.items() if r.format is not None}
FLOAT16 = FORMATS["float16"]
BFLOAT16 = FORMATS["bfloat16"]
FLOAT8_E4M3FN = FORMATS["float8_e4m3fn"]
FLOAT8_E5M2 = FORMATS["float8_e5m2"]


# --------------------------------------------------------------------------- elements


@element
def rne_shift32(x, s):
    """``x >> s`` rounded to nearest, ties to even. Needs s >= 1 and x < 2**24."""
    s = U32(min(U32(s), U32(31)))  # any larger shift of such an x rounds to 0 as well
    half_minus_one = U32(shl32(U32(1), U32(s - U32(1))) - U32(1))
    odd = U32(shr32(x, s) & U32(1))
    return shr32(U32(U32(x) + U32(half_minus_one + odd)), s)


@element
def encode_from_f32_bits(u, fmt):
    """float32 bits -> word of the small format ``fmt``, round to nearest even.

    Branch-free (both cases computed, one selected), so CPU loops vectorize and GPU warps
    do not diverge.
    """
    u = U32(u)
    mbits = U32(fmt[0])
    shift = U32(U32(23) - mbits)
    sign = shl32(U32(u >> U32(31)), U32(mbits + U32(fmt[1])))
    a = U32(u & U32(0x7FFFFFFF))
    exp = U32(a >> U32(23))
    min_normal = U32(U32(128) - U32(fmt[2]))  # float32 exponent field of the format's least normal
    mant = U32(a & U32(0x7FFFFF))
    # A normal result: rebias and round off `shift` bits (a carry into the exponent is
    # the right answer). A subnormal one: round at the fixed point of the least step.
    is_normal = exp >= min_normal
    rebiased = U32(a - U32(U32(min_normal - U32(1)) << U32(23)))
    significand = U32(mant | (U32(0x800000) if exp != U32(0) else U32(0)))
    subnormal_shift = U32(U32(min_normal - max(exp, U32(1))) + shift)
    r = rne_shift32(rebiased if is_normal else significand, shift if is_normal else subnormal_shift)
    r = U32(fmt[4]) if r > U32(fmt[3]) else r  # overflow and inf
    payload = U32(U32(max(shr32(mant, shift), U32(1))) * U32(fmt[6]))
    nan = U32(U32(fmt[5]) | payload)
    return U32(sign | (nan if a > U32(0x7F800000) else r))


@element
def f64_to_f32_bits_round_to_odd(x):
    """float64 -> float32 bits, rounded to odd.

    Exact values are kept; inexact ones are truncated toward zero and get their last bit
    set. Rounding that float32 again, to nearest even, into a format with at least two
    fewer significand bits gives the correctly rounded value of ``x``: one rounding.
    """
    if x != x:  # NaN: keep the payload's top bits (as NumPy's float64 -> float16 does)
        b = np.float64(x).view(np.uint64)
        payload = U32(U64(b & U64(0xFFFFFFFFFFFFF)) >> U64(29))
        high = U32(U32(U64(b >> U64(32))) & U32(0x80000000))
        return U32(high | U32(U32(0x7F800000) | U32(max(payload, U32(1)))))
    t = float32(x)  # hardware rounding, nearest even
    bits = np.float32(t).view(np.uint32)
    if float64(t) == x:
        return U32(bits)
    if abs(float64(t)) > abs(x):  # rounded away from zero: step one ulp back
        bits = U32(bits - U32(1))
    return U32(bits | U32(1))


@element
def encode_from_f64(x, fmt):
    """float64 value -> word of the small format ``fmt``, rounded once."""
    return encode_from_f32_bits(f64_to_f32_bits_round_to_odd(float64(x)), fmt)


@element
def int_to_f64_round_to_odd(x):
    """An integer (any width, signed or not; bool as 0/1) -> float64, rounded to odd:
    exact below 2**53 in magnitude; above, truncated toward zero with the last bit set
    where bits were dropped. ``float64(x)`` rounds to nearest even there, and a second
    rounding into a small format could then land on a tie that the integer is not on
    (``2**62 + 2**54 + 1`` gave bfloat16's ``2**62``, not the next value up).

    Branch-free, so the CPU loops vectorize: the magnitude's correctly rounded float64,
    one ulp back toward zero where it rounded up (its bits less one), then the last bit
    set where it was inexact. A magnitude that rounds to 2**64 is taken as the largest
    float64 below it, whose last bit is set already."""
    negative = x < 0
    a = U64(U64(0) - U64(x)) if negative else U64(x)
    f = float64(a)
    f = 18446744073709549568.0 if f >= 18446744073709551616.0 else f  # (to 2**64 - 2**11 from 2**64)
    back = U64(f)  # exact: an integer below 2**64
    b = U64(np.float64(f).view(np.uint64))
    b = U64(b - U64(1)) if back > a else b
    b = U64(b | U64(1)) if back != a else b
    r = np.uint64(b).view(np.float64)
    return -r if negative else r


@element
def encode_from_int(x, fmt):
    """Integer or bool value -> word of the small format ``fmt``, rounded once (round to
    odd into float64, then into float32, then to nearest even into the format)."""
    return encode_from_f32_bits(f64_to_f32_bits_round_to_odd(int_to_f64_round_to_odd(x)), fmt)


@element
def decode_to_f32_bits(w, fmt):
    """Word of the small format ``fmt`` -> float32 bits (exact)."""
    mbits = U32(fmt[0])
    w = U32(w)
    if U32(fmt[1]) == U32(8):  # bfloat16 is the upper half of a float32, NaN payload included
        return U32(w << U32(16))
    nbits = U32(mbits + U32(fmt[1]))
    sign = U32(shl32(shr32(w, nbits), U32(31)))  # words have no bits above the sign
    a = U32(w & U32(shl32(U32(1), nbits) - U32(1)))
    mant = U32(a & U32(shl32(U32(1), mbits) - U32(1)))
    shift = U32(U32(23) - mbits)
    if a > U32(fmt[3]):
        if a == U32(fmt[4]) and U32(fmt[4]) != U32(fmt[5]):
            bits = U32(0x7F800000)  # inf
        elif U32(fmt[7]) != U32(0):
            bits = U32(U32(0x7F800000) | shl32(mant, shift))  # NaN, payload kept
        else:
            bits = U32(0x7FC00000)  # NaN, canonical
        return U32(sign | bits)
    exp = shr32(a, mbits)
    if exp == U32(0):  # subnormal: mant * 2**(1 - bias - mbits), a normal float32
        scale_bits = U32(U32(U32(U32(128) - U32(fmt[2])) - mbits) << U32(23))
        v = float32(mant) * np.uint32(scale_bits).view(np.float32)  # exact
        return U32(sign | U32(np.float32(v).view(np.uint32)))
    bits = U32(U32(U32(exp + U32(127)) - U32(fmt[2])) << U32(23))
    return U32(sign | U32(bits | shl32(mant, shift)))


@element
def decode_to_f64(w, fmt):
    """Word of the small format ``fmt`` -> float64 value (exact)."""
    return widen_f32_bits(decode_to_f32_bits(w, fmt), 0)  # a NaN keeps its payload as it is


@element
def widen_f32_bits(b32, quiet):
    """float32 bits -> float64 value, exact. A NaN is widened by its bits (GPUs drop
    payloads), with ``quiet`` (0 or the float64 quiet bit) or-ed in."""
    b32 = U32(b32)
    if U32(b32 & U32(0x7FFFFFFF)) > U32(0x7F800000):
        b = U64(b32)
        wide = U64(U64(U64(b & U64(0x80000000)) << U64(32)) | U64(U64(0x7FF0000000000000) | U64(quiet)))
        wide = U64(wide | U64(U64(b & U64(0x7FFFFF)) << U64(29)))
        return np.uint64(wide).view(np.float64)
    return float64(np.uint32(b32).view(np.float32))


@element
def float_to_int64_saturating(x, lo, hi):
    """Truncate toward zero; NaN -> 0; past [lo, hi] -> lo or hi. Result as int64."""
    x = float64(x)
    if x != x:
        return int64(0)
    if x <= float64(lo):
        return int64(lo)
    if x >= float64(hi):  # float64(2**63 - 1) is 2**63, so int64's top is caught too
        return int64(hi)
    return int64(x)


@element
def float_to_uint64_saturating(x):
    """As :func:`float_to_int64_saturating` for a uint64 target."""
    x = float64(x)
    if x != x or x <= 0.0:
        return U64(0)
    if x >= 18446744073709551616.0:
        return U64(0xFFFFFFFFFFFFFFFF)
    return U64(x)


@element
def add_in_format(a, b, sign, fmt):
    """``a + sign * b`` for two words of ``fmt``: computed in float32, rounded once.

    A NaN sum takes its bits by the CPU's rule (x86 SSE) on every target: ``a`` quieted
    where it is a NaN, else ``b`` quieted (the sign multiply keeps a NaN as it is), else
    (infinities of opposite signs) the default NaN 0xFFC00000. A GPU's float
    operations return 0x7FFFFFFF for every NaN."""
    xb = np.uint32(decode_to_f32_bits(a, fmt))
    yb = np.uint32(decode_to_f32_bits(b, fmt))
    return encode_from_f32_bits(x86_nan32(np.float32(xb.view(np.float32) + float32(sign) * yb.view(np.float32)),
                                          xb, yb), fmt)


@element
def x86_nan32(r, ab, bb):
    """The float32 bits of ``r``, a sum or product of the float32 numbers of bits ``ab``
    and ``bb``: where ``r`` is NaN, the bits an x86 CPU (SSE) gives it: ``a`` quieted
    where it is a NaN, else ``b`` quieted where it is one, else the default NaN
    0xFFC00000. A GPU's float operations return 0x7FFFFFFF for every NaN; this chooses by
    selects on float compares, not branches (the CPU loops stay vectorized), the same on
    every target."""
    a = np.uint32(ab).view(np.float32)
    b = np.uint32(bb).view(np.float32)
    b_nan = U32(U32(bb) | U32(0x400000)) if b != b else U32(0xFFC00000)
    nan = U32(U32(ab) | U32(0x400000)) if a != a else b_nan
    return nan if r != r else U32(np.float32(r).view(np.uint32))


@element
def x86_nan64(r, ab, bb):
    """:func:`x86_nan32` in float64 (quiet bit 2**51, default NaN 0xFFF8000000000000)."""
    a = np.uint64(ab).view(np.float64)
    b = np.uint64(bb).view(np.float64)
    b_nan = U64(U64(bb) | U64(0x0008000000000000)) if b != b else U64(0xFFF8000000000000)
    nan = U64(U64(ab) | U64(0x0008000000000000)) if a != a else b_nan
    return nan if r != r else np.float64(r).view(np.uint64)


@element
def f32_bits_to_f64(b32):
    """float32 bits -> float64 value, exact; a NaN is widened by its bits and quieted
    (as the CPU's conversion, which NumPy uses; GPUs drop NaN payloads)."""
    return widen_f32_bits(b32, 0x0008000000000000)


@element
def f64_to_f32_bits(x):
    """float64 -> float32 bits, rounded to nearest even; a NaN keeps its sign and the top
    of its payload and is quieted (as the CPU's conversion, which NumPy uses)."""
    x = float64(x)
    if x != x:
        b = np.float64(x).view(np.uint64)
        high = U32(U32(U64(b >> U64(32))) & U32(0x80000000))
        payload = U32(U32(U64(U64(b & U64(0xFFFFFFFFFFFFF)) >> U64(29))) | U32(0x400000))
        return U32(high | U32(U32(0x7F800000) | payload))
    return U32(np.float32(float32(x)).view(np.uint32))


# Conversion routes of :func:`convert_word`. Sources arrive as float32 bits (F32), words
# of a small format (SMALL), or plain values (float64 as F64; ints and bool as NUM or
# INT; NUM_TO_SMALL takes float64 only); destinations leave as the unsigned word of the
# storage's width.
SAME = 0  # the source is the destination's word already
F32_TO_SMALL = 1
NUM_TO_SMALL = 2  # float64: rounded once
SMALL_TO_SMALL = 3
SMALL_TO_F32 = 4
SMALL_TO_F64 = 5
SMALL_TO_INT = 6  # saturating to [lo, hi], as every float -> int
SMALL_TO_UINT64 = 7
SMALL_TO_BOOL = 8
F32_TO_F64 = 9
F32_TO_INT = 10
F32_TO_UINT64 = 11
F32_TO_BOOL = 12
NUM_TO_F32 = 13  # ints, bool
NUM_TO_F64 = 14  # ints, bool
F64_TO_INT = 15
F64_TO_UINT64 = 16
NUM_TO_INT = 17  # ints, bool: two's complement wraparound, as NumPy
NUM_TO_BOOL = 18  # float64, ints: x != 0 (NaN is True)
F64_TO_F32 = 19
INT_TO_SMALL = 20  # ints, bool: rounded once


@element
def convert_word(x, route, src_fmt, dst_fmt, lo, hi, mask):
    """One source element -> the destination's word (in a uint64, cut to ``mask``, the
    word's width) by ``route``: the same results as :func:`varstore.casting.cast_into`, for one
    element at a time inside a strided or indexed kernel. ``src_fmt``/``dst_fmt`` are the
    small formats where a side is one (any format otherwise); ``lo``/``hi`` bound an
    integer destination."""
    return U64(_convert(x, route, src_fmt, dst_fmt, lo, hi) & U64(mask))


# The conversion switch calls its element functions, and is called (see _targets.called).
_c_encode_from_f32_bits = called(encode_from_f32_bits)
_c_encode_from_f64 = called(encode_from_f64)
_c_encode_from_int = called(encode_from_int)
_c_decode_to_f32_bits = called(decode_to_f32_bits)
_c_decode_to_f64 = called(decode_to_f64)
_c_f32_bits_to_f64 = called(f32_bits_to_f64)
_c_f64_to_f32_bits = called(f64_to_f32_bits)
_c_float_to_int64_saturating = called(float_to_int64_saturating)
_c_float_to_uint64_saturating = called(float_to_uint64_saturating)


@element
def _convert(x, route, src_fmt, dst_fmt, lo, hi):
    if route == SAME:
        return U64(x)
    if route == F32_TO_SMALL:
        return U64(_c_encode_from_f32_bits(x, dst_fmt))
    if route == NUM_TO_SMALL:
        return U64(_c_encode_from_f64(float64(x), dst_fmt))
    if route == SMALL_TO_SMALL:
        return U64(_c_encode_from_f32_bits(_c_decode_to_f32_bits(x, src_fmt), dst_fmt))
    if route == SMALL_TO_F32:
        return U64(_c_decode_to_f32_bits(x, src_fmt))
    if route == SMALL_TO_F64:
        return np.float64(_c_decode_to_f64(x, src_fmt)).view(np.uint64)
    if route == SMALL_TO_BOOL:
        magnitude = U32(U32(x) & U32(shl32(U32(1), U32(U32(src_fmt[0]) + U32(src_fmt[1]))) - U32(1)))
        return U64(1) if magnitude != U32(0) else U64(0)
    if route == F32_TO_F64:
        return np.float64(_c_f32_bits_to_f64(x)).view(np.uint64)
    if route == F64_TO_F32:
        return U64(_c_f64_to_f32_bits(x))
    if route == NUM_TO_F32:
        return U64(np.float32(float32(x)).view(np.uint32))
    if route == NUM_TO_F64:
        return np.float64(float64(x)).view(np.uint64)
    if route == NUM_TO_INT:
        return U64(x)
    if route == NUM_TO_BOOL:
        return U64(1) if x != 0 else U64(0)
    if route == INT_TO_SMALL:  # (after the routes of the pack and unpack loops: tested before
        # SMALL_TO_F32, it made the CPU pack of bfloat16 tensors 1.3x slower)
        return U64(_c_encode_from_int(x, dst_fmt))
    # The rest start from a float: a small word or float32 bits as float32, or float64.
    if route == SMALL_TO_INT or route == SMALL_TO_UINT64:
        f = float64(np.uint32(_c_decode_to_f32_bits(x, src_fmt)).view(np.float32))
    elif route == F32_TO_INT or route == F32_TO_UINT64 or route == F32_TO_BOOL:
        f = float64(np.uint32(x).view(np.float32))
    else:
        f = float64(x)
    if route == F32_TO_BOOL:
        return U64(1) if f != 0.0 else U64(0)
    if route == SMALL_TO_UINT64 or route == F32_TO_UINT64 or route == F64_TO_UINT64:
        return _c_float_to_uint64_saturating(f)
    return U64(_c_float_to_int64_saturating(f, lo, hi))  # SMALL_TO_INT, F32_TO_INT, F64_TO_INT


@element
def transcode_word(w, src_fmt, dst_fmt):
    """A word of one small format -> the other's, exactly through float32."""
    return encode_from_f32_bits(decode_to_f32_bits(w, src_fmt), dst_fmt)


# ---------------------------------------------------------------------------- kernels
# Whole-array conversions over 1-D contiguous arrays of raw words (see casting.py for
# which one serves which pair of dtypes).

_SMALL = ("uint16", "uint8")  # small-float words
_EXACT_IN_F64 = ("float64", "int32", "int16", "int8", "uint32", "uint16", "uint8")  # (ints of at most 32 bits)
_F32_BITS, _F32_BITS_OUT = Array("src", words=("uint32",)), Array("dst", "out", words=("uint32",))
_SMALL_IN, _SMALL_OUT = Array("src", words=_SMALL), Array("dst", "out", words=_SMALL)
_F64_IN, _F64_OUT = Array("src", words=("float64",)), Array("dst", "out", words=("float64",))
_FLOAT_IN = Array("src", words=("float32", "float64"))

encode_f32 = kernel("encode_f32", "elementwise", encode_from_f32_bits, (_F32_BITS, _SMALL_OUT),
                    (Scalar("fmt", "format"),),
                    doc="float32 (as uint32 bits) -> small-format words.")
encode_f64 = kernel("encode_f64", "elementwise", encode_from_f64, (Array("src", words=_EXACT_IN_F64), _SMALL_OUT),
                    (Scalar("fmt", "format"),),
                    doc="float64, or an integer of at most 32 bits or bool (exact in float64) -> small-format "
                        "words, rounded once.")
encode_int64 = kernel("encode_int64", "elementwise", encode_from_int,
                      (Array("src", words=("int64", "uint64")), _SMALL_OUT), (Scalar("fmt", "format"),),
                      doc="int64 or uint64 -> small-format words, rounded once (past 2**53 too).")
decode = kernel("decode", "elementwise", decode_to_f32_bits, (_SMALL_IN, _F32_BITS_OUT), (Scalar("fmt", "format"),),
                doc="small-format words -> float32 (as uint32 bits).")
decode_f64 = kernel("decode_f64", "elementwise", decode_to_f64, (_SMALL_IN, _F64_OUT), (Scalar("fmt", "format"),),
                    doc="small-format words -> float64.")
transcode = kernel("transcode", "elementwise", transcode_word, (_SMALL_IN, Array("dst", "out", words=_SMALL[::-1])),
                   (Scalar("src_fmt", "format"), Scalar("dst_fmt", "format")),
                   doc="words of one small format -> another.")
widen_f32 = kernel("widen_f32", "elementwise", f32_bits_to_f64, (_F32_BITS, _F64_OUT),
                   doc="float32 (as uint32 bits) -> float64, NaNs widened by their bits.")
narrow_f64 = kernel("narrow_f64", "elementwise", f64_to_f32_bits, (_F64_IN, _F32_BITS_OUT),
                    doc="float64 -> float32 (as uint32 bits), NaNs keep sign and payload top.")
float_to_int = kernel("float_to_int", "elementwise", float_to_int64_saturating,
                      (_FLOAT_IN,
                       Array("dst", "out", words=("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32"))),
                      (Scalar("lo", "i64"), Scalar("hi", "i64")),
                      doc="float32/float64 -> any integer but uint64, saturating to [lo, hi].")
float_to_uint64 = kernel("float_to_uint64", "elementwise", float_to_uint64_saturating,
                         (_FLOAT_IN, Array("dst", "out", words=("uint64",))),
                         doc="float32/float64 -> uint64, saturating.")
accumulate = kernel("accumulate", "elementwise", add_in_format,
                    (Array("dst", "inout", words=_SMALL), Array("src", words=_SMALL)),
                    (Scalar("sign", "i64"), Scalar("fmt", "format")),
                    doc="dst += sign * src in a small format, src of dst's size (wide accesses on a GPU).")
accumulate_broadcast = kernel("accumulate_broadcast", "elementwise", add_in_format,
                              (Array("dst", "inout", words=_SMALL), Array("src", step="src_step", words=_SMALL)),
                              (Scalar("src_step", "i64"), Scalar("sign", "i64"), Scalar("fmt", "format")),
                              doc="dst += sign * src[i * src_step] in a small format (src_step 0: a one-element "
                                  "src, read once; dst then takes wide accesses on a GPU).")
convert = kernel("convert", "elementwise", convert_word, (Array("src"), Array("dst", "out", words=UNSIGNED)),
                 (Scalar("conversion", "conversion"),),
                 doc="Any source -> the destination's words by a convert_word route (no temporary).")

KERNELS = (encode_f32, encode_f64, encode_int64, decode, decode_f64, transcode, widen_f32, narrow_f64, float_to_int,
           float_to_uint64, accumulate, accumulate_broadcast, convert)
