"""Tier a: backend selection, VARSTORE_BACKEND, devices, and what `import varstore` does."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import varstore as vs
from varstore import backends


def _run(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    full_env.pop("NUMBA_ENABLE_CUDASIM", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120)


def test_import_loads_no_gpu_stack_and_prints_nothing():
    out = _run(
        "import sys, varstore\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('cupy', 'numba', 'numba_cuda', 'ml_dtypes')]\n"
        "print(heavy)"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]" and out.stderr == ""


def test_import_never_fails_even_when_cuda_is_forced():
    out = _run("import varstore", VARSTORE_BACKEND="cuda")
    assert out.returncode == 0 and out.stdout == "" and out.stderr == ""


def test_bad_backend_value_is_named(monkeypatch):
    monkeypatch.setenv("VARSTORE_BACKEND", "tpu")
    with pytest.raises(ValueError, match="VARSTORE_BACKEND='tpu'"):
        vs.backend()


def test_forced_numpy(monkeypatch):
    monkeypatch.setenv("VARSTORE_BACKEND", "numpy")
    assert vs.backend() == "numpy"
    assert vs.devices() == ["cpu"]


@pytest.mark.skipif(backends.cuda_unavailable_reason() is None, reason="this host runs CUDA")
def test_forcing_cuda_without_gpu_says_why(monkeypatch):
    monkeypatch.setenv("VARSTORE_BACKEND", "cuda")
    with pytest.raises(vs.BackendUnavailableError) as info:
        vs.backend()
    assert backends.cuda_unavailable_reason() in str(info.value)
    assert isinstance(info.value, RuntimeError)


@pytest.mark.skipif(backends.cuda_unavailable_reason() is None, reason="this host runs CUDA")
def test_cpu_host_defaults(monkeypatch):
    monkeypatch.delenv("VARSTORE_BACKEND", raising=False)
    assert vs.backend() == "numpy"
    assert vs.devices() == ["cpu"]
    with pytest.raises(ValueError, match="cuda:0.*CUDA cannot run here"):
        backends.for_device("cuda:0")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "CPU", 0, None.__class__])
def test_unknown_device_names_it(bad):
    with pytest.raises(ValueError, match="Invalid device"):
        backends.for_device(bad)


def test_info_command_runs_anywhere():
    out = _run("from varstore.cli import main; main(['info'])")
    assert out.returncode == 0, out.stderr
    assert "backend:" in out.stdout and "numba:" in out.stdout and "cpu" in out.stdout
    out = _run("import runpy, sys; sys.argv=['varstore', 'info']; runpy.run_module('varstore', run_name='__main__')",
               VARSTORE_BACKEND="cuda")
    assert "backend:" in out.stdout  # a forced but unusable backend is reported, not a crash


@pytest.mark.gpu
def test_small_launches_do_not_warn_and_reuse_the_stream():
    """A one-element write to a bfloat16 variable (small floats take our strided kernel,
    not the array module's setitem) launches a one-block grid on purpose: no
    NumbaPerformanceWarning (building it cost more than the launch). The numba launch
    wraps CuPy's stream once; the driver launch (the default) adds one launcher and, where
    the driver loaded the module, no numba stream."""
    import warnings

    from varstore.backends.cuda_launch import launch_mechanism

    store = vs.VariableStore(device="cuda:0")
    v = store.variable("zeros", shape=(4, 4), dtype="bfloat16")
    backend = store._backend
    launchers, streams = set(backend._launchers), set(backend._numba_streams)
    v[0, 0] = 1.0  # (the first write compiles and loads the kernel: not what is checked here)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            v[1, 2] = 3.0
    assert float(v.numpy()[1, 2]) == 3.0 and float(v.numpy()[0, 0]) == 1.0
    new_launchers = set(backend._launchers) - launchers
    new_streams = set(backend._numba_streams) - streams
    if launch_mechanism() == "numba":
        assert len(new_streams) <= 1 and len(backend._numba_streams) >= 1
    else:
        assert len(new_launchers) <= 1 and backend._launchers
        loaded = all(f is not None for launcher in backend._launchers.values() for f, *_ in launcher.functions.values())
        assert not new_streams or not loaded


@pytest.mark.gpu
def test_driver_launch_grids_fill_one_wave_of_resident_blocks():
    """The driver launch sizes a large grid to the blocks that fit on the SMs at once
    (the driver's occupancy for the loaded function), not a fixed 8 per SM."""
    from varstore.backends.cuda_launch import launch_mechanism
    from varstore.kernels.launch import THREADS_PER_BLOCK

    if launch_mechanism() != "driver":
        pytest.skip("VARSTORE_CUDA_LAUNCH=numba: numba-cuda's launch keeps the fixed geometry")
    import cupy

    store = vs.VariableStore(device="cuda:0")
    v = store.variable(vs.initializers.RandomNormal(seed=1), shape=(1 << 22,), dtype="bfloat16")
    v.astype("float32")
    launchers = [launcher for launcher in store._backend._launchers.values() if launcher.functions]
    assert launchers
    for launcher in launchers:
        for function, *_, blocks_per_sm in launcher.functions.values():
            if function is None:
                continue
            want = cupy.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(function.ptr, THREADS_PER_BLOCK, 0)
            assert blocks_per_sm == want >= 1


@pytest.mark.gpu
def test_threads_launching_a_new_kernel_at_once():
    """numba-cuda loads a kernel's module on its first launch without a lock; eight
    threads making that first launch together, in a fresh process, all succeed."""
    script = """
import threading, numpy as np, varstore as vs
store = vs.VariableStore(device="cuda:0")
variables = [store.variable("zeros", shape=(64,)) for _ in range(8)]
barrier, errors = threading.Barrier(8), []
def work(k):
    try:
        barrier.wait()
        variables[k][k] = -1.0
    except Exception as error:
        errors.append(repr(error))
threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
assert not errors, errors
assert all(v.numpy()[k] == -1.0 for k, v in enumerate(variables))
print("ok")
"""
    for _ in range(3):
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]


# ------------------------------------------------------------------ fills
@pytest.mark.parametrize(
    "dtype, value, pattern",
    [
        ("float32", 0.0, (8, 0)),
        ("float32", 1.5, (32, 0x3FC00000)),
        ("float32", -0.0, (32, 0x80000000)),
        ("uint16", 0x0101, (8, 1)),
        ("uint16", 0x1234, (16, 0x1234)),
        ("int8", -1, (8, 0xFF)),
        ("float64", 0.0, (8, 0)),
        ("float64", 1.0, None),  # 0x3FF0000000000000: halves differ, no driver memset
        ("uint64", 0x0000000500000005, (32, 5)),
        ("int32", -1, (8, 0xFF)),
        ("float16", 1.0, (16, 0x3C00)),
        ("bool", True, (8, 1)),
    ],
)
def test_memset_pattern_is_the_narrowest_repeating_word(dtype, value, pattern):
    import numpy as np

    from varstore.backends.cuda import memset_pattern

    word = np.asarray(value, dtype)
    assert memset_pattern(word) == pattern
    if pattern is not None:  # the pattern repeated is the word
        bits, v = pattern
        assert v.to_bytes(bits // 8, "little") * (word.itemsize * 8 // bits) == word.tobytes()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16", "int8", "uint16", "int64", "bool"])
def test_cuda_fills_match_cupys_fill_and_the_cpu(dtype):
    """Fills go through the driver's memset where the pattern allows; the bits equal
    CuPy's own fill of the same word, and a Constant variable's bits the CPU's."""
    import cupy
    import numpy as np

    from varstore.dtypes import storage_dtype

    gpu = vs.VariableStore(device="cuda:0")
    cpu = vs.VariableStore(device="cpu")
    for value in (0, 1, 3, -2.5, 0.1):
        if dtype == "bool" and value not in (0, 1):
            continue
        if dtype in ("int8", "uint16", "int64", "bool") and value != int(value):
            continue
        for n in (1, 3, 1000, 4097):
            word = np.asarray(value).astype(storage_dtype(dtype))
            ours, theirs = cupy.empty(n, word.dtype), cupy.empty(n, word.dtype)
            backends.for_device(gpu.device)[0].fill(ours, word[()])
            theirs.fill(word[()])
            assert cupy.asnumpy(ours).tobytes() == cupy.asnumpy(theirs).tobytes(), (dtype, value, n)
            init = vs.initializers.Constant(value)
            a = vs.Variable(init, shape=(n,), dtype=dtype, store=gpu)
            b = vs.Variable(init, shape=(n,), dtype=dtype, store=cpu)
            assert cupy.asnumpy(a.value).tobytes() == np.asarray(b.value).tobytes(), (dtype, value, n)
            a.assign(0)
            assert not cupy.asnumpy(a.value).view(np.uint8).any()
            a.release()
            b.release()


@pytest.fixture
def copies(monkeypatch):
    """The arrays the numpy backend's ``copy`` was given (``Backend.copy``: copies that
    stay on the array's device; the cuda backend's override is tested with a stand-in
    CuPy in tests/test_driver_launch.py)."""
    import numpy as np

    given = []
    numpy_backend = type(backends.get("numpy"))
    monkeypatch.setattr(numpy_backend, "copy",
                        lambda self, array: given.append(array.shape) or np.array(array, order="C"))
    return given


def test_the_copies_writes_and_updates_make_go_through_the_backend(copies):
    import numpy as np

    store = vs.VariableStore(device="cpu")
    v = store.variable(np.arange(12, dtype=np.float32).reshape(3, 4), name="v")
    want = v.numpy()
    v[1:] = np.asarray(v.value)[:-1]  # a view of the storage: copied before the kernel reads it
    want[1:] = want[:-1].copy()
    np.testing.assert_array_equal(v.numpy(), want)
    assert copies == [(2, 4)]
    square = store.variable(np.zeros((4, 4), np.float32), name="square")
    host = np.arange(16, dtype=np.float32).reshape(4, 4)
    square.assign(host.T)  # (the backend's copyto takes any layout)
    vs.foreach.assign_add([square], [host.T])  # not C-contiguous: made so on its device
    np.testing.assert_array_equal(square.numpy(), 2 * host.T)
    assert copies[1:] == [(4, 4)]
    vs.optimizers.SGD(learning_rate=1.0).apply([host.T], [square])  # a strided gradient
    np.testing.assert_array_equal(square.numpy(), host.T)
    assert copies[2:] == [(4, 4)]
    state = store.state()  # a snapshot of each variable (the optimizer's among them)
    assert len(copies[3:]) == len(state) and {(3, 4), (4, 4)} <= set(copies[3:]) and {"v", "square"} <= set(state)


def test_the_array_modules_own_operations_run_under_on_device(monkeypatch):
    """foreach's scaling (inside a scope) and norm, the Orthogonal initializer and the
    Identity diagonal compute with the array module's own operations inside
    ``backend.on_device(device)``: CuPy computes on the current device, and the cuda
    backend's ``on_device`` makes the variable's device current (its own test:
    tests/test_driver_launch.py)."""
    import numpy as np

    entered = []
    numpy_backend = type(backends.get("numpy"))
    real = numpy_backend.on_device
    monkeypatch.setattr(numpy_backend, "on_device", lambda self, device: entered.append(device) or real(self, device))
    store = vs.VariableStore(device="cpu")
    v = store.variable(np.ones((4, 4), np.float32), name="w")
    with vs.StatelessScope():
        vs.foreach.scale([v], 0.5)  # (in a scope: variable by variable)
    assert entered == ["cpu"]
    assert vs.foreach.global_norm([v]) == 4.0 and entered == ["cpu"] * 2
    store.variable(vs.initializers.Orthogonal(seed=1), shape=(4, 4), name="q")
    store.variable(vs.initializers.Identity(), shape=(4, 4), name="i")
    assert entered == ["cpu"] * 4
    arrays = [np.full(3, 1.0), np.full(3, 2.0)]
    from varstore.distributed.group import Collective

    vs.distributed.LocalGroup(2).run(lambda group: group.run([Collective("sum", arrays[group.rank])]))
    assert entered == ["cpu"] * 6 and all(np.array_equal(a, np.full(3, 3.0)) for a in arrays)  # (a sum per rank)


def test_the_numpy_backends_addresses_are_each_arrays_address():
    """``addresses`` (a sync's operands in one call) gives what ``address`` gives, for
    writable arrays and, through its per-array fallback, read-only, strided and empty ones."""
    import numpy as np

    from varstore.backends.numpy import NumpyBackend

    backend = NumpyBackend()
    base = np.arange(12, dtype=np.float32)
    frozen = base.copy()
    frozen.flags.writeable = False
    for arrays in ([base, base[4:], np.zeros(3)], [base, frozen, base[::2], np.empty(0)]):
        assert backend.addresses(arrays) == [a.__array_interface__["data"][0] for a in arrays]
        assert backend.addresses(arrays) == [backend.address(a) for a in arrays]
