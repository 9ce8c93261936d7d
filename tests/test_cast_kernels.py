"""Tier c: the cast kernels against exact references, on the CPU loop and the CUDA loop
(simulator in CI, GPU when present).

References: ``ml_dtypes`` (bfloat16, float8) and NumPy (float16) for float32 sources and
for decoding; for float64 sources, where ``ml_dtypes`` rounds twice (through float32),
an exact round-to-nearest-even reference built from the table of every value of the
format (:func:`reference_encode`).
"""

from __future__ import annotations

import bisect

import ml_dtypes
import numpy as np
import pytest

from helpers import run_kernel, sample_size
from varstore.kernels import cast as K

pytestmark = pytest.mark.kernels

FORMAT_NAMES = ["float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"]
NUMPY_TYPES = {
    "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
    "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
    "float8_e5m2": ml_dtypes.float8_e5m2,
}
WORD = {"float16": np.uint16, "bfloat16": np.uint16, "float8_e4m3fn": np.uint8, "float8_e5m2": np.uint8}


def all_words(name):
    w = WORD[name]
    return np.arange(np.iinfo(w).max + 1, dtype=np.int64).astype(w)


def decode_reference(words, name, to=np.float32):
    return words.view(NUMPY_TYPES[name]).astype(to)


def positive_table(name):
    """(words, float64 values) of every finite non-negative value, plus one virtual step
    past the largest (the value that rounds to overflow)."""
    fmt = K.FORMATS[name]
    words = np.arange(fmt[3] + 1, dtype=np.int64)
    values = decode_reference(words.astype(WORD[name]), name, np.float64)
    virtual = values[-1] + (values[-1] - values[-2])
    return np.append(words, fmt[3] + 1), np.append(values, virtual)


def reference_encode(x: np.ndarray, name: str) -> np.ndarray:
    """Exact round-to-nearest-even of float64 ``x`` into ``name`` (words)."""
    x = np.asarray(x, np.float64)
    fmt = K.FORMATS[name]
    sign_bit = 1 << int(fmt[0] + fmt[1])
    words, values = positive_table(name)
    a = np.abs(x)
    hi = np.clip(np.searchsorted(values, a, side="left"), 0, len(values) - 1)
    lo = np.clip(hi - 1, 0, len(values) - 1)
    mid = (values[lo] + values[hi]) / 2  # exact: neighbours differ by one step
    pick_hi = (a > mid) | ((a == mid) & (words[hi] % 2 == 0))
    chosen = np.where(a == values[hi], words[hi], np.where(pick_hi, words[hi], words[lo]))
    chosen = np.where((chosen > fmt[3]) | (a > values[-1]), fmt[4], chosen)
    out = chosen | np.where(np.signbit(x), sign_bit, 0)
    nan = np.isnan(x)
    if nan.any():
        if name == "float16":  # NumPy keeps the payload's top bits
            out[nan] = x[nan].astype(np.float16).view(np.uint16)
        else:
            out[nan] = fmt[5] | np.where(np.signbit(x[nan]), sign_bit, 0)
    return out.astype(WORD[name])


def interesting_values(name, rng, dtype):
    """Every value of the format, every midpoint between neighbours and the values one
    ulp (of ``dtype``) either side of it, the overflow boundary, subnormals of both
    formats, zeros, infinities, NaNs with payloads, and random bit patterns."""
    _, values = positive_table(name)
    mids = (values[:-1] + values[1:]) / 2
    with np.errstate(over="ignore"):  # the virtual step past float32's range is inf
        base = np.concatenate([values, mids]).astype(dtype)
    near = np.concatenate([np.nextafter(base, dtype(np.inf)), np.nextafter(base, dtype(0))])
    specials = np.array([0.0, np.inf, np.finfo(dtype).max, np.finfo(dtype).tiny, np.finfo(dtype).smallest_subnormal,
                         1e-30, 1e30, 0.1, 1 / 3], dtype)
    if dtype == np.float32:
        random = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
        nans = np.array([0x7FC00000, 0x7F800001, 0x7FBFFFFF, 0x7FC02000, 0x7FFFFFFF], np.uint32).view(np.float32)
    else:
        random = rng.integers(0, 2**63, 200_000, dtype=np.uint64).view(np.float64)
        nans = np.array([0x7FF8000000000000, 0x7FF0000000000001, 0x7FF4000000000000, 0x7FFFFFFFFFFFFFFF],
                        np.uint64).view(np.float64)
    magnitudes = np.concatenate([specials, base, near, np.abs(random[np.isfinite(random)])])
    out = np.concatenate([nans, -nans, magnitudes, -magnitudes]).astype(dtype)
    return np.ascontiguousarray(out)


def subsample(x: np.ndarray) -> np.ndarray:
    """All of ``x`` on CPU/GPU; under the simulator its first 256 (the specials) and an
    evenly spaced selection of the rest."""
    n = sample_size(x.size)
    if n == x.size:
        return x
    head = x[:256]
    rest = x[256:][np.linspace(0, x.size - 257, n - 256).astype(np.int64)]
    return np.ascontiguousarray(np.concatenate([head, rest]))


def assert_words_equal(actual, expected, inputs, what):
    bad = np.flatnonzero(actual != expected)
    if bad.size:
        i = bad[:5]
        raise AssertionError(
            f"{what}: {bad.size} of {actual.size} differ; first inputs {inputs[i]!r} "
            f"(bits {[hex(int(b)) for b in inputs.view(np.uint64 if inputs.itemsize == 8 else np.uint32)[i]]}) "
            f"gave {[hex(int(v)) for v in actual[i]]}, expected {[hex(int(v)) for v in expected[i]]}"
        )


# --------------------------------------------------------------- float32 sources
@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_encode_f32_matches_ml_dtypes_and_numpy(target, name):
    x = subsample(interesting_values(name, np.random.default_rng(0), np.float32))
    out = np.empty(x.size, WORD[name])
    run_kernel(target, K.encode_f32, x.size, src=x.view(np.uint32), dst=out, fmt=K.FORMATS[name])
    with np.errstate(over="ignore", invalid="ignore"):
        expected = x.astype(NUMPY_TYPES[name]).view(WORD[name])
    assert_words_equal(out, expected, x, f"float32 -> {name}")


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_reference_encode_agrees_with_ml_dtypes_on_float32(name):
    """The float64 oracle is checked against ml_dtypes where both must agree. (NaNs are
    left out: widening a float32 signalling NaN to float64 quiets it in hardware.)"""
    x = interesting_values(name, np.random.default_rng(1), np.float32)
    x = x[~np.isnan(x)]
    with np.errstate(over="ignore", invalid="ignore"):
        expected = x.astype(NUMPY_TYPES[name]).view(WORD[name])
    assert_words_equal(reference_encode(x.astype(np.float64), name), expected, x, f"oracle {name}")


# --------------------------------------------------------------- float64 sources
@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_encode_f64_rounds_once(target, name):
    x = subsample(interesting_values(name, np.random.default_rng(2), np.float64))
    out = np.empty(x.size, WORD[name])
    run_kernel(target, K.encode_f64, x.size, src=x, dst=out, fmt=K.FORMATS[name])
    assert_words_equal(out, reference_encode(x, name), x, f"float64 -> {name}")


def test_encode_f64_avoids_double_rounding(target):
    """1 + 2**-8 + 2**-30 lies just above a bfloat16 midpoint: rounded once it goes up;
    through float32 (as ml_dtypes does) it lands exactly on the midpoint and goes down."""
    x = np.array([1 + 2**-8 + 2**-30, -(1 + 2**-8 + 2**-30), 1 + 2**-8], np.float64)
    out = np.empty(3, np.uint16)
    run_kernel(target, K.encode_f64, x.size, src=x, dst=out, fmt=K.BFLOAT16)
    assert out.tolist() == [0x3F81, 0xBF81, 0x3F80]
    assert x[:1].astype(ml_dtypes.bfloat16).view(np.uint16)[0] == 0x3F80  # ml_dtypes' double rounding


def reference_encode_integers(x, name: str) -> np.ndarray:
    """Exact round-to-nearest-even of the integers ``x`` into ``name`` (words), in
    Python's exact arithmetic: integers past 2**53 are not rounded to float64 first."""
    from fractions import Fraction

    fmt = K.FORMATS[name]
    words, values = positive_table(name)
    exact = [Fraction(float(v)) for v in values]
    out = []
    for v in (int(i) for i in x):
        a = Fraction(abs(v))
        hi = min(bisect.bisect_left(exact, a), len(exact) - 1)
        lo = max(hi - 1, 0)
        mid = (exact[lo] + exact[hi]) / 2
        word = words[hi] if a == exact[hi] or a > mid or (a == mid and words[hi] % 2 == 0) else words[lo]
        word = fmt[4] if word > fmt[3] or a > exact[-1] else word
        out.append(int(word) | ((1 << int(fmt[0] + fmt[1])) if v < 0 else 0))
    return np.array(out, np.int64).astype(WORD[name])


@pytest.mark.parametrize("name", FORMAT_NAMES)
@pytest.mark.parametrize("src_dtype", [np.int8, np.int32, np.int64, np.uint64, np.bool_])
def test_encode_integers_and_bool(target, name, src_dtype):
    """Integers round once, also past 2**53: ``2**62 + 2**54 + 1`` lies just above a
    bfloat16 midpoint, and float64 rounds it onto that midpoint."""
    info = np.iinfo(src_dtype) if src_dtype is not np.bool_ else None
    if info is None:
        x = np.array([True, False, True])
    else:
        candidates = [0, 1, -1, 3, 17, 1000, 65504, 65520, info.min, info.max, info.max - 1, 2**53 + 1,
                      2**62 + 2**54 + 1, -(2**62 + 2**54 + 1), 2**62 + 2**54, 2**63 + 2**55 + 1, 2**63 + 2**55,
                      2**31 + 2**23 + 1, 2**40 + 2**29 + 3, -(2**60 + 2**49 + 1)]
        x = np.array([c for c in candidates if info.min <= c <= info.max], src_dtype)
    out = np.empty(x.size, WORD[name])
    kernel = K.encode_int64 if x.dtype.itemsize == 8 else K.encode_f64  # (as casting._plan chooses)
    run_kernel(target, kernel, x.size, src=x, dst=out, fmt=K.FORMATS[name])
    assert_words_equal(out, reference_encode_integers(x, name), x.astype(np.float64), name)
    if src_dtype is np.int64 and name == "bfloat16":
        assert out[list(x).index(2**62 + 2**54 + 1)] == 0x5E81  # (float64 first: 0x5E80)


# -------------------------------------------------------------------- decoding
@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_decode_every_word_to_float32(target, name):
    words = subsample(all_words(name))
    out = np.empty(words.size, np.float32)
    run_kernel(target, K.decode, words.size, src=words, dst=out.view(np.uint32), fmt=K.FORMATS[name])
    expected = decode_reference(words, name, np.float32)
    assert_words_equal(out.view(np.uint32), expected.view(np.uint32), words.astype(np.float64), f"{name} -> float32")


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_decode_every_word_to_float64(target, name):
    words = subsample(all_words(name))
    out = np.empty(words.size, np.float64)
    run_kernel(target, K.decode_f64, words.size, src=words, dst=out, fmt=K.FORMATS[name])
    f32 = decode_reference(words, name, np.float32)
    nan = np.isnan(f32)
    np.testing.assert_array_equal(out[~nan], f32[~nan].astype(np.float64))
    # NaNs: sign and payload widened by bits, no quieting (as NumPy's float16 -> float64).
    b = f32[nan].view(np.uint32).astype(np.uint64)
    expected = ((b & 0x80000000) << np.uint64(32)) | np.uint64(0x7FF0000000000000) | ((b & 0x7FFFFF) << np.uint64(29))
    np.testing.assert_array_equal(out[nan].view(np.uint64), expected)
    if name == "float16":
        np.testing.assert_array_equal(out.view(np.uint64), words.view(np.float16).astype(np.float64).view(np.uint64))


@pytest.mark.parametrize("src", FORMAT_NAMES)
@pytest.mark.parametrize("dst", FORMAT_NAMES)
def test_transcode_every_word(target, src, dst):
    if src == dst:
        pytest.skip("same format: a copy, not a kernel")
    words = subsample(all_words(src))
    out = np.empty(words.size, WORD[dst])
    run_kernel(target, K.transcode, words.size, src=words, dst=out, src_fmt=K.FORMATS[src], dst_fmt=K.FORMATS[dst])
    with np.errstate(over="ignore", invalid="ignore"):
        expected = decode_reference(words, src).astype(NUMPY_TYPES[dst]).view(WORD[dst])
    assert_words_equal(out, expected, words.astype(np.float64), f"{src} -> {dst}")


# ----------------------------------------------------------------- float -> int
INT_TYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


def saturating_reference(x: np.ndarray, int_type) -> np.ndarray:
    info = np.iinfo(int_type)
    out = []
    for v in x.tolist():
        if v != v:
            out.append(0)
        elif v == float("inf") or v >= info.max:
            out.append(info.max)
        elif v == float("-inf") or v <= info.min:
            out.append(info.min)
        else:
            out.append(int(v))  # truncation toward zero
    return np.array(out, dtype=int_type)


@pytest.mark.parametrize("int_type", INT_TYPES)
@pytest.mark.parametrize("float_type", [np.float32, np.float64])
def test_float_to_int_saturates(target, int_type, float_type):
    info = np.iinfo(int_type)
    x = np.array(
        [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 0.5, -0.5, 1.9, -1.9, 2.5, -2.5, 100.7, -100.7,
         info.max, info.max + 1.0, info.max + 0.5, info.min, info.min - 1.0, info.min - 0.5,
         2.0**63, 2.0**63 - 1024, 2.0**64, 2.0**64 - 2048, -(2.0**63), 1e30, -1e30, 3e9, -3e9],
        np.float64,
    ).astype(float_type)
    out = np.zeros(x.size, int_type)
    if int_type is np.uint64:
        run_kernel(target, K.float_to_uint64, x.size, src=x, dst=out)
    else:
        run_kernel(target, K.float_to_int, x.size, src=x, dst=out, lo=int(info.min), hi=int(info.max))
    np.testing.assert_array_equal(out, saturating_reference(x, int_type))


# ------------------------------------------------------ float32 <-> float64
def test_widen_and_narrow_match_the_cpu_conversion(target):
    """float32 <-> float64 as NumPy does it on the CPU, NaN payloads and signs included
    (a GPU's own cvt instruction returns one canonical NaN)."""
    rng = np.random.default_rng(11)
    special = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF812345, 0x7FFFFFFF, 0x00000001,
                        0x807FFFFF, 0x7F7FFFFF, 0x7F800000, 0xFF800000, 0x80000000], np.uint32)
    bits = np.concatenate([special, subsample(rng.integers(0, 2**32, 50_000, dtype=np.uint64).astype(np.uint32))])
    wide = np.zeros(bits.size, np.float64)
    run_kernel(target, K.widen_f32, bits.size, src=bits, dst=wide)
    with np.errstate(invalid="ignore"):
        expected = bits.view(np.float32).astype(np.float64)
    np.testing.assert_array_equal(wide.view(np.uint64), expected.view(np.uint64))

    f64_special = np.array([0x7FF8000000000000, 0xFFF8000000000000, 0x7FF0000000000001, 0xFFF4000000000123,
                            0x3FF0000010000000, 0x3FF0000030000000, 0x3FF0000010000001,  # ties to even, just over
                            0x47EFFFFFF0000000, 0x36A0000000000000, 0x3690000000000001, 0x0000000000000001,
                            0x7FEFFFFFFFFFFFFF, 0x8000000000000000], np.uint64)
    spread = rng.standard_normal(50_000) * 10.0 ** rng.integers(-45, 40, 50_000)
    doubles = np.concatenate([f64_special.view(np.float64), subsample(spread)])
    narrow = np.zeros(doubles.size, np.uint32)
    run_kernel(target, K.narrow_f64, doubles.size, src=doubles, dst=narrow)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = doubles.astype(np.float32)
    np.testing.assert_array_equal(narrow, expected.view(np.uint32))


# -------------------------------------------------------------- accumulation
@pytest.mark.parametrize("name", FORMAT_NAMES)
@pytest.mark.parametrize("sign", [1, -1])
def test_accumulate_rounds_float32_sum_once(target, name, sign):
    rng = np.random.default_rng(3)
    words = all_words(name)
    finite = words[np.isfinite(decode_reference(words, name))]
    a = subsample(rng.choice(finite, 20_000))
    b = rng.choice(finite, a.size)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = (decode_reference(a, name) + np.float32(sign) * decode_reference(b, name))
        expected = expected.astype(NUMPY_TYPES[name]).view(WORD[name])
    dst = a.copy()
    run_kernel(target, K.accumulate, dst.size, dst=dst, src=b, sign=sign, fmt=K.FORMATS[name])
    assert_words_equal(dst, expected, a.astype(np.float64), f"{name} accumulate")
    # A one-element operand is a scalar added to every element.
    dst = a.copy()
    run_kernel(target, K.accumulate_broadcast, dst.size, dst=dst, src=b[:1].copy(), src_step=0, sign=sign,
               fmt=K.FORMATS[name])
    scalar = (decode_reference(a, name) + np.float32(sign) * decode_reference(b[:1], name)[0])
    with np.errstate(over="ignore", invalid="ignore"):
        assert_words_equal(dst, scalar.astype(NUMPY_TYPES[name]).view(WORD[name]), a.astype(np.float64), "scalar")


# ------------------------------------------------------------ sizes and views
@pytest.mark.parametrize("n", [0, 8, 100, 1025])
def test_sizes(target, n):
    x = np.linspace(-70000, 70000, n, dtype=np.float32)
    out = np.full(n, 0xAAAA, np.uint16)
    run_kernel(target, K.encode_f32, n, src=x.view(np.uint32), dst=out, fmt=K.BFLOAT16)
    np.testing.assert_array_equal(out, x.astype(ml_dtypes.bfloat16).view(np.uint16))


def _launch_device_views(kernel, n, **args):
    """Launch ``kernel``'s CUDA loop on numba device arrays (views included) as given."""
    from numba import cuda

    from helpers import device_address
    from varstore.kernels._targets import simulator_enabled
    from varstore.kernels.launch import numba_launch

    sm_count = 1 if simulator_enabled() else cuda.get_current_device().MULTIPROCESSOR_COUNT
    numba_launch(kernel, n, args, device_address, sm_count)
    cuda.synchronize()


@pytest.mark.parametrize("strided", ["src", "dst"])
def test_strided_view_is_rejected(target, strided):
    """The loops index flat C arrays: a strided 1-D view is an error naming the argument
    (the old loops took the views of the test below straight), and nothing is written."""
    x = np.linspace(-3, 3, 300, dtype=np.float32)
    out = np.zeros(300, np.uint16)
    if target == "cpu":
        src = x.view(np.uint32)[::3] if strided == "src" else np.ascontiguousarray(x.view(np.uint32)[::3])
        dst = out[1::3] if strided == "dst" else out[1:101]
        with pytest.raises(ValueError, match=f"'encode_f32'.*'{strided}'.*1-D C-contiguous"):
            run_kernel(target, K.encode_f32, 100, src=src, dst=dst, fmt=K.BFLOAT16)
        assert not out.any()
    else:
        from numba import cuda

        d_x, d_out = cuda.to_device(x.view(np.uint32)), cuda.to_device(out)
        src = d_x[::3] if strided == "src" else d_x[:100]
        dst = d_out[1::3] if strided == "dst" else d_out[1:101]
        with pytest.raises(ValueError, match=f"'encode_f32'.*'{strided}'.*1-D C-contiguous"):
            _launch_device_views(K.encode_f32, 100, src=src, dst=dst, fmt=K.BFLOAT16)
        assert not d_out.copy_to_host().any()


def test_strided_view_through_contiguous_copies(target):
    """The values the strided views gave: every third float32, into every third word."""
    x = np.linspace(-3, 3, 300, dtype=np.float32)
    out = np.zeros(300, np.uint16)
    src = np.ascontiguousarray(x.view(np.uint32)[::3])
    dst = np.ascontiguousarray(out[1::3])
    run_kernel(target, K.encode_f32, src.size, src=src, dst=dst, fmt=K.BFLOAT16)
    out[1::3] = dst
    np.testing.assert_array_equal(out[1::3], x[::3].astype(ml_dtypes.bfloat16).view(np.uint16))
    assert not out[0::3].any() and not out[2::3].any()


# ------------------------------------------------------------ argument errors
@pytest.mark.parametrize("kernel, args, argument, received", [
    # float32 values where the kernel takes their uint32 bits
    ("encode_f32", {"src": np.zeros(4, np.float32), "dst": np.zeros(4, np.uint16), "fmt": K.BFLOAT16}, "src",
     "float32"),
    ("encode_f32", {"src": np.zeros(4, np.uint32), "dst": np.zeros(4, np.float32), "fmt": K.BFLOAT16}, "dst",
     "float32"),
    ("encode_f64", {"src": np.zeros(4, np.complex128), "dst": np.zeros(4, np.uint16), "fmt": K.BFLOAT16}, "src",
     "complex128"),
    ("accumulate", {"dst": np.zeros(4, np.uint16), "src": np.zeros(4, np.uint32), "sign": 1,
                    "fmt": K.BFLOAT16}, "src", "uint32"),
    ("accumulate_broadcast", {"dst": np.zeros(4, np.uint16), "src": np.zeros(1, np.uint32), "src_step": 0,
                              "sign": 1, "fmt": K.BFLOAT16}, "src", "uint32"),
])
def test_wrong_dtype_is_a_type_error(target, kernel, args, argument, received):
    args = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in args.items()}
    with pytest.raises(TypeError) as info:
        run_kernel(target, getattr(K, kernel), 4, **args)
    message = str(info.value)
    assert f"{kernel!r}" in message and f"argument {argument!r}" in message and f"received dtype {received}" in message


def _probe_kernel():
    """A fresh declaration of encode_f32: nothing compiled or looked up yet."""
    from varstore.kernels.declare import kernel

    return kernel("encode_f32_probe", "elementwise", K.encode_from_f32_bits, K.encode_f32.arrays, K.encode_f32.scalars)


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
@pytest.mark.parametrize("change, missing, unexpected", [
    ({"source": "src"}, ["src"], ["source"]),  # a misspelled array
    ({"format": "fmt"}, ["fmt"], ["format"]),  # a misspelled scalar
    ({"extra": None}, [], ["extra"]),  # one argument too many
    ({None: "fmt"}, ["fmt"], []),  # one too few
], ids=["misspelled-array", "misspelled-scalar", "extra", "missing"])
def test_wrong_argument_names_are_a_type_error(target, warm, change, missing, unexpected):
    """Wrong names are a TypeError listing the kernel's arguments, whether or not the
    kernel has run (and been looked up by its arrays' dtypes) before."""
    probe = _probe_kernel()
    x = np.linspace(-3, 3, 8, dtype=np.float32).view(np.uint32)
    good = {"src": x, "dst": np.zeros(8, np.uint16), "fmt": K.BFLOAT16}
    if warm:
        run_kernel(target, probe, 8, **good)
    args = dict(good, dst=np.zeros(8, np.uint16))
    for new, old in change.items():
        value = args.pop(old) if old else 0
        if new:
            args[new] = value
    with pytest.raises(TypeError) as info:
        run_kernel(target, probe, 8, **args)
    message = str(info.value)
    assert "'encode_f32_probe' takes the arguments ['src', 'dst', 'fmt']" in message
    assert f"missing {missing}" in message and f"unexpected {unexpected}" in message
    assert not args["dst"].any()


def test_a_scalar_operand_is_read_once_per_cpu_loop():
    """With step 0 (``v.assign_add(0.5)``), the CPU loop reads the operand's one element
    before the loop, not at ``i * 0`` per element: only then does LLVM vectorize it (a
    bfloat16 variable of 2**20 elements: 4.2 ms -> 0.5 ms on one core)."""
    from varstore.kernels.declare import Specialization
    from varstore.kernels.templates import cpu_source

    source = cpu_source(K.accumulate_broadcast, Specialization(("uint16", "uint16"), 0))
    scalar, general = source.split("\n    else:\n")
    assert "if start < stop and src_step == 0:" in scalar and "_h_src = src[uint64(0)]" in scalar
    assert scalar.count("src[") == 1 and "f(dst[uint64(_i)], _h_src" in scalar  # (none inside the loop)
    assert "src[uint64(_i * src_step)]" in general  # (any other step: the general loop)


def test_accumulate_into_refuses_an_operand_of_another_size():
    """A small-float operand is the destination's size or one element (a scalar); any
    other size is refused, nothing written (not src[0] added everywhere)."""
    from varstore import backends
    from varstore.casting import accumulate_into

    dst = np.zeros(10, np.uint16)
    with pytest.raises(ValueError, match="the operand has 3 elements; expected 10"):
        accumulate_into(backends.get("numpy"), dst, np.array([0x3F80] * 3, np.uint16), "bfloat16", 1)
    assert not dst.any()


def test_only_an_input_array_can_have_a_step():
    from varstore.kernels.declare import Array

    with pytest.raises(ValueError, match="only an 'in' array can have a step"):
        Array("dst", "inout", step="dst_step")


@pytest.mark.parametrize("name", FORMAT_NAMES)
@pytest.mark.parametrize("sign", [1, -1])
def test_accumulate_gives_nan_bits_by_one_rule(target, name, sign):
    """Sums that are NaN (a NaN operand with payloads and either sign, or infinities of
    opposite signs) take the x86 rule's bits on every target, as NumPy's float32 sum
    gives them here; a GPU's own float add would return 0x7FFFFFFF for each."""
    words = all_words(name)
    values = decode_reference(words, name)
    special = words[~np.isfinite(values)]
    some = np.concatenate([special, words[np.isfinite(values)][:: max(1, words.size // 64)]])
    a, b = (x.ravel() for x in np.meshgrid(some, some))
    with np.errstate(over="ignore", invalid="ignore"):
        expected = (decode_reference(a, name) + np.float32(sign) * decode_reference(b, name))
        expected = expected.astype(NUMPY_TYPES[name]).view(WORD[name])
    assert np.isnan(decode_reference(expected, name)).sum() > special.size  # (NaN sums are tested)
    dst = a.copy()
    run_kernel(target, K.accumulate, dst.size, dst=dst, src=b, sign=sign, fmt=K.FORMATS[name])
    np.testing.assert_array_equal(dst, expected)
