"""Tier b: AutocastScope and StatelessScope on every backend."""

from __future__ import annotations

import threading

import ml_dtypes
import numpy as np
import pytest

import varstore as vs
from helpers import to_host


# ------------------------------------------------------------------ autocast
def test_autocast_reads_in_the_scope_dtype(store):
    x = np.array([1.0, 2.0 / 3.0, -1e5], np.float32)
    v = store.variable(x, name="v")
    i = store.variable(np.array([1, 2]), name="i")
    off = store.variable(x, autocast=False, name="off")
    with vs.AutocastScope("float16"):
        assert v.dtype == "float16" and i.dtype == "int64" and off.dtype == "float32"
        assert to_host(v.value).dtype == np.float16
        np.testing.assert_array_equal(v.numpy(), x.astype(np.float16))
        np.testing.assert_array_equal(to_host(v[1:]), x[1:].astype(np.float16))
        assert to_host(v + 0).dtype == np.float16
        assert v.astype("float64").dtype == np.float64 and v.astype("float64")[1] == np.float64(np.float16(2 / 3))
        assert to_host(off.value).dtype == np.float32 and to_host(i.value).dtype == np.int64
        with vs.AutocastScope(None):  # turned off inside
            assert v.dtype == "float32" and to_host(v.value).dtype == np.float32
        with vs.AutocastScope("bfloat16"):
            assert v.dtype == "bfloat16"
            np.testing.assert_array_equal(v.numpy(), x.astype(ml_dtypes.bfloat16))
    assert v.dtype == "float32" and to_host(v.value).dtype == np.float32
    assert "dtype=float32" in repr(v)


def test_assigning_inside_autocast_keeps_the_true_dtype(store):
    v = store.variable(np.zeros(3, np.float32), name="v")
    with vs.AutocastScope("bfloat16"):
        v.assign(np.array([1 / 3, 2.0, 3.0]))
        v[0] = 1 / 3
        v.assign_add(np.float32(1.0))
        assert v.numpy().dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(v.numpy(), (np.array([1 / 3, 2, 3], np.float32) + 1).astype(np.float32))
    assert v.dtype == "float32"


@pytest.mark.parametrize("bad", ["int32", "bool", "uint8"])
def test_autocast_needs_a_float_dtype(bad):
    with pytest.raises(ValueError, match=f"floating-point target dtype.*{bad}"):
        vs.AutocastScope(bad)
    with pytest.raises(ValueError, match="standardize|dtype"):
        vs.AutocastScope("float17")


# ------------------------------------------------------------------ stateless
def test_stateless_reads_and_writes_stay_in_the_scope(store):
    w = store.variable(np.arange(4, dtype=np.float32), name="w")
    b = store.variable(np.zeros(2, np.float32), name="b")
    with vs.StatelessScope({w: np.full(4, 10.0)}) as scope:
        assert to_host(w.value).tolist() == [10.0] * 4 and w.numpy().tolist() == [10.0] * 4
        assert to_host(w[1:3]).tolist() == [10.0, 10.0] and to_host(w * 2).tolist() == [20.0] * 4
        assert scope.get_current_value(b) is None
        w.assign_add(1.0)
        w[0] = -1.0
        b.assign(np.array([5.0, 6.0]))
        b[np.array([1])] = 7.0
        assert to_host(scope.get_current_value(w)).tolist() == [-1.0, 11.0, 11.0, 11.0]
        assert to_host(b.value).tolist() == [5.0, 7.0]
        assert "value=[0. 1. 2. 3.]" in repr(w)  # repr shows the stored value
    assert w.numpy().tolist() == [0, 1, 2, 3] and b.numpy().tolist() == [0, 0]
    assert to_host(scope.get_current_value(b)).tolist() == [5.0, 7.0]
    with vs.StatelessScope({w: np.full(4, 3.0)}) as scope:
        b.assign(w[:2])  # a slice of a mapped variable
        b.assign_add(b)  # a variable as the operand: its scope value
        w.assign(w * 2)
        assert to_host(b.value).tolist() == [6.0, 6.0] and to_host(w.value).tolist() == [6.0] * 4
        c = store.variable(w, name="c")  # a new variable from a mapped one: the scope's value
    assert c.numpy().tolist() == [6.0] * 4


def test_nested_stateless_scopes_see_outer_values(store):
    w = store.variable(np.zeros(2, np.float32), name="w")
    v = store.variable(np.zeros(2, np.float32), name="v")
    with vs.StatelessScope([(w, np.ones(2))]) as outer:
        v.assign(np.full(2, 3.0))
        with vs.StatelessScope() as inner:
            assert to_host(w.value).tolist() == [1.0, 1.0]  # the outer scope's value
            assert to_host(inner.get_current_value(v)).tolist() == [3.0, 3.0]
            w.assign_add(1.0)  # from the outer value, recorded in the inner scope
            assert to_host(w.value).tolist() == [2.0, 2.0]
        assert to_host(w.value).tolist() == [1.0, 1.0]
        assert to_host(outer.get_current_value(w)).tolist() == [1.0, 1.0]
    assert w.numpy().tolist() == [0.0, 0.0] and v.numpy().tolist() == [0.0, 0.0]


def test_stateless_with_autocast(store):
    w = store.variable(np.array([1 / 3, 1.0], np.float32), name="w")
    with vs.StatelessScope({w: np.array([2 / 3, 1.0])}), vs.AutocastScope("float16"):
        assert to_host(w.value).dtype == np.float16
        assert to_host(w.value)[0] == np.float16(np.float32(2 / 3))


def test_stateless_mapping_is_checked(store):
    w = store.variable(np.zeros((2, 2), np.float32), name="w")
    with pytest.raises(ValueError, match="must be a Variable.*'w'"):
        vs.StatelessScope({"w": np.zeros((2, 2))})
    with pytest.raises(ValueError, match=r"'w' has shape \(2,\); expected the variable's shape \(2, 2\)"):
        vs.StatelessScope({w: np.zeros(2)})
    with vs.StatelessScope({w: np.ones((2, 2), np.int32)}):  # cast to the variable's dtype
        assert to_host(w.value).dtype == np.float32


def test_stateless_scopes_are_per_thread(store):
    w = store.variable(np.zeros(2, np.float32), name="w")
    seen = {}
    inside, done = threading.Event(), threading.Event()

    def other():
        inside.wait()
        seen["value"] = w.numpy().tolist()
        w.assign(np.full(2, 9.0))  # outside any scope in this thread: a real write
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with vs.StatelessScope({w: np.ones(2)}):
        inside.set()
        done.wait()
        assert to_host(w.value).tolist() == [1.0, 1.0]
    thread.join()
    assert seen["value"] == [0.0, 0.0] and w.numpy().tolist() == [9.0, 9.0]


def test_scopes_must_nest():
    a, b = vs.AutocastScope("float16"), vs.AutocastScope("bfloat16")
    a.__enter__()
    b.__enter__()
    with pytest.raises(RuntimeError, match="out of order"):
        a.__exit__(None, None, None)
    b.__exit__(None, None, None)
    a.__exit__(None, None, None)


def test_a_scope_still_reads_and_returns_a_variable_released_inside_it():
    store = vs.VariableStore(device="cpu")
    v = store.variable(np.array([1.0, 2.0], np.float32), name="v")
    with vs.StatelessScope({v: np.array([3.0, 4.0], np.float32)}) as scope:
        v.release()
        np.testing.assert_array_equal(scope.get_current_value(v), [3.0, 4.0])
    w = store.variable(np.array([1.0, 2.0], np.float32), name="w")

    def fn():
        w.assign(np.array([5.0, 6.0], np.float32))
        w.release()

    _, new_state = store.stateless_call(fn, {"w": np.zeros(2, np.float32)})
    np.testing.assert_array_equal(new_state["w"], [5.0, 6.0])
