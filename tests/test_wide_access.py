"""Tier c: the CUDA elementwise loop's wide path (several indices per thread, vector loads
and stores, a scalar head and tail) gives the CPU loop's bits at every alignment and
length, and its split of an index range is right.

The CUDA launches here take device arrays at element offsets of one allocation, so the
head (indices before the first aligned one), the tail and the all-scalar fallback (arrays
aligned differently) all run, in the simulator as on a GPU.
"""

from __future__ import annotations

import collections
import contextlib

import numpy as np
import pytest

from helpers import SIMULATOR, device_address, run_kernel
from varstore.kernels import cast as K
from varstore.kernels import random_fill as R
from varstore.kernels import strided as S
from varstore.kernels.access import vector_split
from varstore.kernels.declare import Specialization
from varstore.kernels.wide import VECTOR_BYTES, vector_width

pytestmark = pytest.mark.kernels

# (The simulator runs every simulated thread in Python: a few lengths that take the
# all-scalar, head + groups + tail and many-groups paths.)
LENGTHS = [1, 9, 97] if SIMULATOR else [0, 1, 7, 8, 9, 31, 64, 97, 1000, 4099]
OFFSETS = [(0, 0), (1, 1), (3, 3), (0, 1)]


def _cuda_run(kernel, n, arrays: dict, offsets: dict, addresses: dict | None = None, **scalars):
    """Run ``kernel``'s CUDA loop on device views ``full[offset:]`` of each array; returns
    the host copies of the full arrays (and puts the views' addresses in ``addresses``)."""
    from numba import cuda

    from varstore.kernels._targets import simulator_enabled
    from varstore.kernels.launch import numba_launch

    full = {name: cuda.to_device(a) for name, a in arrays.items()}
    views = {name: full[name][offsets.get(name, 0):] for name in arrays}
    if addresses is not None:
        addresses.update({name: device_address(view) for name, view in views.items()})
    sm_count = 1 if simulator_enabled() else cuda.get_current_device().MULTIPROCESSOR_COUNT
    numba_launch(kernel, n, {**views, **scalars}, device_address, sm_count)
    cuda.synchronize()
    return {name: full[name].copy_to_host() for name in arrays}


@contextlib.contextmanager
def _steps_counted(kernel, spec):
    """In the simulator, the calls of the CUDA loop's steps (``step``: the general one;
    ``rstep``/``vstep``: the wide paths' scalar and vector ones), counted by name as the
    launches inside the block make them: the loop runs as Python there and finds its
    steps in its module. Empty on a GPU (nothing counted)."""
    counts = collections.Counter()
    if not SIMULATOR:
        yield counts
        return
    from varstore.kernels import build

    kernel.compiled("numba", spec)
    module, _ = build._import_generated(kernel, spec, "numba")
    saved = {name: getattr(module, name) for name in ("step", "rstep", "vstep") if hasattr(module, name)}

    def counting(name, fn):
        def counted(*args):
            counts[name] += 1
            return fn(*args)
        return counted

    for name, fn in saved.items():
        setattr(module, name, counting(name, fn))
    try:
        yield counts
    finally:
        for name, fn in saved.items():
            setattr(module, name, fn)


def _cpu_run(kernel, n, arrays: dict, offsets: dict, **scalars):
    host = {name: a.copy() for name, a in arrays.items()}
    run_kernel("cpu", kernel, n, **{name: host[name][offsets.get(name, 0):] for name in host}, **scalars)
    return host


CASES = [
    ("encode_f32 bf16", K.encode_f32, np.uint32, np.uint16, {"fmt": K.BFLOAT16}),
    ("encode_f32 e4m3fn", K.encode_f32, np.uint32, np.uint8, {"fmt": K.FORMATS["float8_e4m3fn"]}),
    ("decode_f64", K.decode_f64, np.uint16, np.float64, {"fmt": K.BFLOAT16}),
    ("widen_f32", K.widen_f32, np.uint32, np.float64, {}),
    ("float_to_int int8", K.float_to_int, np.float32, np.int8, {"lo": -128, "hi": 127}),
    ("accumulate bf16 (dst read and written)", K.accumulate, np.uint16, np.uint16, {"sign": -1, "fmt": K.BFLOAT16}),
]


def _source(dtype, size, rng):
    if np.dtype(dtype).kind == "f":
        return (rng.standard_normal(size) * 300).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, size, dtype=dtype, endpoint=True)


@pytest.mark.skipif(not SIMULATOR and not __import__("conftest")._gpu_present(),
                    reason="CUDA loops run in the simulator process (NUMBA_ENABLE_CUDASIM=1) or on a GPU")
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("offsets", OFFSETS)
def test_wide_path_matches_the_cpu_loop(case, offsets):
    _, kernel, src_dtype, dst_dtype, scalars = case
    rng = np.random.default_rng(7)
    for n in LENGTHS:
        read = any(a.name == "dst" and a.role == "inout" for a in kernel.arrays)  # (then a random dst)
        dst = _source(dst_dtype, n + 8, rng) if read else np.full(n + 8, 0x5A, dst_dtype)
        arrays = {"src": _source(src_dtype, n + 8, rng), "dst": dst}
        where = {"src": offsets[0], "dst": offsets[1]}
        want = _cpu_run(kernel, n, arrays, where, **scalars)
        got = _cuda_run(kernel, n, arrays, where, **scalars)
        # Every index written, nothing outside [offset, offset + n) touched.
        assert got["dst"].tobytes() == want["dst"].tobytes(), (n, offsets)


@pytest.mark.skipif(not SIMULATOR and not __import__("conftest")._gpu_present(),
                    reason="CUDA loops run in the simulator process (NUMBA_ENABLE_CUDASIM=1) or on a GPU")
@pytest.mark.parametrize("word", [np.uint32, np.uint16, np.uint8])
@pytest.mark.parametrize("offset", [0, 1, 3])
def test_random_fills_store_whole_groups_at_any_offset(word, offset):
    fmt = K.BFLOAT16 if word == np.uint16 else K.FORMATS["float8_e4m3fn"]
    scalars = {"first": 5, "k0": 1234, "k1": 99, "a": -1.0, "b": 2.0, "encode": int(word != np.uint32), "fmt": fmt}
    for groups in (3, 17) if SIMULATOR else (1, 3, 4, 5, 17, 1001):
        arrays = {"dst": np.zeros(4 * groups + 8, word)}
        want = _cpu_run(R.uniform_words, groups, arrays, {"dst": offset}, **scalars)
        got = _cuda_run(R.uniform_words, groups, arrays, {"dst": offset}, **scalars)
        assert got["dst"].tobytes() == want["dst"].tobytes(), (groups, offset)


@pytest.mark.skipif(not SIMULATOR and not __import__("conftest")._gpu_present(),
                    reason="CUDA loops run in the simulator process (NUMBA_ENABLE_CUDASIM=1) or on a GPU")
@pytest.mark.parametrize("word", [np.uint16, np.uint8])
@pytest.mark.parametrize("offset", [0, 1, 3])
@pytest.mark.parametrize("step", [0, 1])
def test_broadcast_operand_goes_wide_at_any_offset(word, offset, step):
    """accumulate_broadcast: with src_step 0 the operand is read once and dst takes the
    wide path (head, groups, tail); with step 1 every index takes the general step. Both
    give the CPU loop's bits, and write nothing outside dst's range."""
    fmt = K.BFLOAT16 if word == np.uint16 else K.FORMATS["float8_e4m3fn"]
    rng = np.random.default_rng(11)
    for n in LENGTHS:
        arrays = {"dst": _source(word, n + 8, rng), "src": _source(word, n + 8, rng)}
        where = {"dst": offset, "src": 2}
        scalars = {"src_step": step, "sign": -1, "fmt": fmt}
        want = _cpu_run(K.accumulate_broadcast, n, arrays, where, **scalars)
        got = _cuda_run(K.accumulate_broadcast, n, arrays, where, **scalars)
        assert got["dst"].tobytes() == want["dst"].tobytes(), (n, offset, step)
        if n:
            assert want["dst"].tobytes() != arrays["dst"].tobytes()


REGION_CASES = [
    ("copy uint8", S.copy_region, np.uint8, np.uint8, {}),
    ("copy uint16", S.copy_region, np.uint16, np.uint16, {}),
    ("copy uint64", S.copy_region, np.uint64, np.uint64, {}),
    ("encode_f32 bf16", S.REGION_CASTS["encode_f32"], np.uint32, np.uint16, {"fmt": K.BFLOAT16}),
    ("decode e4m3fn", S.REGION_CASTS["decode"], np.uint8, np.uint32, {"fmt": K.FORMATS["float8_e4m3fn"]}),
]


@pytest.mark.skipif(not SIMULATOR and not __import__("conftest")._gpu_present(),
                    reason="CUDA loops run in the simulator process (NUMBA_ENABLE_CUDASIM=1) or on a GPU")
@pytest.mark.parametrize("case", REGION_CASES, ids=[c[0] for c in REGION_CASES])
@pytest.mark.parametrize("offsets", [(0, 0, 0, 0), (1, 2, 1, 2), (0, 1, 0, 0)], ids=["aligned", "head", "unaligned"])
@pytest.mark.parametrize("strides", [(1, 1), (2, 1), (1, 0)])
def test_contiguous_regions_go_wide_at_any_offset(case, offsets, strides):
    """A region of one axis: with both strides 1 (``v[a:b] = x``) the wide path from the
    arrays' element offsets (groups only, a head, groups and a tail, or every index
    scalar where the two are aligned differently); with a stride of 2 or a broadcast
    source, every index takes the unravelled step. Each gives the CPU loop's bits and
    writes nothing outside the region. ``offsets``: (src view, src_offset, dst view,
    dst_offset), in elements."""
    from varstore.region_axes import unravel_magic

    _, kernel, src_dtype, dst_dtype, scalars = case
    rng = np.random.default_rng(3)
    src_view, src_offset, dst_view, dst_offset = offsets
    v = vector_width(kernel, Specialization((np.dtype(dst_dtype).name, np.dtype(src_dtype).name), 1))
    for n in LENGTHS:
        arrays = {"dst": np.full(dst_view + dst_offset + strides[0] * n + 40, 0x5A, dst_dtype),
                  "src": _source(src_dtype, src_view + src_offset + n + 40, rng)}
        magic, shift = unravel_magic((n,), 1)
        region = {"dst_offset": dst_offset, "dst_strides": (strides[0],), "src_offset": src_offset,
                  "src_strides": (strides[1],), "shape": (n,), "magic": magic, "shift": shift, "narrow": 1}
        where = {"src": src_view, "dst": dst_view}
        want = _cpu_run(kernel, n, arrays, where, **region, **scalars)
        addresses = {}
        spec = Specialization((np.dtype(dst_dtype).name, np.dtype(src_dtype).name), 1)
        with _steps_counted(kernel, spec) as ran:
            got = _cuda_run(kernel, n, arrays, where, addresses, **region, **scalars)
        assert got["dst"].tobytes() == want["dst"].tobytes(), (n, offsets, strides)
        if n:
            assert want["dst"].tobytes() != arrays["dst"].tobytes()
        # (the case ran the path it names: the split of the addresses at the offsets, and
        # in the simulator the steps the loop called)
        checks = tuple((addresses[a] + o * np.dtype(t).itemsize, np.dtype(t).itemsize,
                        min(VECTOR_BYTES, v * np.dtype(t).itemsize))
                       for a, o, t in (("dst", dst_offset, dst_dtype), ("src", src_offset, src_dtype)))
        head, groups = _split(0, n, v, sorted(checks, key=lambda c: -c[2] // c[1]))  # (the loop's order)
        if n >= 3 * v and offsets[0] + offsets[1] == offsets[2] + offsets[3]:
            assert groups > 0 and (head > 0) == (offsets != (0, 0, 0, 0)), (n, offsets, head, groups)
        elif offsets[1] != offsets[3]:
            assert groups == 0, (n, offsets, head, groups)
        if SIMULATOR and n:
            assert ran["vstep"] == (groups if strides == (1, 1) else 0), (n, offsets, strides, ran)
            assert ran["step"] == (0 if strides == (1, 1) else n), (n, offsets, strides, ran)


# (shape, destination strides but the last, source strides but the last): pitches that
# move each row's alignment, rows shorter than a group, three axes that do not merge,
# and a broadcast source row (stride 0).
ROW_LAYOUTS = [((3, 1100), (1104,), (1100,)), ((2, 2100), (2112,), (2112,)), ((3, 5), (9,), (5,)),
               ((2, 2, 600), (2500, 1200), (2400, 1200)), ((3, 700), (700,), (0,))]


ROW_CASES = [("copy_rows uint8", S.copy_rows, np.uint8, np.uint8, {}),
             ("copy_rows uint16", S.copy_rows, np.uint16, np.uint16, {}),
             ("copy_rows uint64", S.copy_rows, np.uint64, np.uint64, {})]


@pytest.mark.skipif(not SIMULATOR and not __import__("conftest")._gpu_present(),
                    reason="CUDA loops run in the simulator process (NUMBA_ENABLE_CUDASIM=1) or on a GPU")
@pytest.mark.parametrize("case", ROW_CASES, ids=[c[0] for c in ROW_CASES])
@pytest.mark.parametrize("layout", ROW_LAYOUTS, ids=str)
@pytest.mark.parametrize("inner", [1, 2])
def test_contiguous_rows_go_wide_row_by_row(case, layout, inner):
    """A region of several axes whose last one both arrays walk with stride 1
    (``v[:, 3:40] = b``): a warp per row, each row's head, 16-byte groups and tail from
    its own alignment; with a destination stride of 2 on the last axis every index takes
    the unravelled step. Each gives the CPU loop's bits and writes nothing outside."""
    from varstore.region_axes import region_arguments

    _, kernel, src_dtype, dst_dtype, scalars = case
    shape, dst_outer, src_outer = layout
    rng = np.random.default_rng(5)
    dst_strides = tuple(t * inner for t in dst_outer) + (inner,)
    src_strides = src_outer + (1,)
    axes = region_arguments(shape, dst_strides, src_strides, 1)
    assert len(axes["shape"]) == len(shape)  # (nothing merged: the rows path)
    n = int(np.prod(shape))
    reach = [sum((e - 1) * t for e, t in zip(shape, strides, strict=True)) for strides in (dst_strides, src_strides)]
    arrays = {"dst": np.full(3 + reach[0] + 9, 0x5A, dst_dtype), "src": _source(src_dtype, 2 + reach[1] + 9, rng)}
    region = {"dst_offset": 3, "src_offset": 3, **axes}
    want = _cpu_run(kernel, n, arrays, {}, **region, **scalars)
    addresses = {}
    spec = Specialization((np.dtype(dst_dtype).name, np.dtype(src_dtype).name), len(shape))
    with _steps_counted(kernel, spec) as ran:
        got = _cuda_run(kernel, n, arrays, {}, addresses, **region, **scalars)
    assert got["dst"].tobytes() == want["dst"].tobytes(), (layout, inner)
    assert want["dst"].tobytes() != arrays["dst"].tobytes()
    v = vector_width(kernel, spec)
    by_rows = inner == 1 and shape[-1] >= 32 * v  # (the row path: a 16-byte group per lane at least)
    if by_rows and dst_outer == src_outer:  # (rows aligned alike: the groups ran, from the same head in each row)
        checks = [(addresses[a] + 3 * np.dtype(t).itemsize, np.dtype(t).itemsize,
                   min(VECTOR_BYTES, v * np.dtype(t).itemsize)) for a, t in (("dst", dst_dtype), ("src", src_dtype))]
        assert _split(0, shape[-1], v, sorted(checks, key=lambda c: -c[2] // c[1]))[1] > 0
    if SIMULATOR:  # (every element by the row path's steps, or every one by the general step)
        assert (ran["step"] == 0 and ran["rstep"] + v * ran["vstep"] == n) if by_rows else ran["step"] == n, ran
        assert ran["vstep"] > 0 or not by_rows or dst_outer != src_outer, ran


# ------------------------------------------------------------------ the split
def _split(start, stop, v, arrays):
    return tuple(int(x) for x in vector_split(start, stop, v, tuple(arrays)))


def test_vector_split_aligned_arrays():
    a, b = 4096, 8192  # 16-byte aligned addresses
    # float32 -> bfloat16, 8 indices per thread: 16-byte accesses on both
    assert _split(0, 100, 8, [(a, 4, 16), (b, 2, 16)]) == (0, 12)
    assert _split(0, 7, 8, [(a, 4, 16), (b, 2, 16)]) == (7, 0)  # no whole group: all scalar
    assert _split(0, 0, 8, [(a, 4, 16), (b, 2, 16)]) == (0, 0)
    # starting one element in: three scalar indices, then aligned on both
    assert _split(0, 100, 4, [(a + 4, 4, 16), (b + 4, 4, 16)]) == (3, 24)
    assert _split(5, 100, 4, [(a, 4, 16), (b, 4, 16)]) == (3, 23)


def test_vector_split_falls_back_to_scalar_when_alignments_differ():
    a, b = 4096, 8192
    assert _split(0, 100, 4, [(a + 4, 4, 16), (b, 4, 16)]) == (100, 0)
    assert _split(0, 100, 8, [(a + 2, 2, 16), (b, 4, 16)]) == (100, 0)
    assert _split(0, 100, 8, [(a + 1, 2, 16), (b, 4, 16)]) == (100, 0)  # not even element-aligned


def test_vector_split_covers_every_index_once():
    rng = np.random.default_rng(3)
    for _ in range(300):
        v = int(rng.choice([1, 2, 4, 8, 16]))
        size = int(rng.choice([1, 2, 4, 8]))
        align = min(VECTOR_BYTES, v * size)
        start = int(rng.integers(0, 50))
        stop = start + int(rng.integers(0, 200))
        address = 4096 + size * int(rng.integers(0, 16))
        head, groups = _split(start, stop, v, [(address, size, align)])
        n = stop - start
        assert 0 <= head <= n and groups >= 0 and head + groups * v <= n
        if groups:
            assert (address + (start + head) * size) % align == 0 and head < v
        else:
            assert head == n


def test_vector_widths_give_16_byte_accesses():
    spec = Specialization(("uint32", "uint16"), 0)
    assert vector_width(K.encode_f32, spec) == 8  # 8 x 2 bytes out, 2 x 16 bytes in
    assert vector_width(K.encode_f32, Specialization(("uint32", "uint8"), 0)) == 16
    assert vector_width(K.widen_f32, Specialization(("uint32", "float64"), 0)) == 4
    assert vector_width(K.accumulate, Specialization(("uint16", "uint16"), 0)) == 8
    assert vector_width(K.accumulate_broadcast, Specialization(("uint16", "uint16"), 0)) == 8  # (src read once)
    assert vector_width(R.uniform_words, Specialization(("uint32",), 0)) == 1  # already 16 bytes a group
    assert vector_width(R.uniform_words, Specialization(("uint8",), 0)) == 4
    # region kernels: option ``wide`` for one axis (contiguous regions), ``rows`` for several
    assert vector_width(S.copy_region, Specialization(("uint16", "uint16"), 1)) == 8
    assert vector_width(S.copy_region, Specialization(("uint16", "uint16"), 2)) == 1
    assert vector_width(S.copy_rows, Specialization(("uint16", "uint16"), 2)) == 8
    assert vector_width(S.REGION_CASTS["encode_f32"], Specialization(("uint8", "uint32"), 1)) == 16
    assert vector_width(S.copy_region_converting, Specialization(("uint16", "float32"), 1)) == 1


def test_the_split_starts_from_the_narrowest_array():
    """The wide loop hands ``vector_split`` the narrowest array first (the largest
    alignment in elements): arrays at the same element offset then find a common aligned
    index. From the wider one, a float32 source and a bfloat16 destination at element 1
    would find index 3 (the float32 aligned, the bfloat16 not) and go scalar."""
    from varstore.kernels.templates import cuda_source

    source = cuda_source(K.encode_f32, Specialization(("uint32", "uint16"), 0))
    split = next(line for line in source.splitlines() if "vector_split(" in line)
    assert split.index("(dst, 2, 16)") < split.index("(src, 4, 16)"), split
    f32, bf16 = 1 << 20, 1 << 21  # (16-byte aligned bases; both arrays from element 1)
    assert _split(0, 100, 8, [(bf16 + 2, 2, 16), (f32 + 4, 4, 16)]) == (7, 11)
    assert _split(0, 100, 8, [(f32 + 4, 4, 16), (bf16 + 2, 2, 16)]) == (100, 0)


# ------------------------------------------------------------------ fills
FILL_KEYS = [(slice(None),), (slice(2, 40),), (slice(1, None, 3),), (slice(None, None, -2),), (1, slice(None)),
             (slice(None), slice(1, None, 3)), (slice(1, 4), slice(2, 9)), (Ellipsis, 5), (slice(1, 5), slice(3, -3))]


@pytest.mark.parametrize("word", [np.uint8, np.uint16, np.uint64])
@pytest.mark.parametrize("key", FILL_KEYS, ids=repr)
def test_region_fills_write_the_word_where_numpy_would(word, key):
    """``fill_region`` writes its word into exactly the elements NumPy's ``a[key] = x``
    does (a basic key's region, its axes merged), on the CPU loop and on the CUDA one
    (the simulator, or a GPU); with one axis at stride 1 the CUDA loop takes the wide
    path. The word is the destination's low bits."""
    from varstore.indexing import basic_region
    from varstore.region_axes import contiguous_rows, fill_arguments

    shape = (6, 530) if len(key) > 1 else (67,)  # (rows of 524 elements: the row kernel's, for every word)
    bits = 0x0123456789ABCDEF & np.iinfo(word).max
    want = np.arange(int(np.prod(shape)), dtype=word).reshape(shape)
    got = {target: want.copy() for target in ("cpu", "cuda")}
    want[key] = bits
    region = basic_region(shape, key)
    axes = fill_arguments(region.shape, region.strides, 1)
    fill = S.fill_rows if contiguous_rows(axes, np.dtype(word).itemsize) else S.fill_region  # (the backend's pick)
    for target in ("cpu", "cuda") if SIMULATOR or __import__("conftest")._gpu_present() else ("cpu",):
        flat = got[target].reshape(-1)
        with _steps_counted(fill, Specialization((np.dtype(word).name,), len(axes["shape"]))) as ran:
            run_kernel(target, fill, region.size, dst=flat, dst_offset=region.offset, word=bits, **axes)
        assert got[target].tobytes() == want.tobytes(), (target, key)
        if SIMULATOR and target == "cuda":  # (a contiguous region or rows: 16-byte stores; else one by one)
            wide = fill is S.fill_rows or axes["shape"] == (region.size,) and axes["dst_strides"] == (1,)
            assert (ran["step"] == 0 and ran["vstep"] > 0) if wide else ran["step"] == region.size, (key, ran)


@pytest.mark.skipif(not SIMULATOR and not __import__("conftest")._gpu_present(),
                    reason="CUDA loops run in the simulator process (NUMBA_ENABLE_CUDASIM=1) or on a GPU")
@pytest.mark.parametrize("word", [np.uint8, np.uint16, np.uint64])
@pytest.mark.parametrize("offset", [0, 1, 3])
def test_word_fills_store_wide_at_any_offset(word, offset):
    """``fill_words`` (the 8-byte patterns the driver's memset cannot write) gives the
    CPU loop's bytes from any element offset: its head, 16-byte groups and tail."""
    for n in LENGTHS:
        arrays = {"dst": np.full(n + 8, 0x5A, word)}
        want = _cpu_run(S.fill_words, n, arrays, {"dst": offset}, word=0x3FF0000000000000)
        got = _cuda_run(S.fill_words, n, arrays, {"dst": offset}, word=0x3FF0000000000000)
        assert got["dst"].tobytes() == want["dst"].tobytes(), (n, offset)
        expected = arrays["dst"].copy()
        expected[offset:offset + n] = np.uint64(0x3FF0000000000000).astype(word)
        assert want["dst"].tobytes() == expected.tobytes()
