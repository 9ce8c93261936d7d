"""Writes whose source overlaps the variable's own storage (tier b): ``v.value`` and
``np.asarray(v)`` are views of the storage, so ``v[1:] = np.asarray(v)[:-1]`` is a natural
thing to write. Every write gives NumPy's result: as if the source were copied first."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import varstore as vs
from helpers import to_host
from varstore.dtypes import host_dtype


def _module(array):
    """numpy or cupy: the array module of ``array``."""
    if isinstance(array, np.ndarray):
        return np
    import cupy

    return cupy


def _as_strided(array, shape, strides):
    return _module(array).lib.stride_tricks.as_strided(array, shape=shape, strides=strides)


def _bits(array) -> np.ndarray:
    array = np.ascontiguousarray(array)
    return array.reshape(-1).view(np.dtype(f"u{array.dtype.itemsize}"))


def _variable(store, shape, dtype, seed=0):
    values = np.random.default_rng(seed).integers(-50, 50, shape).astype(np.float64)
    if dtype.startswith("uint"):
        values = np.abs(values)
    return vs.Variable(values, dtype=dtype, store=store)


# ------------------------------------------------------------- the cases users write
def test_shifts_and_reversals_from_the_storage_itself(store):
    def check(v, write):
        expected = v.numpy().copy()
        write(expected, to_host(v.value).copy())  # NumPy, from a copy (raw words on a GPU, as v.value)
        write(v, v.value)
        np.testing.assert_array_equal(_bits(v.numpy()), _bits(expected))

    for dtype in ["float32", "bfloat16", "int32", "float8_e4m3fn"]:
        check(_variable(store, (8,), dtype), lambda d, s: d.__setitem__(slice(1, None), s[:-1]))
        check(_variable(store, (8,), dtype), lambda d, s: d.__setitem__(slice(None, -1), s[1:]))
        check(_variable(store, (8,), dtype), lambda d, s: d.__setitem__(slice(None, None, -1), s))
        check(_variable(store, (8,), dtype), lambda d, s: d.__setitem__([1, 2, 3], s[0:3]))
        check(_variable(store, (8,), dtype), lambda d, s: d.__setitem__(np.array([7, 0, 6]), s[2:5]))
        check(_variable(store, (4, 3), dtype), lambda d, s: d.__setitem__((slice(1, None), slice(None)), s[:-1, :]))
        check(_variable(store, (4, 3), dtype), lambda d, s: d.__setitem__((slice(None), slice(None, None, -1)), s))
        check(_variable(store, (4, 4), dtype), lambda d, s: d.__setitem__(slice(None), s[:, 0:1]))  # broadcast


def test_a_shift_through_np_asarray_on_the_host():
    store = vs.VariableStore(device="cpu")
    v = vs.Variable(np.arange(8, dtype="float32"), store=store)
    v[1:] = np.asarray(v)[:-1]
    assert v.numpy().tolist() == [0, 0, 1, 2, 3, 4, 5, 6]
    m = vs.Variable(np.arange(12, dtype="float32").reshape(4, 3), store=store)
    m[1:, :] = np.asarray(m)[:-1, :]
    assert m.numpy().tolist() == [[0, 1, 2], [0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_a_large_reverse_in_place(store):
    """Large enough that the CPU runs the kernel on several threads."""
    n = 4 << 20
    v = vs.Variable(np.arange(n, dtype=np.float32), store=store)
    v[::-1] = v.value
    np.testing.assert_array_equal(v.numpy(), np.arange(n, dtype=np.float32)[::-1])


def test_converting_writes_from_a_reinterpreted_view(store):
    """The source is the storage's bytes read as another dtype: a kernel that writes wider
    elements than it reads overruns what it has yet to read."""
    v = vs.Variable(np.arange(8, dtype=np.float64), store=store)
    source = v.value.reshape(-1).view(np.float32)[:8]
    expected = np.arange(8, dtype=np.float64).view(np.float32)[:8].astype(np.float64)
    v.assign(source)
    np.testing.assert_array_equal(v.numpy(), expected)
    w = vs.Variable(np.arange(8, dtype=np.float64), store=store)
    w[::-1] = w.value.reshape(-1).view(np.float32)[8:]
    np.testing.assert_array_equal(w.numpy(), np.arange(8, dtype=np.float64).view(np.float32)[8:][::-1])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "int32"])
def test_accumulating_an_element_of_the_variable_itself(store, dtype):
    """A 0-d view of one element, added to every element: the element changes midway."""
    v = _variable(store, (64,), dtype)
    start = v.numpy()
    element = v.value.reshape(-1)[5:6].reshape(())
    expected = start + to_host(element).astype(start.dtype)  # (raw words on a GPU, as v.value)
    v.assign_add(element)
    np.testing.assert_array_equal(_bits(v.numpy()), _bits(expected))
    v.assign_sub(v)  # the same memory, elementwise: zero
    assert (v.numpy().astype(np.float64) == 0).all()


def test_overlap_detection_is_exact_where_the_ranges_meet():
    """Interleaved views share no element: no copy is made for them."""
    from varstore.backends import get

    numpy_backend = get("numpy")
    storage = np.zeros(16, np.float32)
    assert not numpy_backend.shares_memory(storage[::2], storage[1::2])
    assert numpy_backend.shares_memory(storage[::2], storage[2:9])
    assert not numpy_backend.shares_memory(storage, np.zeros(16, np.float32))
    assert not numpy_backend.shares_memory(storage, [1.0, 2.0])

    from varstore.backends.base import byte_bounds, layouts_share_memory

    even, odd = (1000, (8,), (8,), 4), (1004, (8,), (8,), 4)  # device-style layouts
    assert byte_bounds(*even) == (1000, 1060) and byte_bounds(1000, (3,), (-8,), 4) == (984, 1004)
    assert not layouts_share_memory(even, odd) and layouts_share_memory(even, (1016, (2,), (4,), 4))


def test_every_write_asks_and_disjoint_sources_are_read_in_place(store, monkeypatch):
    """Each write path consults the overlap check once; a source apart from the storage
    is found apart (so it is read where it is, with no staging copy)."""
    v = vs.Variable(np.zeros(8, np.float32), dtype="bfloat16", store=store)
    other = vs.Variable(np.arange(8, dtype=np.float32), store=store)
    answers = []
    check = v.stored.backend.shares_memory
    monkeypatch.setattr(v.stored.backend, "shares_memory", lambda a, b: answers.append(check(a, b)) or answers[-1])
    v[::-1] = other.value
    v[[0, 1]] = other.value[:2]
    v.assign(other.value)
    v.assign_add(other.value)
    assert answers == [False] * 4
    assert v.numpy().astype(np.float32).tolist() == [0, 2, 4, 6, 8, 10, 12, 14]


# ------------------------------------------------------------------- property test
DTYPES = ["float32", "bfloat16", "int32", "float64", "float16", "uint8"]
# The storage read as another dtype whose conversion to the variable's is exact (so
# NumPy's result is ours bit for bit).
REINTERPRET = {"float64": np.float32, "float32": np.int16, "bfloat16": np.uint8, "float16": np.int8}


@st.composite
def overlapping_writes(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6))
    if draw(st.booleans()):
        key = draw(hnp.basic_indices(shape, min_dims=0, allow_newaxis=True, allow_ellipsis=True))
    else:
        key = draw(hnp.integer_array_indices(shape, result_shape=hnp.array_shapes(min_dims=1, max_dims=2, max_side=4)))
    region = np.empty(shape)[key].shape
    suffix = region[draw(st.integers(0, len(region))):]
    source_shape = tuple(1 if draw(st.booleans()) else n for n in suffix)
    view_dtype = REINTERPRET[dtype] if dtype in REINTERPRET and draw(st.booleans()) else None
    words = int(np.prod(shape)) * (np.dtype(host_dtype(dtype)).itemsize // np.dtype(view_dtype).itemsize
                                   if view_dtype else 1)
    if draw(st.booleans()):  # C-contiguous (read by the kernel in place), else any strides
        steps = [int(np.prod(source_shape[d + 1:])) for d in range(len(source_shape))]
    else:
        steps = [draw(st.integers(-3, 3)) for _ in source_shape]
    low = sum(min(0, (n - 1) * s) for n, s in zip(source_shape, steps, strict=True))
    high = sum(max(0, (n - 1) * s) for n, s in zip(source_shape, steps, strict=True))
    if high - low >= words:
        steps, low, high = [0] * len(source_shape), 0, 0
    offset = draw(st.integers(-low, words - 1 - high))
    return dtype, shape, key, source_shape, view_dtype, offset, steps


def _source_view(storage, view_dtype, offset, shape, steps):
    flat = storage.reshape(-1)
    if view_dtype is not None:
        flat = flat.view(view_dtype)
    if not shape:
        return flat[offset:offset + 1].reshape(())
    return _as_strided(flat[offset:], shape, [s * flat.itemsize for s in steps])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(case=overlapping_writes())
def test_overlapping_writes_match_numpy(store, case):
    dtype, shape, key, source_shape, view_dtype, offset, steps = case
    v = _variable(store, shape, dtype)
    host_storage = to_host(v.value).copy()
    source = _source_view(host_storage, view_dtype, offset, source_shape, steps)
    expected = v.numpy().copy()
    expected[key] = source.copy()  # NumPy converts as it assigns (the exact pairs above)
    v[key] = _source_view(v.value, view_dtype, offset, source_shape, steps)
    if isinstance(key, np.ndarray) or (isinstance(key, tuple) and any(isinstance(k, np.ndarray) for k in key)):
        if store.backend != "numpy":  # (repeated indices race on a GPU: one write wins)
            return
    np.testing.assert_array_equal(_bits(v.numpy()), _bits(expected))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(dtype=st.sampled_from(DTYPES), shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6),
       method=st.sampled_from(["assign", "assign_add", "assign_sub"]), view=st.sampled_from(["same", "reversed",
                                                                                               "element", "bytes"]),
       index=st.integers(0, 1000))
def test_overlapping_assign_and_accumulate_match_numpy(store, dtype, shape, method, view, index):
    v = _variable(store, shape, dtype, seed=index)
    n = int(np.prod(shape))

    def source_of(storage):
        if view == "same":
            return storage
        if view == "reversed":
            return storage.reshape(-1)[::-1].reshape(shape)
        if view == "element":
            return storage.reshape(-1)[index % n:index % n + 1].reshape(())
        words = storage.reshape(-1).view(REINTERPRET.get(dtype, storage.dtype))
        return words[:n].reshape(shape)  # the first bytes, read as another dtype

    host_storage = to_host(v.value).copy()
    source = source_of(host_storage).copy()
    expected = v.numpy().copy()
    if method == "assign":
        expected[...] = source
    else:
        operand = source.astype(expected.dtype)
        expected = expected + operand if method == "assign_add" else expected - operand
    getattr(v, method)(source_of(v.value))
    np.testing.assert_array_equal(_bits(v.numpy()), _bits(expected.astype(host_dtype(dtype))))
