"""Prepared slice-assigns (``varstore.prepared_writes``): after two ``v[key] = b``, later
writes with the same key and an array of b's dtype and shape skip the general path, and
give the same results and the same errors as it (tier b)."""

from __future__ import annotations

import numpy as np
import pytest

import varstore as vs
from varstore import prepared_writes, scopes
from varstore import variable as variable_module

KEY = (slice(None, None, 2), slice(1, None, 3))


@pytest.fixture
def general_writes(monkeypatch):
    """The calls that took the general path (``LocalWrites.setitem``)."""
    calls = []
    general = variable_module.LocalWrites.setitem

    def counted(variable, key, value):
        calls.append(key)
        general(variable, key, value)

    monkeypatch.setattr(variable_module.LocalWrites, "setitem", staticmethod(counted))
    return calls


def _values(shape, dtype, count, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape) * 100).astype(dtype) for _ in range(count)]


@pytest.mark.parametrize(("shape", "value_dtype", "dtype", "key"), [
    ((40, 30), np.float32, "float32", KEY),
    ((40, 30), np.float64, "float32", KEY),  # converted in the kernel
    ((40, 30), np.float32, "bfloat16", KEY),
    ((40, 30), np.float64, "float32", (3, slice(None, None, 2))),  # a 1-D value the kernel reads as it is
    ((40, 30), np.int32, "int32", (slice(1, 5), -1)),  # 1-D, seen as unsigned words
    ((600, 700), np.float32, "float32", KEY),  # large enough to split over threads
])
def test_repeated_writes_take_the_prepared_path_and_match_numpy(store, general_writes, shape, value_dtype, dtype,
                                                                 key):
    v = store.variable(np.zeros(shape, np.float32), dtype=dtype)
    xp = v.stored.backend.xp  # (values of the store's backend: a host array goes to a GPU as a copy)
    want = np.zeros(shape, np.float32).astype(vs.dtypes.host_dtype(dtype))
    for value in _values(want[key].shape, value_dtype, 4):
        v[key] = xp.asarray(value)
        want[key] = value.astype(want.dtype)
        np.testing.assert_array_equal(np.asarray(v.numpy(), np.float64), np.asarray(want, np.float64))
    assert len(general_writes) == 2  # the first two writes only (the second prepares)


def test_other_keys_shapes_and_dtypes_take_the_general_path(general_writes):
    v = vs.VariableStore(device="cpu").variable(np.zeros((6, 8), np.float32))
    row = np.arange(8, dtype=np.float32)
    v[1] = row
    v[1] = row + 1  # prepared here
    v[2] = row  # another key
    v[1] = row.astype(np.float64)  # another dtype
    v[1] = 5.0  # a Python scalar (the scalar fill)
    v[1:3] = row  # a broadcast value of another key
    v[1] = row[::-1].copy()  # prepared again
    assert general_writes == [1, 1, 2, 1, slice(1, 3)]
    want = np.zeros((6, 8), np.float32)
    want[1], want[2] = row[::-1], row
    np.testing.assert_array_equal(v.numpy(), want)


def test_the_last_write_is_found_by_its_key_object_and_only_for_its_layout(general_writes):
    """The last prepared write is kept with its key object: the same object with a value
    of another dtype or shape, and an equal key of another object, find their own way."""
    v = vs.VariableStore(device="cpu").variable(np.zeros((6, 8), np.float32))
    want = np.zeros((6, 8), np.float32)
    values = _values((3, 3), np.float32, 7)
    equal_key = (slice(None, None, 2), slice(1, None, 3))
    writes = [(KEY, values[0]), (KEY, values[1]),  # the second prepares
              (KEY, values[2]),  # the last write, by identity
              (equal_key, values[3]),  # an equal key: found by its signature
              (KEY, values[4].astype(np.float64)),  # the same key object, another dtype: general
              (KEY, values[5][:1]),  # the same key object, another shape (broadcast): general
              (KEY, values[6])]  # prepared again
    for key, value in writes:
        v[key] = value
        want[key] = value
        np.testing.assert_array_equal(v.numpy(), want)
    assert len(general_writes) == 4


class _LazyArray:
    """An array-like whose dtype is unknown until it is converted (``__array__``)."""

    def __init__(self, array):
        self._array = array
        self.shape = array.shape

    def __array__(self, dtype=None, copy=None):
        return self._array

    @property
    def dtype(self):
        raise ValueError("the dtype is not known before evaluation")


@pytest.mark.parametrize("prepared_before", [False, True])
def test_an_array_like_whose_dtype_raises_is_written_by_the_general_path(prepared_before):
    v = vs.VariableStore(device="cpu").variable(np.zeros((6, 8), np.float32))
    if prepared_before:
        for _ in range(3):
            v[1:3] = np.ones((2, 8), np.float32)
    v[1:3] = _LazyArray(np.full((2, 8), 2, np.float32))
    np.testing.assert_array_equal(v.numpy()[1:3], 2)


def test_a_prepared_write_refuses_what_the_general_path_refuses():
    v = vs.VariableStore(device="cpu").variable(np.zeros((6, 8), np.float32))
    for _ in range(2):
        v[KEY] = np.ones((3, 3), np.float32)
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(3, 3\)|\(3, 3\).*\(3, 2\)"):
        v[KEY] = np.ones((3, 2), np.float32)
    np.testing.assert_array_equal(v.numpy()[KEY], 1)
    v.release()
    with pytest.raises(RuntimeError, match="released"):
        v[KEY] = np.ones((3, 3), np.float32)


def test_a_value_that_shares_the_variables_memory_is_copied_first():
    """A value that is a view of the storage (here through ``np.asarray(v)``) is read
    before the write, as NumPy's setitem does: the prepared path sends it to the general
    one, which copies it."""
    v = vs.VariableStore(device="cpu").variable(np.arange(48, dtype=np.float32).reshape(6, 8))
    want = v.numpy().copy()
    for _ in range(2):
        v[2:4] = np.ones((2, 8), np.float32)  # prepared for (2, 8) float32 values
    want[2:4] = 1
    view = np.asarray(v)[1:3]  # (a copy row by row, in place, would read row 2 after writing it)
    assert np.shares_memory(view, np.asarray(v))
    v[2:4] = view
    want[2:4] = want[1:3].copy()
    np.testing.assert_array_equal(v.numpy(), want)


def test_the_storage_itself_as_the_value_is_copied_first():
    """``v.value`` (the storage array itself on the numpy backend, which owns its memory)
    written reversed onto the variable: the prepared path sends it to the general one."""
    v = vs.VariableStore(device="cpu").variable(np.arange(48, dtype=np.float32).reshape(6, 8))
    want = v.numpy()
    for _ in range(2):
        v[::-1] = want  # prepared for (6, 8) float32 values
    assert v.value is v.stored.storage and v.value.flags.owndata
    v[::-1] = v.value
    np.testing.assert_array_equal(v.numpy(), want)


def test_a_non_contiguous_value_gives_numpys_result(general_writes):
    v = vs.VariableStore(device="cpu").variable(np.zeros((6, 8), np.float32))
    for _ in range(2):
        v[1:3] = np.ones((2, 8), np.float32)
    source = np.arange(32, dtype=np.float32).reshape(4, 8)[::2]
    assert not source.flags.c_contiguous
    v[1:3] = source
    np.testing.assert_array_equal(v.numpy()[1:3], source)
    assert len(general_writes) == 3  # (the general path makes it contiguous)


def test_a_stateless_scope_sees_the_write_and_the_storage_does_not():
    v = vs.VariableStore(device="cpu").variable(np.zeros((6, 8), np.float32))
    for _ in range(2):
        v[KEY] = np.ones((3, 3), np.float32)
    with scopes.StatelessScope() as scope:
        v[KEY] = np.full((3, 3), 7, np.float32)
        assert float(np.asarray(scope.get_current_value(v))[KEY].max()) == 7
    np.testing.assert_array_equal(v.numpy()[KEY], 1)


def test_the_table_is_bounded(monkeypatch):
    v = vs.VariableStore(device="cpu").variable(np.zeros((64, 4), np.float32))
    row = np.ones(4, np.float32)
    for i in range(prepared_writes.MAX_PREPARED_WRITES * 2 + 3):
        v[i] = row * i
        v[i] = row * i
    assert len(v._prepared._entries) <= prepared_writes.MAX_PREPARED_WRITES
    np.testing.assert_array_equal(v.numpy()[:35, 0], np.arange(35, dtype=np.float32))


@pytest.fixture
def writers_made(monkeypatch):
    """The keys' regions a write was prepared for (``region_writer``)."""
    made = []
    real = prepared_writes.region_writer
    monkeypatch.setattr(prepared_writes, "region_writer", lambda *a: made.append(a[3]) or real(*a))
    return made


def test_a_full_table_drops_the_layouts_written_once_first(writers_made):
    v = vs.VariableStore(device="cpu").variable(np.zeros((64, 4), np.float32))
    row = np.ones(4, np.float32)
    for _ in range(2):
        for i in (0, 1):
            v[i] = row * i  # rows 0 and 1 prepared
    assert len(writers_made) == 2
    for _ in range(2):  # more rows written once each than the table holds, twice round
        for i in range(2, 2 + prepared_writes.MAX_PREPARED_WRITES * 2):
            v[i] = row * i
    assert len(writers_made) == 2  # (written once between two drops: never prepared)
    for i in (0, 1, 0, 1):
        v[i] = row * (i + 100)
    assert len(writers_made) == 2  # (still prepared: not noted and prepared again)
    want = np.arange(64, dtype=np.float32)
    want[:2] += 100
    want[2 + prepared_writes.MAX_PREPARED_WRITES * 2:] = 0
    np.testing.assert_array_equal(v.numpy()[:, 0], want)


def test_a_table_full_of_prepared_writes_drops_its_least_recently_used_one(writers_made):
    """Row 0, prepared first and written again after the others, stays; row 1, the least
    recently used, makes room for a 17th row."""
    v = vs.VariableStore(device="cpu").variable(np.zeros((64, 4), np.float32))
    row = np.ones(4, np.float32)
    full = prepared_writes.MAX_PREPARED_WRITES
    for i in [r for r in range(full) for _ in range(2)] + [0, 0] + [full, full]:
        v[i] = row * i
    assert len(writers_made) == full + 1
    for i in [0, 0] + [r for r in range(2, full + 1) for _ in range(2)]:
        v[i] = row * (i + 100)
    assert len(writers_made) == full + 1  # (row 0 kept: looked up in the table, not prepared again)
    v[1] = row
    v[1] = row
    assert len(writers_made) == full + 2  # (row 1 was dropped: prepared again)
    want = np.arange(64, dtype=np.float32) + 100
    want[1] = 1
    want[full + 1:] = 0
    np.testing.assert_array_equal(v.numpy()[:, 0], want)


def test_a_layout_written_again_by_its_key_object_counts_as_used(writers_made):
    """Row 0, prepared last and then written only through the last write's check (its
    key object), is used like the others: when row 16 needs room, row 1, the oldest,
    goes, not row 0."""
    v = vs.VariableStore(device="cpu").variable(np.zeros((64, 4), np.float32))
    row = np.ones(4, np.float32)
    full = prepared_writes.MAX_PREPARED_WRITES
    for i in list(range(1, full)) * 3 + [0] * 10 + [full, full]:  # (rows 1-15 used again, round by round)
        v[i] = row * i
    assert len(writers_made) == full + 1
    for i in (0, 0):
        v[i] = row
    assert len(writers_made) == full + 1  # (row 0 kept)
    for i in (1, 1):
        v[i] = row
    assert len(writers_made) == full + 2  # (row 1 dropped: prepared again)


def test_make_room_leaves_the_table_it_was_given_as_it_was():
    """A thread that still reads the old table finds what it found before."""
    entries = {key: [key, None, True] for key in "abc"}
    entries["b"][-1] = False
    old = dict(entries)
    new = prepared_writes.make_room(entries, lambda entry: entry is None)
    assert entries == old and list(new) == ["c", "a"] and new["a"] == ["a", None, False]  # (a: a second chance)
    assert list(prepared_writes.make_room(new, lambda entry: entry is None)) == ["c"]  # (a passed over once)
    assert list(prepared_writes.make_room({"x": None, "y": [1, 2, False]}, lambda entry: entry is None)) == ["y"]


def test_a_table_full_of_prepared_writes_drops_its_oldest_unused_one(writers_made):
    v = vs.VariableStore(device="cpu").variable(np.zeros((64, 4), np.float32))
    row = np.ones(4, np.float32)
    full = prepared_writes.MAX_PREPARED_WRITES
    for i in [r for r in range(full) for _ in range(2)] + [full, full]:
        v[i] = row * i
    assert len(writers_made) == full + 1  # (each row prepared once; row 0 dropped for the last)
    for i in [r for r in range(1, full + 1) for _ in range(2)]:
        v[i] = row * -i
    assert len(writers_made) == full + 1  # (rows 1 to 16 kept: none prepared again)
    want = -np.arange(64, dtype=np.float32)
    want[full + 1:] = 0
    np.testing.assert_array_equal(v.numpy()[:, 0], want)


def test_a_released_variable_keeps_no_storage_alive():
    """The prepared writes hold the storage; releasing the variable drops them, so the
    memory goes back to the store."""
    import gc
    import weakref

    v = vs.VariableStore(device="cpu").variable(np.zeros((6, 8), np.float32))
    for _ in range(2):
        v[KEY] = np.ones((3, 3), np.float32)
    assert v._prepared._entries  # (a prepared write holds the storage)
    storage = weakref.ref(v.stored.storage)
    v.release()
    gc.collect()
    assert storage() is None


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # (np.matrix)
@pytest.mark.parametrize("shape", [(40, 30), (1200, 1400)])  # (the second splits over threads)
def test_an_array_subclass_takes_the_general_path(general_writes, shape):
    """An ``np.matrix`` of a prepared layout's dtype and shape is not a plain array (its
    flat view stays 2-D): the general path writes it, as NumPy would."""
    v = vs.VariableStore(device="cpu").variable(np.zeros(shape, np.float32))
    region_shape = np.empty(shape)[KEY].shape
    for _ in range(2):
        v[KEY] = np.ones(region_shape, np.float32)
    matrix = np.asmatrix(np.arange(np.prod(region_shape), dtype=np.float32).reshape(region_shape))
    v[KEY] = matrix
    np.testing.assert_array_equal(v.numpy()[KEY], np.asarray(matrix))
    assert len(general_writes) == 3


def test_writes_inside_a_name_scope_prepare_once(monkeypatch):
    """Inside any scope the prepared path is skipped; the general path then reuses the
    prepared write rather than preparing it again on every call."""
    made = []
    real = prepared_writes.region_writer
    monkeypatch.setattr(prepared_writes, "region_writer", lambda *a: made.append(1) or real(*a))
    v = vs.VariableStore(device="cpu").variable(np.zeros((6, 8), np.float32))
    with vs.name_scope("block"):
        for i in range(5):
            v[KEY] = np.full((3, 3), i, np.float32)
    assert len(made) == 1
    np.testing.assert_array_equal(v.numpy()[KEY], 4)
