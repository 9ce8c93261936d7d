"""Prepared region reads (``varstore.prepared_reads``): from the second ``v[key]`` of a
region of the storage on, the read runs a launch bound once; it gives what the general
path gives, follows the storage's writes, and steps aside for a scope's value (tier b)."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

import varstore as vs
from helpers import to_host
from varstore import prepared_reads, regions, scopes

KEY = (slice(None, None, 2), slice(1, None, 3))


def _regions_passed_to(monkeypatch, name: str) -> list:
    """The regions that prepared_reads passes to its ``name`` (``read_region``,
    ``region_reader``), in order."""
    calls = []
    real = getattr(prepared_reads, name)
    monkeypatch.setattr(prepared_reads, name, lambda *a: calls.append(a[2]) or real(*a))
    return calls


@pytest.fixture
def general_reads(monkeypatch):
    """The reads that took the general path (``read_region``)."""
    return _regions_passed_to(monkeypatch, "read_region")


@pytest.fixture
def readers_made(monkeypatch):
    """The regions a read was prepared for (``region_reader``)."""
    return _regions_passed_to(monkeypatch, "region_reader")


def _rows(count: int = 64):
    host = np.arange(count * 4, dtype=np.float32).reshape(count, 4)
    return host, vs.VariableStore(device="cpu").variable(host)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float8_e4m3fn", "int64", "bool"])
@pytest.mark.parametrize("key", [KEY, (3,), (Ellipsis, -1), (slice(None, None, -1), None, 2), (1, 2), (slice(5, 2),)])
def test_repeated_reads_match_numpy_and_follow_writes(store, dtype, key):
    start = np.arange(8 * 7, dtype=np.float32).reshape(8, 7) - 20
    v = store.variable(start, dtype=dtype)
    want = v.numpy()
    for step in range(4):
        got = to_host(v[key])
        np.testing.assert_array_equal(np.asarray(got, np.float64), np.asarray(want[key], np.float64))
        assert got.shape == want[key].shape
        v.assign(start + step + 1)  # (a prepared read reads the storage as it is now)
        want = v.numpy()


def test_the_second_read_prepares_and_later_ones_reuse_it(general_reads, readers_made):
    v = vs.VariableStore(device="cpu").variable(np.arange(64, dtype=np.float32).reshape(8, 8))
    for _ in range(5):
        np.testing.assert_array_equal(v[KEY], np.arange(64).reshape(8, 8)[KEY])
    other = (slice(None, None, 2), slice(1, None, 3))  # an equal key of another object
    np.testing.assert_array_equal(v[other], np.arange(64).reshape(8, 8)[KEY])
    assert len(general_reads) == 1 and len(readers_made) == 1  # (noted, then prepared once)


def test_results_are_new_arrays():
    v = vs.VariableStore(device="cpu").variable(np.ones((6, 8), np.float32))
    first, second, third = v[KEY], v[KEY], v[KEY]
    assert not np.shares_memory(second, third) and not np.shares_memory(third, np.asarray(v))
    third[...] = 5  # (a caller's result is its own)
    np.testing.assert_array_equal(v[KEY], 1)
    assert first.flags.c_contiguous and third.flags.c_contiguous


def test_a_scopes_value_takes_the_general_path():
    v = vs.VariableStore(device="cpu").variable(np.zeros((6, 8), np.float32))
    for _ in range(3):
        v[KEY]  # prepared for the storage
    with scopes.StatelessScope(state_mapping=[(v, np.full((6, 8), 4, np.float32))]):
        np.testing.assert_array_equal(v[KEY], 4)
    with scopes.AutocastScope("float16"):
        got = v[KEY]
        assert got.dtype == np.float16
    np.testing.assert_array_equal(v[KEY], 0)


def test_the_table_is_bounded_and_a_released_variable_keeps_no_storage():
    _, v = _rows()
    for i in range(prepared_reads.MAX_PREPARED_READS * 2 + 3):
        for _ in range(3):
            np.testing.assert_array_equal(v[i], np.arange(4) + 4 * i)
    assert len(v._reads._entries) <= prepared_reads.MAX_PREPARED_READS
    storage = weakref.ref(v.stored.storage)
    v.release()
    gc.collect()
    assert storage() is None
    with pytest.raises(RuntimeError, match="released"):
        v[KEY]


def test_a_full_table_drops_the_regions_read_once_first(readers_made):
    made = readers_made
    host, v = _rows()
    for _ in range(2):
        for row in (0, 1):
            v[row]  # rows 0 and 1 prepared
    assert len(made) == 2
    for _ in range(2):  # more rows read once each than the table holds, twice round
        for row in range(2, 2 + prepared_reads.MAX_PREPARED_READS * 2):
            np.testing.assert_array_equal(v[row], host[row])
    assert len(made) == 2  # (read once between two clears: never prepared)
    for row in (0, 1, 0, 1):
        np.testing.assert_array_equal(v[row], host[row])
    assert len(made) == 2  # (still prepared: not noted and prepared again)


def test_a_table_full_of_prepared_reads_drops_its_least_recently_used_one(readers_made):
    """Row 0, prepared first and read again after the others, stays; row 1, the least
    recently used, makes room for a 17th row."""
    made = readers_made
    host, v = _rows()
    full = prepared_reads.MAX_PREPARED_READS
    for row in [r for r in range(full) for _ in range(2)] + [0] + [full, full]:
        np.testing.assert_array_equal(v[row], host[row])
    assert len(made) == full + 1
    for row in [0, 0] + [r for r in range(2, full + 1) for _ in range(2)]:
        np.testing.assert_array_equal(v[row], host[row])
    assert len(made) == full + 1  # (row 0 kept: looked up in the table, not prepared again)
    for _ in range(2):
        np.testing.assert_array_equal(v[1], host[1])
    assert len(made) == full + 2  # (row 1 was dropped: prepared again)


def test_a_region_read_again_as_the_last_one_counts_as_used(readers_made):
    """Row 0, prepared last and then read only through the last read's check, is used
    like the others: when row 16 needs room, row 1, the oldest, goes, not row 0."""
    made = readers_made
    host, v = _rows()
    full = prepared_reads.MAX_PREPARED_READS
    for row in list(range(1, full)) * 3 + [0] * 10 + [full, full]:  # (rows 1-15 used again, round by round)
        np.testing.assert_array_equal(v[row], host[row])
    assert len(made) == full + 1
    for _ in range(2):
        np.testing.assert_array_equal(v[0], host[0])
    assert len(made) == full + 1  # (row 0 kept)
    for _ in range(2):
        np.testing.assert_array_equal(v[1], host[1])
    assert len(made) == full + 2  # (row 1 dropped: prepared again)


def test_a_table_full_of_prepared_reads_drops_its_oldest_unused_one(readers_made):
    made = readers_made
    host, v = _rows()
    full = prepared_reads.MAX_PREPARED_READS
    for row in [r for r in range(full) for _ in range(2)] + [full, full]:
        np.testing.assert_array_equal(v[row], host[row])
    assert len(made) == full + 1  # (each row prepared once; row 0 dropped for the last)
    for row in [r for r in range(1, full + 1) for _ in range(2)]:
        np.testing.assert_array_equal(v[row], host[row])
    assert len(made) == full + 1  # (rows 1 to 16 kept: none prepared again)


@pytest.mark.parametrize("shape", [(1200, 1400)])  # (a region that splits over threads)
def test_a_large_prepared_read(shape):
    host = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    v = vs.VariableStore(device="cpu").variable(host)
    for _ in range(3):
        np.testing.assert_array_equal(v[KEY], host[KEY])


def test_region_reader_of_an_empty_region():
    storage = np.zeros((4, 4), np.float32)
    from varstore import backends
    from varstore.indexing import basic_region

    read = regions.region_reader(backends.get("numpy"), storage, basic_region((4, 4), (slice(2, 2),)))
    assert read().shape == (0, 4)
