"""Tier a/c: launch geometry, and CPU launches split across threads give the same bits."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from helpers import SIMULATOR, cuda_reason, record_cpu_runs, run_kernel
from varstore.backends.numpy import NumpyBackend
from varstore.casting import element_conversion
from varstore.kernels import cast as K
from varstore.kernels import launch
from varstore.kernels.launch import MIN_CPU_CHUNK, SIMULATOR_GEOMETRY, cpu_chunks, cuda_grid, grid_for


@pytest.mark.parametrize("n", [0, 1, MIN_CPU_CHUNK, 2 * MIN_CPU_CHUNK - 1, 2 * MIN_CPU_CHUNK + 3, 10**7 + 1])
@pytest.mark.parametrize("workers", [1, 2, 3, 16])
def test_cpu_chunks_cover_the_range(n, workers):
    chunks = cpu_chunks(n, workers)
    assert chunks[0][0] == 0 and chunks[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(chunks))
    assert len(chunks) <= max(1, workers)
    assert all(start % 64 == 0 for start, _ in chunks)
    if len(chunks) > 1:
        assert all(stop - start >= MIN_CPU_CHUNK // 2 for start, stop in chunks[:-1])


@pytest.mark.parametrize("variable", launch.LOCAL_PROCESS_COUNTS)
def test_cpu_threads_are_shared_among_a_launchers_processes_on_the_host(monkeypatch, variable):
    for name in ("VARSTORE_NUM_THREADS", *launch.LOCAL_PROCESS_COUNTS):
        monkeypatch.delenv(name, raising=False)

    def host(cores, launcher):
        monkeypatch.setattr(launch, "usable_cores", lambda: cores)
        monkeypatch.setattr(launch, "launcher_cores", lambda: launcher)
        return launch.cpu_workers()

    assert host(16, 16) == 16  # no launcher
    monkeypatch.setenv(variable, "4")
    assert host(16, 16) == 4  # unbound: the four share every core
    assert host(8, 8) == 2  # a container's 8 cores, unbound: shared too
    assert host(1, 64) == 1  # bound to a core each
    assert host(32, 64) == 16  # bound to a socket each: two ranks per socket
    monkeypatch.setenv(variable, "2")
    assert host(32, 64) == 32  # one rank per socket
    monkeypatch.setenv(variable, "32")
    assert host(16, 16) == 1  # more processes than cores: one thread each
    for bad in ("0", "-2", "two", "", "\u0664"):  # (not a positive ASCII integer: no launcher)
        monkeypatch.setenv(variable, bad)
        assert host(16, 16) == 16, bad
    monkeypatch.setenv(variable, "4")
    monkeypatch.setenv("VARSTORE_NUM_THREADS", "7")
    assert host(16, 16) == 7  # asked for


def test_the_launchers_cores_are_its_affinity_or_the_machines(monkeypatch):
    assert 1 <= launch.launcher_cores() <= (launch.os.cpu_count() or 1)
    monkeypatch.setattr(launch.os, "getppid", lambda: 2**22 + 12345)  # (no such process)
    monkeypatch.setattr(launch.os, "cpu_count", lambda: 6)
    assert launch.launcher_cores() == 6


def test_grid_geometry():
    assert grid_for(10, 132) == (1, 256)
    assert grid_for(10**9, 132) == (132 * 8, 256)
    assert grid_for(0, 132) == (1, 256)
    assert grid_for(10**9, 132, simulator=True) == SIMULATOR_GEOMETRY
    # the driver launch passes the blocks that fit on an SM at once (5 for 46 registers)
    assert grid_for(10**9, 132, blocks_per_sm=5) == (132 * 5, 256)
    assert grid_for(1000, 132, blocks_per_sm=5) == (4, 256)
    assert grid_for(10**9, 132, blocks_per_sm=0) == (132, 256)  # (at least one per SM)


def test_cuda_grid_per_thread_and_blocks_per_sm():
    from varstore.kernels import cast as K
    from varstore.kernels import multi_tensor as M

    assert cuda_grid(K.accumulate, 8 * 256 * 10, 132, per_thread=8) == (10, 256)
    assert cuda_grid(K.accumulate, 10**9, 132, per_thread=8, blocks_per_sm=3) == (396, 256)
    chunks = M.KERNELS[0]
    assert chunks.template == "chunks"
    assert cuda_grid(chunks, 50, 132) == (50, 256)  # one block per chunk
    assert cuda_grid(chunks, 10**6, 132, blocks_per_sm=3) == (396, 256)


@pytest.mark.parametrize("workers", [2, 3])
def test_threaded_launch_equals_serial(monkeypatch, workers):
    monkeypatch.setenv("VARSTORE_NUM_THREADS", "1")
    serial = NumpyBackend()
    serial._cpu_workers()  # (read now: the variable changes below)
    monkeypatch.setenv("VARSTORE_NUM_THREADS", str(workers))
    threaded = NumpyBackend()
    rng = np.random.default_rng(0)
    n = 3 * MIN_CPU_CHUNK + 5
    x = rng.standard_normal(n).astype(np.float32) * 1000
    serial_out = np.empty(n, np.uint16)
    runs = []
    record_cpu_runs(monkeypatch, K.encode_f32, runs)
    serial.launch(K.encode_f32, n, src=x.view(np.uint32), dst=serial_out, fmt=K.BFLOAT16)
    assert runs == [(0, n)]
    out = np.empty(n, np.uint16)
    runs.clear()
    threaded.launch(K.encode_f32, n, src=x.view(np.uint32), dst=out, fmt=K.BFLOAT16)
    assert sorted(runs) == cpu_chunks(n, workers) and len(runs) == workers  # the launch was split
    np.testing.assert_array_equal(out, serial_out)
    # A one-element operand is not split (it is a scalar for every chunk).
    acc = serial_out.copy()
    one = np.array([0x3F80], np.uint16)
    threaded.launch(K.accumulate_broadcast, n, dst=acc, src=one, src_step=0, sign=1, fmt=K.BFLOAT16)
    expected = serial_out.copy()
    serial.launch(K.accumulate_broadcast, n, dst=expected, src=one, src_step=0, sign=1, fmt=K.BFLOAT16)
    np.testing.assert_array_equal(acc, expected)


@pytest.mark.kernels
@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_an_array_smaller_than_the_launch_is_refused(target):
    """The loops do not check bounds: a launch over more indices than an array holds is
    refused before it runs, and nothing is written."""
    if target == "cuda" and not SIMULATOR and cuda_reason() is not None:
        pytest.skip(f"needs the CUDA simulator or a GPU: {cuda_reason()}")

    x = np.ones(10, np.float32).view(np.uint32)
    out = np.zeros(5, np.uint16)
    with pytest.raises(ValueError, match=r"'encode_f32'.*'dst' has 5 elements; the launch touches 10"):
        run_kernel(target, K.encode_f32, 10, src=x, dst=out, fmt=K.BFLOAT16)
    assert not out.any()
    acc = np.zeros(10, np.uint16)
    with pytest.raises(ValueError, match=r"'accumulate'.*'src' has 3 elements; the launch touches 10"):
        run_kernel(target, K.accumulate, 10, dst=acc, src=np.ones(3, np.uint16), sign=1, fmt=K.BFLOAT16)
    with pytest.raises(ValueError, match=r"'accumulate_broadcast'.*'src' has 3 elements; the launch touches 10"):
        run_kernel(target, K.accumulate_broadcast, 10, dst=acc, src=np.ones(3, np.uint16), src_step=1, sign=1,
                   fmt=K.BFLOAT16)
    assert not acc.any()
    run_kernel(target, K.accumulate_broadcast, 10, dst=acc, src=np.array([0x3F80], np.uint16), src_step=0, sign=1,
               fmt=K.BFLOAT16)  # a one-element operand with step 0 is a scalar
    assert (acc == 0x3F80).all()


def test_fixed_word_arrays_and_read_only_outputs_are_refused():
    """Index and table arrays have one word dtype: any other (float, another byte order,
    unsigned) is refused by name, as is a read-only output; nothing runs."""
    from varstore.kernels import strided as S

    backend = NumpyBackend()
    src = np.arange(10, dtype=np.uint32)
    dst = np.zeros(3, np.uint32)
    for index in (np.array([1, 2, 3], np.float64), np.array([1, 2, 3], ">i8"), np.array([1, 2, 3], np.uint64)):
        with pytest.raises(TypeError, match=rf"'gather_indexed': argument 'index' must be an array of int64; "
                                            rf"received dtype {index.dtype}"):
            backend.launch(S.gather_indexed, 3, dst=dst, index=index, src=src)
    assert not dst.any()
    read_only = np.frombuffer(bytes(6), np.uint16)
    with pytest.raises(ValueError, match="'encode_f32': argument 'dst' is written, and the array given is read-only"):
        backend.launch(K.encode_f32, 3, src=np.ones(3, np.float32).view(np.uint32), dst=read_only, fmt=K.BFLOAT16)
    backend.launch(S.gather_indexed, 3, dst=dst, index=np.array([1, 2, 3]), src=src)
    assert dst.tolist() == [1, 2, 3]


def test_cpu_loops_refuse_regions_and_indices_outside_their_arrays():
    """The CPU loops check their bounds once (regions) or per index (gather, scatter,
    chunk tables) and raise IndexError instead of touching memory outside an array."""
    from varstore.kernels import multi_tensor as M
    from varstore.kernels import strided as S

    backend = NumpyBackend()
    dst = np.zeros(16, np.uint32)
    src = np.arange(4, dtype=np.uint32)
    region = dict(dst=dst, src=src, narrow=1, src_offset=0, src_strides=(1,), shape=(4,), magic=(0,), shift=(0,))
    for offset, stride in ((13, 1), (2, -1)):
        with pytest.raises(IndexError, match="region reaches outside its array"):
            backend.launch(S.copy_region, 4, dst_offset=offset, dst_strides=(stride,), **region)
    assert not dst.any()
    backend.launch(S.copy_region, 4, dst_offset=3, dst_strides=(-1,), **region)  # the last fitting reverse
    assert dst[:5].tolist() == [3, 2, 1, 0, 0]
    for index in (np.array([16]), np.array([-1])):
        with pytest.raises(IndexError, match="index reaches outside its array"):
            backend.launch(S.gather_indexed, 1, dst=np.zeros(1, np.uint32), index=index, src=dst)
    with pytest.raises(IndexError, match="index reaches outside its array"):
        backend.launch(S.scatter_indexed, 1, dst=dst, index=np.array([16]), src=src[:1], src_strides=(0,), shape=(1,),
                       magic=(0,), shift=(0,), narrow=1,
                       conversion=element_conversion("uint32", "uint32"))
    with pytest.raises(IndexError, match="source region reaches outside its array"):  # 5 elements of a 4
        backend.launch(S.scatter_indexed, 5, dst=dst, index=np.arange(5), src=src, src_strides=(1,), shape=(5,),
                       magic=(0,), shift=(0,), narrow=1, conversion=element_conversion("uint32", "uint32"))
    assert dst[:5].tolist() == [3, 2, 1, 0, 0]  # (nothing written)
    tensor = np.ones(8, np.float32)
    tables = dict(chunk_tensor=np.array([0]), chunk_first=np.array([0]), chunk_count=np.array([8]),
                  tensor_address=np.array([tensor.__array_interface__["data"][0]], np.uint64),
                  tensor_start=np.array([0]), tensor_step=np.array([1]), tensor_negate=np.array([0]),
                  like=np.zeros(1, np.uint32), kind=M.STAGE_F32, same=1, small=0,
                  conversion=element_conversion("float32", "float32"))
    with pytest.raises(IndexError, match="chunk reaches outside the staging buffer"):
        backend.launch(M.pack, 1, staging=np.zeros(4, np.uint32), **tables)


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize(("shape", "key"), [((1200, 700), (slice(None, None, 2), slice(1, None, 3))),
                                            ((512, 512), (slice(None, None, 2), slice(1, None, 3))),
                                            ((1200, 700), (slice(None, None, -1), slice(None))),
                                            ((1200, 700), (slice(3, None), 5))])
def test_region_writes_split_by_whole_rows(monkeypatch, workers, shape, key):
    """A region write of at least two chunks' worth of work runs on several threads, each
    taking whole rows of the last axis; the result is NumPy's. A strided row counts its
    inner step (up to a cache line) per element: ``v[::2, 1::3]`` of (512, 512) holds
    43,776 elements, under two chunks, and splits."""
    from varstore.kernels import strided as S

    monkeypatch.setenv("VARSTORE_NUM_THREADS", str(workers))
    import varstore as vs
    from varstore import backends

    backend = backends.get("numpy")
    monkeypatch.setattr(backend, "_workers", None)  # (read again: the variable changed)
    monkeypatch.setattr(backend, "_pool", None)
    monkeypatch.setattr(backend, "_loops", {})  # (compiled loops looked up again: recorded below)
    store = vs.VariableStore(device="cpu")
    v = store.variable(np.zeros(shape, np.float32))
    want = np.zeros(shape, np.float32)
    value = np.arange(want[key].size, dtype=np.float32).reshape(want[key].shape)
    runs = []
    for copy in (S.copy_region, S.copy_rows):  # (reversed whole rows: the row kernel's region)
        record_cpu_runs(monkeypatch, copy, runs)
    v[key] = value
    want[key] = value
    np.testing.assert_array_equal(v.numpy(), want)
    region = want[key]
    inner = region.shape[-1] if region.ndim > 1 and region.strides[-1] * region.shape[-1] != region.strides[-2] \
        else None
    step = min(abs(region.strides[-1]) // region.itemsize, 16) if region.ndim else 1
    work = region.size * max(step, 1)
    assert (len(runs) > 1) == (work >= 2 * MIN_CPU_CHUNK)
    if work >= 2 * MIN_CPU_CHUNK:
        assert len(runs) == min(workers, work // MIN_CPU_CHUNK) and sorted(runs)[0][0] == 0
        assert sorted(runs)[-1][1] == region.size
        if inner:
            assert all(start % inner == 0 and stop % inner == 0 for start, stop in runs)
    runs.clear()
    np.testing.assert_array_equal(v[key], value)  # the read: a gather, its source strided, splits alike
    assert (len(runs) > 1) == (work >= 2 * MIN_CPU_CHUNK)


@pytest.mark.parametrize(("dtype", "value_dtype"), [("bfloat16", "float64"), ("float32", "bfloat16")])
def test_region_casts_split_by_whole_rows(monkeypatch, dtype, value_dtype):
    """A strided write that converts (a region cast: its CPU rows staged) splits over two
    threads by whole rows like the copy, and gives the whole-array cast's bits."""
    import varstore as vs
    from varstore import backends
    from varstore.casting import cast_on_host, region_plan
    from varstore.dtypes import host_dtype, storage_dtype

    monkeypatch.setenv("VARSTORE_NUM_THREADS", "2")
    backend = backends.get("numpy")
    monkeypatch.setattr(backend, "_workers", None)
    monkeypatch.setattr(backend, "_pool", None)
    monkeypatch.setattr(backend, "_loops", {})
    kernel = region_plan(value_dtype, dtype)[0]
    runs = []
    record_cpu_runs(monkeypatch, kernel, runs)
    key = (slice(None, None, 2), slice(1, None, 3))
    v = vs.VariableStore(device="cpu").variable(np.zeros((400, 1500)), dtype=dtype)
    value = cast_on_host(np.random.default_rng(3).normal(0, 100, (200, 500)), "float64", value_dtype)
    v[key] = value.view(host_dtype(value_dtype))
    want = np.zeros((400, 1500), storage_dtype(dtype))
    want[key] = cast_on_host(value, value_dtype, dtype)
    np.testing.assert_array_equal(v.numpy().view(want.dtype), want)
    assert len(runs) == 2 and all(start % 500 == 0 and stop % 500 == 0 for start, stop in runs), runs
    assert sorted(runs)[0][0] == 0 and sorted(runs)[-1][1] == 200 * 500


@pytest.mark.parametrize("missing", ["dst", "dst_strides", "src"])
def test_a_bound_region_launch_missing_an_argument_names_it(missing):
    """``bound_launch`` of a region kernel weighs the work from its strides and arrays
    before binding; a missing one is still refused by the kernel's own message (the
    arguments it takes, what is missing), not a bare KeyError."""
    from varstore import backends
    from varstore.kernels import strided as S

    backend = backends.get("numpy")
    args = dict(dst=np.zeros(64, np.uint32), src=np.zeros(16, np.uint32), dst_offset=0, src_offset=0,
                dst_strides=(4,), src_strides=(1,), shape=(16,), magic=(0,), shift=(0,), narrow=1)
    del args[missing]
    with pytest.raises(TypeError, match=rf"copy_region.*missing \['{missing}'\]"):
        backend.bound_launch(S.copy_region, 16, args, "src")


@pytest.mark.parametrize("n", [4096, 4 * MIN_CPU_CHUNK])  # (the second is split over threads)
def test_a_flat_bound_launch_takes_arrays_as_their_callers_hold_them(n):
    """With ``flat``, given arrays come as their callers hold them (2-D, float32 and
    bfloat16 where the samples are uint32 and uint16 words): the
    run passes on their flat words, and writes what the plain launch writes."""
    from ml_dtypes import bfloat16

    from varstore import backends

    backend = backends.get("numpy")
    rng = np.random.default_rng(n)
    src = rng.standard_normal((n // 64, 64)).astype(np.float32)
    sample = {"src": np.zeros(n, np.uint32), "dst": np.zeros(n, np.uint16), "fmt": K.BFLOAT16}
    run = backend.bound_launch(K.encode_f32, n, sample, ("src", "dst"), flat=True)
    out = np.zeros((n // 64, 64), bfloat16)
    run(src, out)
    want = np.zeros(n, np.uint16)
    backend.launch(K.encode_f32, n, src=src.reshape(-1).view(np.uint32), dst=want, fmt=K.BFLOAT16)
    np.testing.assert_array_equal(out.reshape(-1).view(np.uint16), want)
    assert want.any()


def test_indices_per_thread_follow_the_path_the_launch_takes():
    """A launch's grid counts the indices each thread takes: the wide width where the
    wide path runs (every stepped array's step 0; a region that both arrays walk with
    stride 1), else 1 (every index then takes the general step)."""
    from varstore.kernels import strided as S
    from varstore.kernels.launch import indices_per_thread

    assert indices_per_thread(K.accumulate_broadcast, 8, {"src_step": 0}) == 8
    assert indices_per_thread(K.accumulate_broadcast, 8, {"src_step": 1}) == 1
    contiguous = {"dst_strides": (1,), "src_strides": (1,)}
    assert indices_per_thread(S.copy_region, 8, contiguous) == 8
    assert indices_per_thread(S.copy_region, 8, {**contiguous, "dst_strides": (3,)}) == 1
    assert indices_per_thread(S.copy_region, 8, {**contiguous, "src_strides": (0,)}) == 1
    assert indices_per_thread(S.copy_region, 1, {"dst_strides": (2, 1), "src_strides": (4, 1)}) == 1
