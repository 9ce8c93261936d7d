"""Tier b: the Variable, on every available backend, compared with NumPy / ml_dtypes."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import varstore as vs
from helpers import data_pointer, to_host
from varstore.dtypes import host_dtype

FLOATS = ["float16", "bfloat16", "float32", "float64", "float8_e4m3fn", "float8_e5m2"]
INTS = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
ALL = ["bool", *INTS, *FLOATS]


# ------------------------------------------------------------------- references
def sample(dtype: str) -> np.ndarray:
    """Host values of ``dtype`` that exercise a cast: fractions, negatives, range ends,
    and for floats inf and NaN."""
    if dtype == "bool":
        return np.array([True, False, True, True])
    if dtype in INTS:
        info = np.iinfo(dtype)
        extremes = {0, 1, 2, 100, int(info.max), int(info.min), int(info.max) - 1, int(info.min) // 2}
        return np.array(sorted(extremes), dtype)
    values = np.array([0.0, 1.0, -1.0, 2.5, -2.75, 0.1, 100.7, -100.7, 300.0, 1e4, -1e10, np.inf, -np.inf, np.nan],
                      np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        return values.astype(host_dtype(dtype))


def reference_cast(x: np.ndarray, dst: str) -> np.ndarray:
    """NumPy's / ml_dtypes' cast, except float -> int, which saturates (NaN -> 0)."""
    target = host_dtype(dst)
    small_floats = (host_dtype("bfloat16"), host_dtype("float8_e4m3fn"), host_dtype("float8_e5m2"))
    if x.dtype.kind == "f" or x.dtype in small_floats:
        if dst in INTS:
            info = np.iinfo(dst)
            f = x.astype(np.float64)
            out = np.where(np.isnan(f), 0, np.clip(np.trunc(np.nan_to_num(f, nan=0)), info.min, info.max))
            big = f >= 2.0**63 if dst == "int64" else f >= 2.0**64
            with np.errstate(invalid="ignore"):  # the 2**63 / 2**64 ends, set just below
                result = out.astype(np.float64).astype(target)
            result[big & (dst in ("int64", "uint64"))] = info.max
            return result
        if dst not in ("bool", "float32", "float64") and x.dtype != np.float32:
            with np.errstate(over="ignore"):  # (hypothesis' float64 values may exceed float32)
                x = x.astype(np.float32)  # exact for every float sample above; one rounding below
    with np.errstate(over="ignore", invalid="ignore"):
        return x.astype(target)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return np.array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))


# --------------------------------------------------------------- the R example
def test_r_docs_example_prints_keras_repr(store):
    """The keras_variable R docs example, in Python: the same repr, exactly."""
    variable_from_array = vs.Variable(initializer=np.ones((3, 3)), store=store)
    variable_from_array.assign(np.zeros((3, 3)))
    value = to_host(variable_from_array.value).copy()
    value[0, :] = 99
    variable_from_array.assign(value)
    assert repr(variable_from_array) == (
        "<Variable path=variable, shape=(3, 3), dtype=float64, value=[[99. 99. 99.]\n"
        " [ 0.  0.  0.]\n"
        " [ 0.  0.  0.]]>"
    )
    from_initializer = vs.Variable(vs.initializers.Ones(), shape=(3, 3), dtype="float32", store=store)
    assert from_initializer.numpy().tolist() == [[1.0] * 3] * 3
    non_trainable = vs.Variable(np.ones((3, 3)), dtype="float32", trainable=False, store=store)
    assert not non_trainable.trainable and non_trainable.dtype == "float32"
    assert [v.path for v in store.variables] == ["variable", "variable_1", "variable_2"]


# ------------------------------------------------------------------ construction
@pytest.mark.parametrize("dtype", ALL)
def test_from_array_keeps_its_dtype(store, dtype):
    x = sample(dtype)
    v = vs.Variable(x, store=store)
    assert v.dtype == dtype and v.shape == x.shape
    assert same_bits(v.numpy(), x)
    assert v.nbytes == x.nbytes and v.size == x.size and v.ndim == 1


@pytest.mark.parametrize("src", ALL)
@pytest.mark.parametrize("dst", ALL)
def test_construct_with_dtype_casts(store, src, dst):
    x = sample(src)
    v = vs.Variable(x, dtype=dst, store=store)
    assert v.dtype == dst
    assert same_bits(v.numpy(), reference_cast(x, dst)), (v.numpy(), reference_cast(x, dst))


@pytest.mark.parametrize("src", ALL)
@pytest.mark.parametrize("dst", ALL)
def test_astype_every_pair(store, src, dst):
    v = vs.Variable(sample(src), store=store)
    out = v.astype(dst)
    host = to_host(out)
    if dst in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        host = host.view(host_dtype(dst))  # raw words on cuda, ml_dtypes on numpy
    assert same_bits(host, reference_cast(sample(src), dst))
    assert same_bits(v.numpy(), sample(src))  # astype is a copy


def test_float_to_int_out_of_range_saturates(store):
    v = vs.Variable(np.array([np.nan, 1e10, -1e10, 2.7, -2.7, np.inf]), dtype="int32", store=store)
    assert v.numpy().tolist() == [0, 2**31 - 1, -(2**31), 2, -2, 2**31 - 1]
    u = vs.Variable(np.array([-5.0, 300.0, 255.9]), dtype="uint8", store=store)
    assert u.numpy().tolist() == [0, 255, 255]


def test_float64_rounds_once_into_bfloat16(store):
    v = vs.Variable(np.array([1 + 2**-8 + 2**-30]), dtype="bfloat16", store=store)
    assert to_host(v.value).view(np.uint16)[0] == 0x3F81  # ml_dtypes (double rounding) gives 0x3F80


@pytest.mark.parametrize(
    "value, dtype",
    [(3.0, "float32"), (3, "int32"), (True, "bool"), ([1.0, 2.0], "float32"), ([1, 2], "int32"),
     ([[True], [False]], "bool"), (np.float64(2.0), "float64"), (np.int16(2), "int16")],
)
def test_dtype_inference(store, value, dtype):
    assert vs.Variable(value, store=store).dtype == dtype


def test_python_floats_follow_floatx(store):
    vs.set_floatx("float16")
    try:
        assert vs.Variable(1.5, store=store).dtype == "float16"
        assert vs.Variable("zeros", shape=(2,), store=store).dtype == "float16"
    finally:
        vs.set_floatx("float32")


def test_python_int_past_int32_asks_for_a_dtype(store):
    with pytest.raises(ValueError, match="int64"):
        vs.Variable([1, 2**40], store=store)
    assert vs.Variable([1, 2**40], dtype="int64", store=store).numpy().tolist() == [1, 2**40]


@pytest.mark.parametrize("init",
                         ["zeros", "ones", vs.initializers.Zeros(), vs.initializers.Ones, vs.initializers.zeros])
def test_name_and_object_initializers(store, init):
    v = vs.Variable(init, shape=(2, 3), dtype="bfloat16", store=store)
    expected = 1.0 if "ones" in str(init).lower() else 0.0
    assert v.numpy().astype(np.float32).tolist() == [[expected] * 3] * 2


def test_callable_initializer(store):
    calls = []

    def init(shape, dtype):
        calls.append((shape, dtype))
        return np.arange(np.prod(shape), dtype=np.float64).reshape(shape)

    v = vs.Variable(init, shape=[2, 2], store=store)
    assert calls == [((2, 2), "float32")] and v.dtype == "float32"
    assert v.numpy().tolist() == [[0.0, 1.0], [2.0, 3.0]]
    scalar = vs.Variable(lambda shape, dtype: 7, shape=(3,), dtype="int8", store=store)
    assert scalar.numpy().tolist() == [7, 7, 7]


def test_constant_initializer(store):
    v = vs.Variable(vs.initializers.Constant(2.5), shape=(2,), dtype="float8_e4m3fn", store=store)
    assert v.numpy().astype(np.float32).tolist() == [2.5, 2.5]
    with pytest.raises(ValueError, match="Constant"):
        vs.initializers.Constant([1, 2])


# ----------------------------------------------------------------------- errors
def test_callable_without_shape(store):
    with pytest.raises(ValueError, match="`shape` is required"):
        vs.Variable("zeros", store=store)
    with pytest.raises(ValueError, match="`shape` is required"):
        vs.Variable(lambda shape, dtype: 0, store=store)
    assert len(store) == 0


def test_shape_mismatch_names_both(store):
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(3,\)"):
        vs.Variable(np.zeros((2, 2)), shape=(3,), store=store)
    assert len(store) == 0


def test_callable_returning_wrong_shape(store):
    with pytest.raises(ValueError, match=r"shape \(4,\).*\(2, 2\)"):
        vs.Variable(lambda shape, dtype: np.zeros(4), shape=(2, 2), store=store)
    assert len(store) == 0


@pytest.mark.parametrize("bad", ["", "a/b", 3, b"w"])
def test_bad_names(store, bad):
    with pytest.raises(ValueError, match="Invalid value for argument `name`"):
        vs.Variable(1.0, name=bad, store=store)


@pytest.mark.parametrize("argument, bad",
                         [("aggregation", "avg"), ("aggregation", 1), ("synchronization", "sometimes")])
def test_bad_choices_list_allowed_values(store, argument, bad):
    with pytest.raises(ValueError) as info:
        vs.Variable(1.0, store=store, **{argument: bad})
    message = str(info.value)
    assert f"`{argument}`" in message and repr(bad) in message and "'none'" in message


def test_choices_default_and_none(store):
    v = vs.Variable(1.0, aggregation=None, synchronization=None, store=store)
    assert (v.aggregation, v.synchronization) == ("none", "none")
    w = vs.Variable(1.0, store=store)
    assert (w.aggregation, w.synchronization, w.trainable, w.autocast) == ("none", "auto", True, True)
    u = vs.Variable(1.0, aggregation="mean", synchronization="on_read", autocast=False, store=store)
    assert (u.aggregation, u.synchronization, u.autocast) == ("mean", "on_read", False)


def test_bool_arguments_take_any_truth_value_as_keras_does(store):
    v = vs.Variable(1.0, trainable=0, autocast=np.int64(1), store=store)
    assert v.trainable is False and v.autocast is True
    v.trainable = "yes"
    assert v.trainable is True and store.trainable_variables == [v]
    v.trainable = np.bool_(False)
    assert v.trainable is False and store.non_trainable_variables == [v]
    w = vs.Variable(1.0, trainable=[], autocast="", store=store)
    assert (w.trainable, w.autocast) == (False, False)
    with pytest.raises(TypeError, match="boolean"):  # a variable has no truth value (as Keras)
        v.trainable = w
    assert v.trainable is False


@pytest.mark.parametrize("bad", [(-1, 2), (2.0,), "ab", (True,), 5, (None, 2)])
def test_bad_shapes(store, bad):
    with pytest.raises(ValueError, match="Invalid shape"):
        vs.Variable("zeros", shape=bad, store=store)
    assert len(store) == 0


def test_bad_device_is_named(store):
    with pytest.raises(ValueError, match="Invalid device: 'tpu:0'"):
        vs.Variable(1.0, device="tpu:0", store=store)
    assert vs.Variable(1.0, device="cpu", store=store).device == "cpu"


def test_unknown_initializer_name_lists_known(store):
    with pytest.raises(ValueError, match=r"Unknown initializer: 'zeroes'.*'ones'.*'zeros'"):
        vs.Variable("zeroes", shape=(2,), store=store)
    with pytest.raises(ValueError, match="Could not interpret initializer"):
        vs.initializers.get(3)


def test_unknown_kwargs(store):
    with pytest.raises(TypeError, match="unexpected keyword arguments.*'colour'"):
        vs.Variable(1.0, colour="red", store=store)


@pytest.mark.parametrize("bad", [np.array([1 + 2j]), np.array(["a"]), [[1.0], [2.0, 3.0]], object()])
def test_unsupported_values(store, bad):
    with pytest.raises((ValueError, TypeError)):
        vs.Variable(bad, store=store)
    assert len(store) == 0


def test_duplicate_paths_and_automatic_names(store):
    a = vs.Variable(1.0, name="w", store=store)
    with pytest.raises(ValueError, match="'w' already exists"):
        vs.Variable(2.0, name="w", store=store)
    assert store["w"] is a and len(store) == 1
    b = vs.Variable(1.0, store=store)
    vs.Variable(1.0, name="variable_1", store=store)
    c = vs.Variable(1.0, store=store)
    assert (b.name, c.name) == ("variable", "variable_2")
    assert list(store) == ["w", "variable", "variable_1", "variable_2"]


# ------------------------------------------------------------------------ assign
def test_assign_in_place(store):
    v = vs.Variable(np.zeros((4, 3), np.float32), store=store)
    before = data_pointer(v.value)
    assert v.assign(np.ones((4, 3), np.float32)) is v
    v.assign(np.full((4, 3), 2.0))  # float64: cast
    assert data_pointer(v.value) == before
    assert v.numpy().tolist() == [[2.0] * 3] * 4
    v.assign(5)
    assert v.numpy().tolist() == [[5.0] * 3] * 4
    v.assign(np.array(6.0))  # 0-d fills
    assert v.numpy().tolist() == [[6.0] * 3] * 4
    assert data_pointer(v.value) == before


@pytest.mark.parametrize("dtype", ALL)
def test_assign_casts_to_the_variable_dtype(store, dtype):
    v = vs.Variable("zeros", shape=(14,), dtype=dtype, store=store)
    x = sample("float32")
    v.assign(x)
    assert same_bits(v.numpy(), reference_cast(x, dtype))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int16"])
def test_failed_assign_keeps_old_value(store, dtype):
    v = vs.Variable(np.arange(6, dtype=np.float32).reshape(2, 3), dtype=dtype, store=store)
    old = v.numpy().copy()
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(2, 3\)"):
        v.assign(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"\(6,\)"):
        v.assign_add(np.zeros(6))
    with pytest.raises(ValueError, match="Unsupported value"):
        v.assign(np.zeros((2, 3), np.complex64))
    assert same_bits(v.numpy(), old)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"])
def test_assign_add_small_floats_round_once(store, dtype):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(64).astype(np.float32).astype(host_dtype(dtype))
    b = rng.standard_normal(64).astype(np.float32) * 3
    v = vs.Variable(a, store=store)
    v.assign_add(b)
    b_in_dtype = b.astype(host_dtype(dtype)).astype(np.float32)  # operand cast first
    with np.errstate(over="ignore"):
        expected = (a.astype(np.float32) + b_in_dtype).astype(host_dtype(dtype))
    assert same_bits(v.numpy(), expected)
    v.assign_sub(0.5)
    with np.errstate(over="ignore"):
        expected = (expected.astype(np.float32) - np.float32(0.5)).astype(host_dtype(dtype))
    assert same_bits(v.numpy(), expected)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int64", "float32", "float64"])
def test_assign_add_native(store, dtype):
    x = np.array([1, 2, 120, 3], dtype)
    v = vs.Variable(x, store=store)
    before = data_pointer(v.value)
    v.assign_add(np.array([10, 10, 10, 10], dtype)).assign_sub(1)
    with np.errstate(over="ignore"):
        assert same_bits(v.numpy(), (x + np.array(10, dtype)) - np.array(1, dtype))  # integers wrap, as NumPy
    assert data_pointer(v.value) == before


def test_assign_add_casts_operand_first(store):
    v = vs.Variable(np.array([1, 2], np.int32), store=store)
    v.assign_add(np.array([1.9, -0.9]))  # truncated to [1, 0] before adding
    assert v.numpy().tolist() == [2, 2]


def test_assign_add_bool_is_refused(store):
    v = vs.Variable([True, False], store=store)
    with pytest.raises(TypeError, match="bool"):
        v.assign_add(True)


def test_assign_from_another_variable(store):
    a = vs.Variable(np.array([1.5, 2.5], np.float32), dtype="bfloat16", store=store)
    b = vs.Variable(np.zeros(2), store=store)
    b.assign(a)
    assert b.numpy().tolist() == [1.5, 2.5]


# ------------------------------------------------------------------ reading
def test_value_and_numpy(store):
    v = vs.Variable(np.arange(4, dtype=np.float32), dtype="bfloat16", store=store)
    host = v.numpy()
    assert host.dtype == ml_dtypes.bfloat16 and host.astype(np.float32).tolist() == [0, 1, 2, 3]
    host[0] = 9  # numpy() is a copy
    assert v.numpy()[0] == 0
    raw = to_host(v.value)
    expected = np.arange(4, dtype=np.float32).astype(ml_dtypes.bfloat16)
    assert raw.view(np.uint16).tolist() == expected.view(np.uint16).tolist()


def test_getitem_is_a_copy_of_numbers(store):
    v = vs.Variable(np.arange(12, dtype=np.float32).reshape(3, 4), store=store)
    row = v[1]
    row[...] = -1
    assert to_host(v[1]).tolist() == [4, 5, 6, 7]
    assert to_host(v[:, ::-2]).tolist() == [[3, 1], [7, 5], [11, 9]]
    b = vs.Variable(np.array([1.5, -2.0], np.float32), dtype="bfloat16", store=store)
    assert to_host(b[1:]).astype(np.float32).tolist() == [-2.0]


def test_setitem_writes_the_region(store):
    v = vs.Variable(np.zeros((3, 3)), store=store)
    before = data_pointer(v.value)
    v[0, :] = 99
    v[1:, 1] = np.array([5.0, 6.0])
    assert v.numpy().tolist() == [[99, 99, 99], [0, 5, 0], [0, 6, 0]]
    with pytest.raises(IndexError):
        v[5, 0] = 1
    with pytest.raises(ValueError, match=r"\(2,\).*\(3,\)"):
        v[0, :] = np.array([1.0, 2.0])
    assert v.numpy().tolist() == [[99, 99, 99], [0, 5, 0], [0, 6, 0]]
    assert data_pointer(v.value) == before


# ----------------------------------------------------------------- operators
def test_operators_act_on_value(store):
    x = np.array([[1.0, -2.0], [3.0, 4.0]], np.float32)
    v = vs.Variable(x, store=store)
    w = vs.Variable(x * 2, store=store)
    checks = {
        "add": (v + 1, x + 1), "radd": (1 + v, 1 + x), "sub": (v - w, x - 2 * x), "rsub": (10 - v, 10 - x),
        "mul": (v * w, x * 2 * x), "truediv": (v / 2, x / 2), "rtruediv": (1 / v, 1 / x), "pow": (v**2, x**2),
        "matmul": (v @ w, x @ (2 * x)), "neg": (-v, -x), "abs": (abs(v), abs(x)), "floordiv": (v // 2, x // 2),
        "mod": (v % 3, x % 3), "lt": (v < 2, x < 2), "ge": (v >= 3, x >= 3), "eq": (v == 3, x == 3),
        "ne": (v != 3, x != 3), "rgt": (2 > v, 2 > x),
    }
    for name, (got, expected) in checks.items():
        np.testing.assert_array_equal(to_host(got), expected, err_msg=name)
    with pytest.raises(TypeError, match="boolean"):
        bool(v)
    assert len(v) == 2 and float(vs.Variable(2.5, store=store)) == 2.5 and int(vs.Variable(7, store=store)) == 7
    assert hash(v) != hash(w) and v in [v] and {v: 1}[v] == 1


# Keras 3.15's numpy-backend Variable: its public attributes and every dunder it has
# (dir() of the class, read once from Keras itself).
KERAS_VARIABLE_ATTRIBUTES = """
__abs__ __add__ __and__ __array__ __bool__ __class__ __delattr__ __dict__ __dir__ __doc__ __eq__
__float__ __floordiv__ __format__ __ge__ __getattribute__ __getitem__ __getstate__ __gt__ __hash__
__init__ __init_subclass__ __int__ __invert__ __le__ __lt__ __matmul__ __mod__ __module__ __mul__
__ne__ __neg__ __new__ __or__ __pos__ __pow__ __radd__ __rand__ __reduce__ __reduce_ex__ __repr__
__rfloordiv__ __rmatmul__ __rmod__ __rmul__ __ror__ __round__ __rpow__ __rsub__ __rtruediv__
__rxor__ __setattr__ __sizeof__ __str__ __sub__ __subclasshook__ __truediv__ __weakref__ __xor__
aggregation assign assign_add assign_sub constraint dtype name ndim numpy overwrite_with_gradient
path regularizer shape synchronization trainable value
""".split()


def test_variable_has_every_attribute_of_keras_variable():
    missing = [name for name in KERAS_VARIABLE_ATTRIBUTES if not hasattr(vs.Variable, name)]
    assert not missing, missing


def test_variable_has_every_attribute_of_the_installed_keras_variable():
    """The same against Keras itself, where it is installed (`pip install varstore[bench]`)."""
    keras_variables = pytest.importorskip("keras.src.backend.common.variables")
    public = [n for n in dir(keras_variables.Variable) if not n.startswith("_") or n.startswith("__")]
    missing = [name for name in public if not hasattr(vs.Variable, name)]
    assert not missing, missing


def test_names_that_utf8_cannot_encode_are_refused_when_given(store):
    """They could not be saved: checkpoint keys are UTF-8."""
    with pytest.raises(ValueError, match=r"`name`.*UTF-8.*name='\\ud800'"):
        vs.Variable(1.0, name="\ud800", store=store)
    with pytest.raises(ValueError, match=r"`path`.*UTF-8"):
        store.get_or_create("a/\udfff", "zeros", (2,))
    with pytest.raises(ValueError, match=r"`name`.*UTF-8"):
        vs.name_scope("x\ud800")
    assert len(store) == 0 and store.memory_info()["variable_bytes"] == 0
    assert vs.Variable(1.0, name="\u00e9t\u00e9 \U0001f600", store=store).path == "\u00e9t\u00e9 \U0001f600"


def test_keras_behaviours(store):
    v = vs.Variable(np.array([1.26, 2.5, -0.45], np.float32), store=store)
    np.testing.assert_array_equal(to_host(round(v)), np.round(np.array([1.26, 2.5, -0.45], np.float32)))
    np.testing.assert_array_equal(to_host(round(v, 1)), np.round(np.array([1.26, 2.5, -0.45], np.float32), 1))
    with pytest.raises(TypeError, match=r"Only scalar arrays .* shape=\(3,\)"):
        float(v)
    with pytest.raises(TypeError, match="Only scalar arrays"):
        int(vs.Variable(np.ones(1), store=store))
    i = vs.Variable(np.array([0, 1, 2], np.int32), store=store)  # &, |, ^ are logical, as Keras's
    assert to_host(i & 2).tolist() == [False, True, True] and to_host(1 | i).tolist() == [True] * 3
    assert to_host(i ^ np.array([1, 1, 0])).tolist() == [True, False, True]
    assert v.overwrite_with_gradient is False and v.regularizer is None and v.constraint is None
    v.overwrite_with_gradient = True
    with pytest.raises(TypeError, match="`overwrite_with_gradient`"):
        v.overwrite_with_gradient = 1
    assert v.overwrite_with_gradient is True
    v.regularizer, v.constraint = abs, None
    assert v.regularizer is abs
    with pytest.raises(TypeError, match="`constraint`.*Received: constraint=3"):
        v.constraint = 3
    v.tag = "mine"  # code may tag variables, as with Keras's
    assert v.tag == "mine"


def test_operators_on_bfloat16_give_real_numbers(store):
    v = vs.Variable(np.array([1.0, 2.0], np.float32), dtype="bfloat16", store=store)
    out = to_host(v * 2 + 1)
    assert out.astype(np.float32).tolist() == [3.0, 5.0]


# ------------------------------------------------------------------ interop
@pytest.mark.parametrize("dtype", ["float32", "int16", "bfloat16"])
def test_array_protocol(store, dtype):
    v = vs.Variable(np.arange(3, dtype=np.float32), dtype=dtype, store=store)
    a = np.asarray(v)
    assert a.dtype == host_dtype(dtype) and a.astype(np.float32).tolist() == [0, 1, 2]
    assert np.asarray(v, dtype=np.float64).tolist() == [0.0, 1.0, 2.0]
    assert np.sum(v) == 3


def test_array_protocol_is_zero_copy_on_the_host():
    v = vs.Variable(np.zeros(3, np.float32), store=vs.VariableStore(device="cpu"))
    a = np.asarray(v)
    a[0] = 5
    assert v.numpy()[0] == 5
    c = np.array(v, copy=True)
    c[1] = 7
    assert v.numpy()[1] == 0


def test_dlpack(store):
    v = vs.Variable(np.arange(3, dtype=np.float32), store=store)
    device_type, device_id = v.__dlpack_device__()
    assert (device_type, device_id) == ((1, 0) if store.device == "cpu" else (2, 0))
    if store.device == "cpu":
        shared = np.from_dlpack(v)
        shared[0] = 9
        assert v.numpy()[0] == 9
    b = vs.Variable(np.zeros(2, np.float32), dtype="bfloat16", store=store)
    with pytest.raises(BufferError, match="bfloat16"):
        b.__dlpack__()


def test_cuda_array_interface_only_on_cuda(store):
    v = vs.Variable(np.zeros(2, np.float32), store=store)
    assert hasattr(v, "__cuda_array_interface__") == (store.backend == "cuda")
    b = vs.Variable(np.zeros(2, np.float32), dtype="bfloat16", store=store)
    assert not hasattr(b, "__cuda_array_interface__")


@pytest.mark.gpu
def test_cuda_interop_is_zero_copy(store):
    if store.backend != "cuda":
        pytest.skip("zero-copy device interop is a cuda-backend property")
    import cupy

    v = vs.Variable(np.arange(4, dtype=np.float32), store=store)
    view = cupy.asarray(v)
    view[0] = 42
    assert v.numpy()[0] == 42
    assert isinstance(v.value, cupy.ndarray)
    assert v.device == "cuda:0"


# ------------------------------------------------------------------ lifetime
def test_release(store):
    v = vs.Variable(np.zeros(3), name="w", store=store)
    v.release()
    assert "w" not in store and len(store) == 0
    for use in (lambda: v.value, v.numpy, lambda: v.assign(1.0), lambda: v.assign_add(1.0), lambda: v + 1,
                lambda: v.astype("float32"), lambda: v[0]):
        with pytest.raises(RuntimeError, match="'w' was released"):
            use()
    v.release()  # twice is a no-op
    assert repr(v) == "<Variable path=w, shape=(3,), dtype=float64>"
    assert vs.Variable(1.0, name="w", store=store).path == "w"  # the name is free again


def test_store_mapping_and_delete(store):
    a = store.variable(1.0, name="a")
    b = vs.Variable(2.0, name="b", trainable=False, store=store)
    assert list(store) == ["a", "b"] and store["a"] is a and "b" in store and len(store) == 2
    assert store.trainable_variables == [a] and store.non_trainable_variables == [b]
    store.delete("a")
    assert list(store) == ["b"]
    with pytest.raises(KeyError, match="'a'"):
        store["a"]


def test_default_store():
    v = vs.Variable(1.0)
    assert v.store is vs.default_store() and v.path in vs.default_store()
    v.release()


# ----------------------------------------------------------------- properties
@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64, np.int32, np.uint8, np.bool_]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, max_side=5),
    ),
    dtype=st.sampled_from(ALL),
)
def test_assign_round_trip_property(x, dtype):
    """Whatever array and dtype: assign stores exactly the reference cast."""
    store = vs.VariableStore(device="cpu")
    v = vs.Variable("zeros", shape=x.shape, dtype=dtype, store=store)
    v.assign(x)
    assert same_bits(v.numpy(), reference_cast(x, dtype))


# ------------------------------------------------------ review regressions
@pytest.mark.parametrize("src", [">f4", ">f8", ">f2", ">i4", ">u2"])
@pytest.mark.parametrize("dst", ["bfloat16", "float16", "int32", "float32"])
def test_non_native_byte_order(store, src, dst):
    big = np.array([1, 2, 3, 100], dtype=src)
    v = vs.Variable(big, dtype=dst, store=store)
    assert same_bits(v.numpy(), reference_cast(big.astype(big.dtype.newbyteorder("=")), dst))
    v.assign_add(big)
    native = big.astype(big.dtype.newbyteorder("="))
    assert same_bits(v.numpy(), vs.Variable(native, dtype=dst, store=store).assign_add(native).numpy())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float8_e5m2"])
def test_numpy_array_copy_semantics(store, dtype):
    v = vs.Variable(np.zeros(3, np.float32), dtype=dtype, store=store)
    c = np.array(v, copy=True)
    c[0] = 7
    assert v.numpy().astype(np.float32)[0] == 0
    with pytest.raises(ValueError, match="copy=False"):
        np.asarray(v, dtype=np.float64, copy=False)


def test_out_of_range_keys_raise_and_keep_the_value(store):
    v = vs.Variable(np.arange(6, dtype=np.float32).reshape(3, 2), store=store)
    for key in ([0, 5], (slice(None), [2]), np.array([True, False]), -4):
        with pytest.raises(IndexError):
            v[key] = 1.0
        with pytest.raises(IndexError):
            v[key]
    assert v.numpy().tolist() == [[0, 1], [2, 3], [4, 5]]
    v[[0, 2]] = np.array([[9, 9], [8, 8]])
    assert v.numpy().tolist() == [[9, 9], [2, 3], [8, 8]]


def test_integer_scalar_fills_follow_one_rule(store):
    """A NumPy integer that does not fit wraps (NumPy's astype), whatever the variable's
    shape, as an array and the Constant initializer do; a Python int that does not fit
    is refused (OverflowError, as NumPy refuses ``a[...] = 300`` on int8)."""
    a = vs.Variable("zeros", shape=(2,), dtype="int8", store=store).assign(np.int64(300))
    b = vs.Variable("zeros", shape=(), dtype="int8", store=store).assign(np.int64(300))
    c = vs.Variable("zeros", shape=(2,), dtype="int8", store=store).assign(np.array([300, 300]))
    d = vs.Variable(vs.initializers.Constant(300), shape=(2,), dtype="int8", store=store)
    assert a.numpy().tolist() == [44, 44] == c.numpy().tolist() == d.numpy().tolist() and int(b.numpy()) == 44
    for shape in ((2,), ()):
        with pytest.raises(OverflowError, match="Python integer 300 out of bounds for int8"):
            vs.Variable("zeros", shape=shape, dtype="int8", store=store).assign(300)


class _DLPackOnly:
    """An object offering only __dlpack__ (no __array__)."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_dlpack_only_values(store):
    v = vs.Variable(_DLPackOnly(np.arange(3.0)), store=store)
    assert v.dtype == "float64" and v.numpy().tolist() == [0.0, 1.0, 2.0]
    v.assign(_DLPackOnly(np.ones(3)))
    assert v.numpy().tolist() == [1.0, 1.0, 1.0]


def test_duplicate_path_is_refused_before_initializing(store):
    vs.Variable(1.0, name="w", store=store)
    calls = []
    with pytest.raises(ValueError, match="already exists"):
        vs.Variable(lambda shape, dtype: calls.append(shape) or 0.0, shape=(2,), name="w", store=store)
    assert calls == []



def test_stored_reads_the_one_record_which_release_replaces_whole(store):
    v = store.variable("ones", shape=(3,), dtype="bfloat16", name="record")
    record = v._stored
    storage, dtype, backend, device = v.stored
    assert v.stored == (record.storage, record.dtype, record.backend, record.device)
    assert (dtype, device, storage.shape) == ("bfloat16", store.device, (3,))
    v.release()
    assert v.released and v.stored == (None, dtype, backend, device)
    assert v._stored is not record and record.storage is storage  # replaced, not changed
