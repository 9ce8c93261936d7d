"""Tier c: the driver launch (``backends/cuda_launch.py``) on a host without a GPU.

A stand-in for CuPy records what a launch hands the driver: the loaded image, the grid
and the parameter tuple. The kernels are the real ones, compiled to sm_90 PTX (and a
cubin where nvJitLink is installed). Checked: the parameters are ``(0, n, *flat)`` in
the PTX's count and widths, arrays by address; the grid is one wave of the blocks the
driver's occupancy allows; a bound launch passes what the plain launch passes for the
same values, keeps its fixed arrays alive and refuses an array of another device; the
launch runs on the arrays' device and puts the caller's device back. What only a GPU
can show (the driver accepting the image, the kernel's bits and speed) is in the gpu
tier.
"""

from __future__ import annotations

import sys
import weakref
from types import SimpleNamespace

import numpy as np
import pytest

from helpers import SIMULATOR

pytestmark = [
    pytest.mark.kernels,
    pytest.mark.skipif(SIMULATOR, reason="the simulator replaces numba.cuda's compiler"),
    pytest.mark.usefixtures("sm90_without_a_gpu"),
]

numba = pytest.importorskip("numba")

from varstore.kernels import cast as K  # noqa: E402
from varstore.kernels import random_fill as R  # noqa: E402
from varstore.kernels.launch import BLOCKS_PER_SM, THREADS_PER_BLOCK, cuda_arguments  # noqa: E402

SM_COUNT = 132


class DeviceArray(np.ndarray):
    """A host array posing as a CuPy array: ``.data.ptr`` and ``.device.id``."""

    @property
    def data(self):
        return SimpleNamespace(ptr=self.__array_interface__["data"][0], device_id=getattr(self, "_device", 0))

    @property
    def device(self):
        return SimpleNamespace(id=getattr(self, "_device", 0))

    @property
    def flags(self):  # (CuPy's flags: no `aligned`, no `writeable`)
        flags = np.ndarray.flags.__get__(self)
        return SimpleNamespace(c_contiguous=flags.c_contiguous, f_contiguous=flags.f_contiguous,
                               owndata=flags.owndata)

    def __array_finalize__(self, obj):  # (a view is on its base's device)
        self._device = getattr(obj, "_device", 0)

    #: The current device (the stand-in sets it): CuPy copies onto it.
    current = staticmethod(lambda: 0)

    #: Records ``(operation, current device, the arrays' devices)`` (the stand-in sets it).
    record = staticmethod(lambda name, *arrays: None)

    def copy(self, order="C"):
        out = np.ndarray.copy(self, order)
        out._device = DeviceArray.current()
        return out

    def fill(self, value):
        DeviceArray.record("fill", self)
        np.ndarray.fill(self, value)

    def __setitem__(self, key, value):
        DeviceArray.record("setitem", self)
        np.ndarray.__setitem__(self, key, value)

    def set(self, host):  # (CuPy: an async copy from the host on the current stream)
        DeviceArray.record("set", self)
        np.copyto(self, host)


def device_array(values, dtype, device: int = 0) -> DeviceArray:
    array = np.array(values, dtype).view(DeviceArray)
    array._device = device
    return array


class FakeCuPy:
    """What the cuda backend and its launcher use of CuPy, recording the launches.
    ``occupancy``: the blocks per SM the driver reports, or the exception it raises."""

    def __init__(self, occupancy=5):
        self.launches: list = []  # (function, grid, block, parameters, current device)
        self.images: list = []  # what each Module.load was given
        self.loaded_on: list = []  # the device current at each Module.load
        self.current = 0
        self.device_calls: list = []
        self.ndarray = DeviceArray
        fake = self
        self.asarray = lambda host: device_array(host, host.dtype, fake.current)  # (onto the current device)
        self.ran: list = []  # (operation, current device, devices of its arrays)
        self.copyto = self._recorded("copyto", np.copyto)
        self.add = self._recorded("add", np.add)
        self.subtract = self._recorded("subtract", np.subtract)

        class Module:
            def load(self, image):
                fake.images.append(image)
                fake.loaded_on.append(fake.current)

            def get_function(self, entry):
                return _Function(fake, entry)

        def blocks_per_sm(ptr, threads, shared):
            assert threads == THREADS_PER_BLOCK and shared == 0
            if isinstance(occupancy, Exception):
                raise occupancy
            return occupancy

        self.cuda = SimpleNamespace(
            MemoryPool=lambda: None,
            memory=SimpleNamespace(OutOfMemoryError=MemoryError),
            runtime=SimpleNamespace(getDevice=lambda: fake.current, setDevice=self._set_device,
                                    getDeviceCount=lambda: 2),
            Device=lambda index=0: _Device(fake, index),
            function=SimpleNamespace(Module=Module),
            driver=SimpleNamespace(occupancyMaxActiveBlocksPerMultiprocessor=blocks_per_sm),
        )

    def record(self, name, *arrays):
        self.ran.append((name, self.current, sorted({a.device.id for a in arrays if isinstance(a, DeviceArray)})))

    def _recorded(self, name, function):
        """CuPy's ``function``: it runs on the current device, whichever holds its arrays."""
        def run(*args, **kwargs):
            self.record(name, *args, *kwargs.values())
            return function(*args, **kwargs)
        return run

    def _set_device(self, index):
        self.device_calls.append(index)
        self.current = index


class _Device:
    """``cupy.cuda.Device(index)``: its attributes, and as a context, current meanwhile."""

    compute_capability = "90"
    attributes = {"MultiProcessorCount": SM_COUNT}

    def __init__(self, fake, index):
        self.fake, self.index = fake, index

    def __enter__(self):
        self.previous, self.fake.current = self.fake.current, self.index

    def __exit__(self, *exc):
        self.fake.current = self.previous


class _Function:
    def __init__(self, fake, entry):
        self.fake, self.entry, self.ptr = fake, entry, 1000 + len(fake.images)

    def __call__(self, grid, block, parameters):
        self.fake.launches.append((self, grid, block, parameters, self.fake.current))


@pytest.fixture
def fake(monkeypatch):
    """(the stand-in CuPy, a CudaBackend over it), driver launch."""
    monkeypatch.delenv("VARSTORE_CUDA_LAUNCH", raising=False)
    cupy = FakeCuPy()
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setattr(DeviceArray, "current", staticmethod(lambda: cupy.current))
    monkeypatch.setattr(DeviceArray, "record", staticmethod(cupy.record))
    from varstore.backends.cuda import CudaBackend

    backend = CudaBackend()
    backend._memsets = {}  # (no driver memset: fills are CuPy's, on fake addresses)
    return cupy, backend


def _cast_args(n, device=0):
    rng = np.random.default_rng(n)
    return {"src": device_array(rng.standard_normal(n).astype(np.float32).view(np.uint32), np.uint32, device),
            "dst": device_array(np.zeros(n), np.uint16, device), "fmt": K.BFLOAT16}


def _typed(parameters) -> list:
    return [(type(p), p.item() if isinstance(p, np.generic) else p) for p in parameters]


def test_driver_launch_passes_the_ptx_parameters_and_a_one_wave_grid(fake):
    cupy, backend = fake
    n = 1 << 22
    args = _cast_args(n)
    backend.launch(K.encode_f32, n, **args)
    (function, grid, block, parameters, device) = cupy.launches[-1]
    loop, spec = K.encode_f32.loop_for("ptx:9.0", K.encode_f32.bind(args, n)[0], args)
    assert function.entry == loop.entry and cupy.images[-1] in (loop.cubin, loop.ptx.encode())
    assert len(parameters) == len(loop.params)  # start, stop, then the flat list
    assert parameters[:2] == (0, n) and _typed(parameters[2:]) == _typed(cuda_arguments(K.encode_f32, spec, args,
                                                                                        lambda a: a.data.ptr))
    assert parameters[2] == args["src"].data.ptr and parameters[3] == args["dst"].data.ptr
    assert all(type(p) is np.uint32 for p in parameters[4:])  # the format's eight 32-bit fields
    # 8 indices per thread (2 x 16-byte loads, 1 x 16-byte store); 5 blocks fit per SM
    assert grid == (SM_COUNT * 5,) and block == (THREADS_PER_BLOCK,) and device == 0
    backend.launch(K.encode_f32, 1000, **_cast_args(1000))
    assert cupy.launches[-1][1] == (-(-1000 // 8 // THREADS_PER_BLOCK),)  # a small launch: no more blocks than work


def test_a_stepped_operand_gets_the_wide_grid_only_with_step_0(fake):
    cupy, backend = fake
    n = 8 * THREADS_PER_BLOCK * 10
    dst = device_array(np.zeros(n), np.uint16)
    for step, blocks in [(0, 10), (1, 80)]:  # 8 indices per thread on the wide path, else 1
        src = device_array(np.ones(n), np.uint16)
        backend.launch(K.accumulate_broadcast, n, dst=dst, src=src, src_step=step, sign=1, fmt=K.BFLOAT16)
        assert cupy.launches[-1][1] == (blocks,)


def test_the_fixed_geometry_where_the_driver_gives_no_occupancy(monkeypatch):
    monkeypatch.delenv("VARSTORE_CUDA_LAUNCH", raising=False)
    cupy = FakeCuPy(occupancy=RuntimeError("no occupancy API"))
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    from varstore.backends.cuda import CudaBackend

    n = 1 << 22
    CudaBackend().launch(K.encode_f32, n, **_cast_args(n))
    assert cupy.launches[-1][1] == (SM_COUNT * BLOCKS_PER_SM,)


def test_launches_run_on_the_arrays_device_and_restore_the_callers(fake):
    cupy, backend = fake
    cupy.current = 1
    backend.launch(K.encode_f32, 64, **_cast_args(64, device=0))
    assert cupy.launches[-1][4] == 0 and cupy.current == 1 and cupy.device_calls[-2:] == [0, 1]
    args = {**_cast_args(64), "dst": device_array(np.zeros(64), np.uint16, device=1)}
    with pytest.raises(ValueError, match=r"one device's memory; its arrays are on devices \[0, 1\]"):
        backend.launch(K.encode_f32, 64, **args)


def test_a_bound_launch_loads_its_module_on_its_own_device(fake):
    """A module loads into the current device's context: a launch bound (its module
    loaded) while another device is current loads it on the arrays' device, then
    restores the caller's device."""
    cupy, backend = fake
    cupy.current = 1
    run = backend.bound_launch(K.encode_f32, 64, _cast_args(64, device=0), "dst")
    assert cupy.loaded_on == [0] and cupy.current == 1
    run(device_array(np.zeros(64), np.uint16))
    assert cupy.launches[-1][4] == 0 and cupy.current == 1
    backend.launch(K.encode_f32, 64, **_cast_args(64, device=0))  # (the same specialization: loaded once)
    assert cupy.loaded_on == [0]


def test_copies_land_on_the_arrays_device(fake):
    """The backend's copies (an overlapping source, a value made C-contiguous) stay on
    the device of the array copied, whichever device is current (CuPy copies onto the
    current one), so the launch that reads them finds one device's memory."""
    cupy, backend = fake
    cupy.current = 0
    array = device_array(np.arange(12).reshape(3, 4), np.float32, device=1).T
    copy = backend.copy(array)
    assert copy.device.id == 1 and cupy.current == 0
    assert copy.flags.c_contiguous and np.array_equal(np.asarray(copy), np.asarray(array))


def test_the_array_modules_own_operations_run_on_the_arrays_device(fake):
    """CuPy runs its ufuncs, copies and fills on the current device, whichever device
    holds their arrays: the backend's copyto, add_into and fill, the same-dtype cast
    and the Identity initializer make the arrays' device current meanwhile, and put the
    caller's device back."""
    from varstore import casting, initializers

    cupy, backend = fake
    cupy.current = 0
    dst = device_array(np.zeros((3, 3)), np.float32, device=1)
    src = device_array(np.arange(9).reshape(3, 3), np.float32, device=1)
    backend.copyto(dst, src)
    backend.add_into(dst, src, 1)
    backend.add_into(dst, src[0, 0], -1)
    casting.cast_into(backend, src, "float32", dst, "float32")
    backend.fill(dst[:, ::2], 2.5)  # (not contiguous: CuPy's fill)
    assert [(name, current) for name, current, _ in cupy.ran] == [("copyto", 1), ("add", 1), ("subtract", 1),
                                                                  ("copyto", 1), ("fill", 1)]
    assert all(devices == [1] for *_, devices in cupy.ran) and cupy.current == 0
    np.testing.assert_array_equal(np.asarray(dst), np.where(np.arange(3) % 2 == 0, 2.5, np.arange(9).reshape(3, 3)))
    cupy.ran.clear()
    initializers.Identity(gain=2.0).fill(backend, dst, "float32")  # (zeros: our fill kernel; the diagonal: CuPy)
    assert cupy.ran == [("fill", 1, [1])] and cupy.current == 0 and "fill_words" in cupy.launches[-1][0].entry
    np.testing.assert_array_equal(np.diag(np.asarray(dst)), [2, 2, 2])
    with backend.on_device("cuda:1"):
        assert cupy.current == 1
    assert cupy.current == 0
    cupy.ran.clear()
    backend.setitem(dst, [0, 2], np.float32(7))  # (an advanced key: CuPy's setitem)
    assert cupy.ran == [("setitem", 1, [1])] and cupy.current == 0 and np.asarray(dst)[[0, 2]].tolist() == [[7] * 3] * 2


def test_fills_and_scalar_writes_launch_our_fill_kernels_on_the_storages_device(fake):
    """A fill whose pattern the driver's memset cannot write (float64 1.0) is our
    ``fill_words``; a host scalar written to a region of a basic key is our
    ``fill_region`` (the scalar's bits a parameter of the launch), all of the storage
    a fill; a device scalar or an advanced key is CuPy's setitem. Each on the
    storage's device, the caller's put back."""
    cupy, backend = fake
    cupy.current = 0
    dst = device_array(np.zeros((3, 4)), np.float64, device=1)
    one = int(np.float64(1.0).view(np.uint64))
    backend.fill(dst, 1.0)
    function, _, _, parameters, device = cupy.launches[-1]
    assert "fill_words" in function.entry and device == 1 and _typed(parameters[:2]) == [(int, 0), (int, 12)]
    assert _typed(parameters[-1:]) == [(np.uint64, one)]
    backend.setitem(dst, (slice(None), slice(1, None, 2)), 2.5)  # (3 rows of 2, from element 1)
    function, _, _, parameters, device = cupy.launches[-1]
    assert "fill_region" in function.entry and device == 1 and _typed(parameters[:2]) == [(int, 0), (int, 6)]
    assert int(parameters[3]) == 1 and int(parameters[-1]) == int(np.float64(2.5).view(np.uint64))
    assert [int(p) for p in parameters[4:6]] == [2, 6]  # (stride, extent: the rows merged into one axis)
    backend.setitem(dst, Ellipsis, np.float64(1.0))  # (every element: a fill)
    assert "fill_words" in cupy.launches[-1][0].entry and len(cupy.launches) == 3
    assert cupy.ran == [] and cupy.current == 0
    backend.setitem(dst, 0, device_array(np.array(3.0), np.float64, device=1))  # (a device scalar: not read here)
    assert cupy.ran == [("setitem", 1, [1])] and len(cupy.launches) == 3 and cupy.current == 0
    for other in (None, "1.5", [2.0]):  # (not a host scalar: CuPy's setitem, and its error where it has one)
        try:
            backend.setitem(dst, 1, other)
        except Exception:
            pass
    assert len(cupy.launches) == 3 and [name for name, *_ in cupy.ran] == ["setitem"] * 4
    with pytest.raises(IndexError):
        backend.setitem(dst, (3, 0), 1.0)  # (our parse's error, before anything is written)
    assert len(cupy.launches) == 3


def test_a_prepared_write_takes_a_contiguous_array_apart_on_the_storages_device(fake):
    cupy, backend = fake
    storage = device_array(np.zeros((4, 6)), np.float32, device=1)
    value = device_array(np.ones((2, 3)), np.float32, device=1)
    assert backend.apart_contiguous(storage, value)
    assert not backend.apart_contiguous(storage, device_array(np.ones((2, 3)), np.float32, device=0))
    assert not backend.apart_contiguous(storage, value.T)  # (not C-contiguous)
    assert not backend.apart_contiguous(storage, storage[1:3])  # (its own memory)
    assert not backend.apart_contiguous(storage, np.ones((2, 3), np.float32))  # (host memory)


def test_assign_adds_shortcut_adds_on_the_storages_device_and_refuses_an_overlap(fake):
    cupy, backend = fake
    storage = device_array(np.arange(6), np.float32, device=1)
    value = device_array(np.ones(6), np.float32, device=1)
    assert backend.add_same(storage, value, storage.dtype, (6,), -1)
    assert cupy.ran == [("subtract", 1, [1])] and cupy.current == 0
    np.testing.assert_array_equal(np.asarray(storage), np.arange(6) - 1)
    assert not backend.add_same(storage, storage[::-1], storage.dtype, (6,), 1)  # (CuPy might race)
    assert not backend.add_same(storage, value, np.dtype(">f4"), (6,), 1)  # (not the dtype object)
    assert not backend.add_same(None, value, storage.dtype, (6,), 1)  # (released)
    assert not backend.add_same(storage, device_array(np.ones(6), np.float32, device=0), storage.dtype, (6,), 1)
    assert len(cupy.ran) == 1


def test_a_copy_from_another_device_is_one_contiguous_copy(fake):
    """A strided source on device 0 for a destination on device 1 is made contiguous on
    device 0 first (a contiguous pair is one memcpy between devices; CuPy's kernel
    would need peer access), then copied with device 1 current."""
    cupy, backend = fake
    dst = device_array(np.zeros((3, 4)), np.float32, device=1)
    src = device_array(np.arange(12).reshape(4, 3), np.float32, device=0).T
    copies = []
    copy = backend.copy
    backend.copy = lambda array: copies.append(array.device.id) or copy(array)
    backend.copyto(dst, src)
    ((name, current, devices),) = cupy.ran
    assert copies == [0] and (name, current, devices) == ("copyto", 1, [0, 1]) and cupy.current == 0
    backend.copyto(dst, np.ascontiguousarray(src).view(DeviceArray))  # (contiguous: as it is)
    assert copies == [0]
    np.testing.assert_array_equal(np.asarray(dst), np.arange(12).reshape(4, 3).T)


def test_a_host_gradient_goes_to_the_stores_device(fake):
    """A host gradient for a store on cuda:1 (device 0 current) is copied once to
    device 1, C-contiguous, before the optimizer's kernel reads it by address."""
    from varstore.multi_tensor import checked_gradient

    cupy, backend = fake
    host = np.arange(12, dtype=np.float32).reshape(3, 4).T  # (strided)
    array, dtype = checked_gradient(host, SimpleNamespace(shape=(4, 3), path="w"), backend, "cuda:1", 0)
    assert type(array) is DeviceArray and array.device.id == 1 and array.flags.c_contiguous and cupy.current == 0
    assert dtype == "float32" and np.array_equal(np.asarray(array), host)


def test_device_gradients_and_operands_are_checked_for_alignment_without_numpys_flags(fake):
    """CuPy's flags have no ``aligned``: the alignment the kernels need comes from the
    address and the strides (``Backend.aligned``). A device gradient, aligned, is taken as
    it is; one whose elements start off their itemsize is copied first."""
    from varstore.multi_tensor import checked_gradient

    cupy, backend = fake
    whole = device_array(np.arange(12), np.float32, device=1)
    assert not hasattr(whole.flags, "aligned") and backend.aligned(whole) and backend.aligned(whole[1::2])
    raw = np.zeros(4 * 6 + 1, np.uint8).view(DeviceArray)
    raw._device = 1
    odd = raw[1:].view(np.float32)  # (starts one byte past a float's boundary)
    assert odd.shape == (6,) and not backend.aligned(odd)
    assert not backend.aligned(whole.view(np.uint8)[1:9].view(np.float32))
    variable = SimpleNamespace(shape=(12,), path="w")
    array, dtype = checked_gradient(whole, variable, backend, "cuda:1", 0)
    assert array is whole and dtype == "float32"
    array, _ = checked_gradient(odd, SimpleNamespace(shape=(6,), path="w"), backend, "cuda:1", 0)
    assert array is not odd and backend.aligned(array) and np.array_equal(np.asarray(array), np.zeros(6))
    from varstore.foreach import _operand

    assert _operand(variable, whole, backend, "cuda:1", "assign_add", {}) == (whole, "float32", True)
    from varstore.values import as_storage_array

    storage = device_array(np.zeros(6), np.float32, device=1)
    assert backend.apart_contiguous(storage, device_array(np.ones(6), np.float32, device=1))
    assert not backend.apart_contiguous(storage, odd)  # (a prepared write would read it as it is)
    backend.asarray = lambda array, device: array  # (CuPy's arrays are its own; the stand-in's pass for NumPy's)
    taken, dtype = as_storage_array(odd, backend, "cuda:1")
    assert taken is not odd and backend.aligned(taken) and dtype == "float32"
    assert as_storage_array(whole, backend, "cuda:1")[0] is whole


class _PerDevicePool:
    """CuPy's MemoryPool: one pool per device, which answers and frees for the current one."""

    def __init__(self, fake, used):
        self.fake, self.used, self.freed = fake, dict(used), []

    def used_bytes(self):
        return self.used.get(self.fake.current, 0)

    def total_bytes(self):
        return 2 * self.used.get(self.fake.current, 0)

    def free_all_blocks(self):
        self.freed.append(self.fake.current)


def test_a_stores_pool_is_counted_and_freed_on_the_devices_it_allocated_on(fake):
    """A store on cuda:1, used with device 0 current: its memory limit, its memory_info and
    free_cached read and free the pool's part on device 1 (CuPy's pool answers for the
    current device only), and the caller's device stays current."""
    from varstore.memory import OutOfMemoryError, StoreMemory

    cupy, backend = fake
    pool = _PerDevicePool(cupy, {0: 0, 1: 2000})
    backend.pool = _PerDevicePool(cupy, {})  # (the temporaries')
    backend.new_pool = lambda: pool
    backend.empty = lambda shape, dtype, device, pool=None: device_array(np.zeros(shape), dtype, int(device[-1]))
    backend.device_memory = lambda device: (None, None)
    memory = StoreMemory(backend, limit_bytes=3500)
    assert memory.info("cuda:1", 0)["pool_used_bytes"] == 2000  # (the store's own device, before any variable)
    memory.allocate(backend, (200,), np.dtype(np.float32), "cuda:1", "w")  # 800 bytes, 1024 charged: 3024
    pool.used[1] = 3024
    with pytest.raises(OutOfMemoryError, match="3024 bytes in use"):
        memory.allocate(backend, (100,), np.dtype(np.float32), "cuda:1", "v")  # 512 more: past 3500
    assert memory.info("cuda:1", 1)["pool_used_bytes"] == 3024 and cupy.current == 0
    from varstore import backends

    host = memory.allocate(backends.get("numpy"), (2,), np.dtype(np.int64), "cpu", "adam/iteration")  # (16 bytes)
    assert host.shape == (2,) and memory.variable_bytes == 800 + 16  # (an optimizer's counter, beside the pool)
    memory.free_cached("cuda:1")
    assert pool.freed == [1] and backend.pool.freed == [1] and cupy.current == 0
    memory.limit_bytes = 10_000
    memory.allocate(backend, (1,), np.dtype(np.float32), "cuda:0", "x")  # (another device: both counted)
    pool.used[0] = 100
    assert memory.info("cuda:1", 2)["pool_used_bytes"] == 3124
    memory.free_cached("cuda:1")
    assert pool.freed == [1, 1, 0] and cupy.current == 0
    tried = []

    def out_of_memory_once(shape, dtype, device, pool=None):
        tried.append(device)
        if len(tried) == 1:
            raise backend.out_of_memory_errors[0]("out of memory")
        return device_array(np.zeros(shape), dtype, int(device[-1]))

    backend.empty = out_of_memory_once
    memory.allocate(backend, (4,), np.dtype(np.float32), "cuda:1", "y")  # (the retry frees device 1's blocks)
    assert tried == ["cuda:1", "cuda:1"] and pool.freed == [1, 1, 0, 1] and cupy.current == 0


def test_a_random_fills_ragged_tail_is_copied_on_the_storages_device(fake):
    """A fill of 7 float32 elements (groups of 4): the kernel fills 4, a scratch group of
    4 on the same device draws the tail, and CuPy's copy of its first 3 runs with the
    storage's device current (as our launches do), not the caller's."""
    from varstore.random import fill_random

    cupy, backend = fake
    backend.empty = lambda shape, dtype, device, pool=None: device_array(np.zeros(shape), dtype, int(device[-1]))
    storage = device_array(np.zeros(7), np.float32, device=1)
    fill_random(backend, storage, "float32", 5, "uniform", 0.0, 1.0)
    assert [launch[-1] for launch in cupy.launches] == [1, 1] and cupy.ran == [("copyto", 1, [1])]
    assert cupy.current == 0


def test_an_optimizers_step_count_is_added_on_its_own_device(fake):
    from varstore.optimizers import SGD

    cupy, backend = fake
    count = device_array(np.array(4), np.int64, device=1)
    optimizer = SGD(0.1)
    optimizer._iterations = SimpleNamespace(stored=SimpleNamespace(backend=backend, storage=count),
                                            _live_storage=lambda: count)
    optimizer._count_step()
    assert int(count) == 5 and cupy.ran == [("add", 1, [1])] and cupy.current == 0


def test_a_device_scalar_fills_a_variable_on_the_device_without_reading_it(fake):
    """``v.assign(x)`` with a 0-d device array: converted on the device (a launch) and
    broadcast by CuPy on the storage's device; never copied to the host, which would wait
    for the device's queued work."""
    from varstore.values import write

    cupy, backend = fake
    backend.host_view = lambda array: pytest.fail("a device scalar was read on the host")
    backend.empty = lambda shape, dtype, device, pool=None: device_array(np.zeros(shape), dtype, int(device[-1]))
    storage = device_array(np.zeros((2, 3)), np.float32, device=1)
    write(backend, storage, "float32", device_array(np.array(2.5), np.float32, device=1), "float32")
    assert cupy.ran == [("setitem", 1, [1])] and cupy.launches == [] and cupy.current == 0
    assert np.array_equal(np.asarray(storage), np.full((2, 3), 2.5))
    write(backend, storage, "float32", device_array(np.array(1.5), np.float64, device=1), "float64")
    assert [launch[-1] for launch in cupy.launches] == [1] and cupy.ran[1:] == [("setitem", 1, [1])]


def test_copies_between_the_host_and_a_device_run_on_its_stream_and_page_locked_ones_are_waited_for(fake):
    """A copy to or from the host runs with the array's device current (CuPy orders it
    after that device's current stream); a copy from page-locked host memory, which
    CuPy's set() leaves running, is waited for before the call returns (the caller may
    refill its buffer at once); one from pageable memory is not (the driver has read it)."""
    cupy, backend = fake
    waited, pinned = [], set()
    cupy.cuda.get_current_stream = lambda: SimpleNamespace(synchronize=lambda: waited.append(cupy.current))
    cupy.cuda.runtime.memoryTypeHost = 1
    cupy.cuda.runtime.pointerGetAttributes = lambda ptr: SimpleNamespace(type=1 if ptr in pinned else 2)
    cupy.asnumpy = cupy._recorded("asnumpy", lambda array: np.array(array))
    dst = device_array(np.zeros(4), np.float32, device=1)
    host = np.arange(4, dtype=np.float32)
    backend.copy_from_host(dst, host)
    assert waited == [] and cupy.ran == [("set", 1, [1])] and np.array_equal(np.asarray(dst), host)
    pinned.add(host.ctypes.data)
    backend.copy_from_host(dst, host)
    assert waited == [1] and cupy.current == 0
    assert np.array_equal(backend.to_host(dst), host) and cupy.ran[-1] == ("asnumpy", 1, [1]) and cupy.current == 0


@pytest.mark.parametrize("n", [1000, 1 << 20])
def test_bound_launches_pass_what_the_plain_launch_passes(fake, n):
    """Arrays given (a prepared cast's output, an accumulate's two operands) and scalars
    given (a random fill's key and range) take the places and widths of the plain
    launch's parameters."""
    cupy, backend = fake
    sample = _cast_args(n)
    run = backend.bound_launch(K.encode_f32, n, sample, "dst")
    for _ in range(2):
        other = _cast_args(n)
        run(other["dst"])
        bound = cupy.launches[-1]
        backend.launch(K.encode_f32, n, **{**sample, "dst": other["dst"]})
        plain = cupy.launches[-1]
        assert bound[1:3] == plain[1:3] and _typed(bound[3]) == _typed(plain[3])
        assert bound[3][3] == other["dst"].data.ptr != sample["dst"].data.ptr

    dst, src = device_array(np.zeros(n), np.uint16), device_array(np.ones(1), np.uint16)
    acc = {"dst": dst, "src": src, "src_step": 0, "sign": -1, "fmt": K.BFLOAT16}
    run = backend.bound_launch(K.accumulate_broadcast, n, acc, ("dst", "src"))
    dst2, src2 = device_array(np.zeros(n), np.uint16), device_array(np.ones(1), np.uint16)
    run(dst2, src2)
    bound = cupy.launches[-1]
    backend.launch(K.accumulate_broadcast, n, **{**acc, "dst": dst2, "src": src2})
    assert _typed(bound[3]) == _typed(cupy.launches[-1][3]) and bound[1] == cupy.launches[-1][1]

    kernel = R.FILL_KERNELS[(R.UNIFORM, False)]
    out = device_array(np.zeros(4 * n), np.uint32)
    fill = {"dst": out, "first": 0, "k0": 1, "k1": 2, "a": 0.0, "b": 1.0, "encode": 0, "fmt": K.BFLOAT16}
    run = backend.bound_launch(kernel, n, fill, ("dst", "k0", "k1", "a", "b"))
    run(out, 2**32 - 1, 7, -1.5, 2.5)
    bound = cupy.launches[-1]
    backend.launch(kernel, n, **{**fill, "k0": 2**32 - 1, "k1": 7, "a": -1.5, "b": 2.5})
    assert _typed(bound[3]) == _typed(cupy.launches[-1][3])


def test_a_flat_bound_launch_takes_the_callers_array_by_its_address(fake):
    """With ``flat``, a given array comes as its caller holds it (here a 2-D float16
    array where the sample is uint16 words): the driver launch reads only its address
    and device, so no view is made per call."""
    cupy, backend = fake
    sample = _cast_args(64)
    run = backend.bound_launch(K.encode_f32, 64, sample, "dst", flat=True)
    value = device_array(np.zeros((8, 8)), np.float16)
    run(value)
    bound = cupy.launches[-1]
    backend.launch(K.encode_f32, 64, **{**sample, "dst": value.reshape(-1).view(np.uint16)})
    assert _typed(bound[3]) == _typed(cupy.launches[-1][3]) and bound[3][3] == value.data.ptr
    with pytest.raises(ValueError, match="bound on device 0; an array on device 1 was given"):
        run(device_array(np.zeros((8, 8)), np.float16, device=1))


def test_bound_launches_hold_their_fixed_arrays_and_check_the_given_ones(fake):
    cupy, backend = fake
    args = _cast_args(256)
    source = weakref.ref(args["src"])
    run = backend.bound_launch(K.encode_f32, 256, args, "dst")
    del args
    assert source() is not None  # (its address is in every launch the bound call makes)
    with pytest.raises(ValueError, match="bound on device 0; an array on device 1 was given"):
        run(device_array(np.zeros(256), np.uint16, device=1))
    run_fmt = backend.bound_launch(K.encode_f32, 256, _cast_args(256), ("dst", "fmt"))
    launches = len(cupy.launches)
    with pytest.raises(ValueError, match=r"takes 8 parameter\(s\) for this argument; the value given gives 7"):
        run_fmt(device_array(np.zeros(256), np.uint16), K.BFLOAT16[:7])  # (would shift the parameters after it)
    assert len(cupy.launches) == launches
    with pytest.raises(TypeError, match=r"\['nope'\] are not arguments of kernel 'encode_f32'"):
        backend.bound_launch(K.encode_f32, 256, _cast_args(256), ("dst", "nope"))
    del run
    assert source() is None


def test_the_numba_mechanism_binds_nothing(fake, monkeypatch):
    cupy, backend = fake
    monkeypatch.setenv("VARSTORE_CUDA_LAUNCH", "numba")
    from varstore.backends.cuda import CudaBackend
    from varstore.backends.cuda_launch import BoundLaunch

    run = CudaBackend().bound_launch(K.encode_f32, 64, _cast_args(64), "dst")
    assert not isinstance(run, BoundLaunch) and callable(run) and cupy.launches == []


def test_the_stream_key_is_the_current_stream_of_the_arrays_device(fake):
    """``CudaBackend.stream_key``: the current stream of the device asked for (CuPy's
    current stream is per device), with the caller's device current again after."""
    cupy, backend = fake
    cupy.cuda.get_current_stream = lambda: SimpleNamespace(ptr=1000 + cupy.current)
    assert backend.stream_key("cuda:1") == 1001 and cupy.current == 0
    assert backend.stream_key("cuda:0") == 1000
