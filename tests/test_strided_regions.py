"""The region kernels' launch arguments: merged axes and division by magic numbers
(tier a), the unravel and the kernels against NumPy on every target (tier c), and
``v[key] = b`` / ``v[key]`` after merging (tier b)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import run_kernel, to_host
from varstore.indexing import basic_region, broadcast_strides, c_strides
from varstore.region_axes import division_magic, merge_axes, region_arguments, unravel_magic


def _offsets(shape, *strides):
    """Every element's offset under each set of strides, in C order (the reference walk)."""
    index = np.indices(shape).reshape(len(shape), -1) if shape else np.zeros((0, 1), np.int64)
    return [tuple(np.asarray(s, np.int64) @ index) if shape else (0,) for s in strides]


# ------------------------------------------------------------------ tier a: merging
@pytest.mark.parametrize(
    "shape, strides, merged",
    [
        (((4096, 4096)), ((4096, 1), (4096, 1)), ((16777216,), (1,), (1,))),  # v[:, :] = b
        ((4096,), ((1,), (1,)), ((4096,), (1,), (1,))),  # v[0, :] = 99 (a row)
        ((2, 1024), ((1024, 1), (1024, 1)), ((2048,), (1,), (1,))),  # v[1:3] = b
        ((2, 1024), ((1024, 1), (0, 1)), ((2, 1024), (1024, 1), (0, 1))),  # a row broadcast to two rows
        ((2000, 333), ((2000, 3), (333, 1)), ((2000, 333), (2000, 3), (333, 1))),  # v[::2, 1::3] = b
        ((3, 4, 5), ((-20, -5, -1), (20, 5, 1)), ((60,), (-1,), (1,))),  # v[::-1, ::-1, ::-1] = b
        ((3, 4, 5), ((40, 10, 2), (20, 5, 1)), ((60,), (2,), (1,))),  # every other element of a (3, 4, 10)
        ((3, 4, 5), ((20, 5, 1), (0, 0, 0)), ((60,), (1,), (0,))),  # a scalar to a whole array
        ((3, 4, 5), ((20, 5, 1), (0, 5, 1)), ((3, 20), (20, 1), (0, 1))),  # a (4, 5) value to each of 3
        ((3, 4, 5), ((20, 5, 1), (5, 0, 1)), ((3, 4, 5), (20, 5, 1), (5, 0, 1))),  # nothing merges
        ((1, 7, 1, 1, 3), ((0, 3, 9, 0, 1), (21, 3, 3, 3, 1)), ((21,), (1,), (1,))),  # size-1 axes dropped
        ((6, 1, 5), ((10, 0, 1), (5, 5, 1)), ((6, 5), (10, 1), (5, 1))),  # None in the key
        ((), ((), ()), ((1,), (0,), (0,))),  # 0-d
        ((1, 1), ((7, 1), (0, 0)), ((1,), (0,), (0,))),  # one element
        ((0, 5), ((5, 1), (5, 1)), ((0,), (1,), (1,))),  # empty (callers return before launching)
    ],
)
def test_merge_axes(shape, strides, merged):
    assert merge_axes(shape, *strides) == merged
    if all(merged[0]):  # the merged axes walk the same offsets in the same order
        assert _offsets(merged[0], *merged[1:]) == _offsets(shape, *strides)


KEYS = [
    (), (slice(None), slice(None)), 0, (0, slice(None)), slice(1, 3), (slice(None, None, 2), slice(1, None, 3)),
    (slice(None, None, -1),), (slice(None, None, -1), slice(None, None, -1)), (Ellipsis, 2), (slice(2, 5), None),
    (None, slice(None), None, 3), (slice(1, 2),), (3, 4), (slice(7, 1, -2), slice(None, None, 5)),
]


@pytest.mark.parametrize("key", KEYS, ids=repr)
@pytest.mark.parametrize("value_shape", ["full", "row", "scalar"])
def test_merged_regions_walk_the_elements_numpy_selects(key, value_shape):
    """For regions of real keys, the merged axes reach the same storage elements, in the
    same order, from the same value elements."""
    shape = (8, 6)
    region = basic_region(shape, key)
    value = {"full": region.shape, "row": region.shape[-1:], "scalar": ()}[value_shape]
    src_strides = broadcast_strides(value, region.shape)
    axes = region_arguments(region.shape, region.strides, src_strides, 1)
    dst, src = _offsets(axes["shape"], axes["dst_strides"], axes["src_strides"])
    expected_dst, expected_src = _offsets(region.shape, region.strides, src_strides)
    assert dst == expected_dst and src == expected_src
    assert np.array_equal(np.asarray(dst) + region.offset, np.arange(48).reshape(shape)[key].reshape(-1))
    assert len(axes["shape"]) <= max(1, len(region.shape))


# ------------------------------------------------------------------ tier a: magic numbers
def _edge_dividends(d: np.ndarray, top: int) -> np.ndarray:
    """Dividends below ``top`` where a wrong quotient shows first: around multiples of
    ``d`` (small and near ``top``) and the ends of the range, one row per divisor."""
    d = d.astype(np.int64)[:, None]
    k = np.array([1, 2, 3, 7], np.int64)
    last = (top - 1) // d
    near = np.concatenate([k * d - 1, k * d, (last - k + 1) * d - 1, (last - k + 1) * d, last * d + d - 1], axis=1)
    fixed = np.broadcast_to(np.array([0, 1, 2, top - 2, top - 1], np.int64), (d.shape[0], 5))
    return np.clip(np.concatenate([near, fixed], axis=1), 0, top - 1)


def _quotients32(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``mulhi32(2 * x, m) >> s`` for each divisor's magic numbers (numpy, 64-bit products)."""
    magic = np.array([division_magic(int(v), 32) for v in d], np.uint64)
    m, s = magic[:, :1], magic[:, 1:]
    assert (m < 2**32).all() and (s < 32).all()
    return ((2 * x.astype(np.uint64)) * m >> np.uint64(32)) >> s


def test_magic32_every_divisor_up_to_2_16():
    """All d in 1..2**16: edge dividends and 64 random ones each, below 2**31."""
    rng = np.random.default_rng(1)
    d = np.arange(1, 2**16 + 1, dtype=np.int64)
    x = np.concatenate([_edge_dividends(d, 2**31), rng.integers(0, 2**31, (d.size, 64))], axis=1)
    np.testing.assert_array_equal(_quotients32(x, d), x // d[:, None])


def test_magic32_large_divisors():
    """Divisors up to 2**31 - 1: random ones, powers of two and their neighbours."""
    rng = np.random.default_rng(2)
    powers = 2 ** np.arange(16, 32, dtype=np.int64)
    d = np.unique(np.concatenate([rng.integers(2**16, 2**31, 20000), powers - 1, powers[:-1], powers[:-1] + 1,
                                  [2**31 - 1, 3 * 2**29, 46341, 65537]]))
    x = np.concatenate([_edge_dividends(d, 2**31), rng.integers(0, 2**31, (d.size, 16))], axis=1)
    np.testing.assert_array_equal(_quotients32(x, d), x // d[:, None])


def test_magic64():
    """The 64-bit numbers, in Python integers: mulhi64(2 * x, m) >> s == x // d below 2**63."""
    rng = np.random.default_rng(3)
    divisors = list(range(1, 3000)) + [2**k + e for k in range(12, 63) for e in (-1, 0, 1)]
    divisors += [int(v) for v in rng.integers(2**31, 2**63 - 1, 300)] + [2**63 - 1]
    for d in divisors:
        m, s = division_magic(d, 64)
        assert m < 2**64 and s < 64
        top = 2**63
        xs = {0, 1, d - 1, d, d + 1, 2 * d - 1, top - 1, top - 2, (top - 1) // d * d, (top - 1) // d * d - 1}
        xs |= {int(v) for v in rng.integers(0, 2**63 - 1, 8, dtype=np.int64)}
        for x in xs:
            if 0 <= x < top:
                assert (2 * x * m >> 64) >> s == x // d, (d, x)


def test_unravel_magic_leaves_axis_0_undivided():
    magic, shift = unravel_magic((10, 3, 7), 1)
    assert magic[0] == 0 and shift[0] == 0
    assert (magic[1], shift[1]) == division_magic(3, 32) and (magic[2], shift[2]) == division_magic(7, 32)
    wide, _ = unravel_magic((10, 3, 7), 0)
    assert wide[1] == division_magic(3, 64)[0] - 2**64  # an int64 scalar: the word's bits


# ------------------------------------------------------------------ tier c: the unravel and the kernels
def _unravel(narrow: int):
    import numba

    from varstore.kernels.strided import region_offsets_narrow, region_offsets_wide

    unravel = region_offsets_narrow if narrow else region_offsets_wide

    @numba.njit
    def offsets(js, shape, magic, shift, a_strides, b_strides):
        out = np.empty((js.size, 2), np.int64)
        for k in range(js.size):
            out[k, 0], out[k, 1] = unravel(js[k], shape, magic, shift, a_strides, b_strides, len(shape))
        return out

    return offsets


@pytest.mark.kernels
@pytest.mark.parametrize("narrow", [1, 0])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4), (1000, 3, 7), (5, 2, 1, 9), (46340, 46340)])
def test_unravel_matches_numpy(shape, narrow):
    """The element functions' offsets are the dot products of np.unravel_index with the
    strides, for random and edge element numbers (the largest shape: nearly 2**31
    elements, the narrow path's limit)."""
    size = int(np.prod(shape))
    rng = np.random.default_rng(4)
    js = np.unique(np.concatenate([rng.integers(0, size, 2000), [0, 1, size - 1, size // 2]]))
    a_strides = tuple(int(v) for v in rng.integers(-50, 50, len(shape)))
    b_strides = c_strides(shape)
    magic, shift = unravel_magic(shape, narrow)
    got = _unravel(narrow)(js, shape, magic, shift, a_strides, b_strides)
    index = np.stack(np.unravel_index(js, shape))
    np.testing.assert_array_equal(got[:, 0], np.asarray(a_strides) @ index)
    np.testing.assert_array_equal(got[:, 1], np.asarray(b_strides) @ index)


REGION_CASES = [
    ((64, 48), (slice(None, None, 2), slice(1, None, 3)), "full"),
    ((64, 48), (slice(None), slice(None)), "full"),
    ((64, 48), (slice(1, 3),), "row"),
    ((64, 48), (0, slice(None)), "scalar"),
    ((5, 6, 7), (slice(None, None, -1), slice(1, 5), slice(None, None, -2)), "full"),
    ((5, 6, 7), (slice(None), None, slice(2, 3), slice(None)), "row"),
    ((4, 3, 5, 2), (slice(1, None), slice(None, None, 2), Ellipsis), "full"),
    ((9,), (4,), "scalar"),
    ((3, 1, 1000), (slice(None, None, -1), 0, slice(None, None, 7)), "full"),
]


@pytest.mark.kernels
@pytest.mark.parametrize("narrow", [1, 0])
@pytest.mark.parametrize("shape, key, value", REGION_CASES, ids=repr)
def test_region_kernels_with_merged_axes(target, shape, key, value, narrow):
    """copy_region as write_region and read_region launch it (merged axes, magic numbers),
    narrow and wide, against NumPy's setitem and getitem (bit for bit)."""
    from varstore.kernels.strided import copy_region

    rng = np.random.default_rng(5)
    ref = rng.integers(0, 2**32, shape, dtype=np.uint32)
    region = basic_region(shape, key)
    value_shape = {"full": region.shape, "row": region.shape[-1:], "scalar": ()}[value]
    src = rng.integers(0, 2**32, value_shape, dtype=np.uint32)
    dst = ref.copy()
    axes = region_arguments(region.shape, region.strides, broadcast_strides(src.shape, region.shape), narrow)
    run_kernel(target, copy_region, region.size, dst=dst.reshape(-1), src=src.reshape(-1), dst_offset=region.offset,
               src_offset=0, **axes)
    expected = ref.copy()
    expected[key] = src
    np.testing.assert_array_equal(dst, expected)
    out = np.zeros(region.shape, np.uint32)
    axes = region_arguments(region.shape, c_strides(region.shape), region.strides, narrow)
    run_kernel(target, copy_region, region.size, dst=out.reshape(-1), src=ref.reshape(-1), dst_offset=0,
               src_offset=region.offset, **axes)
    np.testing.assert_array_equal(out, ref[key])


# ------------------------------------------------------------------ tier b: v[key] = b, v[key]
E2E_KEYS = KEYS[1:] + [(slice(None, None, 3), slice(None, None, -2)), (slice(-1, None), slice(None, 1))]


@pytest.mark.parametrize("dtype", ["float32", "int8", "float64", "bfloat16", "uint64", "bool"])
def test_write_and_read_regions_match_numpy(store, dtype):
    """``v[key] = b`` (b full, a row, a scalar; of the variable's dtype or float32) and
    ``v[key]`` across keys whose regions merge to one axis, some, or none."""
    import ml_dtypes  # noqa: F401 - numpy's bfloat16

    from varstore.dtypes import host_dtype

    rng = np.random.default_rng(6)
    shape = (12, 10)
    numpy_dtype = host_dtype(dtype)
    start = rng.integers(0, 100, shape).astype(numpy_dtype)
    v = store.variable(start, name="v")
    expected = start.copy()
    for key in E2E_KEYS:
        selected = expected[key]
        for value_shape in (selected.shape, selected.shape[-1:], ()):
            for value_dtype in (numpy_dtype, np.float32):
                b = rng.integers(0, 100, value_shape).astype(value_dtype)
                v[key] = b
                expected[key] = b.astype(numpy_dtype)
                np.testing.assert_array_equal(to_host(v.numpy()), expected, err_msg=f"{key} = {value_shape}")
        np.testing.assert_array_equal(to_host(v[key]), expected[key], err_msg=repr(key))


def test_the_cpu_region_copy_prefetches_the_next_row_for_writing():
    """The four-at-a-time rows of the CPU copy (contiguous source, strided destination)
    prefetch the head of the next row's destination lines; the converting region loops
    do not."""
    import numba

    from varstore.kernels import build
    from varstore.kernels import strided as S

    def llvm_of(kernel):
        spec = kernel.examples()[0]
        module, _ = build._import_generated(kernel, spec, "cpu")  # compiled afresh: a cached one has no IR
        return "".join(numba.njit(build.cpu_signature(kernel, spec), nogil=True)(module.loop).inspect_llvm().values())

    assert "@llvm.prefetch" in llvm_of(S.copy_region)
    assert "@llvm.prefetch" not in llvm_of(S.copy_region_converting)


def test_regions_of_contiguous_rows_go_to_the_row_kernels():
    """``contiguous_rows``: two or more axes after merging, the last one at stride 1 in
    every array and at least 512 bytes long (a 16-byte group per lane of a warp:
    ``strided.copy_rows`` and ``fill_rows`` then take them); anything else keeps the
    general region kernels."""
    from varstore.region_axes import MIN_ROW_BYTES, contiguous_rows, fill_arguments

    assert MIN_ROW_BYTES == 512
    assert contiguous_rows(region_arguments((4, 128), (256, 1), (128, 1), 1), 4)  # v[:, :128] = b on (4, 256)
    assert not contiguous_rows(region_arguments((4, 128), (128, 1), (128, 1), 1), 4)  # whole rows: one axis
    assert not contiguous_rows(region_arguments((4, 127), (256, 1), (127, 1), 1), 4)  # under 512 bytes
    assert contiguous_rows(region_arguments((4, 256), (512, 1), (256, 1), 1), 2)  # (bfloat16: 256 elements)
    assert not contiguous_rows(region_arguments((4, 256), (512, 1), (256, 1), 1), 1)  # (bytes: 512 elements)
    assert not contiguous_rows(region_arguments((4, 128), (512, 2), (128, 1), 1), 4)  # a strided destination
    assert not contiguous_rows(region_arguments((4, 128), (256, 1), (0, 0), 1), 4)  # a broadcast scalar source
    assert contiguous_rows(region_arguments((2, 3, 128), (1024, 256, 1), (0, 128, 1), 1), 4)  # a row broadcast
    assert contiguous_rows(fill_arguments((4, 128), (256, 1), 1), 4)
    assert not contiguous_rows(fill_arguments((4, 128), (256, 3), 1), 4)
