"""Tier b: the per-call fast paths (scalar assign / setitem through the array module's
fill, same-dtype assign_add/assign_sub through its add, cached basic-key regions) give
exactly the bits of the general paths they skip, and keep their checks.

The general paths are reached through the local write strategy (``LOCAL_WRITES``), which
the fast paths never enter.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

import varstore as vs
from helpers import to_host
from varstore.indexing import basic_region, cached_basic_region
from varstore.variable import LOCAL_WRITES

FLOATS = ["float16", "bfloat16", "float32", "float64", "float8_e4m3fn", "float8_e5m2"]
INTS = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
ALL = ["bool", *INTS, *FLOATS]


def _f64(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


SCALARS = [
    0, 1, -1, 99, 127, 128, 255, 256, 300, -129, 2**15, 2**24, 2**24 + 1, -(2**24) - 1, 2**31 - 1, 2**31,
    -(2**31), -(2**31) - 1, 2**32, 2**53 + 1, 2**63 - 1, -(2**63), 2**63, 2**64 - 1,
    0.0, -0.0, 1.5, -2.75, 1 / 3, 0.1, 1e-40, -1e-40, 1e-45, 1e-50, 1.1754943508222875e-38,
    3.4028234663852886e38, 3.4028235e38, 3.4028235677973366e38, 1e39, -1e39, 1e10, -1e10, 1e300,
    float("inf"), float("-inf"), float("nan"), -float("nan"),
    _f64(0x7FF0000000000001), _f64(0xFFF4000000000000), _f64(0x7FF8000000000123),
    True, False,
]


def _bits(v) -> bytes:
    return to_host(v.value).tobytes()


def _outcome(fn, *args):
    """``(exception type, message)`` of ``fn(*args)``, or None."""
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - compared, not hidden
        return type(exc), str(exc)
    return None


def _pair(store, dtype, shape=(5, 4)):
    start = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) % 7
    return (vs.Variable(start, dtype=dtype, store=store, name="fast"),
            vs.Variable(start, dtype=dtype, store=store, name="general"))


# ---------------------------------------------------------------- scalar assign
@pytest.mark.parametrize("dtype", ALL)
def test_scalar_assign_matches_the_general_path(store, dtype):
    fast, general = _pair(store, dtype)
    for value in SCALARS:
        with np.errstate(all="ignore"):
            got = _outcome(fast.assign, value)
            want = _outcome(LOCAL_WRITES.assign, general, value)
        assert got == want, (dtype, value)
        assert _bits(fast) == _bits(general), (dtype, value, to_host(fast.value).ravel()[:2],
                                               to_host(general.value).ravel()[:2])


@pytest.mark.parametrize("dtype", ALL)
def test_scalar_setitem_matches_the_general_path(store, dtype):
    fast, general = _pair(store, dtype)
    for key in [(0, slice(None)), (slice(None, None, -2), 1), (None, 1), Ellipsis, -1, (slice(3, 1), 0), 2]:
        for value in SCALARS:
            with np.errstate(all="ignore"):
                got = _outcome(fast.__setitem__, key, value)
                want = _outcome(LOCAL_WRITES.setitem, general, key, value)
            assert got == want, (dtype, key, value)
            assert _bits(fast) == _bits(general), (dtype, key, value)


def test_scalar_writes_give_the_kernels_bits(store):
    """Exact expectations, independent of either path."""
    f32 = vs.Variable(np.zeros(3, np.float32), store=store)
    for value, bits in [(-0.0, 0x80000000), (2**24, 0x4B800000), (1.5, 0x3FC00000), (1e-45, 1), (1e-50, 0),
                        (2**24 + 1, 0x4B800000), (1e39, 0x7F800000), (float("nan"), 0x7FC00000),
                        (_f64(0xFFF4000000000000), 0xFFE00000)]:
        f32.assign(value)
        assert to_host(f32.value).view(np.uint32).tolist() == [bits] * 3, value
        f32[1:] = 7.0
        f32[1:] = value
        assert to_host(f32.value).view(np.uint32).tolist() == [bits] * 3, value
    i8 = vs.Variable(np.zeros(2, np.int8), store=store)
    for value, want in [(127, 127), (-128, -128), (np.int64(300), 44), (np.int64(-129), 127), (1e10, 127),
                        (-1e10, -128), (float("nan"), 0), (2.9, 2), (True, 1)]:  # (NumPy ints wrap, floats saturate)
        i8.assign(value)
        assert to_host(i8.value).tolist() == [want] * 2, value
        i8[0] = value
        assert to_host(i8.value).tolist() == [want] * 2, value
    for value in (300, -129):  # Python ints out of bounds: OverflowError, as NumPy
        with pytest.raises(OverflowError, match=f"Python integer {value} out of bounds for int8"):
            i8.assign(value)
        with pytest.raises(OverflowError, match=f"Python integer {value} out of bounds for int8"):
            i8[0] = value
        assert to_host(i8.value).tolist() == [1, 1]
    u64 = vs.Variable(np.zeros(2, np.uint64), store=store)
    u64.assign(2**64 - 1)
    assert to_host(u64.value).tolist() == [2**64 - 1] * 2
    u64.assign(np.int64(-1))  # an int64 that wraps, as NumPy's cast
    assert to_host(u64.value).tolist() == [2**64 - 1] * 2
    flags = vs.Variable(np.zeros(4, bool), store=store)
    for value, want in [(0.5, True), (-0.0, False), (float("nan"), True), (-1, True), (0, False)]:
        flags.assign(value)
        assert to_host(flags.value).tolist() == [want] * 4, value
    bf16 = vs.Variable(np.zeros(2, np.float32), dtype="bfloat16", store=store)
    bf16.assign(1.00390625)  # halfway between bfloat16 1.0 and 1.0078125: to even
    assert to_host(bf16.value).view(np.uint16).tolist() == [0x3F80] * 2


def test_scalar_writes_warn_about_nothing(store):
    f32 = vs.Variable(np.zeros(3, np.float32), store=store)
    with np.errstate(all="raise"):
        for value in (1e39, -1e39, 1e-50, 1e-40, float("nan"), 3.4028235677973366e38):
            f32.assign(value)
            f32[0] = value


def test_scalar_fast_paths_keep_the_checks(store):
    v = vs.Variable(np.zeros((3, 4), np.float32), store=store)
    with pytest.raises(IndexError, match="out of bounds"):
        v[3, 0] = 1.0
    with pytest.raises(IndexError, match="out of bounds"):  # errors are not cached
        v[3, 0] = 1.0
    with pytest.raises(IndexError, match="too many indices"):
        v[0, 0, 0] = 1.0
    with pytest.raises(IndexError):
        v[1.0] = 1.0  # equals 1, but is no index
    for key in [(3, 0), (0, 0, 0), (slice(0, 2.5),), (0, slice(None, None, 0))]:
        errors = []
        for value in (1.0, np.ones((), np.float32)):  # the shortcut (the array module's write), the general path
            with pytest.raises((IndexError, TypeError, ValueError)) as error:
                v[key] = value
            errors.append((error.type, str(error.value)))
        assert errors[0] == errors[1], key  # (one message for one key)
    v[1] = 2.0  # (row 1's region is cached now: True must not find it)
    assert to_host(v.value)[:, 0].tolist() == [0.0, 2.0, 0.0]
    v[True] = 5.0  # a mask (all of it), not row 1
    assert (to_host(v.value) == 5.0).all()
    v[False] = 6.0
    assert (to_host(v.value) == 5.0).all()
    v.release()
    with pytest.raises(RuntimeError, match="released"):
        v.assign(1.0)
    with pytest.raises(RuntimeError, match="released"):
        v[0] = 1.0
    with pytest.raises(RuntimeError, match="released"):
        v.assign_add(np.zeros((3, 4), np.float32))


def test_scalar_fast_paths_respect_scopes(store):
    v = vs.Variable(np.ones(4, np.float32), store=store)
    with vs.StatelessScope() as scope:
        v.assign(2.0)
        v[0] = 3.0
        v.assign_add(np.ones(4, np.float32))
        assert to_host(v.value).tolist() == [4.0, 3.0, 3.0, 3.0]
    assert to_host(v.value).tolist() == [1.0] * 4
    assert to_host(scope.get_current_value(v)).tolist() == [4.0, 3.0, 3.0, 3.0]


# ------------------------------------------------------------- assign_add / sub
@pytest.mark.parametrize("dtype", ALL)
def test_same_dtype_accumulate_matches_the_general_path(store, dtype):
    fast, general = _pair(store, dtype)
    if dtype == "bool":
        with pytest.raises(TypeError, match="not defined for the bool"):
            fast.assign_add(np.ones((5, 4), bool))
        return
    host = np.asarray(fast.value)
    step = (np.arange(20).reshape(5, 4) * 37 + 100).astype(host.dtype)
    for _ in range(3):
        with np.errstate(all="ignore"):
            fast.assign_add(step)
            LOCAL_WRITES.accumulate(general, step, 1, "assign_add")
            assert _bits(fast) == _bits(general)
            fast.assign_sub(step[::-1])  # a view: not contiguous in the general path's sense either
            LOCAL_WRITES.accumulate(general, step[::-1], -1, "assign_sub")
            assert _bits(fast) == _bits(general)


def test_accumulate_wraps_integers_and_reads_overlapping_sources(store):
    i8 = vs.Variable(np.array([127, -128, 5], np.int8), store=store)
    i8.assign_add(np.array([1, 0, 0], np.int8))
    i8.assign_sub(np.array([0, 1, 0], np.int8))
    assert to_host(i8.value).tolist() == [-128, 127, 5]
    v = vs.Variable(np.arange(6, dtype=np.float32), store=store)
    storage = v.value  # the storage itself (numpy) or its device array (cuda)
    v.assign_add(storage[::-1])  # overlaps: read before written, as NumPy's a + a[::-1]
    assert to_host(v.value).tolist() == [5.0] * 6
    v.assign_add(v.value)  # the storage itself
    assert to_host(v.value).tolist() == [10.0] * 6
    v.assign_sub(v.value)
    assert to_host(v.value).tolist() == [0.0] * 6


def test_accumulate_of_other_shapes_and_dtypes_keeps_the_general_rules(store):
    v = vs.Variable(np.zeros((2, 3), np.float32), store=store)
    with pytest.raises(ValueError, match=r"assign_add: the value's shape \(3,\)"):
        v.assign_add(np.ones(3, np.float32))
    v.assign_add(np.float64(0.1))  # a scalar, cast to float32 first
    v.assign_add(np.full((2, 3), 0.1, np.float64))  # float64 -> float32 (our narrowing), then added
    want = np.float32(np.float32(0.1) + np.float32(0.1))
    assert (to_host(v.value) == want).all()
    big = np.full((2, 3), 1.0, np.dtype(np.float32).newbyteorder())
    v.assign_add(big)
    assert (to_host(v.value) == want + 1).all()


# -------------------------------------------------------------- region cache
KEYS = [0, -1, 3, (1, 2), (slice(None), 1), (slice(1, None, 2), slice(None, None, -1)), Ellipsis, (Ellipsis, 0),
        (None, 0), (0, None, slice(2)), slice(5, 1), (slice(-100, 100), -2), ()]


@pytest.mark.parametrize("shape", [(4, 5), (5, 4), (6,), (2, 3, 4)])
def test_cached_regions_equal_parsed_ones(shape):
    for key in KEYS:
        want = _outcome(basic_region, shape, key)
        if want is None:
            for _ in range(2):
                assert cached_basic_region(shape, key) == basic_region(shape, key), (shape, key)
        else:
            for _ in range(2):
                assert _outcome(cached_basic_region, shape, key) == want, (shape, key)


def test_cached_regions_tell_equal_keys_of_other_types_apart():
    shape = (4, 4)
    assert cached_basic_region(shape, 1) == basic_region(shape, 1)
    assert cached_basic_region(shape, True) is None  # a mask, though True == 1
    assert cached_basic_region(shape, (slice(1, 3),)) == basic_region(shape, slice(1, 3))
    with pytest.raises(TypeError):
        cached_basic_region(shape, slice(1.0, 3))  # == slice(1, 3), but no index
    assert cached_basic_region(shape, np.int64(2)) == basic_region(shape, 2)
    assert cached_basic_region((4, 5), 1) != cached_basic_region((5, 4), 1)


def test_the_last_key_object_is_kept_per_shape_and_never_for_an_error():
    """The last cacheable key object is remembered with its shape: the same object for
    another shape is parsed for that shape, and a key that raised is raised again."""
    key = (3, slice(1, None))
    for _ in range(2):
        assert cached_basic_region((4, 5), key) == basic_region((4, 5), key)
        assert cached_basic_region((5, 4), key) == basic_region((5, 4), key)
        with pytest.raises(IndexError):
            cached_basic_region((3, 5), key)
    a = vs.VariableStore(device="cpu").variable(np.arange(20, dtype=np.float32).reshape(4, 5))
    b = vs.VariableStore(device="cpu").variable(np.arange(20, dtype=np.float32).reshape(5, 4))
    for _ in range(2):
        np.testing.assert_array_equal(a[key], np.arange(20).reshape(4, 5)[key])
        np.testing.assert_array_equal(b[key], np.arange(20).reshape(5, 4)[key])


# ------------------------------------------------------------- prepared casts
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 1, 4), (0,)])
@pytest.mark.parametrize("dst", ["bfloat16", "float16", "float8_e4m3fn", "float64", "int8", "bool"])
def test_prepared_astype_matches_the_general_cast_and_follows_writes(store, shape, dst):
    from varstore.casting import cast

    v = vs.Variable(np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape) * 1.37 - 3,
                    store=store, name="src")

    def general():
        storage = v.stored.storage
        return to_host(v.stored.backend.present(cast(v.stored.backend, storage, "float32", dst, v.stored.device), dst))

    for _ in range(2):  # the first call prepares, the second runs the prepared cast
        got = to_host(v.astype(dst))
        want = general()
        assert got.shape == shape and got.dtype == want.dtype
        assert got.tobytes() == want.tobytes()
    first = v.astype(dst)
    v.assign(np.zeros(shape, np.float32))  # the prepared cast reads the storage at each call
    assert to_host(v.astype(dst)).tobytes() == general().tobytes()
    if first.size:
        assert to_host(first).tobytes() != to_host(v.astype(dst)).tobytes()  # a new array each call


def test_prepared_astype_respects_scopes_and_release(store):
    v = vs.Variable(np.ones(4, np.float32), store=store)
    assert to_host(v.astype("float16")).tolist() == [1.0] * 4
    with vs.StatelessScope():
        v.assign(2.0)
        assert to_host(v.astype("float16")).tolist() == [2.0] * 4  # the scope's value, not the storage
    assert to_host(v.astype("float16")).tolist() == [1.0] * 4
    assert v._casts  # (prepared, and keeping the storage alive...)
    v.release()
    assert v._casts is None  # (...until the variable is released)
    with pytest.raises(RuntimeError, match="released"):
        v.astype("float16")


def test_prepared_astype_of_large_variables_splits_like_launch(store):
    host = np.linspace(-5, 5, 300_001, dtype=np.float32)
    v = vs.Variable(host, store=store)
    for _ in range(2):
        got = to_host(v.astype("bfloat16"))
        assert got.tobytes() == host.astype(got.dtype).tobytes()


def test_astype_accepts_unhashable_and_alias_dtype_arguments(store):
    v = vs.Variable(np.ones(3, np.float32), store=store)
    assert to_host(v.astype(np.dtype("float16"))).dtype == np.float16
    assert to_host(v.astype(np.float16)).dtype == np.float16
    with pytest.raises((TypeError, ValueError)):
        v.astype(["float16"])
    assert to_host(v.astype("float16")).tolist() == [1.0] * 3


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float8_e5m2", "float8_e4m3fn", "float32"])
def test_astype_to_the_same_dtype_keeps_every_bit(store, dtype):
    """A copy, NaN payloads included, whether the cast is prepared or not (in a scope)."""
    from varstore.dtypes import storage_dtype

    bits = 8 * storage_dtype(dtype).itemsize
    word = np.dtype(f"uint{bits}")
    count = 1 << min(bits, 16)  # every pattern of the narrow types; a spread of float32's
    words = (np.arange(count, dtype=np.uint64) * ((1 << bits) // count)).astype(word)
    words[-1] = 0x7FC00001 if bits == 32 else words[-1]  # (a float32 NaN with a payload)
    v = vs.Variable(np.zeros(count, np.float32), dtype=dtype, store=store)
    v.stored.storage.view(word)[...] = v.stored.backend.from_host(words, v.stored.device)  # NaNs included
    for _ in range(2):
        assert to_host(v.astype(dtype)).view(word).tobytes() == words.tobytes()
    with vs.StatelessScope():
        assert to_host(v.astype(dtype)).view(word).tobytes() == words.tobytes()


def test_astype_none_follows_floatx(store):
    v = vs.Variable(np.ones(3, np.float32), store=store)
    assert to_host(v.astype(None)).dtype == np.float32
    previous = vs.floatx()
    vs.set_floatx("float64")
    try:
        assert to_host(v.astype(None)).dtype == np.float64
    finally:
        vs.set_floatx(previous)


# ---------------------------------------------------------------- bound random fills
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("distribution", ["uniform", "normal", "truncated_normal"])
def test_bound_random_fills_match_the_general_launch(dtype, distribution):
    """From the second fill of a size, fill_random launches through a bound loop; the
    bits are those of the general launch for every seed (and dtypes sharing a word size
    keep their own encodings)."""
    from varstore import random as R
    from varstore.backends import get
    from varstore.dtypes import storage_dtype

    backend = get("numpy")
    shape = (6, 8)
    R._bound_fills.clear()
    R._seen_fills.clear()
    general = []
    for seed in (3, -4, 2**62):
        out = np.empty(shape, storage_dtype(dtype))
        R.fill_random(backend, out, dtype, seed, distribution, -0.5, 2.0)
        general.append(out.tobytes())
    key = (backend, "cpu", dtype, distribution, 48)
    assert key in R._bound_fills  # the third fill went through the bound loop
    R._bound_fills.clear()
    R._seen_fills.clear()
    for seed, expected in zip((3, -4, 2**62), general, strict=True):
        out = np.empty(shape, storage_dtype(dtype))
        R._bound_fills.pop(key, None)  # every fill through the general launch
        R._seen_fills.discard(key)
        R.fill_random(backend, out, dtype, seed, distribution, -0.5, 2.0)
        assert out.tobytes() == expected


def test_bound_random_fills_keep_dtypes_of_one_word_size_apart():
    from varstore import random as R
    from varstore.backends import get

    backend = get("numpy")
    results = {}
    for _ in range(3):  # the third fill of each is bound
        for dtype in ("bfloat16", "float16"):
            out = np.empty(16, np.uint16)
            R.fill_random(backend, out, dtype, 9, "uniform", 0.0, 1.0)
            results.setdefault(dtype, set()).add(out.tobytes())
    assert len(results["bfloat16"]) == 1 and len(results["float16"]) == 1
    assert results["bfloat16"] != results["float16"]


def test_bound_launch_takes_several_given_arguments_and_refuses_unknown_ones():
    from varstore.backends import get
    from varstore.backends.base import Backend
    from varstore.kernels import random_fill as RF

    backend = get("numpy")
    kernel = RF.FILL_KERNELS[(RF.UNIFORM, False)]
    fmt = {"encode": 0, "fmt": tuple(int(v) for v in vs.dtypes.record("bfloat16").format.kernel_args)}
    sample = {"dst": np.empty(8, np.uint32), "first": 0, "k0": 1, "k1": 2, "a": 0.0, "b": 1.0, **fmt}
    given = ("dst", "k0", "k1", "a", "b")
    runs = [backend.bound_launch(kernel, 2, sample, given), Backend.bound_launch(backend, kernel, 2, sample, given)]
    outputs = []
    for run in runs:
        out = np.zeros(8, np.uint32)
        run(out, 5, 6, -1.0, 2.0)
        outputs.append(out)
    backend.launch(kernel, 2, **{**sample, "dst": (expected := np.zeros(8, np.uint32)), "k0": 5, "k1": 6, "a": -1.0,
                                 "b": 2.0})
    for out in outputs:
        assert out.tobytes() == expected.tobytes() and out.any()
    with pytest.raises(TypeError, match=r"\['nope'\] are not arguments"):
        backend.bound_launch(kernel, 2, sample, ("dst", "nope"))


def test_bound_random_fills_keep_no_variable_alive():
    import gc
    import weakref

    store = vs.VariableStore(device="cpu")
    variables = [store.variable("glorot_uniform", shape=(24, 40), name=f"w{i}") for i in range(3)]
    storages = [weakref.ref(v.stored.storage) for v in variables]
    for v in variables:
        v.release()
    del variables
    gc.collect()
    assert all(ref() is None for ref in storages)


# ---------------------------------------------------------------- bound accumulates
SMALL_FLOATS = ["float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"]


@pytest.mark.parametrize("dtype", SMALL_FLOATS)
def test_bound_accumulates_match_the_general_launch(dtype):
    """accumulate_into binds its launch once per (dtype, size, sign, operand size); the
    bound call, given other variables' words, writes the bits of the general launch."""
    from varstore import casting
    from varstore.backends import get
    from varstore.dtypes import record, storage_dtype
    from varstore.kernels import cast as K

    backend = get("numpy")
    storage = storage_dtype(dtype)
    word = np.dtype(f"u{storage.itemsize}")
    rng = np.random.default_rng(5)
    fmt = record(dtype).format.kernel_args
    casting._accumulates.clear()

    def words(size):  # random bit patterns (NaNs, infinities, subnormals included)
        return rng.integers(0, 2 ** (8 * word.itemsize), size, dtype=np.uint64).astype(word)

    for sign in (1, -1):
        for operand_size in (24, 1):
            for _ in range(3):  # one bind, three destinations
                start, operand = words(24), words(operand_size)
                bound, general = start.copy(), start.copy()
                casting.accumulate_into(backend, bound.view(storage), operand.view(storage), dtype, sign)
                if operand_size == 1:
                    backend.launch(K.accumulate_broadcast, 24, dst=general, src=operand, src_step=0, sign=sign,
                                   fmt=fmt)
                else:
                    backend.launch(K.accumulate, 24, dst=general, src=operand, sign=sign, fmt=fmt)
                assert bound.tobytes() == general.tobytes()
                assert bound.tobytes() != start.tobytes()
            assert (backend, "cpu", dtype, 24, sign, operand_size) in casting._accumulates


def test_bound_accumulates_keep_no_array_alive_and_refuse_other_sizes():
    import gc
    import weakref

    from varstore import casting
    from varstore.backends import get

    backend = get("numpy")
    dst, src = np.zeros(40, np.uint16), np.full(40, 0x3F80, np.uint16)
    casting.accumulate_into(backend, dst, src, "bfloat16", 1)
    casting.accumulate_into(backend, dst, src, "bfloat16", 1)
    assert (dst == 0x3F80 + 0x80).all()  # 1 + 1 = 2 in bfloat16
    refs = [weakref.ref(dst), weakref.ref(src)]
    del dst, src
    gc.collect()
    assert all(ref() is None for ref in refs)
    dst = np.zeros(40, np.uint16)
    with pytest.raises(ValueError, match="the operand has 3 elements; expected 40"):
        casting.accumulate_into(backend, dst, np.zeros(3, np.uint16), "bfloat16", 1)
    assert not dst.any()


def test_bound_accumulates_refuse_strided_arrays_and_keep_to_their_device():
    from varstore import casting
    from varstore.backends import get

    backend = get("numpy")
    dst = np.zeros(80, np.uint16)
    with pytest.raises(ValueError, match=r"must be C-contiguous; their strides are \(4,\) and \(2,\)"):
        casting.accumulate_into(backend, dst[::2], np.full(40, 0x3F80, np.uint16), "bfloat16", 1)
    with pytest.raises(ValueError, match=r"strides are \(2,\) and \(4,\)"):
        casting.accumulate_into(backend, dst[:40], np.full(80, 0x3F80, np.uint16)[::2], "bfloat16", 1)
    with pytest.raises(TypeError, match=r"operand's words \(float32\) are not the destination's \(uint16\)"):
        casting.accumulate_into(backend, dst[:40], np.ones(40, np.float32), "bfloat16", 1)
    assert not dst.any()
    casting.accumulate_into(backend, dst[:40], np.full(40, 0x3F80, np.uint16), "bfloat16", 1)
    assert any(key[1] == "cpu" and key[3] == 40 for key in casting._accumulates)  # (the device is in the key)


def test_prepared_astype_results_are_new_arrays_from_the_first_call_on(store):
    """The first astype of a variable returns the output its launch was checked with;
    later ones return new arrays: no result is another's memory."""
    v = vs.Variable(np.arange(300, dtype=np.float32) % 100, store=store)
    results = [v.astype("bfloat16") for _ in range(3)]
    v.assign(np.zeros(300, np.float32))
    results.append(v.astype("bfloat16"))
    hosts = [to_host(r) for r in results]
    assert all((h.astype(np.float32) == np.arange(300) % 100).all() for h in hosts[:3])
    assert not hosts[3].astype(np.float32).any()
    pointers = {store._backend.address(r) for r in results}
    assert len(pointers) == len(results)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"])
def test_small_float_accumulate_shortcut_matches_the_general_path(store, dtype):
    """assign_add/assign_sub of an array of the variable's own small-float dtype and shape
    skip the general path's checks (values.add_own_words): the same bits, NaNs and
    infinities included; a byte-swapped or overlapping operand takes the general path."""
    from varstore.dtypes import host_dtype, storage_dtype

    fast, general = _pair(store, dtype, shape=(6, 5))
    word = np.dtype(f"u{storage_dtype(dtype).itemsize}")
    rng = np.random.default_rng(4)
    for sign in (1, -1):
        words = rng.integers(0, 2 ** (8 * word.itemsize), (6, 5), dtype=np.uint64).astype(word)
        operand = words.view(host_dtype(dtype))
        with np.errstate(all="ignore"):
            (fast.assign_add if sign > 0 else fast.assign_sub)(operand)
            LOCAL_WRITES.accumulate(general, operand, sign, "assign_add" if sign > 0 else "assign_sub")
        assert _bits(fast) == _bits(general)
    if dtype == "float16" and store.device == "cpu":
        swapped = np.full((6, 5), 1.5, np.dtype(">f2"))
        fast.assign_add(swapped)
        LOCAL_WRITES.accumulate(general, swapped.astype(np.float16), 1, "assign_add")
        assert _bits(fast) == _bits(general)
    other = vs.Variable(np.full((6, 5), 0.75, np.float32), dtype=dtype, store=store)  # a variable operand
    wide = vs.Variable(np.full((6, 5), 0.75, np.float32), store=store)  # float32: the general path's cast
    for operand in (other, wide, fast):  # (fast itself: the same memory, the general path's copy)
        fast.assign_sub(operand)
        LOCAL_WRITES.accumulate(general, other if operand is not fast else general, -1, "assign_sub")
        assert _bits(fast) == _bits(general)
    if store.device == "cpu":
        v = vs.Variable(np.arange(6, dtype=np.float32), dtype=dtype, store=store)
        v.assign_add(v.value[::-1].copy()[::-1])  # (contiguous again, and apart: the shortcut)
        v.assign_sub(np.asarray(v.value))  # the storage itself, seen as the dtype: overlaps
        assert not to_host(v.value).astype(np.float32).any()


def test_scalar_assign_add_gives_the_general_paths_bits(store, monkeypatch):
    """``v.assign_add(python scalar)`` on a float32/float64/int variable is the array
    module's own add where its conversion of the scalar gives our bits (``plain_scalar``),
    else the general path: the same bits either way."""
    backend_type = type(store.variable(np.zeros(1, np.float32)).stored.backend)
    added = []
    real = backend_type.add_into
    monkeypatch.setattr(backend_type, "add_into",
                        lambda self, dst, x, sign: added.append(type(x)) or real(self, dst, x, sign))
    cases = [("float32", 0.1), ("float32", 1e39), ("float32", 2**24 + 1), ("float64", 0.1), ("int8", 1), ("int8", -3),
             ("int32", 7.9)]
    for dtype, scalar in cases:
        start = np.array([126, -127, 0.5, 3], np.float64)
        v = store.variable(start, dtype=dtype)
        ref = store.variable(start, dtype=dtype)
        with np.errstate(invalid="ignore"):  # (inf - inf, as NumPy's own)
            for method in ("assign_add", "assign_sub", "assign_add"):
                getattr(v, method)(scalar)
                getattr(ref, method)(np.asarray(scalar))  # (a 0-d array: the general path)
        np.testing.assert_array_equal(to_host(v.value).view(np.uint8), to_host(ref.value).view(np.uint8))
    assert float in added and int in added  # (the shortcut ran)


@pytest.mark.parametrize("dtype", SMALL_FLOATS)
def test_small_float_scalar_assign_add_gives_the_general_paths_bits(store, dtype):
    """``v.assign_add(python scalar)`` on a small-float variable adds the scalar's words,
    converted once and remembered (``values.add_own_words``): the bits of the general
    path, which converts a 0-d float64/int64/uint64 array, for every scalar of SCALARS
    (zeros, NaNs and ints past int64 take the general path), called twice so that the
    second call reads the remembered words."""
    from varstore import values

    shortcut = []
    real = values._remember_scalar_words
    values._scalar_words.clear()
    start = np.array([126, -127, 0.5, 3, 1e-3, -2.5], np.float64)
    past_halfway = [1 + 2.0**-k + 2.0**-30 for k in (3, 4, 5, 8, 11)]  # (rounded through float32: a tie, down)
    for scalar in SCALARS + past_halfway:
        if type(scalar) is bool:
            continue
        v = store.variable(start, dtype=dtype)
        ref = store.variable(start, dtype=dtype)
        with np.errstate(all="ignore"):
            for method in ("assign_add", "assign_sub", "assign_add", "assign_add"):
                getattr(v, method)(scalar)
                getattr(ref, method)(np.asarray(scalar))  # (a 0-d array: the general path)
        assert _bits(v) == _bits(ref), scalar
        shortcut.append(real(scalar, type(scalar), dtype) is not None)
    assert sum(shortcut) > 30 and not all(shortcut)  # (both ways ran)
    assert (1.5, float, dtype) in values._scalar_words and (1, int, dtype) in values._scalar_words
    assert (1.5, int, dtype) not in values._scalar_words and (0.0, float, dtype) not in values._scalar_words


def test_remembered_scalar_words_are_bounded():
    from varstore import values

    values._scalar_words.clear()
    for i in range(values._MAX_SCALAR_WORDS + 5):
        values._remember_scalar_words(float(i + 1), float, "bfloat16")
    assert 0 < len(values._scalar_words) <= values._MAX_SCALAR_WORDS


@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3fn", "float16", "int8"])
def test_a_scalar_written_to_a_region_is_its_converted_word(store, dtype):
    """``v[key] = scalar`` on a dtype the array module cannot convert to: the scalar is
    cast once (our kernel) and its word written to every element of the region by the
    array module, with the bits ``astype`` gives."""
    start = np.arange(12, dtype=np.float32).reshape(3, 4)
    for value in (1.5, -0.0, 1e39, float("nan"), 2.0**31, -7):
        v = store.variable(start, dtype=dtype)
        with np.errstate(invalid="ignore", over="ignore"):
            v[::2, 1::2] = value
            v[1, 2] = value
        want = to_host(store.variable(start, dtype=dtype).value).copy().view(np.uint8 if dtype != "float16" and
                                                                              dtype != "bfloat16" else np.uint16)
        word = to_host(store.variable(np.full((), value, np.float64), dtype=dtype).value).view(want.dtype)
        want[::2, 1::2] = word
        want[1, 2] = word
        np.testing.assert_array_equal(to_host(v.value).view(want.dtype), want, err_msg=f"{value!r}")
