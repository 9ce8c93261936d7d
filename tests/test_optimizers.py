"""Tier b: vs.optimizers against Keras's own optimizers (numpy backend) step by step,
slots in the store under Keras's names, resume through save/load, and bad input refused
with nothing written."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import varstore as vs
from varstore.distributed import LocalGroup

SHAPES = [(17, 5), (5,), (300,), ()]
CONFIGS = [
    ("Adam", {}), ("Adam", {"amsgrad": True}), ("Adam", {"weight_decay": 0.01}), ("AdamW", {}),
    ("AdamW", {"weight_decay": 0.1, "amsgrad": True}), ("SGD", {}), ("SGD", {"momentum": 0.9}),
    ("SGD", {"momentum": 0.9, "nesterov": True}), ("SGD", {"momentum": 0.5, "weight_decay": 0.01}),
    ("Adam", {"clipnorm": 1.0}), ("Adam", {"global_clipnorm": 1.0}), ("SGD", {"clipvalue": 0.5, "learning_rate": 0.1}),
]


def _model(store, seed: int = 0, dtype="float32"):
    rng = np.random.default_rng(seed)
    with vs.name_scope("dense"):
        return [store.variable(rng.normal(size=s).astype(np.float32), dtype=dtype, name=f"v{i}")
                for i, s in enumerate(SHAPES)]


def _grads(step: int, dtype=np.float32):
    rng = np.random.default_rng(1000 + step)
    return [rng.normal(size=s).astype(dtype) for s in SHAPES]


def _keras():
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "numpy":
        pytest.skip(f"Keras runs on the {keras.backend.backend()} backend here; the comparison uses numpy")
    return keras


@pytest.mark.parametrize("name, kwargs", CONFIGS, ids=[f"{n}-{'-'.join(k) or 'default'}" for n, k in CONFIGS])
def test_each_optimizer_follows_keras_step_by_step(store, name, kwargs):
    keras = _keras()
    ours = _model(store)
    theirs = [keras.Variable(v.numpy(), name=f"v{i}") for i, v in enumerate(ours)]
    k_opt, v_opt = getattr(keras.optimizers, name)(**kwargs), getattr(vs.optimizers, name)(**kwargs)
    for step in range(20):
        grads = _grads(step)
        k_opt.apply(grads, theirs)
        v_opt.apply(grads, ours)
        for k, v in zip(theirs, ours, strict=True):
            np.testing.assert_allclose(v.numpy(), np.asarray(k.value), rtol=1e-4, atol=1e-6)
    assert int(v_opt.iterations.numpy()) == int(np.asarray(k_opt.iterations.value)) == 20


def test_a_division_by_zero_gives_nan_as_keras_does_and_writes_every_element(store):
    """Adam with ``epsilon=0`` and a zero gradient divides 0 by 0: NaN, as in Keras (and
    IEEE arithmetic, and a GPU), stored as NumPy's NaN; elements with a gradient step as
    usual. The CPU loop once raised ZeroDivisionError there, after writing the elements
    before it."""
    w = store.variable(np.ones(40_000, np.float32), name="w")
    g = np.ones(40_000, np.float32)
    g[::3] = 0
    opt = vs.optimizers.Adam(learning_rate=1e-3, epsilon=0.0)
    opt.apply([g], [w])
    got = w.numpy()
    assert set(got.view(np.uint32)[::3].tolist()) == {0x7FC00000}
    np.testing.assert_allclose(np.delete(got, np.s_[::3]), 1 - 1e-3, rtol=1e-6)
    assert int(opt.iterations.numpy()) == 1


PLANNED = [("Adam", {"learning_rate": 0.01, "amsgrad": True, "weight_decay": 0.01, "clipvalue": 0.8}),
           ("SGD", {"learning_rate": lambda step: 0.1 / (1 + step), "momentum": 0.9, "weight_decay": 0.01})]


@pytest.mark.parametrize("name, kwargs", PLANNED, ids=[name for name, _ in PLANNED])
def test_steps_with_the_same_gradient_arrays_reuse_their_launches(store, monkeypatch, name, kwargs):
    """A step with the same variables and gradient arrays as the last one runs the last
    step's launches with its own scalars (learning rate, schedule, iteration, weight
    decay), without checking the gradients again: it reads their current contents and
    gives the bits of steps with new arrays, in every group (float32 and bfloat16). A new
    array, a release in the store or a changed setting makes new launches."""
    from varstore import optimizers

    xp = np if store.device == "cpu" else pytest.importorskip("cupy")
    checked = []
    real = optimizers.checked_gradient
    monkeypatch.setattr(optimizers, "checked_gradient",
                        lambda value, variable, *rest: (checked.append(variable), real(value, variable, *rest))[1])

    def model(into):
        return _model(into, 5) + [into.variable(np.linspace(-1, 1, 33), dtype="bfloat16", name="b")]

    def grads_of(step):
        return _grads(step) + [np.random.default_rng(step).normal(size=33).astype(np.float32)]

    def checks_of(variables):
        return sum(any(v is w for w in variables) for v in checked)

    planned, fresh = model(store), model(vs.VariableStore(device=store.device))
    opts = [getattr(vs.optimizers, name)(**kwargs) for _ in "ab"]
    grads = [xp.asarray(g) for g in grads_of(0)]
    for step in range(5):
        for g, new in zip(grads, grads_of(step), strict=True):
            g[...] = xp.asarray(new)  # the same objects, new contents
        if step == 3 and not callable(kwargs["learning_rate"]):
            for opt in opts:
                opt.learning_rate = 0.005
        opts[0].apply(grads, planned)
        opts[1].apply([xp.asarray(g) for g in grads_of(step)], fresh)
        for p, f in zip(planned, fresh, strict=True):
            np.testing.assert_array_equal(p.numpy(), f.numpy())
    assert checks_of(planned) == len(planned)  # (the first step's checks only)
    assert int(opts[0].iterations.numpy()) == 5

    def step_both(new_grads):
        opts[0].apply(grads, planned)
        opts[1].apply(new_grads, fresh)
        for p, f in zip(planned, fresh, strict=True):
            np.testing.assert_array_equal(p.numpy(), f.numpy())

    grads[1] = xp.asarray(grads_of(9)[1])  # a new array: checked, new launches
    step_both([xp.asarray(g) for g in grads_of(4)[:1]] + grads[1:])
    assert checks_of(planned) == 2 * len(planned)
    store.variable(np.zeros(2), name="other").release()  # a release in the store: new launches
    step_both(grads)
    assert checks_of(planned) == 3 * len(planned)
    setting = "epsilon" if name == "Adam" else "momentum"
    for opt in opts:
        setattr(opt, setting, 0.5)  # a changed setting: new launches, which use it
    step_both(grads)
    assert checks_of(planned) == 4 * len(planned)
    step_both(grads)  # (and are remembered again)
    assert checks_of(planned) == 4 * len(planned)
    planned[2].release()
    with pytest.raises(RuntimeError, match="released"):
        opts[0].apply(grads, planned)
    clipping = vs.optimizers.SGD(learning_rate=0.1, global_clipnorm=1.0, name="clipping")
    before = checks_of(fresh[:1])
    for _ in range(2):  # (clipping by norm scales by the gradients' current norm: no remembered launches)
        clipping.apply(grads[:2], fresh[:2])
    assert checks_of(fresh[:1]) == before + 2


def test_adam_follows_the_formulas_in_float64(store):
    """Without Keras: three steps against the formulas computed in float64."""
    ours = _model(store)
    w = [v.numpy().astype(np.float64) for v in ours]
    m = [np.zeros_like(x) for x in w]
    s = [np.zeros_like(x) for x in w]
    opt = vs.optimizers.Adam(learning_rate=0.01, weight_decay=0.1)
    for step in range(3):
        grads = _grads(step)
        opt.apply(grads, ours)
        t = step + 1
        alpha = 0.01 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        for k, g in enumerate(grads):
            w[k] = w[k] - w[k] * 0.1 * 0.01
            m[k] += (g - m[k]) * 0.1
            s[k] += (g * g - s[k]) * 0.001
            w[k] = w[k] - m[k] * alpha / (np.sqrt(s[k]) + 1e-7)
    for v, x in zip(ours, w, strict=True):
        np.testing.assert_allclose(v.numpy(), x, rtol=1e-5, atol=1e-6)


def test_slots_live_in_the_store_under_keras_names(store):
    ours = _model(store, dtype="bfloat16")
    opt = vs.optimizers.Adam(amsgrad=True)
    opt.apply(_grads(0), ours)
    assert "adam/iteration" in store and "adam/learning_rate" in store
    for v in ours:
        stem = "adam/" + v.path.replace("/", "_")
        for slot in ("momentum", "velocity", "velocity_hat"):
            assert store[f"{stem}_{slot}"].dtype == "float32"  # (float32 slots for bfloat16 variables)
            assert store[f"{stem}_{slot}"].shape == v.shape
    assert store["adam/iteration"].dtype == "int64" and int(store["adam/iteration"].numpy()) == 1
    assert len(opt.variables) == 2 + 3 * len(ours)
    assert not store[f"adam/{ours[0].path.replace('/', '_')}_momentum"].trainable


def test_bfloat16_variables_step_from_float32_math(store):
    """A bfloat16 variable's step is the float32 step of its value, rounded once."""
    low = _model(store, dtype="bfloat16")
    wide = [store.variable(v.numpy().astype(np.float32), name=f"wide{i}") for i, v in enumerate(low)]
    for opt, variables in ((vs.optimizers.Adam(name="a"), low), (vs.optimizers.Adam(name="b"), wide)):
        opt.apply(_grads(0), variables)
    for a, b in zip(low, wide, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy().astype(ml_dtypes.bfloat16))


def test_bfloat16_gradients_are_read_as_their_float32_values(store):
    a, b = _model(store, 1), _model(vs.VariableStore(device=store.device), 1)
    grads = _grads(0, ml_dtypes.bfloat16)
    vs.optimizers.SGD(momentum=0.9, name="s1").apply(grads, a)
    vs.optimizers.SGD(momentum=0.9, name="s2").apply([g.astype(np.float32) for g in grads], b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_a_none_gradient_skips_its_variable(store):
    ours = _model(store)
    before = [v.numpy() for v in ours]
    grads = _grads(0)
    grads[1] = None
    opt = vs.optimizers.SGD()
    with pytest.warns(UserWarning, match="dense/v1"):
        opt.apply(grads, ours)
    np.testing.assert_array_equal(ours[1].numpy(), before[1])
    assert not np.array_equal(ours[0].numpy(), before[0])
    with pytest.raises(ValueError, match="no gradients"):
        opt.apply([None] * len(ours), ours)


def test_resume_through_save_and_load_equals_uninterrupted_training(store, tmp_path, backend):
    device = store.device
    whole = _model(store, 3)
    opt = vs.optimizers.Adam(learning_rate=0.01, amsgrad=True)
    for step in range(10):
        opt.apply(_grads(step), whole)

    first = vs.VariableStore(device=device)
    part = _model(first, 3)
    opt1 = vs.optimizers.Adam(learning_rate=0.01, amsgrad=True)
    for step in range(6):
        opt1.apply(_grads(step), part)
    first.save(tmp_path / "ckpt.safetensors")

    second = vs.VariableStore(device=device)
    resumed = _model(second, 99)  # (other values: the file restores them)
    opt2 = vs.optimizers.Adam(learning_rate=0.01, amsgrad=True)
    opt2.build(resumed)
    second.load(tmp_path / "ckpt.safetensors")
    assert int(opt2.iterations.numpy()) == 6
    for step in range(6, 10):
        opt2.apply(_grads(step), resumed)
    for a, b in zip(whole, resumed, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_learning_rate_schedule_setter_and_variables(store):
    ours = _model(store)
    seen = []
    opt = vs.optimizers.SGD(learning_rate=lambda step: seen.append(step) or 0.1 / (1 + step))
    opt.apply(_grads(0), ours)
    opt.apply(_grads(1), ours)
    assert seen == [0, 1] and "SGD/learning_rate" not in store
    fixed = vs.optimizers.SGD(learning_rate=0.5, name="fixed")
    fixed.build(ours)
    fixed.learning_rate = 0.25
    assert store["fixed/learning_rate"].numpy() == np.float32(0.25) and fixed.learning_rate == 0.25


def _unchanged(store):
    return {p: v.numpy().tobytes() for p, v in store.items()}


@pytest.mark.parametrize("case", ["length", "shape", "integer variable", "text gradient", "twice", "other store"])
def test_bad_input_is_refused_with_nothing_written(store, case):
    ours = _model(store)
    opt = vs.optimizers.Adam()
    opt.apply(_grads(0), ours)  # (built: slots exist)
    grads = _grads(1)
    variables = list(ours)
    error = ValueError
    if case == "length":
        grads = grads[:-1]
    elif case == "shape":
        grads[2] = np.ones(7, np.float32)
    elif case == "integer variable":
        variables[1] = store.variable(np.arange(5), dtype="int32", name="counts")
    elif case == "text gradient":
        grads[3] = np.array("x")
        error = TypeError
    elif case == "twice":
        variables[1] = variables[0]
        grads[1] = grads[0]
    else:
        variables[1] = vs.VariableStore(device=store.device).variable(np.ones(5, np.float32), name="elsewhere")
    before = _unchanged(store)
    with pytest.raises(error):
        opt.apply(grads, variables)
    assert _unchanged(store) == before


@pytest.mark.parametrize("case", ["shape", "integer gradient variable", "nan schedule", "new variable"])
def test_a_failed_step_leaves_no_state_behind(store, case):
    """A step that fails after the optimizer made its state for it (the first step, or
    a variable new to it) deletes that state: the store is as it was, nothing is
    written, and an optimizer of the same name can be made afterwards."""
    ours = _model(store)
    grads, lr = _grads(0), 0.01
    opt = vs.optimizers.Adam(learning_rate=lambda step: lr)
    if case == "shape":
        grads[2] = np.ones(7, np.float32)
    elif case == "integer gradient variable":
        grads[1] = store.variable(np.ones(ours[1].shape, np.int32), name="counts")
    elif case == "nan schedule":
        lr = float("nan")
    else:
        opt.apply(_grads(0)[:2], ours[:2])  # (built for the first two)
        grads[3] = np.ones(7, np.float32)
    before = _unchanged(store)
    with pytest.raises((ValueError, TypeError)) as error:
        opt.apply(grads, ours)
    assert _unchanged(store) == before
    if case == "integer gradient variable":
        assert error.type is vs.ArgumentTypeError and "gradient 1 (variable 'counts') is int32" in str(error.value)
    if case != "new variable":
        assert not opt.built and opt.iterations is None
        vs.optimizers.Adam().apply(_grads(0), ours)
        assert int(store["adam/iteration"].numpy()) == 1
    else:
        opt.apply(_grads(1), ours)  # (the state of all four made now)
        assert len([p for p in store if p.startswith("adam/")]) == 1 + 2 * len(ours)  # (a schedule: no rate)


def test_bad_arguments_are_refused_when_given():
    with pytest.raises(ValueError, match="Only one of"):
        vs.optimizers.Adam(clipnorm=1.0, clipvalue=1.0)
    with pytest.raises(TypeError):
        vs.optimizers.Adam(learning_rate="fast")
    with pytest.raises(ValueError, match="beta_1"):
        vs.optimizers.Adam(beta_1=1.0)
    with pytest.raises(ValueError, match="momentum"):
        vs.optimizers.SGD(momentum=1.5)
    with pytest.raises(ValueError, match="weight_decay"):
        vs.optimizers.AdamW(weight_decay=None)
    with pytest.raises(ValueError, match="name"):
        vs.optimizers.SGD(name="a/b")


def test_scopes_and_on_read_variables_are_refused_not_written(store):
    ours = _model(store)
    before = _unchanged(store)
    with vs.StatelessScope(), pytest.raises(RuntimeError, match="StatelessScope"):
        vs.optimizers.SGD().apply(_grads(0), ours)
    assert {p: b for p, b in _unchanged(store).items() if p in before} == before
    replicated = vs.ReplicatedStore(LocalGroup(1).groups[0], device="cpu")
    w = replicated.variable(np.ones(3, np.float32), name="w", synchronization="on_read", aggregation="sum")
    with pytest.raises(ValueError, match="on_read"):
        vs.optimizers.SGD().apply([np.ones(3, np.float32)], [w])
    np.testing.assert_array_equal(w.numpy(), np.ones(3, np.float32))


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_replica_step_reduces_the_gradients_then_steps_once(ranks, name):
    """Inside replica_step() each rank's apply queues its gradients; sync() averages them
    (aggregation="mean") and runs one step: the same as one process stepping with the
    mean gradient."""
    kwargs = {"momentum": 0.9} if name == "SGD" else {"amsgrad": True}

    def gradients(rank: int, step: int):
        return [g * (rank + 1) for g in _grads(step)]

    def body(group):
        store = vs.ReplicatedStore(group, device="cpu")
        with vs.name_scope("dense"):
            variables = [store.variable(v.numpy(), name=f"v{i}", aggregation="mean")
                         for i, v in enumerate(_model(vs.VariableStore(device="cpu"), 5))]
        opt = getattr(vs.optimizers, name)(**kwargs)
        for step in range(4):
            with store.replica_step():
                opt.apply(gradients(group.rank, step), variables)
                assert int(opt.iterations.numpy()) == step  # (queued: nothing written yet)
            store.sync()
        return [v.numpy() for v in variables], int(opt.iterations.numpy())

    results = LocalGroup(ranks).run(body)
    reference = _model(vs.VariableStore(device="cpu"), 5)
    opt = getattr(vs.optimizers, name)(**kwargs)
    for step in range(4):
        mean = [np.mean([gradients(r, step)[k] for r in range(ranks)], axis=0, dtype=np.float32)
                for k in range(len(SHAPES))]
        opt.apply(mean, reference)
    for values, iterations in results:
        assert iterations == 4
        for got, want in zip(values, reference, strict=True):
            np.testing.assert_allclose(got, want.numpy(), rtol=1e-6, atol=1e-7)


def test_two_optimizers_of_one_name_in_one_store_are_refused(store):
    ours = _model(store)
    vs.optimizers.Adam().build(ours)
    with pytest.raises(ValueError, match="another name"):
        vs.optimizers.Adam().build(ours)
    other = vs.optimizers.Adam(name="adam_1")
    other.apply(_grads(0), ours)
    assert int(store["adam/iteration"].numpy()) == 0 and int(other.iterations.numpy()) == 1


def test_a_failure_in_any_group_writes_nothing(store):
    """Two dtype groups: the second fails while the step is prepared (a released slot),
    so neither group is written and the iteration count stays."""
    a = store.variable(np.ones(3, np.float32), name="a")
    b = store.variable(np.ones(3), dtype="float64", name="b")
    opt = vs.optimizers.Adam()
    opt.apply([np.ones(3, np.float32), np.ones(3)], [a, b])
    before = a.numpy().copy()
    store["adam/b_momentum"].release()
    with pytest.raises(RuntimeError, match="released"):
        opt.apply([np.ones(3, np.float32), np.ones(3)], [a, b])
    np.testing.assert_array_equal(a.numpy(), before)
    assert int(opt.iterations.numpy()) == 1


def test_byte_swapped_and_strided_gradients_are_read_as_numbers(store):
    a, b = _model(store, 7)[:2], _model(vs.VariableStore(device=store.device), 7)[:2]
    grads = _grads(0)[:2]
    swapped = [g.astype(g.dtype.newbyteorder(">")) for g in grads]
    strided = [np.repeat(g, 2, axis=-1)[..., ::2] for g in grads]
    vs.optimizers.SGD(name="s1").apply(grads, a)
    vs.optimizers.SGD(name="s2").apply(swapped, b)
    vs.optimizers.SGD(name="s3").apply(strided, b)
    vs.optimizers.SGD(name="s4").apply(grads, a)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_a_schedule_gives_the_current_rate_as_keras_does(store):
    ours = _model(store)
    opt = vs.optimizers.SGD(learning_rate=lambda step: 0.5 / (1 + step))
    assert opt.learning_rate == 0.5
    opt.apply(_grads(0), ours)
    assert opt.learning_rate == 0.25


def test_a_write_after_a_queued_step_is_refused_in_the_replica_step():
    store = vs.ReplicatedStore(LocalGroup(1).groups[0], device="cpu")
    w = store.variable(np.ones(2, np.float32), name="w", aggregation="mean")
    opt = vs.optimizers.SGD(learning_rate=1.0)
    with store.replica_step():
        w.assign(np.full(2, 3.0, np.float32))  # (before the step: sync applies it first)
        opt.apply([np.ones(2, np.float32)], [w])
        with pytest.raises(ValueError, match="optimizer step queued"):
            w.assign(np.full(2, 5.0, np.float32))
    store.sync()
    np.testing.assert_array_equal(w.numpy(), [2.0, 2.0])


def test_an_optimizers_counters_live_on_the_stores_counter_device(backend):
    """A plain store keeps an optimizer's step count and learning rate on the host, whose
    reads at each step need no GPU synchronization, and its slots on the variables'
    device; a replicated store keeps the counters on its own device, where sync() packs
    them with its other synced variables. Either way the store saves them."""
    store = vs.VariableStore(device="cpu" if backend == "numpy" else "cuda:0")
    w = store.variable(np.ones(4, np.float32), name="w")
    opt = vs.optimizers.Adam(0.5)
    for _ in range(3):
        opt.apply([np.ones(4, np.float32)], [w])
    assert store.counter_device == "cpu" and opt.iterations.device == "cpu"
    assert store["adam/learning_rate"].device == "cpu" and store["adam/w_momentum"].device == store.device
    assert int(opt.iterations.numpy()) == 3 and sorted(store.state()) == sorted(store)
    opt.learning_rate = 0.0  # (written to the host variable, read at the next step)
    before = w.numpy().copy()
    opt.apply([np.ones(4, np.float32)], [w])
    assert np.array_equal(w.numpy(), before) and int(opt.iterations.numpy()) == 4
    replicated = vs.ReplicatedStore(group=LocalGroup(1).groups[0], device=store.device)
    assert replicated.counter_device == replicated.device
    r_opt = vs.optimizers.SGD(0.1)
    r_opt.apply([np.ones(4, np.float32)], [replicated.variable(np.ones(4, np.float32), name="w")])
    assert r_opt.iterations.device == replicated.device


class _DeviceScalar:
    """A 0-d CuPy or torch CUDA array: ``float()`` copies it to the host; NumPy's implicit
    conversion is refused (CuPy raises TypeError)."""

    ndim = 0

    def __init__(self, number, dtype):
        self.number, self.dtype = number, dtype

    def __float__(self):
        return float(self.number)

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed.")


def test_a_schedule_may_return_a_device_scalar():
    store = vs.VariableStore(device="cpu")
    w = store.variable(np.ones(2, np.float32), name="w")
    for dtype in (np.dtype(np.float32), "torch.float32"):  # (CuPy's dtypes are NumPy's; torch's are its own)
        vs.optimizers.SGD(lambda step, dtype=dtype: _DeviceScalar(0.25, dtype), name=f"sgd{len(store)}").apply(
            [np.ones(2, np.float32)], [w])
    assert w.numpy().tolist() == [0.5, 0.5]


class _TorchLike:
    """A CUDA tensor as varstore sees it: the CUDA array interface (refused, as torch does,
    while it requires grad) and a torch dtype, which has no ``kind``."""

    def __init__(self, array, requires_grad=False):
        self.shape, self.dtype, self.requires_grad = array.shape, "torch.float32", requires_grad

    @property
    def __cuda_array_interface__(self):
        if self.requires_grad:
            raise RuntimeError("Can't export tensors that require gradient, use tensor.detach()")
        return {"shape": self.shape, "typestr": "<f4", "data": (0, False), "version": 3}


def test_gradients_given_as_torch_like_device_arrays():
    """A torch CUDA tensor as a gradient: its dtype has no ``kind``, which the text check
    must not read, and one that requires grad is still a device array (torch's property
    raises RuntimeError). On a host store without CuPy, the error says what to do."""
    import importlib.util

    from varstore.backends.base import is_device_array

    assert is_device_array(_TorchLike(np.ones(2), requires_grad=True)) and is_device_array(_TorchLike(np.ones(2)))
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy would read the stand-in's address")
    store = vs.VariableStore(device="cpu")
    w = store.variable(np.ones(2, np.float32), name="w")
    with pytest.raises(TypeError, match=r"Cannot read a device array \(_TorchLike\) on the numpy backend"):
        vs.optimizers.SGD(0.5).apply([_TorchLike(np.ones(2, np.float32))], [w])
    assert w.numpy().tolist() == [1.0, 1.0] and sorted(store) == ["w"]


def test_a_variable_updated_in_the_step_read_as_another_ones_gradient_is_read_before_it():
    """``opt.apply([b, a], [a, b])``: each gradient is the other variable, which the same
    launch writes; each reads its value from before the step (a copy), on the CPU
    whatever the chunk order and on a GPU whatever the block order, as two separate
    steps from copies give. A variable as its own gradient reads each element before
    its own thread writes it, and is taken as it is."""
    store = vs.VariableStore(device="cpu")
    a = store.variable(np.full(3, 1.0, np.float32), name="a")
    b = store.variable(np.full(3, 2.0, np.float32), name="b")
    vs.optimizers.SGD(0.5).apply([b, a], [a, b])
    assert a.numpy().tolist() == [0.0, 0.0, 0.0] and b.numpy().tolist() == [1.5, 1.5, 1.5]
    for order in ((a, b), (b, a)):  # (the slots too: a momentum slot given as a gradient)
        opt = vs.optimizers.SGD(0.5, momentum=0.5, name=f"m{len(store)}")
        opt.build(list(order))
        slot = store[f"{opt.name}/{order[1].path}_momentum"]
        slot.assign(np.full(3, 4.0, np.float32))
        before = order[0].numpy().copy()
        opt.apply([slot, np.zeros(3, np.float32)], list(order))  # (the slot of the second: written in the step)
        assert np.array_equal(order[0].numpy(), before + (0 - 0.5 * 4.0)), order
    c = store.variable(np.full(2, 3.0, np.float32), name="c")
    vs.optimizers.SGD(0.5, name="own").apply([c], [c])
    assert c.numpy().tolist() == [1.5, 1.5]
