"""The host cache: large arrays returned call after call reuse freed memory, and never
memory that an array or a view still uses."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import varstore as vs
from varstore.backends import host_cache
from varstore.backends.host_cache import HostCache, host_cache_limit

MIN_BYTES = 1 << 20  # the tests' threshold (the library's is larger: less memory here)
N = MIN_BYTES // 4  # float32 elements of the smallest cached array


@pytest.fixture(autouse=True)
def small_threshold(monkeypatch):
    monkeypatch.setattr(host_cache, "MIN_BYTES", MIN_BYTES)


def _address(array) -> int:
    return array.__array_interface__["data"][0]


def test_a_freed_array_s_memory_is_reused():
    cache = HostCache(1 << 30)
    a = cache.empty((N,), np.float32)
    first = _address(a)
    assert cache.idle_bytes == 0
    del a
    assert cache.idle_bytes == MIN_BYTES
    b = cache.empty((N // 2, 2), np.float32)  # same bytes, another shape
    assert _address(b) == first and b.shape == (N // 2, 2) and b.flags.c_contiguous and b.flags.writeable
    assert cache.idle_bytes == 0
    c = cache.empty((N,), np.float64)  # another size: a block of its own
    assert _address(c) != first


@pytest.mark.parametrize("make_view", [
    lambda a: a[::3],
    lambda a: a.reshape(4, -1),
    lambda a: a.view(np.uint8),
    lambda a: a.T,
    lambda a: a[...],
    lambda a: np.asarray(a),
    lambda a: np.frombuffer(a, np.uint32),
    lambda a: np.lib.stride_tricks.as_strided(a, shape=(N // 2,), strides=(8,)),
    lambda a: memoryview(a),
    lambda a: a.base,
    lambda a: np.frombuffer(a.base, np.float32),
    lambda a: memoryview(a.base),
], ids=["slice", "reshape", "view", "T", "ellipsis", "asarray", "frombuffer", "as_strided", "memoryview", "base",
        "frombuffer-of-base", "memoryview-of-base"])
def test_a_view_keeps_the_memory_from_reuse(make_view):
    cache = HostCache(1 << 30)
    a = cache.empty((N,), np.float32)
    a[:] = np.arange(N, dtype=np.float32)
    view = make_view(a)
    seen = bytes(memoryview(view))
    del a
    assert cache.idle_bytes == 0
    b = cache.empty((N,), np.float32)  # must not be the viewed memory
    b.fill(-1.0)
    assert bytes(memoryview(view)) == seen
    del view
    assert cache.idle_bytes == MIN_BYTES


def test_idle_bytes_stay_under_the_limit_oldest_dropped_first():
    cache = HostCache(2 * MIN_BYTES)
    arrays = [cache.empty((N,), np.float32) for _ in range(3)]
    addresses = [_address(a) for a in arrays]
    for i in range(3):
        arrays[i] = None
        assert cache.idle_bytes == min(i + 1, 2) * MIN_BYTES
    again = [cache.empty((N,), np.float32) for _ in range(2)]
    assert [_address(a) for a in again] == [addresses[2], addresses[1]]  # last freed first; first freed dropped


def test_small_large_and_disabled_sizes_are_plain_arrays():
    cache = HostCache(8 * MIN_BYTES)
    for shape, c in [((N - 1,), cache), ((8 * N + 1,), cache), ((N,), HostCache(0))]:
        a = c.empty(shape, np.float32)
        assert a.flags.owndata and a.shape == shape
        del a
        assert c.idle_bytes == 0
    assert not HostCache(0).caches(MIN_BYTES) and cache.caches(MIN_BYTES)


def test_a_lower_limit_drops_idle_blocks_at_once():
    cache = HostCache(4 * MIN_BYTES)
    arrays = [cache.empty((N,), np.float32) for _ in range(3)]
    del arrays
    assert cache.idle_bytes == 3 * MIN_BYTES
    cache.limit = MIN_BYTES
    assert cache.idle_bytes == MIN_BYTES
    cache.limit = 0
    assert cache.idle_bytes == 0 and not cache.caches(MIN_BYTES)


def test_a_failed_allocation_drops_the_idle_blocks_and_retries():
    calls = []

    def allocate(nbytes):
        calls.append(nbytes)
        if len(calls) == 3:
            raise MemoryError("no memory")
        return np.empty(nbytes, np.uint8)

    cache = HostCache(1 << 30, allocate)
    a = cache.empty((N,), np.float32)
    del a
    b = cache.empty((2 * N,), np.float32)  # (an idle block of another size stays)
    assert cache.idle_bytes == MIN_BYTES
    c = cache.empty((3 * N,), np.float32)  # the third allocation fails once
    assert calls == [MIN_BYTES, 2 * MIN_BYTES, 3 * MIN_BYTES, 3 * MIN_BYTES]
    assert cache.idle_bytes == 0 and c.nbytes == 3 * MIN_BYTES and b.nbytes == 2 * MIN_BYTES


def test_clear_drops_the_idle_blocks_only():
    cache = HostCache(1 << 30)
    a, b = cache.empty((N,), np.float32), cache.empty((N,), np.float32)
    b[:] = 7
    del a
    cache.clear()
    assert cache.idle_bytes == 0
    assert np.all(b == 7)
    del b
    assert cache.idle_bytes == MIN_BYTES


def test_threads_never_share_a_block():
    cache = HostCache(4 * MIN_BYTES)
    errors = []

    def work(value):
        for _ in range(30):
            a = cache.empty((N,), np.float32)
            a.fill(value)
            if not (a[0] == value and a[-1] == value and a[N // 2] == value):
                errors.append(value)
            del a

    threads = [threading.Thread(target=work, args=(float(k),)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and cache.idle_bytes <= 4 * MIN_BYTES


@pytest.mark.parametrize("value, expected", [(None, host_cache.DEFAULT_LIMIT), ("", host_cache.DEFAULT_LIMIT),
                                             ("0", 0), ("00", 0), ("0MiB", 0), (" 0.0 gb", 0), ("64MiB", 64 << 20),
                                             ("1gib", 1 << 30)])
def test_the_limit_comes_from_the_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("VARSTORE_HOST_CACHE", raising=False)
    else:
        monkeypatch.setenv("VARSTORE_HOST_CACHE", value)
    assert host_cache_limit() == expected


@pytest.mark.parametrize("value", ["-1", "lots", "1.5XB", "0.1", "0XB"])
def test_a_bad_limit_names_the_variable_and_the_value(monkeypatch, value):
    monkeypatch.setenv("VARSTORE_HOST_CACHE", value)
    with pytest.raises(ValueError, match=f"VARSTORE_HOST_CACHE={value!r}") as info:
        host_cache_limit()
    assert "Expected 0 (no cache) or a size" in str(info.value)


@pytest.mark.parametrize("src, dst", [("bfloat16", "float32"), ("float32", "bfloat16"), ("float32", "float32")])
def test_astype_results_never_alias(src, dst):
    """A prepared cast's results on the CPU come from the cache: each call gets memory no
    live result holds, and a dropped result's memory serves the next call."""
    from varstore import backends

    backends.get("numpy").host_cache.clear()  # (idle blocks of earlier tests' sizes)
    store = vs.VariableStore(device="cpu")
    n = 2 * N
    values = np.linspace(-3, 3, n, dtype=np.float32)
    v = store.variable(values, dtype=src)
    expected = np.asarray(v.astype(dst)).copy()
    first = v.astype(dst)
    second = v.astype(dst)
    assert not np.shares_memory(first, second)
    address = _address(first)
    v.assign(values * 2)
    del first
    third = v.astype(dst)
    assert _address(third) == address  # the dropped result's memory again
    assert np.asarray(second).tobytes() == expected.tobytes()  # not overwritten
    assert np.asarray(third).tobytes() != expected.tobytes()
