"""Tier b: vs.foreach gives the bits of the per-variable calls, refuses bad input with
nothing written, and keeps the scopes' and replica steps' semantics."""

from __future__ import annotations

import math

import numpy as np
import pytest

import varstore as vs
from helpers import to_host
from varstore.distributed import LocalGroup

FLOATS = ["float16", "bfloat16", "float32", "float64", "float8_e4m3fn", "float8_e5m2"]
SHAPES = [(3,), (5, 7), (), (40_000,)]  # (40,000 elements: several chunks of one tensor)


def _values(seed: int, shape: tuple) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-4, 4, size=shape)


def _pair(store, dtype: str, seed: int):
    """Two variables holding the same values: one for foreach, one for the per-variable calls."""
    values = [_values(seed + i, shape) for i, shape in enumerate(SHAPES)]
    made = [[store.variable(v, dtype=dtype, name=f"{tag}{seed}_{i}") for i, v in enumerate(values)]
            for tag in ("f", "p")]
    return made


def _bits(variables) -> list:
    return [to_host(v.stored.storage).tobytes() for v in variables]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("value_dtype", ["float32", "float64", "bfloat16", "float16"])
def test_assign_add_and_sub_give_the_per_variable_bits(store, dtype, value_dtype):
    ours, theirs = _pair(store, dtype, 1)
    values = [vs.Variable(_values(9 + i, shape), dtype=value_dtype, store=store).value
              for i, shape in enumerate(SHAPES)]
    vs.foreach.assign_add(ours, values)
    for v, x in zip(theirs, values, strict=True):
        v.assign_add(x)
    assert _bits(ours) == _bits(theirs)
    vs.foreach.assign_sub(ours, values)
    for v, x in zip(theirs, values, strict=True):
        v.assign_sub(x)
    assert _bits(ours) == _bits(theirs)


def _with_specials(seed: int, shape: tuple) -> np.ndarray:
    """:func:`_values` with NaNs of two payloads and both infinities at places of ``seed``."""
    x = _values(seed, shape).reshape(-1)
    specials = np.array([0x7FF8_0000_1234_5678, 0xFFF8_0000_0000_0000, 0x7FF0_0000_0000_0000,
                         0xFFF0_0000_0000_0000], np.uint64).view(np.float64)
    places = np.random.default_rng(seed).choice(x.size, min(x.size, 8), replace=False)
    x[places] = np.resize(specials, places.size)
    return x.reshape(shape)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"])
def test_a_nan_sum_gives_the_per_variable_bits(store, dtype):
    """Sums with NaN operands and opposite infinities: ``foreach`` gives each NaN the bits
    ``v.assign_add`` gives it (the CPU's rule, on every device)."""
    made = [[store.variable(_with_specials(40 + i, shape), dtype=dtype, name=f"{tag}n{i}")
             for i, shape in enumerate(SHAPES)] for tag in ("f", "p")]
    ours, theirs = made
    values = [_with_specials(50 + i, shape) for i, shape in enumerate(SHAPES)]
    vs.foreach.assign_add(ours, values)
    for v, x in zip(theirs, values, strict=True):
        v.assign_add(x)
    assert any(np.isnan(v.numpy().astype(np.float32)).any() for v in ours)
    assert _bits(ours) == _bits(theirs)
    vs.foreach.assign_sub(ours, values)
    for v, x in zip(theirs, values, strict=True):
        v.assign_sub(x)
    assert _bits(ours) == _bits(theirs)


@pytest.mark.parametrize("dtype", FLOATS)
def test_assign_gives_the_per_variable_bits(store, dtype):
    ours, theirs = _pair(store, dtype, 2)
    values = [_values(20 + i, shape) for i, shape in enumerate(SHAPES)]
    vs.foreach.assign(ours, values)
    for v, x in zip(theirs, values, strict=True):
        v.assign(x)
    assert _bits(ours) == _bits(theirs)


def _fma_reference(w: np.ndarray, alpha: float, x: np.ndarray) -> np.ndarray:
    """``w + alpha * x`` rounded once to float32 (the product and the sum are exact in
    Python's fractions)."""
    from fractions import Fraction

    a = Fraction(float(np.float32(alpha)))
    out = [np.float32(float(Fraction(float(wi)) + a * Fraction(float(xi)))) for wi, xi in zip(w.ravel(), x.ravel(),
                                                                                             strict=True)]
    return np.array(out, np.float32).reshape(w.shape)


def test_alpha_is_one_fused_multiply_add_in_float32(store):
    """``v + alpha * x`` is rounded once (an fma on every target), not twice as
    ``v.assign_add(x * alpha)`` would round it."""
    ours, _ = _pair(store, "float32", 3)
    before = [v.numpy() for v in ours]
    values = [_values(30 + i, shape).astype(np.float32) for i, shape in enumerate(SHAPES)]
    vs.foreach.assign_sub(ours, values, alpha=0.1)
    for v, w, x in zip(ours[:3], before[:3], values[:3], strict=True):  # (the small ones: Fractions are slow)
        np.testing.assert_array_equal(v.numpy(), _fma_reference(w, -0.1, x))
    twice = [(w + np.float32(-0.1) * x).astype(np.float32) for w, x in zip(before, values, strict=True)]
    assert any(not np.array_equal(v.numpy(), t) for v, t in zip(ours, twice, strict=True))  # (the test can tell)


def test_alpha_in_float64_variables_is_computed_in_float64(store):
    ours, _ = _pair(store, "float64", 4)
    before = [v.numpy() for v in ours]
    values = [_values(40 + i, shape) for i, shape in enumerate(SHAPES)]
    vs.foreach.assign_add(ours, values, alpha=0.3)
    for v, w, x in zip(ours, before, values, strict=True):
        exact = w.astype(np.longdouble) + np.longdouble(0.3) * x.astype(np.longdouble)
        scale = np.maximum(np.abs(w), np.abs(0.3 * x))  # (cancellation: the operands bound the error)
        assert np.all(np.abs(v.numpy() - exact) <= np.spacing(scale))  # (float32 math would be off by 1e-8)


@pytest.mark.parametrize("dtype", FLOATS)
def test_scale_multiplies_in_float32_and_rounds_once(store, dtype):
    ours, theirs = _pair(store, dtype, 4)
    work = np.float64 if dtype == "float64" else np.float32
    vs.foreach.scale(ours, 0.37)
    for v in theirs:
        v.assign(v.numpy().astype(work) * work(0.37))
    assert _bits(ours) == _bits(theirs)


def test_one_element_values_fill_and_python_scalars_work(store):
    a = store.variable(np.ones((2, 3), np.float32), name="a")
    b = store.variable(np.ones(4, np.float32), name="b")
    vs.foreach.assign_add([a, b], [2.0, np.array(3.0)], alpha=2.0)
    np.testing.assert_array_equal(a.numpy(), np.full((2, 3), 5.0))
    np.testing.assert_array_equal(b.numpy(), np.full(4, 7.0))


def _refused(store, call, match: str, error=ValueError):
    variables = [store.variable(np.ones(3, np.float32)), store.variable(np.ones(2, np.float32))]
    before = _bits(variables)
    with pytest.raises(error, match=match):
        call(variables)
    assert _bits(variables) == before  # nothing written


def test_bad_input_is_refused_with_nothing_written(store):
    ones = [np.ones(3), np.ones(2)]
    _refused(store, lambda vs_: vs.foreach.assign_add(vs_, ones[:1]), "2 variables and 1 values")
    _refused(store, lambda vs_: vs.foreach.assign_add(vs_, [np.ones(3), np.ones(5)]), r"shape \(5,\)")
    _refused(store, lambda vs_: vs.foreach.assign_add(vs_ + [vs_[0]], ones + [ones[0]]), "given twice")
    _refused(store, lambda vs_: vs.foreach.assign_add(vs_, [np.ones(3), "text"]), "str", TypeError)
    _refused(store, lambda vs_: vs.foreach.assign_add(vs_, ones, alpha=float("nan")), "alpha")
    _refused(store, lambda vs_: vs.foreach.assign_add(vs_ + [np.ones(2)], ones + [ones[1]]), "Variable",
             vs.ArgumentTypeError)
    _refused(store, lambda vs_: vs.foreach.scale(vs_, "2"), "factor", TypeError)
    _refused(store, lambda vs_: vs.foreach.assign(vs_[0], ones), "list or tuple", TypeError)
    for update in (vs.foreach.assign, vs.foreach.assign_add, vs.foreach.assign_sub):  # (values are not optional)
        for _ in range(2):  # (nor remembered as a plan)
            _refused(store, lambda vs_, update=update: update(vs_, None), "`values` must be a list or tuple; "
                     "received NoneType", vs.ArgumentTypeError)
    ints = store.variable(np.ones(2, np.int32), name="ints")
    _refused(store, lambda vs_: vs.foreach.assign_add(vs_ + [ints], ones + [ones[1]]), "int32")
    other = vs.VariableStore(device="cpu").variable(np.ones(2, np.float32), name="elsewhere")
    _refused(store, lambda vs_: vs.foreach.assign_add(vs_ + [other], ones + [ones[1]]), "one store and device")


def test_a_released_variable_is_refused(store):
    a = store.variable(np.ones(3, np.float32), name="gone")
    a.release()
    with pytest.raises(RuntimeError, match="released"):
        vs.foreach.assign_add([a], [np.ones(3)])


def test_inside_a_stateless_scope_the_updates_go_to_the_scope(store):
    a = store.variable(np.ones(3, np.float32), name="a")
    b = store.variable(np.ones(2, np.float64), name="b")
    with vs.StatelessScope() as scope:
        vs.foreach.assign_sub([a, b], [np.ones(3), np.ones(2)], alpha=0.5)
        np.testing.assert_array_equal(to_host(scope.get_current_value(a)), np.full(3, 0.5))
        np.testing.assert_array_equal(to_host(scope.get_current_value(b)), np.full(2, 0.5))
    np.testing.assert_array_equal(a.numpy(), np.ones(3))  # the storage is untouched
    np.testing.assert_array_equal(b.numpy(), np.ones(2))


def test_inside_a_replica_step_the_updates_queue_until_sync():
    store = vs.ReplicatedStore(group=LocalGroup(1).groups[0], device="cpu")
    a = store.variable(np.ones(3, np.float32), name="a", aggregation="mean", synchronization="on_write")
    b = store.variable(np.ones(2, np.float32), name="b", aggregation="sum", synchronization="on_write")
    with store.replica_step():
        vs.foreach.assign_add([a, b], [np.ones(3), np.ones(2)], alpha=2.0)
        np.testing.assert_array_equal(a.numpy(), np.ones(3))  # queued, not written
    assert store.pending == ["a", "b"]
    store.sync()
    np.testing.assert_array_equal(a.numpy(), np.full(3, 3.0))
    np.testing.assert_array_equal(b.numpy(), np.full(2, 3.0))


def test_sums_of_squares_wait_for_the_device_once_and_keep_the_pieces_order(store, monkeypatch):
    """Several sums of squares (clipnorm's, one per gradient) are summed on the device and
    copied to the host together; each is the float64 sum of its pieces in order (here a
    buffer past one piece of ``_NORM_PIECE`` elements), as a host sum of them gives."""
    from varstore import foreach

    monkeypatch.setattr(foreach, "_NORM_PIECE", 5)
    backend = type(store.variable(np.zeros(1, np.float32)).stored.backend)
    rng = np.random.default_rng(3)
    lists = [[(rng.standard_normal(12).astype(np.float32), "float32")],
             [(rng.standard_normal(3), "float64"), (rng.standard_normal(7).astype(np.float32), "float32")], []]
    variables = [[(store.variable(a).stored.storage, d) for a, d in arrays] for arrays in lists]
    copies = []
    real = backend.to_host
    monkeypatch.setattr(backend, "to_host", lambda self, array: copies.append(array.shape) or real(self, array))
    sums = foreach.sums_of_squares(store.variable(np.zeros(1)).stored.backend, store.device, variables)
    assert copies == [(3,)]
    want = []
    for arrays in lists:
        total = 0.0
        for dtype in dict.fromkeys(d for _, d in arrays):  # (one staging buffer per dtype, in order)
            flat = np.concatenate([a.ravel() for a, d in arrays if d == dtype]).astype(np.float64)
            for start in range(0, flat.size, 5):
                total += float(np.dot(flat[start:start + 5], flat[start:start + 5]))
        want.append(total)
    assert sums == want and sums[2] == 0.0


def test_global_norm_of_variables_and_arrays(store):
    a = store.variable(np.full(3, 2.0, np.float32), name="a")
    b = store.variable(np.array([1.0, -2.0], dtype=np.float64), dtype="bfloat16", name="b")
    expected = math.sqrt(3 * 4.0 + 1.0 + 4.0 + 9.0 + 16.0)
    assert vs.foreach.global_norm([a, b, np.array([3.0, 4.0])]) == expected
    assert vs.foreach.global_norm([]) == 0.0
    with pytest.raises(TypeError, match="real numbers"):
        vs.foreach.global_norm([np.array(["x"])])


def test_a_remembered_plan_reads_the_values_anew_and_notices_releases(store, monkeypatch):
    """The second call with the same variables and value objects reuses the first
    call's tables: it reads the values' current contents; a released variable or a new
    value object makes a new plan (and a released variable is refused)."""
    from varstore import foreach

    made = []
    monkeypatch.setattr(foreach, "_plan", lambda *args, _plan=foreach._plan: made.append(1) or _plan(*args))
    a, b = (store.variable(np.zeros(4, np.float32), name=n) for n in ("a", "b"))
    x, y = np.ones(4, np.float32), np.full(4, 2.0, np.float32)
    vs.foreach.assign_add([a, b], [x, y])
    x[:] = 10.0  # same object, new contents
    vs.foreach.assign_add([a, b], [x, y])
    assert len(made) == 1  # (the second call took the remembered plan)
    np.testing.assert_array_equal(a.numpy(), np.full(4, 11.0, np.float32))
    vs.foreach.assign_add([a, b], [np.ones(4, np.float32), y])  # a new object
    np.testing.assert_array_equal(a.numpy(), np.full(4, 12.0, np.float32))
    np.testing.assert_array_equal(b.numpy(), np.full(4, 6.0, np.float32))
    b.release()
    with pytest.raises(RuntimeError, match="released"):
        vs.foreach.assign_add([a, b], [x, y])
    np.testing.assert_array_equal(a.numpy(), np.full(4, 12.0, np.float32))


def test_values_that_are_variables_being_updated_are_read_as_before_the_call(store):
    a = store.variable(np.arange(3, dtype=np.float32), name="a")
    b = store.variable(np.arange(3, dtype=np.float32) * 10, name="b")
    vs.foreach.assign_add([a, b], [b, a])  # each value read as it was when the call began
    np.testing.assert_array_equal(a.numpy(), [0.0, 11.0, 22.0])
    np.testing.assert_array_equal(b.numpy(), [0.0, 11.0, 22.0])
    vs.foreach.assign_sub([a], [a])  # (its own storage, element by element: 0)
    np.testing.assert_array_equal(a.numpy(), [0.0, 0.0, 0.0])


def test_byte_swapped_values_and_generators_are_read_as_numbers(store):
    a = store.variable(np.zeros(3, np.float32), name="a")
    swapped = np.array([1.0, 2.0, 3.0], ">f4")
    vs.foreach.assign([a], [swapped])
    np.testing.assert_array_equal(a.numpy(), [1.0, 2.0, 3.0])
    assert vs.foreach.global_norm([swapped]) == pytest.approx(math.sqrt(14.0))
    for _ in range(2):  # (the second call takes the remembered plan's path)
        vs.foreach.assign_add([a], (x for x in [np.ones(3, np.float32)]))
    np.testing.assert_array_equal(a.numpy(), [3.0, 4.0, 5.0])


def test_threads_updating_their_own_stores_at_once(backend):
    import threading

    if backend != "numpy":
        pytest.skip("the CPU shows the race as well as a GPU would")
    errors = []

    def body(k):
        try:
            store = vs.VariableStore(device="cpu")
            variables = [store.variable(np.zeros(4, np.float32), name=f"v{i}") for i in range(3)]
            values = [np.ones(4, np.float32) for _ in variables]
            for _ in range(200):
                vs.foreach.assign_add(variables, values)
            assert all(np.array_equal(v.numpy(), np.full(4, 200.0, np.float32)) for v in variables)
        except Exception as error:  # noqa: BLE001 (reported below, with the thread's number)
            errors.append((k, error))

    threads = [threading.Thread(target=body, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_on_read_sum_variables_are_refused_before_anything_is_written():
    group = LocalGroup(1).groups[0]
    store = vs.ReplicatedStore(group, device="cpu")
    a = store.variable(np.zeros(2, np.float32), name="a")
    r = store.variable(np.zeros(2, np.float32), name="r", synchronization="on_read", aggregation="sum")
    with pytest.raises(ValueError, match="on_read"):
        vs.foreach.assign_add([a, r], [np.ones(2, np.float32), np.ones(2, np.float32)])
    np.testing.assert_array_equal(a.numpy(), [0.0, 0.0])
