"""Slice-assign and slicing: the strided kernel (tier c) and ``v[key]``/``v[key] = value``
against NumPy's own indexing (tier b, hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import varstore as vs
from helpers import SIMULATOR, data_pointer, run_kernel, to_host
from varstore.casting import element_conversion, flat_view, region_plan
from varstore.dtypes import host_dtype
from varstore.indexing import basic_region, broadcast_strides, c_strides
from varstore.kernels.strided import copy_region, gather_indexed, scatter_indexed
from varstore.region_axes import region_arguments, unravel_magic

# ------------------------------------------------------------------ tier c
CASES = [
    ((8,), (slice(None),), ()),
    ((100,), (slice(None, None, -3),), (34,)),
    ((1025,), (slice(5, 1000, 7),), ()),
    ((40, 30), (slice(1, None, 2), slice(None, None, -4)), (8,)),
    ((6, 5, 4), (Ellipsis, 2), (5,)),
    ((3, 4), (1, slice(None), None), ()),
]


@pytest.mark.kernels
@pytest.mark.parametrize("shape, key, value_shape", CASES)
def test_copy_region_scatter_and_gather(target, shape, key, value_shape):
    ref = np.arange(int(np.prod(shape)), dtype=np.uint32).reshape(shape)
    region = basic_region(shape, key)
    value = (np.arange(int(np.prod(value_shape)), dtype=np.uint32) + 10_000).reshape(value_shape)
    dst = ref.copy()
    axes = region.shape or (1,)
    magic, shift = unravel_magic(axes, 1)
    run_kernel(target, copy_region, region.size, dst=dst.reshape(-1), src=value.reshape(-1), dst_offset=region.offset,
               dst_strides=region.strides or (1,), src_offset=0,
               src_strides=broadcast_strides(value.shape, region.shape) or (0,), shape=axes, magic=magic, shift=shift,
               narrow=1)
    expected = ref.copy()
    expected[key] = value
    np.testing.assert_array_equal(dst, expected)
    out = np.zeros(region.shape, np.uint32)
    run_kernel(target, copy_region, region.size, dst=out.reshape(-1), src=ref.reshape(-1), dst_offset=0,
               dst_strides=c_strides(region.shape) or (1,), src_offset=region.offset,
               src_strides=region.strides or (0,), shape=axes, magic=magic, shift=shift, narrow=1)
    np.testing.assert_array_equal(out, ref[key])


# Values every conversion route must get right: zeros, signs, halves (ties), integer and
# float extremes, infinities, NaN, tiny (subnormal in small formats) and huge magnitudes.
SPECIAL_VALUES = np.array(
    [0.0, -0.0, 0.5, -1.5, 2.5, 3.0, -7.0, 100.25, 127.5, 128.0, -129.0, 255.5, 256.0, 40000.0, -70000.0,
     2.0**31, -(2.0**31) - 1, 2.0**63, 1e20, -1e300, np.inf, -np.inf, np.nan, 1e-40, 2.0**-24, 3e-5, 448.0, 57344.0]
)


def _storage_values(dtype):
    """SPECIAL_VALUES in ``dtype``'s storage form, made by our (tested) cast kernels."""
    from varstore.casting import cast_on_host

    return cast_on_host(SPECIAL_VALUES, "float64", dtype)


def _check_converting_kernels(target, src_dtype, dst_dtype):
    from varstore.casting import cast_on_host, destination_words, element_conversion, source_words
    from varstore.dtypes import storage_dtype
    from varstore.kernels.strided import copy_region_converting

    src = _storage_values(src_dtype)
    n = src.size
    expected = destination_words(cast_on_host(src, src_dtype, dst_dtype))
    # Written backwards into every other element, through the strided kernel...
    dst = np.zeros(2 * n, storage_dtype(dst_dtype))
    words = destination_words(dst)
    run_kernel(target, copy_region_converting, n, dst=words, src=source_words(src, src_dtype, dst_dtype),
               dst_offset=2 * n - 2, dst_strides=(-2,), src_offset=0, src_strides=(1,), shape=(n,), magic=(0,),
               shift=(0,), narrow=1,
               conversion=element_conversion(src_dtype, dst_dtype))
    np.testing.assert_array_equal(words[-2::-2], expected, err_msg=f"{src_dtype} -> {dst_dtype}")
    assert not words[1::2].any()
    # ... and through the indexed one.
    words[:] = 0
    index = np.arange(n, dtype=np.int64) * 2 + 1
    run_kernel(target, scatter_indexed, n, dst=words, index=index, src=source_words(src, src_dtype, dst_dtype),
               src_strides=(1,), shape=(n,), magic=(0,), shift=(0,), narrow=1,
               conversion=element_conversion(src_dtype, dst_dtype))
    np.testing.assert_array_equal(words[1::2], expected, err_msg=f"{src_dtype} -> {dst_dtype} (indexed)")
    # ... and through the region form of the pair's cast kernel, where it has one, the
    # values repeated past a CPU stage (two rows of 300).
    kernel, src_view, dst_view, scalars = region_plan(src_dtype, dst_dtype)
    if kernel is not None:
        src, expected = np.resize(src, 600), np.resize(expected, 600)
        dst = np.zeros(1200, storage_dtype(dst_dtype))
        words = destination_words(dst)
        magic, shift = unravel_magic((2, 300), 1)
        run_kernel(target, kernel, 600, dst=flat_view(dst, dst_view), src=flat_view(src, src_view), dst_offset=1198,
                   dst_strides=(-600, -2), src_offset=0, src_strides=(300, 1), shape=(2, 300), magic=magic,
                   shift=shift, narrow=1, **scalars)
        np.testing.assert_array_equal(words[-2::-2], expected, err_msg=f"{src_dtype} -> {dst_dtype} ({kernel.name})")
        assert not words[1::2].any()


@pytest.mark.kernels
@pytest.mark.parametrize("dst_dtype", vs.DTYPES)
@pytest.mark.parametrize("src_dtype", vs.DTYPES)
def test_converting_kernels_match_the_cast_kernels(src_dtype, dst_dtype):
    """Every dtype pair on the CPU: the element-wise conversion inside the strided and
    indexed kernels gives the bits of our whole-array casts (tests/test_cast_kernels.py)."""
    if SIMULATOR:
        pytest.skip("the CPU loops run in the main process; the simulator runs a subset below")
    _check_converting_kernels("cpu", src_dtype, dst_dtype)


# One pair per route of kernels.cast.convert_word (plus SAME), for the CUDA loops.
ROUTE_PAIRS = [("float32", "bfloat16"), ("float64", "float8_e4m3fn"), ("int32", "float16"), ("bool", "bfloat16"),
               ("bfloat16", "float8_e5m2"), ("float8_e4m3fn", "float32"), ("float16", "float64"),
               ("bfloat16", "int8"), ("float16", "uint64"), ("float8_e5m2", "bool"), ("float32", "float64"),
               ("float32", "int16"), ("float32", "uint64"), ("float32", "bool"), ("int64", "float32"),
               ("uint64", "float64"), ("float64", "int32"), ("float64", "uint64"), ("int8", "uint32"),
               ("float64", "bool"), ("float64", "float32"), ("int16", "int16")]


def test_route_pairs_cover_every_route():
    from varstore.casting import element_conversion

    routes = {element_conversion(a, b)[0] for a, b in ROUTE_PAIRS}
    assert routes == set(range(21))


@pytest.mark.kernels
@pytest.mark.parametrize("src_dtype, dst_dtype", ROUTE_PAIRS)
def test_converting_kernels_on_every_target(target, src_dtype, dst_dtype):
    _check_converting_kernels(target, src_dtype, dst_dtype)


# ------------------------------------------------------------------ tier b
DTYPES = ["float32", "bfloat16", "float16", "int16", "float8_e4m3fn", "float64", "bool"]


@st.composite
def slice_assignments(draw):
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=5))
    key = draw(hnp.basic_indices(shape, min_dims=0, allow_newaxis=True, allow_ellipsis=True))
    region_shape = np.zeros(shape)[key].shape
    # A shape that broadcasts *to* the region: a suffix of it with some axes set to 1.
    suffix = region_shape[draw(st.integers(0, len(region_shape))):]
    value_shape = tuple(1 if draw(st.booleans()) else n for n in suffix)
    dtype = draw(st.sampled_from(DTYPES))
    value_dtype = draw(st.sampled_from([np.float32, np.float64, np.int32]))
    value = draw(hnp.arrays(value_dtype, value_shape, elements=st.integers(-100, 100)))
    return shape, key, value, dtype


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=slice_assignments())
def test_setitem_and_getitem_match_numpy(backend, case):
    shape, key, value, dtype = case
    store = vs.VariableStore(device="cpu" if backend == "numpy" else "cuda:0")
    start = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) % 7 - 3
    v = vs.Variable(start, dtype=dtype, store=store)
    expected = v.numpy().copy()
    expected[key] = value.astype(host_dtype(dtype))  # values are small ints: exact in every dtype
    v[key] = value
    np.testing.assert_array_equal(v.numpy().reshape(-1).view(np.uint8), expected.reshape(-1).view(np.uint8))
    got = to_host(v[key])
    np.testing.assert_array_equal(np.asarray(got, dtype=np.float64), expected[key].astype(np.float64))


def test_row_write_writes_only_the_row(store):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    v = vs.Variable(x, store=store)
    before = data_pointer(v.value)
    v[0, :] = 99
    v[2, ::-1] = np.array([1, 2, 3, 4])
    assert v.numpy().tolist() == [[99] * 4, [4, 5, 6, 7], [4, 3, 2, 1]]
    assert data_pointer(v.value) == before


def test_scalar_region_and_scalar_variable(store):
    v = vs.Variable(np.zeros((2, 3)), store=store)
    v[1, 2] = 5.0
    assert float(to_host(v[1, 2])) == 5.0 and v.numpy()[1, 2] == 5.0
    s = vs.Variable(1.0, store=store)
    s[...] = 4.0
    s[()] = s[()] + 1
    assert float(s.numpy()) == 5.0


def test_errors_keep_the_value(store):
    v = vs.Variable(np.arange(6, dtype=np.float32).reshape(2, 3), store=store)
    with pytest.raises(ValueError, match=r"\(2,\).*\(2, 3\)"):
        v[:, :] = np.ones(2)
    with pytest.raises(IndexError):
        v[2, 0] = 1.0
    with pytest.raises(IndexError):
        v[0, 0, 0] = 1.0
    with pytest.raises(ValueError, match="Unsupported value"):
        v[0] = np.array(["a", "b", "c"])
    assert v.numpy().tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_values_with_leading_size_one_axes_broadcast_as_in_numpy(store, dtype):
    v = vs.Variable(np.zeros(3), dtype=dtype, store=store)
    v[:] = np.ones((1, 3))
    v[0] = np.full((1, 1), 5.0)
    v[[1, 2]] = np.array([[[7.0, 8.0]]])
    assert v.numpy().astype(np.float64).tolist() == [5, 7, 8]
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3,\)"):
        v[:] = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"assign: the value's shape \(1, 3\)"):
        v.assign(np.ones((1, 3)))  # assign keeps Keras's exact-shape rule
    assert v.numpy().astype(np.float64).tolist() == [5, 7, 8]


def test_slicing_small_floats_gives_numbers(store):
    v = vs.Variable(np.array([[1.5, -2.0], [3.0, 0.25]], np.float32), dtype="bfloat16", store=store)
    v[:, 1] = 8.0
    assert np.asarray(to_host(v[:, ::-1]), dtype=np.float32).tolist() == [[8.0, 1.5], [8.0, 3.0]]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8", "float8_e5m2", "bool"])
@pytest.mark.parametrize("value_shape", [(3, 9, 5), (9, 1), (5,), ()])
def test_writes_of_another_dtype_convert_in_the_kernel(store, dtype, value_shape):
    """Full-size and broadcast sources of another dtype, from the host and the device."""
    v = vs.Variable(np.zeros((6, 9, 5)), dtype=dtype, store=store)
    value = (np.arange(int(np.prod(value_shape))).reshape(value_shape) % 11 - 5).astype(np.float64)
    expected = np.zeros((6, 9, 5), host_dtype(dtype))
    expected[::2, ::-1] = value.astype(host_dtype(dtype))
    v[::2, ::-1] = value
    np.testing.assert_array_equal(v.numpy().view(np.uint8), expected.view(np.uint8))
    w = vs.Variable(np.zeros((6, 9, 5)), dtype=dtype, store=store)
    w[::2, ::-1] = vs.Variable(value, dtype="float64", store=store).value  # a device source
    np.testing.assert_array_equal(w.numpy().view(np.uint8), expected.view(np.uint8))


def test_region_casts_serve_every_pair_with_a_cast_kernel():
    """A strided write converts through the region form of its pair's whole-array cast
    kernel; pairs without one (the array module's cast, ``convert``) keep the general
    converting kernel."""
    from varstore.casting import _plan
    from varstore.kernels.strided import REGION_CASTS

    for src_dtype in vs.DTYPES:
        for dst_dtype in vs.DTYPES:
            whole = _plan(src_dtype, dst_dtype)[0]
            region = region_plan(src_dtype, dst_dtype)[0]
            if whole is None or whole.name == "convert":
                assert region is None, (src_dtype, dst_dtype)
            else:
                assert region is REGION_CASTS[whole.name] and region.element is whole.element, (src_dtype, dst_dtype)


@pytest.mark.parametrize("dtype, value_dtype", [("bfloat16", "float64"), ("float32", "float64"),
                                                ("bfloat16", "float32"), ("float8_e4m3fn", "float32"),
                                                ("float64", "bfloat16"), ("int16", "float32"),
                                                ("float16", "float8_e5m2"), ("uint64", "float64"),
                                                ("float32", "bfloat16"), ("float64", "float32")])
def test_converting_writes_of_long_rows_give_the_casts_bits(store, dtype, value_dtype):
    """Rows longer than the CPU loop's stage (several stages and a part one), with a
    strided destination, written forwards and backwards, the first time and once
    prepared: the bits of the whole-array cast."""
    from varstore.casting import cast_on_host

    rng = np.random.default_rng(7)
    v = vs.Variable(np.zeros((5, 1700)), dtype=dtype, store=store)
    for key in [(slice(None, None, 2), slice(1, None, 3)), (slice(None, None, -2), slice(None, None, -2))]:
        region_shape = np.zeros((5, 1700))[key].shape
        for _ in range(3):  # (the third write goes through the prepared write)
            value = cast_on_host(rng.normal(0, 300, region_shape), "float64", value_dtype)
            expected = v.numpy().copy()
            expected[key] = cast_on_host(value, value_dtype, dtype).view(expected.dtype)
            v[key] = value.view(host_dtype(value_dtype))
            np.testing.assert_array_equal(v.numpy().view(np.uint8), expected.view(np.uint8), err_msg=str(key))


@pytest.mark.parametrize("value_dtype", [np.int64, np.uint64])
def test_64_bit_integers_into_bfloat16_round_once_on_every_write_path(store, value_dtype):
    """Past 2**53 float64 would round first: ``2**62 + 2**54 + 1`` lies just above a
    bfloat16 midpoint (0x5e81), float64 rounds it onto it (then 0x5e80). The strided
    write (region cast), the indexed write (``convert_word``) and ``assign`` agree."""
    values = np.array([2**62 + 2**54 + 1, 2**62 + 2**54, 2**55 + 2**47 + 1, 3], value_dtype)
    want = [0x5E81, 0x5E80, 0x5B01, 0x4040]  # (float64 first: 0x5E80, 0x5E80, 0x5B00, 0x4040)
    v = vs.Variable(np.zeros(8), dtype="bfloat16", store=store)
    v[::2] = values
    assert v.numpy().view(np.uint16)[::2].tolist() == want
    w = vs.Variable(np.zeros(8), dtype="bfloat16", store=store)
    w[[7, 5, 3, 1]] = values
    assert w.numpy().view(np.uint16)[[7, 5, 3, 1]].tolist() == want
    u = vs.Variable(np.zeros(4), dtype="bfloat16", store=store)
    u.assign(values)
    assert u.numpy().view(np.uint16).tolist() == want


def test_converting_write_makes_no_region_sized_temporary():
    import tracemalloc

    store = vs.VariableStore(device="cpu")
    v = vs.Variable("zeros", shape=(4096, 2048), dtype="float32", store=store)
    value = np.ones((2048, 2048), np.float64)  # half the rows, another dtype
    v[::2] = value  # compile first
    tracemalloc.start()
    v[1::2] = value
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    region_bytes = 2048 * 2048 * 4
    assert peak < region_bytes // 2, f"{peak} bytes traced for a {region_bytes}-byte region"
    assert (v.numpy() == 1).all()
    row = np.full(2048, 3, np.int64)  # broadcast to every row: no temporary of any size
    v[::-1] = row  # compile first
    v[:] = 1
    tracemalloc.start()
    v[:, ::-1] = row
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < row.nbytes, f"{peak} bytes traced for a {row.nbytes}-byte source"
    assert (v.numpy() == 3).all()


@pytest.mark.kernels
@pytest.mark.parametrize("n", [1, 8, 100, 1025])
def test_indexed_kernels(target, n):
    rng = np.random.default_rng(n)
    src = np.arange(2000, dtype=np.uint16)
    index = rng.integers(0, src.size, n).astype(np.int64)
    out = np.zeros(n, np.uint16)
    run_kernel(target, gather_indexed, n, dst=out, index=index, src=src)
    np.testing.assert_array_equal(out, src[index])
    unique = rng.permutation(src.size)[:n].astype(np.int64)
    dst = np.zeros(2000, np.uint16)
    value = (np.arange(n, dtype=np.uint16) + 7)
    same = element_conversion("uint16", "uint16")
    run_kernel(target, scatter_indexed, n, dst=dst, index=unique, src=value, src_strides=(1,), shape=(n,),
               magic=(0,), shift=(0,), narrow=1, conversion=same)
    expected = np.zeros(2000, np.uint16)
    expected[unique] = value
    np.testing.assert_array_equal(dst, expected)
    dst[:] = 0
    run_kernel(target, scatter_indexed, n, dst=dst, index=unique, src=np.array([9], np.uint16), src_strides=(0,),
               shape=(n,), magic=(0,), shift=(0,), narrow=1, conversion=same)  # a broadcast scalar
    assert (dst[unique] == 9).all() and dst.sum() == 9 * n
    # An index of three axes and a source that broadcasts over the middle one: the
    # kernel unravels j over the index's shape with the host's magic numbers.
    for narrow in (1, 0):
        shape = (3, 5, 7)
        index = rng.permutation(2000)[:105].astype(np.int64).reshape(shape)
        value = (np.arange(21, dtype=np.uint16) + 1).reshape(3, 1, 7)
        axes = region_arguments(shape, broadcast_strides(value.shape, shape), broadcast_strides(value.shape, shape),
                                narrow)
        dst[:] = 0
        run_kernel(target, scatter_indexed, index.size, dst=dst, index=index.reshape(-1), src=value.reshape(-1),
                   src_strides=axes["src_strides"], shape=axes["shape"], magic=axes["magic"], shift=axes["shift"],
                   narrow=narrow, conversion=same)
        expected = np.zeros(2000, np.uint16)
        expected[index] = value
        np.testing.assert_array_equal(dst, expected)


@st.composite
def advanced_assignments(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5))
    if draw(st.booleans()):
        key = draw(hnp.integer_array_indices(shape, result_shape=hnp.array_shapes(min_dims=1, max_dims=2, max_side=4)))
    else:
        key = draw(hnp.arrays(np.bool_, shape[: draw(st.integers(1, len(shape)))]))
    selected = np.zeros(shape)[key].shape
    suffix = selected[draw(st.integers(0, len(selected))):]
    value_shape = tuple(1 if draw(st.booleans()) else n for n in suffix)
    value = draw(hnp.arrays(np.float64, value_shape, elements=st.integers(-100, 100)))
    return shape, key, value, draw(st.sampled_from(DTYPES))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=advanced_assignments())
def test_advanced_keys_match_numpy(backend, case):
    """Integer arrays (negative and repeated indices too: the last write wins on the CPU)
    and boolean masks, as NumPy's own __setitem__ and __getitem__."""
    shape, key, value, dtype = case
    store = vs.VariableStore(device="cpu" if backend == "numpy" else "cuda:0")
    v = vs.Variable(np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) % 9 - 4, dtype=dtype, store=store)
    expected = v.numpy().copy()
    expected[key] = value.astype(host_dtype(dtype))
    v[key] = value
    if backend == "numpy":  # (on a GPU, repeated indices race: compared as sets below)
        np.testing.assert_array_equal(v.numpy().reshape(-1).view(np.uint8), expected.reshape(-1).view(np.uint8))
    np.testing.assert_array_equal(np.asarray(to_host(v[key]), np.float64), v.numpy()[key].astype(np.float64))


def test_repeated_indices_last_write_wins_on_the_cpu():
    v = vs.Variable(np.zeros(4), store=vs.VariableStore(device="cpu"))
    v[[1, 3, 1, 1]] = np.array([5.0, 6.0, 7.0, 8.0])
    assert v.numpy().tolist() == [0.0, 8.0, 0.0, 6.0]



def test_one_element_reads_as_a_scalar_as_numpy_and_keras_give_it():
    store = vs.VariableStore(device="cpu")
    counts = store.variable(np.array([1, 2, 2], np.int32))
    assert type(counts[0]) is np.int32 and {counts[0]: "a"} and set(counts) == {1, 2}  # (hashable)
    grid = store.variable(np.arange(6, dtype=np.float32).reshape(2, 3), dtype="bfloat16")
    assert type(grid[1, 2]).__name__ == "bfloat16" and float(grid[1, 2]) == 5.0 and grid[1, -1] == grid[(1, 2)]
    assert grid[np.array(1), 0] == 3.0 and grid[1:, 2].shape == (1,) and grid[1].shape == (3,)
    assert type(grid[1, 2, ...]) is np.ndarray and grid[1, 2, ...].shape == ()  # (as NumPy: `...` keeps an array)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64", "int16"])
def test_blocks_of_long_rows_match_numpy(store, dtype):
    """Regions whose rows are contiguous and at least 512 bytes long (the row kernels,
    ``strided.copy_rows`` and ``fill_rows``): a block of columns written twice (the
    second through the prepared write), a row broadcast to rows, a read of the block and
    a scalar written to it, each as NumPy gives them, nothing outside the block touched."""
    shape, block = (6, 600), (slice(None), slice(3, 540))
    v = vs.Variable((np.arange(3600) % 11 - 5).reshape(shape), dtype=dtype, store=store)
    expected = v.numpy().copy()
    for k in range(2):
        b = ((np.arange(6 * 537) + k) % 13).reshape(6, 537).astype(host_dtype(dtype))
        v[block] = b
        expected[block] = b
        np.testing.assert_array_equal(v.numpy().view(np.uint8), expected.view(np.uint8))
    row = (np.arange(563) % 7).astype(host_dtype(dtype))
    v[1:5, 7:570] = row
    expected[1:5, 7:570] = row
    np.testing.assert_array_equal(v.numpy().view(np.uint8), expected.view(np.uint8))
    np.testing.assert_array_equal(to_host(v[block]).astype(np.float64), expected[block].astype(np.float64))
    v[block] = 2
    expected[block] = 2
    np.testing.assert_array_equal(v.numpy().view(np.uint8), expected.view(np.uint8))
