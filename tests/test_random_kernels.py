"""Tier c: Philox4x32-10 and the random fill kernels, on the CPU loop and the CUDA loop
(simulator in CI, GPU when present)."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from numba import cuda

from helpers import SIMULATOR, device_address, run_kernel, sample_size
from varstore.kernels import cast as C
from varstore.kernels import random_fill as R
from varstore.kernels.launch import cuda_arguments
from varstore.kernels.philox import philox4x32_10, seed_to_key

pytestmark = pytest.mark.kernels

# Random123's kat_vectors for philox4x32 with 10 rounds: counter, key, expected output.
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def _philox_rows(c, k, out):
    """Philox on the CUDA target, one thread per row (compiled in the test that needs it;
    a module-level function, because the simulator binds ``cuda`` through globals)."""
    i = cuda.grid(1)
    if i < c.shape[0]:
        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = philox4x32_10(c[i, 0], c[i, 1], c[i, 2], c[i, 3], k[i, 0], k[i, 1])


def _philox_cuda(counters: np.ndarray, keys: np.ndarray) -> np.ndarray:
    out = np.zeros((counters.shape[0], 4), np.uint32)
    d_out = cuda.to_device(out)
    cuda.jit(_philox_rows)[1, 32](cuda.to_device(counters), cuda.to_device(keys), d_out)
    return d_out.copy_to_host()


def test_known_answer_vectors(target):
    counters = np.array([c for c, _, _ in KNOWN_ANSWERS], np.uint32)
    keys = np.array([k for _, k, _ in KNOWN_ANSWERS], np.uint32)
    expected = np.array([e for _, _, e in KNOWN_ANSWERS], np.uint32)
    if target == "cpu":
        got = np.array([philox4x32_10(*c, *k) for c, k in zip(counters, keys, strict=True)], np.uint32)
    else:
        got = _philox_cuda(counters, keys)
    np.testing.assert_array_equal(got, expected)


def test_seed_to_key():
    assert seed_to_key(0) == (0, 0)
    assert seed_to_key(0x1234567890ABCDEF) == (0x90ABCDEF, 0x12345678)
    assert seed_to_key(-1) == (0xFFFFFFFF, 0xFFFFFFFF)


# ------------------------------------------------------------------ fills
KEY = (np.uint32(0x2545F491), np.uint32(0x4F6CDD1D))
DISTS = {"uniform": R.UNIFORM, "normal": R.NORMAL, "truncated_normal": R.TRUNCATED_NORMAL}


def fill(target, dist, dtype, n, offset=0, a=0.0, b=1.0):
    """Run the fill kernel for ``dtype`` over elements offset .. offset + n (whole groups:
    the kernels run over groups of 4 words, or 2 float64; ``first`` is the group of
    element ``offset``)."""
    group = R.F64_PER_GROUP if dtype == "float64" else R.WORDS_PER_GROUP
    assert n % group == 0 and offset % group == 0, "the kernels draw whole groups"
    key = {"first": offset // group, "k0": KEY[0], "k1": KEY[1]}
    if dtype == "float64":
        out = np.zeros(n, np.float64)
        run_kernel(target, R.FILL_KERNELS[(dist, True)], n // group, dst=out, **key, a=float(a), b=float(b))
        return out
    if dtype == "float32":
        out = np.zeros(n, np.uint32)
        run_kernel(target, R.FILL_KERNELS[(dist, False)], n // group, dst=out, **key, a=np.float32(a), b=np.float32(b),
                   encode=False, fmt=C.BFLOAT16)
        return out.view(np.float32)
    word = np.uint8 if "float8" in dtype else np.uint16
    out = np.zeros(n, word)
    run_kernel(target, R.FILL_KERNELS[(dist, False)], n // group, dst=out, **key, a=np.float32(a), b=np.float32(b),
               encode=True, fmt=C.FORMATS[dtype])
    return out


# Largest difference between the CPU and a GPU, in ulp of the standard variate (see the
# kernels' docstring): everything is built from IEEE-exact operations and fma, with no
# platform math library, so none.
GPU_ULP_BOUND = {("uniform", "float32"): 0, ("uniform", "float64"): 0, ("normal", "float32"): 0,
                 ("normal", "float64"): 0, ("truncated_normal", "float32"): 0, ("truncated_normal", "float64"): 0}


@pytest.mark.parametrize("dist", list(DISTS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_targets_agree(target, dist, dtype):
    """CPU bits == CUDA-loop bits for the standard variate: uniform exactly, the normals
    within GPU_ULP_BOUND. (In the simulator both targets run the CPU build of the math, so
    this checks the loops, exactly; the bounds are checked on a GPU.)"""
    n = sample_size(4096)
    a, b = (-1.0, 3.0) if dist == "uniform" else (0.0, 1.0)
    cpu = fill("cpu", DISTS[dist], dtype, n, a=a, b=b)
    other = fill(target, DISTS[dist], dtype, n, a=a, b=b)
    bound = 0 if (SIMULATOR or target == "cpu") else GPU_ULP_BOUND[(dist, dtype)]
    as_int = np.int64 if dtype == "float64" else np.int32
    ulps = np.abs(other.view(as_int).astype(np.int64) - cpu.view(as_int).astype(np.int64))
    assert ulps.max() <= bound, f"{dist} {dtype}: {ulps.max()} ulp apart ({np.count_nonzero(ulps)} of {n} differ)"


@pytest.mark.parametrize("dist", list(DISTS))
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_element_is_a_function_of_its_index(target, dist, dtype):
    """Any whole-group range drawn on its own equals the same slice of one big draw:
    results cannot depend on chunking or on the launch geometry."""
    group = 2 if dtype == "float64" else 4
    n = 64 * group
    whole = fill(target, DISTS[dist], dtype, n)
    for start, stop in [(0, group), (group * 3, group * 10), (n - group, n)]:
        part = fill(target, DISTS[dist], dtype, stop - start, offset=start)
        np.testing.assert_array_equal(part.view(np.uint8), whole[start:stop].view(np.uint8))


def test_cuda_geometry_does_not_matter(target):
    if target == "cpu":
        pytest.skip("a CUDA launch-geometry check")
    n = 4 * 200
    results = []
    for blocks, threads in [(1, 32), (3, 64), (7, 32)]:
        out = cuda.to_device(np.zeros(n, np.uint32))
        args = {"dst": out, "first": 0, "k0": KEY[0], "k1": KEY[1], "a": np.float32(0), "b": np.float32(1),
                "encode": False, "fmt": C.BFLOAT16}
        groups = n // R.WORDS_PER_GROUP
        key, _ = R.uniform_words.bind(args, groups)
        loop, spec = R.uniform_words.loop_for("numba", key, args)
        loop[blocks, threads](0, groups, *cuda_arguments(R.uniform_words, spec, args, device_address))
        cuda.synchronize()
        results.append(out.copy_to_host())
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"])
@pytest.mark.parametrize("dist", list(DISTS))
def test_small_floats_are_the_float32_draw_rounded(target, dist, dtype):
    n = 4 * 64
    f32 = fill(target, DISTS[dist], "float32", n, a=0.5, b=2.0)
    small = fill(target, DISTS[dist], dtype, n, a=0.5, b=2.0)
    expected = f32.astype(np.float16 if dtype == "float16" else getattr(ml_dtypes, dtype)).view(small.dtype)
    np.testing.assert_array_equal(small, expected)


def test_uniform_construction():
    """uniform = a + b * u, u = top 24 bits / 2**24: check a few elements by hand."""
    out = fill("cpu", R.UNIFORM, "float32", 4, a=-1.0, b=2.0)
    words = philox4x32_10(np.uint32(0), np.uint32(0), np.uint32(R.UNIFORM), np.uint32(0), *KEY)
    expected = [np.float32(-1.0 + 2.0 * (int(w) >> 8) * 2.0**-24) for w in words]
    np.testing.assert_array_equal(out, np.array(expected, np.float32))


def test_log_and_sincos_accuracy():
    """Our log and sincos (used so that every target computes the same bits) are accurate."""
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.random(3000) * 4 + 1e-3, 10.0 ** rng.uniform(-300, 300, 3000), [1.0, 2.0, 0.5, 2**-24]])
    ours = np.array([R.log_f64(v) for v in x])
    ulp = np.abs(ours - np.log(x)) / np.spacing(np.maximum(np.abs(np.log(x)), 1e-300))
    assert ulp.max() <= 3, ulp.max()
    u = np.concatenate([rng.random(3000), [0.0, 0.125, 0.25, 0.5, 0.75, 1 - 2**-53]])
    sc = np.array([R.sincos_2pi_f64(v) for v in u])
    assert np.abs(sc[:, 0] - np.sin(2 * np.pi * u)).max() < 2e-15
    assert np.abs(sc[:, 1] - np.cos(2 * np.pi * u)).max() < 2e-15
    assert R.sincos_2pi_f64(0.25) == (1.0, -0.0) and R.sincos_2pi_f64(0.0) == (0.0, 1.0)



def test_erf_exp_and_erfinv_accuracy():
    """Our erf and exp (the float64 truncated normal's Newton steps) are accurate on the
    range those steps see, and erfinv_f64 inverts math.erf to a few ulp."""
    rng = np.random.default_rng(6)
    z = np.concatenate([rng.uniform(-1.45, 1.45, 3000), [0.0, 1e-300, -1e-8, 1.0, math.sqrt(2.0), -1.45]])
    ours = np.array([R.erf_small_f64(v) for v in z])
    reference = np.array([math.erf(v) for v in z])
    ulp = np.abs(ours - reference) / np.spacing(np.maximum(np.abs(reference), 1e-300))
    assert ulp.max() <= 4, ulp.max()
    t = np.concatenate([rng.uniform(0.0, 2.1, 3000), [0.0, 1.0, 2.0, 2.1]])
    ours = np.array([R.exp_small_f64(v) for v in t])
    ulp = np.abs(ours - np.exp(t)) / np.spacing(np.exp(t))
    assert ulp.max() <= 2, ulp.max()
    x = rng.uniform(-R.ERF_SQRT2, R.ERF_SQRT2, 2000)
    inverse = np.array([R.erfinv_f64(v) for v in x])
    back = np.array([math.erf(v) for v in inverse])
    # erf's slope is at most 2/sqrt(pi): a z off by k ulp moves erf(z) by at most ~k ulp of z
    assert np.all(np.abs(back - x) <= 8 * np.spacing(np.maximum(np.abs(inverse), np.abs(x))))
