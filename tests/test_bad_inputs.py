"""Tier a: bad inputs raise the right error when they are given, naming the argument,
the value and what is expected (TypeError for a wrong type, ValueError for a wrong
value), and leave nothing changed."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

import varstore as vs
from helpers import to_host
from varstore.distributed import LocalGroup
from varstore.memory import parse_memory_limit


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), threading.TIMEOUT_MAX * 2, 10**400, 0, -1.0])
def test_timeouts_out_of_range_are_refused_when_given(bad):
    with pytest.raises(ValueError, match=r"`timeout`.*at most"):
        LocalGroup(2, timeout=bad)
    with pytest.raises(ValueError, match=r"`timeout`"):
        vs.distributed.init("local", timeout=bad)


@pytest.mark.parametrize("bad", ["5", None, True, [1.0]])
def test_timeouts_of_the_wrong_type_are_refused_when_given(bad):
    with pytest.raises(TypeError, match=r"`timeout`.*number of seconds.*" + type(bad).__name__):
        LocalGroup(2, timeout=bad)


def test_a_long_finite_timeout_is_accepted():
    assert LocalGroup(2, timeout=threading.TIMEOUT_MAX).run(lambda group: group.rank) == [0, 1]


def test_huge_memory_limits_are_exact_not_overflowing():
    assert parse_memory_limit("1" * 400 + "TiB") == int("1" * 400) * 2**40
    assert parse_memory_limit("0.5KiB") == 512
    store = vs.VariableStore(device="cpu", memory_limit="1" * 400 + "TiB")
    assert store.variable("zeros", shape=(3,)).shape == (3,)


def test_shapes_beyond_64_dimensions_name_the_limit():
    store = vs.VariableStore(device="cpu")
    with pytest.raises(ValueError, match="65 dimensions.*at most 64"):
        vs.Variable("zeros", shape=(1,) * 65, store=store)
    assert len(store) == 0
    assert vs.Variable("zeros", shape=(1,) * 64, store=store).shape == (1,) * 64


def test_a_string_value_is_a_type_error_that_says_so():
    v = vs.Variable(np.ones(3, np.float32), store=vs.VariableStore(device="cpu"))
    with pytest.raises(TypeError, match=r"Unsupported value 'hello' of type str: text\. Expected real numbers"):
        v.assign("hello")
    with pytest.raises(ValueError, match="holding text"):
        v.assign(np.array(["a", "b", "c"]))
    assert v.numpy().tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(("name", "bad"), [("VARSTORE_NUM_THREADS", v) for v in ["two", "0", "-2", "1.5", "\u00b2"]]
                         + [("VARSTORE_SPIN_US", v) for v in ["-1", "1.5", "fast"]])
def test_bad_thread_settings_name_the_environment_variable(name, bad):
    code = ("import numpy as np, varstore as vs\n"
            "v = vs.Variable(np.zeros(10**6, np.float32), store=vs.VariableStore(device='cpu'))\n"
            "v.astype('bfloat16')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**__import__("os").environ, name: bad})
    assert result.returncode != 0
    assert name in result.stderr and repr(bad) in result.stderr, result.stderr[-500:]


def test_huge_slice_bounds_select_as_numpy_does(store):
    """Slice bounds past any size are clipped, as NumPy clips them (no OverflowError)."""
    host = np.arange(12.0).reshape(4, 3)
    v = store.variable(host, name="huge_slices")
    for key in [slice(-2**100, 2**100, 2**62), slice(2**100, None, -2**70), slice(None, None, -2**100),
                (slice(-2**80, 2**80), slice(1, 2**90, 2**64))]:
        np.testing.assert_array_equal(to_host(v[key]), host[key])
    v[slice(-2**100, 2**100, 2**62)] = 5.0
    expected = host.copy()
    expected[slice(-2**100, 2**100, 2**62)] = 5.0
    np.testing.assert_array_equal(to_host(v.value), expected)


@pytest.mark.parametrize("call", [
    lambda: vs.Variable(1.0, name=3, store=vs.VariableStore(device="cpu")),
    lambda: vs.VariableStore(device=3),
    lambda: vs.VariableStore(memory_limit=[1]),
    lambda: vs.initializers.RandomNormal(seed="a"),
    lambda: vs.set_seed(1.5),
    lambda: vs.VariableStore(device="cpu").variable("zeros", shape="ab"),
    lambda: vs.VariableStore(device="cpu").variable("zeros", shape=(2, 1.5)),
    lambda: vs.VariableStore(device="cpu").get_or_create(7, 1.0, ()),
], ids=["name", "device", "memory_limit", "seed", "set_seed", "shape", "dimension", "path"])
def test_wrong_types_are_type_errors_that_keras_code_still_catches_as_value_errors(call):
    with pytest.raises(TypeError) as info:
        call()
    assert isinstance(info.value, ValueError) and isinstance(info.value, vs.ArgumentTypeError)


@pytest.mark.parametrize("call", [
    lambda: vs.Variable(1.0, name="a/b", store=vs.VariableStore(device="cpu")),
    lambda: vs.VariableStore(device="tpu:0"),
    lambda: vs.VariableStore(memory_limit=-1),
    lambda: vs.set_seed(2**64),
    lambda: vs.VariableStore(device="cpu").variable("zeros", shape=(2, -1)),
], ids=["name", "device", "memory_limit", "seed", "dimension"])
def test_wrong_values_are_value_errors_only(call):
    with pytest.raises(ValueError) as info:
        call()
    assert not isinstance(info.value, TypeError)


@pytest.mark.parametrize("dtype, bad", [("int8", 300), ("int8", -129), ("uint8", -1), ("int32", 2**40),
                                        ("uint64", -1), ("int16", [1, 2**15])])
def test_python_ints_out_of_an_int_dtypes_bounds_are_refused_as_numpy_refuses_them(store, dtype, bad):
    """``a[...] = 300`` on an int8 array raises OverflowError in NumPy; so does every
    write of such Python ints into a variable (an array of a wider dtype wraps, as
    NumPy's astype)."""
    v = store.variable(np.arange(2), dtype=dtype, name="counts")
    want = to_host(v.value).copy()
    shown = str(bad if isinstance(bad, int) else bad[1])
    with pytest.raises(OverflowError, match=f"Python integer {shown} out of bounds for {dtype}"):
        np.zeros(2, dtype)[...] = bad
    for write in (v.assign, v.assign_add, lambda x: v.__setitem__(slice(None), x),
                  lambda x: store.load_state({"counts": np.broadcast_to(np.asarray(x), (2,)).tolist()}),
                  lambda x: store.variable(x, dtype=dtype, name="more")):
        with pytest.raises(OverflowError, match=f"Python integer {shown} out of bounds for {dtype}"):
            write(bad)
        np.testing.assert_array_equal(to_host(v.value), want)
    assert sorted(store) == ["counts"]
    v.assign(np.array([300, -1]))  # (an int64 array wraps)
    np.testing.assert_array_equal(to_host(v.value), np.array([300, -1]).astype(dtype))


def test_python_ints_beyond_64_bits_and_ragged_lists_say_so(store):
    v = store.variable(np.zeros(2, np.float32), name="x")
    with pytest.raises(OverflowError, match=r"Python integer 100000000000\.\.\. \(41 digits\) does not fit 64 bits"):
        v.assign(10**40)
    with pytest.raises(ValueError, match="nested lists have different lengths"):
        v.assign([[1.0, 2.0], [3.0]])
    np.testing.assert_array_equal(to_host(v.value), [0, 0])


def test_scopes_and_optimizers_name_what_they_were_given(store):
    w = store.variable(np.ones(2, np.float32), name="w")
    with pytest.raises(vs.ArgumentTypeError, match="name=3"):
        vs.name_scope(3)
    with pytest.raises(vs.ArgumentTypeError, match="`state_mapping` must be a dict .* received int"):
        vs.StatelessScope(5)
    with pytest.raises(vs.ArgumentTypeError, match="`state_mapping` must be a dict .* it holds <Variable path=w"):
        vs.StatelessScope([w])
    with vs.StatelessScope([[w, np.zeros(2)]]):  # (pairs as lists too)
        assert to_host(w.value).tolist() == [0.0, 0.0]
    with pytest.raises(vs.ArgumentTypeError, match=r"gradient 0 \(for 'w'\) holds <U1 elements; expected floats"):
        vs.optimizers.SGD(1.0).apply(["x"], [w])
    for bad in ("x", None, [0.1, 0.2]):
        with pytest.raises(vs.ArgumentTypeError, match=r"SGD: learning_rate\(0\) returned .*; expected a number"):
            vs.optimizers.SGD(lambda step, bad=bad: bad).apply([np.ones(2, np.float32)], [w])
    assert sorted(store) == ["w"] and to_host(w.value).tolist() == [1.0, 1.0]


def test_loads_inside_a_stateless_scope_or_a_replica_step_are_refused(tmp_path):
    store = vs.VariableStore(device="cpu")
    w = store.variable(np.ones(3, np.float32), name="w")
    path = tmp_path / "m.safetensors"
    store.save(path)
    with vs.StatelessScope({w: np.zeros(3)}):
        for load in (lambda: store.load_state({"w": np.full(3, 7.0)}), lambda: store.load(path)):
            with pytest.raises(RuntimeError, match="inside a StatelessScope would write the variables' storage"):
                load()
    assert w.numpy().tolist() == [1.0, 1.0, 1.0]

    def step(group):
        replicated = vs.ReplicatedStore(group=group, device="cpu")
        v = replicated.variable(np.zeros(2, np.float32), name="v", aggregation="mean")
        with replicated.replica_step():
            with pytest.raises(RuntimeError, match="inside replica_step"):
                replicated.load_state({"v": np.full(2, group.rank + 1.0)})
        return v.numpy().tolist()

    assert LocalGroup(2).run(step) == [[0.0, 0.0], [0.0, 0.0]]


def test_a_cross_replica_assign_of_an_integer_sum_variable_casts_as_assign_does():
    def share(group):
        replicated = vs.ReplicatedStore(group=group, device="cpu")
        small = replicated.variable(np.zeros(2, "int8"), name="c", aggregation="sum", synchronization="on_read")
        with pytest.raises(OverflowError, match="Python integer 300 out of bounds for int8"):
            small.assign(300)
        wide = replicated.variable(np.zeros(2, "int32"), name="i", aggregation="sum", synchronization="on_read")
        with np.errstate(all="raise"):  # (no NumPy cast of NaN: ours, which gives 0 and saturates)
            wide.assign(np.array([np.nan, 1e20]))
        return small.numpy().tolist(), replicated.read_aggregated(wide).tolist()

    assert LocalGroup(2).run(share) == [([0, 0], [0, 2**31 - 1])] * 2


def test_attribute_and_limit_types_are_argument_type_errors():
    v = vs.VariableStore(device="cpu").variable(np.ones(2, np.float32))
    for attribute in ("constraint", "regularizer"):
        with pytest.raises(vs.ArgumentTypeError, match=f"attribute `{attribute}`"):
            setattr(v, attribute, 3)
    with pytest.raises(vs.ArgumentTypeError, match="memory_limit"):
        vs.VariableStore(device="cpu", memory_limit=True)
    with pytest.raises(ValueError, match="memory_limit"):
        vs.VariableStore(device="cpu", memory_limit="\u0661\u0662MiB")  # (Arabic-Indic digits: not a size)
