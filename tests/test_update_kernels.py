"""Tier c: the multi-tensor update kernels (foreach, SGD, Adam) on both targets (CPU
loop; CUDA loop in the simulator or on a GPU): the CPU's bits on the CUDA loop, and the
formulas against a float64 reference."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from helpers import SIMULATOR, device_address, run_kernel
from varstore.casting import element_conversion
from varstore.dtypes import host_dtype
from varstore.kernels import multi_tensor as M
from varstore.kernels import updates as K
from varstore.multi_tensor import conversions, destination_word, source_word

pytestmark = pytest.mark.kernels

SIZES = [5, 1, 0, 40, 7] if SIMULATOR else [5, 1, 0, 2 * M.CHUNK + 3, 7]
BF16 = ml_dtypes.bfloat16


def _launch(target, kernel, columns: dict, sizes, **args) -> None:
    """Launch ``kernel`` over tensors of ``sizes``: ``columns`` maps each address column
    to one host array per tensor (None: address 0), updated in place."""
    tensor, first, count = M.chunks(sizes)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
    devices = {}
    if target == "cuda":
        from numba import cuda

        devices = {name: [None if a is None else cuda.to_device(a) for a in arrays] for name, arrays in columns.items()}
    addresses = {}
    for name, arrays in columns.items():
        if target == "cuda":
            addresses[name] = np.array([0 if d is None else device_address(d) for d in devices[name]], np.uint64)
        else:
            addresses[name] = np.array([0 if a is None else a.__array_interface__["data"][0] for a in arrays],
                                       np.uint64)
    run_kernel(target, kernel, len(tensor), chunk_tensor=tensor, chunk_first=first, chunk_count=count,
               tensor_start=starts, **addresses, **args)
    for name, arrays in devices.items():
        for host, dev in zip(columns[name], arrays, strict=True):
            if dev is not None:
                dev.copy_to_host(host)


def _like(word) -> np.ndarray:
    return np.zeros(1, word)


def _state(seed: int, dtype, slots: int, via=None):
    """Variables, gradients (``dtype``; rounded through ``via`` first) and slots."""
    rng = np.random.default_rng(seed)
    via = via or dtype
    w = [rng.normal(size=n).astype(via).astype(dtype) for n in SIZES]
    g = [rng.normal(size=n).astype(via).astype(dtype) for n in SIZES]
    s = [[np.abs(rng.normal(size=n)).astype(np.float32) * (k + 1) * 0.1 for n in SIZES] for k in range(slots)]
    return w, g, s


def _adam(target, dtype: str, host, amsgrad=0, decay=0.0, clip=np.inf, via=None, same=None, small=None):
    w, g, (m, v, vhat) = _state(1, host, 3, via)
    conv = conversions(dtype, dtype)
    _launch(target, K.adam, {"tensor_variable": w, "tensor_gradient": g, "tensor_m": m, "tensor_v": v,
                             "tensor_vhat": vhat if amsgrad else [None] * len(SIZES)}, SIZES,
            tensor_scale=np.full(len(SIZES), 0.5), like_w=_like(source_word(dtype, "float32")),
            like_wd=_like(destination_word(dtype)), like_g=_like(source_word(dtype, "float32")),
            like_s=_like(np.float32), c1=float(np.float32(0.1)), c2=float(np.float32(0.001)), alpha=0.01,
            epsilon=float(np.float32(1e-7)), decay=decay, amsgrad=amsgrad, clip=clip, kind=K.COMPUTE_F32,
            gradient=element_conversion(dtype, "float32"), to_compute=conv["to_compute"],
            from_compute=conv["from_compute"],
            same=int(dtype == "float32") if same is None else same,  # (the CPU's fast path for float32)
            small=K.small_path(element_conversion(dtype, "float32"), K.GRADIENT_ROUTES, conv["to_compute"],
                               conv["from_compute"]) if small is None else small)  # (and for small floats)
    return w, m, v, vhat


@pytest.mark.parametrize("amsgrad, decay, clip", [(0, 0.0, np.inf), (1, 0.004, 0.3)])
def test_adam_follows_the_formulas_and_gives_the_cpus_bits(target, amsgrad, decay, clip):
    w, m, v, vhat = _adam(target, "float32", np.float32, amsgrad, decay, clip)
    w0, g0, (m0, v0, vhat0) = _state(1, np.float32, 3)
    for k in range(len(SIZES)):
        x = np.clip(g0[k].astype(np.float64) * 0.5, -clip, clip)
        ww = w0[k] - w0[k] * np.float64(np.float32(decay))
        mm = m0[k] + (x - m0[k]) * np.float64(np.float32(0.1))
        vv = v0[k] + (x * x - v0[k]) * np.float64(np.float32(0.001))
        vh = np.maximum(vhat0[k], vv) if amsgrad else vv
        ww = ww - mm * 0.01 / (np.sqrt(vh) + np.float64(np.float32(1e-7)))
        np.testing.assert_allclose(m[k], mm, rtol=2e-6, atol=1e-7)
        np.testing.assert_allclose(v[k], vv, rtol=2e-6, atol=1e-7)
        np.testing.assert_allclose(w[k], ww, rtol=2e-6, atol=1e-6)
    if target != "cpu":
        expected = _adam("cpu", "float32", np.float32, amsgrad, decay, clip)
        for got, want in zip((w, m, v, vhat), expected, strict=True):
            assert [a.tobytes() for a in got] == [a.tobytes() for a in want]


def test_adam_on_bfloat16_variables_rounds_once_from_float32_math(target):
    """bfloat16 variables and gradients: the float32 step of the same numbers, rounded
    once to bfloat16 at the end (the slots stay float32)."""
    w, m, v, _ = _adam(target, "bfloat16", BF16)
    w32, m32, v32, _ = _adam("cpu", "float32", np.float32, via=BF16)
    for k in range(len(SIZES)):
        np.testing.assert_array_equal(w[k], w32[k].astype(BF16))
        np.testing.assert_array_equal(m[k], m32[k])
        np.testing.assert_array_equal(v[k], v32[k])
    if target != "cpu":
        expected = _adam("cpu", "bfloat16", BF16)
        assert [a.tobytes() for a in w] == [a.tobytes() for a in expected[0]]


def _sgd(target, nesterov: int, same: int = 0, has_momentum: int = 1, decay: float = 0.0, clip: float = np.inf):
    w, g, (m,) = _state(2, np.float32, 1)
    conv = conversions("float32", "float32")
    _launch(target, K.sgd, {"tensor_variable": w, "tensor_gradient": g,
                            "tensor_momentum": m if has_momentum else [None] * len(SIZES)}, SIZES,
            tensor_scale=np.full(len(SIZES), 0.5), like_w=_like(np.uint32), like_wd=_like(np.uint32),
            like_g=_like(np.uint32), like_s=_like(np.float32), lr=float(np.float32(0.01)),
            momentum=float(np.float32(0.9)), nesterov=nesterov, has_momentum=has_momentum, decay=decay, clip=clip,
            kind=K.COMPUTE_F32,
            gradient=conv["to_compute"], to_compute=conv["to_compute"], from_compute=conv["from_compute"],
            same=same, small=0)  # (the CPU's fast path for float32)
    return w, m


@pytest.mark.parametrize("nesterov, same", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_sgd_with_momentum_follows_keras_and_gives_the_cpus_bits(target, nesterov, same):
    w, m = _sgd(target, nesterov, same)
    w0, g0, (m0,) = _state(2, np.float32, 1)
    lr, mom = np.float64(np.float32(0.01)), np.float64(np.float32(0.9))
    for k in range(len(SIZES)):
        g = g0[k] * 0.5  # (the tensor's scale)
        mm = m0[k] * mom - g * lr
        ww = w0[k] + (mm * mom - g * lr if nesterov else mm)
        np.testing.assert_allclose(m[k], mm, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(w[k], ww, rtol=1e-6, atol=1e-7)
    if target != "cpu":
        want = _sgd("cpu", nesterov)  # (the CPU's general path: its fast path gives the same bits)
        assert [a.tobytes() for a in w + m] == [a.tobytes() for a in want[0] + want[1]]


@pytest.mark.parametrize("amsgrad, decay, clip", [(0, 0.0, np.inf), (1, 0.0, np.inf), (0, 0.004, 0.3),
                                                 (1, 0.004, 0.3)])
def test_adams_cpu_fast_path_gives_the_general_paths_bits(amsgrad, decay, clip):
    """The CPU loop's float32 fast path (``adam_same``: no conversions, vectorized)
    against the general element function that a GPU runs."""
    fast, general = (_adam("cpu", "float32", np.float32, amsgrad, decay, clip, same=s) for s in (1, 0))
    assert [a.tobytes() for arrays in fast for a in arrays] == [a.tobytes() for arrays in general for a in arrays]


@pytest.mark.parametrize("nesterov, has_momentum, decay, clip", [
    (0, 1, 0.0, np.inf), (1, 1, 0.0, np.inf), (0, 0, 0.0, np.inf), (1, 1, 0.004, 0.3), (0, 0, 0.004, 0.3)])
def test_sgds_cpu_fast_path_gives_the_general_paths_bits(nesterov, has_momentum, decay, clip):
    """``sgd_same`` against ``sgd_element``; without momentum there is no momentum array
    (address 0), which neither reads nor writes."""
    (w1, m1), (w0, m0) = (_sgd("cpu", nesterov, s, has_momentum, decay, clip) for s in (1, 0))
    assert [a.tobytes() for a in w1 + m1] == [a.tobytes() for a in w0 + m0]
    if not has_momentum:
        assert [a.tobytes() for a in m1] == [a.tobytes() for a in _state(2, np.float32, 1)[2][0]]


def _foreach(target, mode: int, alpha: float, small: int = 1):
    rng = np.random.default_rng(3)
    w = [rng.normal(size=n).astype(BF16) for n in SIZES]
    x = [rng.normal(size=n).astype(np.float32) for n in SIZES]
    conv = conversions("float32", "bfloat16")
    _launch(target, K.foreach, {"tensor_variable": w, "tensor_value": x}, SIZES,
            tensor_step=np.ones(len(SIZES), np.int64), like_w=_like(source_word("bfloat16", "float32")),
            like_wd=_like(destination_word("bfloat16")), like_x=_like(source_word("float32", "bfloat16")),
            alpha=alpha, mode=mode, kind=K.COMPUTE_F32, same=0, small=small, **conv)
    return w, x


@pytest.mark.parametrize("mode", [K.ASSIGN, K.ADD, K.SCALE])
def test_foreach_converts_the_value_to_the_variables_dtype_first(target, mode):
    w, x = _foreach(target, mode, 1.0 if mode == K.ASSIGN else 0.5)
    rng = np.random.default_rng(3)
    w0 = [rng.normal(size=n).astype(BF16) for n in SIZES]
    for k in range(len(SIZES)):
        xb = x[k].astype(BF16).astype(np.float64)  # (converted to bfloat16 first, as assign_add does)
        want = {K.ASSIGN: xb, K.ADD: w0[k].astype(np.float64) + 0.5 * xb,
                K.SCALE: w0[k].astype(np.float64) * 0.5}[mode]
        np.testing.assert_array_equal(w[k], want.astype(np.float32).astype(BF16))
    if target != "cpu":
        assert [a.tobytes() for a in w] == [a.tobytes() for a in _foreach("cpu", mode, 1.0 if mode == K.ASSIGN
                                                                            else 0.5)[0]]


# ------------------------------------------------------------------ NaN and inf
NAN32 = 0x7FC00000  # np.float32(np.nan): the one NaN an update stores
NAN_BF16 = 0x7FC0
#: Payload, signalling and negative NaNs, infinities, a number: what a diverging step reads.
_ODD_WORDS = np.array([0x7FC12345, 0x7F800001, 0xFFC00000, 0x7F800000, 0xFF800000, 0x3F800000], np.uint32)


def _odd(seed: int, dtype=np.float32, n: int = 24) -> np.ndarray:
    """``n`` float32 numbers: every word of ``_ODD_WORDS`` at places of ``seed``, normal
    numbers elsewhere; converted to ``dtype``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n).astype(np.float32)
    x.view(np.uint32)[rng.choice(n, len(_ODD_WORDS), replace=False)] = _ODD_WORDS
    with np.errstate(invalid="ignore"):  # (NumPy warns of the signalling NaN)
        return x.astype(dtype)


def _settled(arrays, nan_word) -> None:
    for a in arrays:
        words = a.view(np.uint32 if a.dtype.itemsize == 4 else np.uint16)
        assert np.isnan(a.astype(np.float32)).any()
        assert set(words[np.isnan(a.astype(np.float32))].tolist()) == {nan_word}


@pytest.mark.parametrize("amsgrad, same", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_adam_stores_nan_as_one_word_where_its_math_gives_nan(target, amsgrad, same):
    """A step over NaNs (payload, signalling, negative) and infinities: NaN exactly where
    the float64 formulas give NaN (amsgrad's maximum propagates a NaN, as Keras's
    ``ops.maximum`` does), stored as 0x7FC00000 in the variable and every slot, the same
    bits on every target (a GPU gives 0x7FFFFFFF for any NaN, the CPU keeps payloads)."""
    def run(on):
        w, g, m, v, vhat = (_odd(seed) for seed in range(5))
        m, v, vhat = np.abs(m), np.abs(v), np.abs(vhat)  # (vhat keeps a NaN: max must propagate it)
        _launch(on, K.adam, {"tensor_variable": [w], "tensor_gradient": [g], "tensor_m": [m], "tensor_v": [v],
                             "tensor_vhat": [vhat] if amsgrad else [None]}, [len(w)],
                tensor_scale=np.ones(1), like_w=_like(np.uint32), like_wd=_like(np.uint32), like_g=_like(np.uint32),
                like_s=_like(np.float32), c1=float(np.float32(0.1)), c2=float(np.float32(0.001)), alpha=0.01,
                epsilon=float(np.float32(1e-7)), decay=0.0, amsgrad=amsgrad, clip=np.inf, kind=K.COMPUTE_F32,
                gradient=element_conversion("float32", "float32"), same=same, small=0,
                **{k: c for k, c in conversions("float32", "float32").items() if k != "to_variable"})
        return w, m, v, vhat

    w, m, v, vhat = run(target)
    w0, g0, m0, v0, vhat0 = (_odd(seed, np.float64) for seed in range(5))
    m0, v0, vhat0 = np.abs(m0), np.abs(v0), np.abs(vhat0)
    with np.errstate(invalid="ignore", over="ignore"):
        mm = m0 + (g0 - m0) * np.float64(np.float32(0.1))
        vv = v0 + (g0 * g0 - v0) * np.float64(np.float32(0.001))
        vh = np.maximum(vhat0, vv) if amsgrad else vv
        ww = w0 - mm * 0.01 / (np.sqrt(vh) + np.float64(np.float32(1e-7)))
    for got, want in ((w, ww), (m, mm), (v, vv)) + (((vhat, vh),) if amsgrad else ()):
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6, equal_nan=True)
    _settled((w, m, v) + ((vhat,) if amsgrad else ()), NAN32)
    if target != "cpu":
        assert [a.tobytes() for a in (w, m, v, vhat)] == [a.tobytes() for a in run("cpu")]


@pytest.mark.parametrize("same", [0, 1])
def test_sgd_stores_nan_as_one_word_where_its_math_gives_nan(target, same):
    def run(on):
        w, g, m = _odd(5), _odd(6), _odd(7)
        _launch(on, K.sgd, {"tensor_variable": [w], "tensor_gradient": [g], "tensor_momentum": [m]}, [len(w)],
                tensor_scale=np.ones(1), like_w=_like(np.uint32), like_wd=_like(np.uint32), like_g=_like(np.uint32),
                like_s=_like(np.float32), lr=float(np.float32(0.01)), momentum=float(np.float32(0.9)), nesterov=0,
                has_momentum=1, decay=float(np.float32(0.004)), clip=np.inf, kind=K.COMPUTE_F32,
                gradient=element_conversion("float32", "float32"), same=same, small=0,
                **{k: c for k, c in conversions("float32", "float32").items() if k != "to_variable"})
        return w, m

    w, m = run(target)
    w0, g0, m0 = (_odd(seed, np.float64) for seed in (5, 6, 7))
    with np.errstate(invalid="ignore", over="ignore"):
        w0 = w0 - w0 * np.float64(np.float32(0.004))
        mm = m0 * np.float64(np.float32(0.9)) - g0 * np.float64(np.float32(0.01))
    np.testing.assert_allclose(m, mm, rtol=1e-6, atol=1e-7, equal_nan=True)
    np.testing.assert_allclose(w, w0 + mm, rtol=1e-6, atol=1e-6, equal_nan=True)
    _settled((w, m), NAN32)
    if target != "cpu":
        assert [a.tobytes() for a in (w, m)] == [a.tobytes() for a in run("cpu")]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("mode", [K.ASSIGN, K.ADD, K.SCALE])
def test_foreach_gives_a_nan_the_cpus_bits_on_every_target_and_assigns_words_as_they_are(target, dtype, mode):
    """``v + alpha * x`` and ``v * alpha`` give a NaN the bits an x86 CPU gives the same
    operations one by one, as ``v.assign_add`` does: ``v`` quieted where it is a NaN, else
    ``x`` quieted, else the default NaN (a GPU's own would be 0x7FFFFFFF); ``assign``
    computes nothing and stores the value's words (a NaN's payload kept, as a cast keeps
    it), on the CPU's fast path for float32 and the general path."""
    host = np.float32 if dtype == "float32" else BF16
    word = np.uint32 if dtype == "float32" else np.uint16
    quiet, default = (0x400000, 0xFFC00000) if dtype == "float32" else (0x40, 0xFFC0)

    def operands():
        w, x = _odd(8), _odd(9)
        w[0], x[0] = np.inf, -np.inf  # (their sum is the default NaN)
        with np.errstate(invalid="ignore"):
            return w.astype(host), x

    def run(on):
        w, x = operands()
        _launch(on, K.foreach, {"tensor_variable": [w], "tensor_value": [x]}, [len(w)],
                tensor_step=np.ones(1, np.int64), like_w=_like(source_word(dtype, "float32")),
                like_wd=_like(destination_word(dtype)), like_x=_like(source_word("float32", dtype)),
                alpha=1.0 if mode == K.ASSIGN else 0.5, mode=mode, kind=K.COMPUTE_F32,
                same=int(dtype == "float32"), small=_small("float32", dtype), **conversions("float32", dtype))
        return w

    w = run(target)
    w0, x0 = operands()
    with np.errstate(invalid="ignore"):
        x0 = x0.astype(host)  # (the value converted to the variable's dtype first)
    if mode == K.ASSIGN:
        assert w.tobytes() == x0.tobytes()  # (payloads and the signalling NaN's word included)
    else:
        with np.errstate(invalid="ignore", over="ignore"):
            wide = w0.astype(np.float64)
            want = wide + 0.5 * x0.astype(np.float64) if mode == K.ADD else wide * 0.5
            np.testing.assert_array_equal(w.astype(np.float64), want.astype(np.float32).astype(host).astype(np.float64))
        w_nan, x_nan = np.isnan(w0.astype(np.float32)), np.isnan(x0.astype(np.float32))
        if mode == K.SCALE:
            x_nan = np.zeros_like(x_nan)  # (the other operand is alpha)
        rule = np.where(w_nan, w0.view(word) | quiet, np.where(x_nan, x0.view(word) | quiet, default))
        nan = np.isnan(w.astype(np.float32))
        assert w_nan[nan].any() and (x_nan[nan].any() or mode == K.SCALE) and (mode == K.SCALE or nan[0])
        np.testing.assert_array_equal(w.view(word)[nan], rule[nan].astype(word))
    if target != "cpu":
        assert w.tobytes() == run("cpu").tobytes()


def _small(value_dtype: str, dtype: str) -> int:
    """The ``small`` flag the host gives a foreach launch."""
    conv = conversions(value_dtype, dtype)
    return K.small_path(conv["to_variable"], K.VALUE_ROUTES, conv["to_compute"], conv["from_compute"])


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float8_e4m3fn", "float8_e5m2"])
@pytest.mark.parametrize("operand", ["float32", "own"])
def test_the_cpu_small_float_paths_give_the_general_paths_bits(dtype, operand):
    """The CPU loops' ``small`` paths (``adam_small``, ``sgd_small``, ``foreach_small``:
    decode and encode inline) against the conversion switch a GPU runs: small-float
    variables, float32 gradients and values or ones of the variable's format, over NaNs,
    infinities and numbers past the format's range, byte for byte."""
    host = host_dtype(dtype)
    value_dtype = "float32" if operand == "float32" else dtype
    value_host = np.float32 if operand == "float32" else host

    def odd(seed, dtype_):
        with np.errstate(invalid="ignore", over="ignore"):
            return (_odd(seed, n=64) * np.float32(300.0)).astype(dtype_)  # (float8's range is 448 or 57344)

    to_compute = element_conversion(dtype, "float32")
    from_compute = element_conversion("float32", dtype)
    gradient = element_conversion(value_dtype, "float32")
    assert K.small_path(gradient, K.GRADIENT_ROUTES, to_compute, from_compute) == 1
    assert _small(value_dtype, dtype) == 1
    assert K.small_path(element_conversion("float64", "float32"), K.GRADIENT_ROUTES, to_compute, from_compute) == 0
    assert _small("float64", dtype) == 0 and _small("float16" if dtype != "float16" else "bfloat16", dtype) == 0
    common = dict(tensor_scale=np.full(1, 0.5), like_w=_like(source_word(dtype, "float32")),
                  like_wd=_like(destination_word(dtype)), like_g=_like(source_word(value_dtype, "float32")),
                  like_s=_like(np.float32), kind=K.COMPUTE_F32, gradient=gradient, to_compute=to_compute,
                  from_compute=from_compute, same=0)
    results = []
    for small in (1, 0):
        w, g, m, v, vhat = odd(10, host), odd(11, value_host), np.abs(odd(12, np.float32)), \
            np.abs(odd(13, np.float32)), np.abs(odd(14, np.float32))
        _launch("cpu", K.adam, {"tensor_variable": [w], "tensor_gradient": [g], "tensor_m": [m], "tensor_v": [v],
                                "tensor_vhat": [vhat]}, [len(w)], c1=float(np.float32(0.1)),
                c2=float(np.float32(0.001)), alpha=0.01, epsilon=float(np.float32(1e-7)), decay=0.004, amsgrad=1,
                clip=0.3, small=small, **common)
        ws, ms = odd(15, host), odd(16, np.float32)
        _launch("cpu", K.sgd, {"tensor_variable": [ws], "tensor_gradient": [g], "tensor_momentum": [ms]}, [len(ws)],
                lr=float(np.float32(0.01)), momentum=float(np.float32(0.9)), nesterov=1, has_momentum=1,
                decay=float(np.float32(0.004)), clip=np.inf, small=small, **common)
        foreach = []
        for mode in (K.ASSIGN, K.ADD, K.SCALE):
            wf, x = odd(17, host), odd(18, value_host)
            _launch("cpu", K.foreach, {"tensor_variable": [wf], "tensor_value": [x]}, [len(wf)],
                    tensor_step=np.ones(1, np.int64), like_w=_like(source_word(dtype, "float32")),
                    like_wd=_like(destination_word(dtype)), like_x=_like(source_word(value_dtype, dtype)),
                    alpha=1.0 if mode == K.ASSIGN else 0.5, mode=mode, kind=K.COMPUTE_F32, same=0, small=small,
                    **conversions(value_dtype, dtype))
            foreach.append(wf)
        results.append([a.tobytes() for a in (w, m, v, vhat, ws, ms, *foreach)])
    assert results[0] == results[1]
