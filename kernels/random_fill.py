"""Random fills: uniform, normal and truncated normal values written straight into a
variable's storage (no temporary), from Philox4x32-10 keyed by the seed.

Element ``i`` of the output is a pure function of (seed, distribution, i):

- float32 and smaller floats are drawn in float32, four per Philox call (group
  ``g = i // 4``); float16, bfloat16 and float8 are then rounded by the cast kernels'
  encoder in the same loop.
- float64 is drawn with 53-bit uniforms, two per Philox call (group ``g = i // 2``).
- The counter is (g low word, g high word, distribution, 0); the key is the seed.

Distributions, all with a fixed amount of work per element:

- uniform: ``low + scale * u`` with u from the top 24 (53) bits, as one fused multiply-add.
  Bit-identical on every target: the only rounding is the fma's, which both targets do
  the same way (kernels/intrinsics.py).
- normal: Box-Muller on every Philox word: (u1, u2) -> (r cos t, r sin t), with
  r = sqrt(-2 log u1), u1 in (0, 1], t = 2 pi u2, computed in float64 (rounded once to
  float32 for float32 and smaller). ``log`` and ``sincos`` are our own element functions
  built from IEEE-exact operations and fma (no platform math library), so normals are
  bit-identical on every target too. The largest |z| is sqrt(2 * 24 ln 2) = 5.77 for
  float32 (sqrt(2 * 53 ln 2) = 8.57 for float64).
- truncated normal within [-2, 2] standard deviations: the inverse CDF,
  ``z = sqrt(2) erfinv(erf(sqrt(2)) (2u - 1))``. erfinv is Giles' single-precision
  polynomial (one branch covers |x| <= erf(sqrt(2))) evaluated with fma after our log:
  bit-identical on every target for float32. float64 refines it with two Newton steps on
  our own ``erf`` and ``exp`` (Taylor series in fma, exact enough on |z| <= 1.42), so
  float64 truncated normals are bit-identical on every target too. (With the platform's
  erf/exp, libdevice's and glibc's, an H100 differed from the CPU by up to 5 ulp.)
"""

from __future__ import annotations

import math

import numpy as np
from numba import float32, float64, int64, uint32, uint64

from ._targets import element
from .cast import encode_from_f32_bits
from .declare import Array, Scalar, kernel
from .intrinsics import fma, sqrt
from .philox import philox4x32_10

U32 = uint32
U64 = uint64

UNIFORM = 0
NORMAL = 1
TRUNCATED_NORMAL = 2

TWO_NEG24 = 2.0**-24
TWO_NEG53 = 2.0**-53
TWO_PI = 2.0 * math.pi
SQRT2 = math.sqrt(2.0)
ERF_SQRT2 = math.erf(math.sqrt(2.0))  # P(|z| < 2) for a standard normal z
SQRT_PI_OVER_2 = math.sqrt(math.pi) / 2.0


# ------------------------------------------------------------------ uniforms
@element
def unit_f32(w):
    """[0, 1) from the top 24 bits of ``w``: an exact float32."""
    return float32(U32(w >> U32(8))) * float32(TWO_NEG24)


@element
def unit_open_f32(w):
    """(0, 1] from the top 24 bits of ``w`` (safe for log)."""
    return float32(U32(U32(w >> U32(8)) + U32(1))) * float32(TWO_NEG24)


@element
def bits53(hi, lo):
    """53 random bits from two words, as an exact float64 integer."""
    return float64(U64(U64(U64(U32(hi) >> U32(5)) << U64(26)) | U64(U32(lo) >> U32(6))))


@element
def unit_f64(hi, lo):
    """[0, 1) from 53 bits of two words: an exact float64."""
    return bits53(hi, lo) * TWO_NEG53


@element
def unit_open_f64(hi, lo):
    """(0, 1] from 53 bits of two words."""
    return (bits53(hi, lo) + 1.0) * TWO_NEG53


# -------------------------------------------------- log and sincos, our own
# Written with IEEE-exact operations (+, -, *, /, sqrt, conversions) and explicit fma
# only, these give the same bits on every target: no platform math library is involved.
# Range reductions are exact; the polynomials are truncated Taylor series accurate to
# about 1e-15 on the reduced ranges.

LN2 = math.log(2.0)
HALF_PI = math.pi / 2.0


@element
def log_f64(x):
    """Natural log of a positive, normal float64, to about 2 ulp.

    x = 2**e * f with f in [sqrt(2)/2, sqrt(2)] (exact, by bits), then
    log f = 2 atanh(s), s = (f - 1) / (f + 1), |s| <= 0.172, as an odd series in s.
    """
    bits = np.float64(x).view(np.uint64)
    e = int64(U64(bits >> U64(52)) & U64(0x7FF)) - int64(1023)
    f = np.uint64(U64(U64(bits & U64(0xFFFFFFFFFFFFF)) | U64(0x3FF0000000000000))).view(np.float64)
    big = f > SQRT2
    f = f * 0.5 if big else f
    e = e + 1 if big else e
    s = (f - 1.0) / (f + 1.0)
    z = s * s
    p = 1.0 / 19.0
    p = fma(p, z, 1.0 / 17.0)
    p = fma(p, z, 1.0 / 15.0)
    p = fma(p, z, 1.0 / 13.0)
    p = fma(p, z, 1.0 / 11.0)
    p = fma(p, z, 1.0 / 9.0)
    p = fma(p, z, 1.0 / 7.0)
    p = fma(p, z, 1.0 / 5.0)
    p = fma(p, z, 1.0 / 3.0)
    p = fma(p, z, 1.0)
    return fma(float64(e), LN2, (s + s) * p)


@element
def sincos_quarter_f64(x):
    """(sin x, cos x) for x in [0, pi/4], Taylor series to x**15 and x**16."""
    z = x * x
    s = -1.0 / 1307674368000.0
    s = fma(s, z, 1.0 / 6227020800.0)
    s = fma(s, z, -1.0 / 39916800.0)
    s = fma(s, z, 1.0 / 362880.0)
    s = fma(s, z, -1.0 / 5040.0)
    s = fma(s, z, 1.0 / 120.0)
    s = fma(s, z, -1.0 / 6.0)
    s = fma(s, z, 1.0)
    c = 1.0 / 20922789888000.0
    c = fma(c, z, -1.0 / 87178291200.0)
    c = fma(c, z, 1.0 / 479001600.0)
    c = fma(c, z, -1.0 / 3628800.0)
    c = fma(c, z, 1.0 / 40320.0)
    c = fma(c, z, -1.0 / 720.0)
    c = fma(c, z, 1.0 / 24.0)
    c = fma(c, z, -0.5)
    c = fma(c, z, 1.0)
    return x * s, c


@element
def sincos_2pi_f64(u):
    """(sin 2 pi u, cos 2 pi u) for u in [0, 1).

    4u splits exactly into a quadrant q and a fraction f; an f above 1/2 is taken as its
    complement (1 - f is exact), so the series only ever sees angles up to pi/4.
    """
    v = 4.0 * u
    q = int64(v)
    f = v - float64(q)
    swap = f > 0.5
    s, c = sincos_quarter_f64((1.0 - f if swap else f) * HALF_PI)
    # Rotate by q quarter turns; selects and exact sign flips, no branches (vectorizes).
    odd = (q & 1) != 0
    a = s if swap == odd else c  # the |sin| of the full angle
    b = c if swap == odd else s
    sin_sign = -1.0 if q >= 2 else 1.0
    cos_sign = -1.0 if (q == 1 or q == 2) else 1.0
    return sin_sign * a, cos_sign * b


# ------------------------------------------------------------ normal variates
@element
def box_muller_f32(wa, wb):
    """Two independent standard normals (float32) from two words (24-bit uniforms),
    computed in float64 and rounded once."""
    r = sqrt(-2.0 * log_f64(float64(unit_open_f32(wa))))
    s, c = sincos_2pi_f64(float64(unit_f32(wb)))
    return float32(r * c), float32(r * s)


@element
def box_muller_f64(w0, w1, w2, w3):
    """Two independent standard normals (float64) from four words (53-bit uniforms)."""
    r = sqrt(-2.0 * log_f64(unit_open_f64(w0, w1)))
    s, c = sincos_2pi_f64(unit_f64(w2, w3))
    return r * c, r * s


@element
def erfinv_f32(x):
    """Inverse error function for |x| <= erf(sqrt(2)) ~ 0.9545 (Giles 2010, the w < 5
    branch of his single-precision approximation; every |x| here stays in it)."""
    x = float32(x)
    w = float32(-log_f64(float64(fma(-x, x, float32(1.0))))) - float32(2.5)
    p = float32(2.81022636e-08)
    p = fma(p, w, float32(3.43273939e-07))
    p = fma(p, w, float32(-3.5233877e-06))
    p = fma(p, w, float32(-4.39150654e-06))
    p = fma(p, w, float32(0.00021858087))
    p = fma(p, w, float32(-0.00125372503))
    p = fma(p, w, float32(-0.00417768164))
    p = fma(p, w, float32(0.246640727))
    p = fma(p, w, float32(1.50140941))
    return p * x


def _horner(name: str, coefficients: tuple, doc: str):
    """An element function ``p(t) = sum(c[i] * t**i)``, one fma per coefficient, written
    out line by line (a loop over a tuple with a run-time index puts the tuple in GPU
    local memory: a 1 GiB float64 truncated-normal fill took 38 ms on an H100)."""
    lines = [f"def {name}(t):", f"    p = {coefficients[-1]!r}"]
    lines += [f"    p = fma(p, t, {c!r})" for c in reversed(coefficients[:-1])]
    lines.append("    return p")
    namespace = {"fma": fma}
    exec("\n".join(lines), namespace)  # noqa: S102 - our own constants, generated here
    fn = namespace[name]
    fn.__doc__ = doc
    return element(fn)


# Taylor coefficients of erf(z) / z and exp(t) as series in t = z * z. On the range the
# Newton steps see (t <= 2.1), the first dropped term is under 1e-19 of the sum.
ERF_SERIES = tuple(
    (-1.0) ** n * 2.0 / math.sqrt(math.pi) / (math.factorial(n) * (2 * n + 1)) for n in range(28)
)
EXP_SERIES = tuple(1.0 / math.factorial(n) for n in range(28))

erf_over_z_f64 = _horner("erf_over_z_f64", ERF_SERIES, "erf(z) / z as a sum in t = z * z, for t <= 2.1.")
exp_small_f64 = _horner("exp_small_f64", EXP_SERIES, "exp(t) for 0 <= t <= 2.1, to a few ulp (all terms positive).")


@element
def erf_small_f64(z):
    """erf(z) for |z| <= 1.45, to a few ulp."""
    return z * erf_over_z_f64(z * z)


@element
def erfinv_f64(x):
    """Inverse error function in float64 for |x| <= erf(sqrt(2)): the float32 estimate
    and two Newton steps on our erf (each squares the relative error, about 1e-7 first)."""
    z = float64(erfinv_f32(float32(x)))
    for _ in range(2):
        # The residual erf(z) - x is one explicit fma: written as a product and a
        # subtraction, the GPU compiler would fuse them and the CPU would not.
        residual = fma(z, erf_over_z_f64(z * z), -x)
        z = fma(-residual, SQRT_PI_OVER_2 * exp_small_f64(z * z), z)
    return z


@element
def truncated_f32(w):
    """A standard normal truncated to [-2, 2] (float32) from one word."""
    t = float32(int64(U32(w >> U32(8))) * int64(2) - int64(1 << 24)) * float32(TWO_NEG24)  # 2u - 1, exact
    z = float32(SQRT2) * erfinv_f32(float32(ERF_SQRT2) * t)
    return min(max(z, float32(-2.0)), float32(2.0))


@element
def truncated_f64(hi, lo):
    """A standard normal truncated to [-2, 2] (float64) from two words."""
    t = fma(bits53(hi, lo), 2.0 * TWO_NEG53, -1.0)  # 2u - 1, exact
    z = SQRT2 * erfinv_f64(fma(ERF_SQRT2, t, 0.0))  # (a plain product feeding erf(z) - x could be fused)
    return min(max(z, -2.0), 2.0)


# ------------------------------------------------------------------- groups
# Each kernel draws one distribution: a branch on the distribution inside the loop would
# be flattened by LLVM (log/sin/cos are speculatable), making uniform pay for all three.


@element
def philox_group(g, dist, k0, k1):
    """The four Philox words of group ``g`` of distribution ``dist``."""
    return philox4x32_10(U32(U64(g)), U32(U64(g) >> U64(32)), U32(dist), U32(0), k0, k1)


@element
def f32_word(v, encode, fmt):
    """The storage word of the float32 ``v``: its bits, or encoded into ``fmt``."""
    bits = np.float32(v).view(np.uint32)
    return encode_from_f32_bits(bits, fmt) if encode else U32(bits)


@element
def words4(x0, x1, x2, x3, a, b, encode, fmt):
    """Storage words of ``a + b * x`` for four float32 variates (one fma each)."""
    return (
        f32_word(fma(b, x0, a), encode, fmt),
        f32_word(fma(b, x1, a), encode, fmt),
        f32_word(fma(b, x2, a), encode, fmt),
        f32_word(fma(b, x3, a), encode, fmt),
    )


@element
def uniform4_words(g, k0, k1, a, b, encode, fmt):
    w0, w1, w2, w3 = philox_group(g, UNIFORM, k0, k1)
    return words4(unit_f32(w0), unit_f32(w1), unit_f32(w2), unit_f32(w3), a, b, encode, fmt)


@element
def normal4_words(g, k0, k1, a, b, encode, fmt):
    w0, w1, w2, w3 = philox_group(g, NORMAL, k0, k1)
    x0, x1 = box_muller_f32(w0, w1)
    x2, x3 = box_muller_f32(w2, w3)
    return words4(x0, x1, x2, x3, a, b, encode, fmt)


@element
def truncated4_words(g, k0, k1, a, b, encode, fmt):
    w0, w1, w2, w3 = philox_group(g, TRUNCATED_NORMAL, k0, k1)
    return words4(truncated_f32(w0), truncated_f32(w1), truncated_f32(w2), truncated_f32(w3), a, b, encode, fmt)


@element
def uniform2_f64(g, k0, k1, a, b):
    w0, w1, w2, w3 = philox_group(g, UNIFORM, k0, k1)
    return fma(b, unit_f64(w0, w1), a), fma(b, unit_f64(w2, w3), a)


@element
def normal2_f64(g, k0, k1, a, b):
    w0, w1, w2, w3 = philox_group(g, NORMAL, k0, k1)
    x0, x1 = box_muller_f64(w0, w1, w2, w3)
    return fma(b, x0, a), fma(b, x1, a)


@element
def truncated2_f64(g, k0, k1, a, b):
    w0, w1, w2, w3 = philox_group(g, TRUNCATED_NORMAL, k0, k1)
    return fma(b, truncated_f64(w0, w1), a), fma(b, truncated_f64(w2, w3), a)


# ------------------------------------------------------------------ kernels
# Whole groups only: the loop runs over groups; dst[w * i .. w * i + w - 1] is group
# ``first + i`` (w = 4 words, or 2 float64); the launcher draws a ragged tail into a
# one-group scratch array.

WORDS_PER_GROUP = 4
F64_PER_GROUP = 2

_KEY = (Scalar("first", "i64"), Scalar("k0", "u32"), Scalar("k1", "u32"))
_WORDS = _KEY + (Scalar("a", "f32"), Scalar("b", "f32"), Scalar("encode", "u32"), Scalar("fmt", "format"))
_F64 = _KEY + (Scalar("a", "f64"), Scalar("b", "f64"))


def _fill(name, fn, f64):
    dst = Array("dst", "out", width=F64_PER_GROUP if f64 else WORDS_PER_GROUP,
                words=("float64",) if f64 else ("uint32", "uint16", "uint8"))
    return kernel(name, "elementwise", fn, (dst,), _F64 if f64 else _WORDS, index="first",
                  doc=f"a + b * X into {'float64' if f64 else 'float32 words, or small-format words when encode'}.")


uniform_words = _fill("uniform_words", uniform4_words, False)
normal_words = _fill("normal_words", normal4_words, False)
truncated_words = _fill("truncated_words", truncated4_words, False)
uniform_f64 = _fill("uniform_f64", uniform2_f64, True)
normal_f64 = _fill("normal_f64", normal2_f64, True)
truncated_f64_kernel = _fill("truncated_f64", truncated2_f64, True)

#: The kernel of each (distribution, float64?) pair.
FILL_KERNELS = {
    (UNIFORM, False): uniform_words,
    (NORMAL, False): normal_words,
    (TRUNCATED_NORMAL, False): truncated_words,
    (UNIFORM, True): uniform_f64,
    (NORMAL, True): normal_f64,
    (TRUNCATED_NORMAL, True): truncated_f64_kernel,
}
KERNELS = tuple(FILL_KERNELS.values())
