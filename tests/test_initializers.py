"""Tier a/b: the Keras initializer set, seeds, fans, distributions, in-place fills."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

import varstore as vs
from helpers import to_host
from varstore import initializers as I
from varstore.initializers import compute_fans


def normal_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def ks_statistic(sample: np.ndarray, cdf) -> float:
    x = np.sort(sample.astype(np.float64))
    n = x.size
    f = cdf(x)
    return float(max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n)))


def ks_limit(n: int) -> float:
    return 1.95 / math.sqrt(n)  # alpha = 0.001


N = 200_000


def values(store, init, dtype="float32", shape=(N,)):
    return to_host(vs.Variable(init, shape=shape, dtype=dtype, store=store).numpy()).astype(np.float64)


# ------------------------------------------------------------ distributions
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_uniform_distribution(store, dtype):
    x = values(store, I.RandomUniform(-2.0, 3.0, seed=11), dtype)
    assert x.min() >= -2.0 and x.max() <= 3.0
    assert abs(x.mean() - 0.5) < 0.02 and abs(x.var() - 25 / 12) < 0.03
    assert ks_statistic(x, lambda v: (v + 2.0) / 5.0) < ks_limit(N)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_normal_distribution(store, dtype):
    x = values(store, I.RandomNormal(mean=1.0, stddev=2.0, seed=12), dtype)
    assert abs(x.mean() - 1.0) < 0.02 and abs(x.std() - 2.0) < 0.02
    assert ks_statistic(x, lambda v: normal_cdf((v - 1.0) / 2.0)) < ks_limit(N)
    assert 0.8 < np.mean(np.abs(x - 1.0) > 2.0 * 2.0) / 0.0455 < 1.2  # the tails are there


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_truncated_normal_distribution(store, dtype):
    x = values(store, I.TruncatedNormal(mean=-1.0, stddev=0.5, seed=13), dtype)
    assert x.min() >= -2.0 and x.max() <= 0.0  # within mean +- 2 stddev
    z = (x + 1.0) / 0.5
    assert abs(z.mean()) < 0.01 and abs(z.std() - I.TRUNCATION_CORRECTION) < 0.01
    lo, hi = normal_cdf(np.array([-2.0, 2.0]))
    assert ks_statistic(z, lambda v: (normal_cdf(v) - lo) / (hi - lo)) < ks_limit(N)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"])
def test_small_float_fills(store, dtype):
    x = values(store, I.RandomNormal(stddev=1.0, seed=14), dtype)
    assert abs(x.mean()) < 0.02 and abs(x.std() - 1.0) < 0.05
    u = values(store, I.RandomUniform(0.0, 1.0, seed=15), dtype)
    assert u.min() >= 0.0 and u.max() <= 1.0 and abs(u.mean() - 0.5) < 0.02


# ------------------------------------------------------------------- seeds
def test_seeded_instances_repeat(store):
    init = I.RandomNormal(seed=5)
    a = values(store, init, shape=(1000,))
    b = values(store, init, shape=(1000,))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, to_host(init((1000,))).astype(np.float64))
    np.testing.assert_array_equal(a, values(store, I.RandomNormal(seed=5), shape=(1000,)))
    assert not np.array_equal(a, values(store, I.RandomNormal(seed=6), shape=(1000,)))


def test_same_values_on_every_backend_and_shape(store):
    """A seed gives element i the same value for any shape of the same size."""
    flat = values(store, I.RandomUniform(seed=9), shape=(24,))
    cube = values(store, I.RandomUniform(seed=9), shape=(2, 3, 4)).reshape(-1)
    np.testing.assert_array_equal(flat, cube)
    host = vs.Variable(I.RandomUniform(seed=9), shape=(24,), store=vs.VariableStore(device="cpu")).numpy()
    np.testing.assert_array_equal(flat, host.astype(np.float64))


def test_an_unseeded_instance_repeats_itself(store):
    init = I.RandomUniform()
    np.testing.assert_array_equal(values(store, init, shape=(32,)), values(store, init, shape=(32,)))


def test_set_seed_distinguishes_signs(store):
    vs.set_seed(7)
    a = I.RandomNormal().seed
    vs.set_seed(-7)
    assert I.RandomNormal().seed != a


def test_calling_with_an_integer_dtype_raises():
    with pytest.raises(ValueError, match="float dtype.*int32"):
        I.RandomNormal(seed=1)((3,), "int32")


def test_get_as_keras():
    assert I.get(None) is None
    clone = I.get({"class_name": "RandomUniform", "config": {"minval": -1.0, "maxval": 2.0, "seed": 3}})
    assert type(clone) is I.RandomUniform and (clone.minval, clone.maxval, clone.seed) == (-1.0, 2.0, 3)
    assert type(I.get("OrthogonalInitializer")) is I.Orthogonal
    assert I.VarianceScaling(scale=np.array(2.0)).scale == 2.0
    assert not isinstance(I.TruncatedNormal(), I.RandomNormal) and not isinstance(I.Zeros(), I.Constant)
    with pytest.raises(ValueError, match="Unknown initializer: 'Glorot'"):
        I.get({"class_name": "Glorot"})


def test_unseeded_instances_differ_and_set_seed_reproduces(store):
    a, b = I.RandomNormal(), I.RandomNormal()
    assert a.seed != b.seed
    assert not np.array_equal(values(store, a, shape=(64,)), values(store, b, shape=(64,)))
    vs.set_seed(1234)
    first = values(store, I.GlorotUniform(), shape=(8, 8))
    vs.set_seed(1234)
    second = values(store, I.GlorotUniform(), shape=(8, 8))
    np.testing.assert_array_equal(first, second)
    assert I.RandomNormal().get_config()["seed"] is None  # the config keeps what was given


@pytest.mark.parametrize("bad", ["1", 1.5, True, 2**63, 2**64 - 1, -(2**63) - 1, [1]])
def test_bad_seeds(bad):
    with pytest.raises(ValueError, match="`seed`"):
        I.RandomUniform(seed=bad)
    with pytest.raises(ValueError, match="`seed`"):
        vs.set_seed(bad)


@pytest.mark.parametrize("name", ["random_uniform", "random_normal", "truncated_normal", "glorot_uniform", "orthogonal"])
@pytest.mark.parametrize("dtype", ["int32", "uint8", "bool"])
def test_random_initializers_refuse_integer_dtypes(store, name, dtype):
    with pytest.raises(ValueError, match=f"float dtype.*{dtype}"):
        vs.Variable(name, shape=(4, 4), dtype=dtype, store=store)
    assert len(store) == 0


# ------------------------------------------------------------------- fans
@pytest.mark.parametrize(
    "shape, fans",
    [
        ((), (1, 1)),
        ((7,), (7, 7)),
        ((3, 5), (3, 5)),
        ((3, 4, 5), (12, 15)),  # conv1d: (width, in, out)
        ((3, 3, 4, 8), (36, 72)),  # conv2d
        ((2, 3, 3, 4, 8), (72, 144)),  # conv3d
    ],
)
def test_compute_fans_as_keras(shape, fans):
    assert compute_fans(shape) == fans


@pytest.mark.parametrize(
    "init, shape, expected_var",
    [
        (I.GlorotUniform(seed=1), (300, 500), 2.0 / 800),
        (I.GlorotNormal(seed=1), (300, 500), 2.0 / 800),
        (I.HeUniform(seed=1), (3, 3, 40, 60), 2.0 / 360),
        (I.HeNormal(seed=1), (3, 3, 40, 60), 2.0 / 360),
        (I.LecunUniform(seed=1), (400, 100), 1.0 / 400),
        (I.LecunNormal(seed=1), (400, 100), 1.0 / 400),
        (I.VarianceScaling(2.5, "fan_out", "untruncated_normal", seed=1), (200, 300), 2.5 / 300),
        (I.VarianceScaling(0.5, "fan_avg", "uniform", seed=1), (5, 100, 60), 0.5 / 400),
        (I.VarianceScaling(1.0, "fan_in", "normal", seed=1), (100_000,), 1.0 / 100_000),
    ],
)
def test_variance_scaling_variance(store, init, shape, expected_var):
    x = values(store, init, shape=shape)
    assert abs(x.var() / expected_var - 1.0) < 0.03
    if init.distribution == "uniform":
        limit = math.sqrt(3.0 * expected_var)
        assert np.abs(x).max() <= limit * (1 + 1e-6)
    if init.distribution == "truncated_normal":
        stddev = math.sqrt(expected_var) / I.TRUNCATION_CORRECTION
        assert np.abs(x).max() <= 2.0 * stddev * (1 + 1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"scale": 0}, "`scale`"), ({"scale": -1.0}, "`scale`"), ({"mode": "fan"}, "`mode`"),
     ({"distribution": "cauchy"}, "`distribution`")],
)
def test_variance_scaling_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        I.VarianceScaling(**kwargs)


# ------------------------------------------------------- orthogonal, identity
@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (48, 48), (3, 3, 8, 16), (2, 100)])
def test_orthogonal(store, shape):
    x = values(store, I.Orthogonal(gain=2.0, seed=3), shape=shape).reshape(-1, shape[-1])
    rows, cols = x.shape
    gram = x.T @ x if rows >= cols else x @ x.T
    np.testing.assert_allclose(gram, 4.0 * np.eye(min(rows, cols)), atol=1e-4)
    again = values(store, I.Orthogonal(gain=2.0, seed=3), shape=shape).reshape(-1, shape[-1])
    np.testing.assert_array_equal(x, again)


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (3, 3, 8, 16)])
def test_orthogonal_sign_correction(store, shape):
    """Q's columns are multiplied by the signs of R's diagonal (Keras): so R = Q^T A, with A
    the seeded normal matrix, has a positive diagonal."""
    from varstore.random import normal_matrix

    init = I.Orthogonal(seed=4)
    rows, cols = int(np.prod(shape[:-1])), shape[-1]
    q = values(store, init, shape=shape).reshape(rows, cols)
    if rows < cols:
        q = q.T
    backend = vs.VariableStore(device=store.device)._backend
    a, _ = normal_matrix(backend, q.shape, "float32", init.seed, store.device)
    assert (np.diag(q.T @ to_host(a).astype(np.float64)) > 0).all()


def test_orthogonal_needs_two_dimensions(store):
    with pytest.raises(ValueError, match=r"at least two dimensions.*\(5,\)"):
        vs.Variable(I.Orthogonal(), shape=(5,), store=store)


@pytest.mark.parametrize("shape, dtype", [((3, 3), "float32"), ((2, 4), "bfloat16"), ((4, 2), "int8")])
def test_identity(store, shape, dtype):
    x = values(store, I.Identity(gain=3.0), dtype=dtype, shape=shape)
    np.testing.assert_array_equal(x, 3.0 * np.eye(*shape))


def test_identity_needs_a_matrix(store):
    with pytest.raises(ValueError, match=r"2-D.*\(2, 2, 2\)"):
        vs.Variable("identity", shape=(2, 2, 2), store=store)


# ----------------------------------------------------------------- the set
ALL = {
    "Zeros": "zeros", "Ones": "ones", "Constant": "constant", "RandomUniform": "random_uniform",
    "RandomNormal": "random_normal", "TruncatedNormal": "truncated_normal", "VarianceScaling": "variance_scaling",
    "GlorotUniform": "glorot_uniform", "GlorotNormal": "glorot_normal", "HeUniform": "he_uniform",
    "HeNormal": "he_normal", "LecunUniform": "lecun_uniform", "LecunNormal": "lecun_normal",
    "Orthogonal": "orthogonal", "Identity": "identity",
}


@pytest.mark.parametrize("cls_name, alias", list(ALL.items()))
def test_aliases_and_get(cls_name, alias):
    cls = getattr(I, cls_name)
    assert getattr(I, alias) is cls
    assert type(I.get(alias)) is cls and type(I.get(cls_name)) is cls and type(I.get(cls)) is cls
    instance = cls()
    assert I.get(instance) is instance
    clone = cls.from_config(instance.get_config())
    assert type(clone) is cls and clone.get_config() == instance.get_config()


def test_keras_defaults():
    assert (I.RandomUniform().minval, I.RandomUniform().maxval) == (-0.05, 0.05)
    assert (I.RandomNormal().mean, I.RandomNormal().stddev) == (0.0, 0.05)
    assert (I.TruncatedNormal().mean, I.TruncatedNormal().stddev) == (0.0, 0.05)
    v = I.VarianceScaling()
    assert (v.scale, v.mode, v.distribution) == (1.0, "fan_in", "truncated_normal")
    assert I.Orthogonal().gain == 1.0 and I.Identity().gain == 1.0 and I.Constant().value == 0.0


def test_calling_an_initializer_returns_an_array(store):
    x = to_host(I.glorot_uniform(seed=1)((4, 5)))
    assert x.shape == (4, 5) and x.dtype == np.float32
    assert to_host(I.Ones()((2,), "int8")).tolist() == [1, 1]


def test_ragged_tails_continue_the_stream(store):
    long = values(store, I.RandomNormal(seed=21), shape=(11,))
    for n in range(1, 11):
        np.testing.assert_array_equal(values(store, I.RandomNormal(seed=21), shape=(n,)), long[:n])
    long64 = values(store, I.RandomUniform(seed=21), dtype="float64", shape=(5,))
    np.testing.assert_array_equal(values(store, I.RandomUniform(seed=21), dtype="float64", shape=(3,)), long64[:3])


# ------------------------------------------------------------------ in place
def test_fill_makes_no_temporary_of_the_variable_size():
    """The numpy backend fills storage in place: the peak extra host memory while
    initializing an 8 MB variable is a small fraction of it (tracemalloc sees NumPy's
    allocations)."""
    store = vs.VariableStore(device="cpu")
    for init in (I.RandomNormal(seed=1), I.TruncatedNormal(seed=1), I.GlorotUniform(seed=1), I.Ones()):
        for dtype in ("float32", "bfloat16"):
            var = vs.Variable("zeros", shape=(2048, 1024), dtype=dtype, store=store)
            init.fill(var._backend, var._storage, dtype)  # compiling the kernel allocates: not measured
            tracemalloc.start()
            init.fill(var._backend, var._storage, dtype)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert peak < var.nbytes // 50, f"{init!r} {dtype}: {peak} bytes for a {var.nbytes}-byte variable"
            var.release()
