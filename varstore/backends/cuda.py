"""The cuda backend: CuPy storage from a memory pool this backend owns; our kernels are
compiled by numba-cuda to PTX, loaded with the CUDA driver and launched with raw
pointers on CuPy's current stream.

Imported only when the cuda backend is chosen: CuPy and numba-cuda load here, never at
``import varstore``.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from ..indexing import cached_basic_region
from ..kernels import strided
from ..region_axes import contiguous_rows, fill_arguments
from .base import Backend, byte_bounds, given_names, is_device_array, layouts_share_memory
from .cuda_launch import Launcher

_POOL_UNIT = 512  # cupy.cuda.MemoryPool rounds every allocation up to a multiple of this
STAGING_BYTES = 16 << 20  # each of the two pinned host buffers checkpoints stream through


def _load_numba_cuda():
    """numba.cuda, with its low-occupancy warning off unless the user's environment sets
    ``NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS``: small arrays get small grids on purpose, and
    building that warning (colored text) cost more than the launch itself (an H100 run:
    about 0.6 ms per one-element write)."""
    from numba import cuda
    from numba.cuda.core import config

    if "NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS" not in os.environ:
        config.CUDA_LOW_OCCUPANCY_WARNINGS = 0
    return cuda


def memset_pattern(word: np.ndarray) -> tuple[int, int] | None:
    """``(bits, value)``: the narrowest of the driver's 8-, 16- and 32-bit memsets whose
    ``value`` repeated gives the 0-d array ``word``'s bytes (an 8-byte word whose halves
    are equal, e.g. 0.0, takes a 32-bit one); None where none does (8-byte patterns such
    as float64 1.0, which CuPy's own fill writes)."""
    raw = word.tobytes()
    for bits in (8, 16, 32):
        size = bits // 8
        if len(raw) % size == 0 and raw == raw[:size] * (len(raw) // size):
            return bits, int.from_bytes(raw[:size], "little")
    return None


def _driver_memsets():
    """{bits: cuMemsetD<bits>Async} from cuda-bindings (numba-cuda installs it); None
    where it cannot be imported."""
    try:
        from cuda.bindings import driver
    except ImportError:
        return None
    return {8: driver.cuMemsetD8Async, 16: driver.cuMemsetD16Async, 32: driver.cuMemsetD32Async}


_PYTHON_SCALARS = (bool, int, float)  # (a host scalar the region fill writes; anything else: CuPy's setitem)


def _words(storage):
    """``storage`` flat, as the unsigned words of its width (the fill kernels' ``dst``)."""
    return storage.reshape(-1).view(f"u{storage.dtype.itemsize}")


def _bits(word: np.ndarray) -> int:
    """The 0-d array ``word``'s bits, as the fill kernels' ``word`` scalar."""
    return int(word.view(f"u{word.dtype.itemsize}"))


def device_index(device: str) -> int:
    return int(device.split(":", 1)[1])


class CudaBackend(Backend):
    name = "cuda"

    def __init__(self):
        import cupy

        self.xp = cupy
        self._cupy = cupy
        # Temporaries (casts, staging) come from this pool; each store's variables from
        # the store's own (new_pool). Neither is CuPy's global pool, so the bytes
        # varstore holds can be told apart from the rest of the program's.
        self.pool = cupy.cuda.MemoryPool()
        self.out_of_memory_errors = (cupy.cuda.memory.OutOfMemoryError, MemoryError)
        self._sm_count: dict[int, int] = {}
        self._launchers: dict = {}  # (kernel, device id) -> Launcher
        self._numba_streams: dict = {}  # (device id, CuPy stream pointer) -> numba stream
        self.load_lock = threading.Lock()  # (modules load one at a time: see cuda_launch)
        self._staging = None  # two pinned host buffers, made on the first checkpoint
        self._staging_lock = threading.Lock()
        self._memsets = None  # {bits: the driver's memset}, looked up on the first fill

    def devices(self) -> list[str]:
        return [f"cuda:{i}" for i in range(self._cupy.cuda.runtime.getDeviceCount())]

    def fill(self, storage, word):
        # A 1-, 2- or 4-byte pattern is the driver's memset (the copy engine's speed);
        # any other (8-byte words such as float64 1.0), our fill kernel's 16-byte stores.
        if not storage.size:
            return
        word = np.asarray(word, storage.dtype)
        if not storage.flags.c_contiguous:
            with self._cupy.cuda.Device(storage.device.id):
                storage.fill(word[()])
            return
        pattern = memset_pattern(word)
        if self._memsets is None:
            self._memsets = _driver_memsets() or {}
        if pattern is None or not self._memsets or storage.data.ptr % (pattern[0] // 8) or not self._memset(
                storage, *pattern):
            self.launch(strided.fill_words, storage.size, dst=_words(storage), word=_bits(word))

    def setitem(self, storage, key, value):
        # A host scalar written to a region of a basic key: our region fill (no copy of
        # the scalar to the device: it is a parameter of the launch; a region of one axis
        # with stride 1 takes 16-byte stores). Anything else: CuPy's setitem.
        region = word = None
        if storage.size and (type(value) in _PYTHON_SCALARS or isinstance(value, np.generic)):
            region = cached_basic_region(storage.shape, key)  # (IndexError as NumPy's, before anything is written)
            try:
                word = np.asarray(value, storage.dtype)
            except Exception:  # (CuPy's own error for it, below)
                region = None
        if region is None or not region.size or not storage.flags.c_contiguous:
            with self._cupy.cuda.Device(storage.data.device_id):  # (CuPy's kernel runs on the current device)
                storage[key] = value
            return
        if region.size == storage.size:  # (every element: the memset where the pattern allows)
            self.fill(storage, word)
            return
        axes = fill_arguments(region.shape, region.strides, int(storage.size < 2**31))
        fill = strided.fill_rows if contiguous_rows(axes, storage.dtype.itemsize) else strided.fill_region
        self.launch(fill, region.size, dst=_words(storage), dst_offset=region.offset, word=_bits(word), **axes)

    def _memset(self, storage, bits: int, value: int) -> bool:
        """The driver's ``bits``-bit memset of all of the C-contiguous ``storage`` with
        ``value`` on CuPy's current stream; False (nothing written) where it fails."""
        runtime = self._cupy.cuda.runtime
        previous = runtime.getDevice()
        # A driver call needs a current context on this thread: setDevice makes the
        # device's primary context current (CuPy's Device() skips it when the id matches).
        runtime.setDevice(storage.device.id)
        try:
            stream = self._cupy.cuda.get_current_stream().ptr
            (status,) = self._memsets[bits](storage.data.ptr, value, storage.nbytes * 8 // bits, stream)
            return int(status) == 0  # (a memset that fails writes nothing: the fill kernel instead)
        finally:
            if previous != storage.device.id:
                runtime.setDevice(previous)

    def empty(self, shape, dtype, device, pool=None):
        cupy = self._cupy
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        with cupy.cuda.Device(device_index(device)):
            memptr = (pool or self.pool).malloc(nbytes)
            return cupy.ndarray(shape, dtype, memptr=memptr)

    # ------------------------------------------------------------------ memory
    def new_pool(self):
        return self._cupy.cuda.MemoryPool()

    def charged_bytes(self, nbytes):
        return -(-nbytes // _POOL_UNIT) * _POOL_UNIT  # the pool hands out 512-byte multiples

    # A CuPy MemoryPool answers and frees for the current device only: each device in turn.
    def pool_bytes(self, pool, devices):
        used = total = 0
        for device in devices:
            with self._cupy.cuda.Device(device_index(device)):
                used, total = used + pool.used_bytes(), total + pool.total_bytes()
        return used, total

    def free_cached(self, pool, devices):
        for device in devices:
            with self._cupy.cuda.Device(device_index(device)):
                if pool is not None:
                    pool.free_all_blocks()
                self.pool.free_all_blocks()

    def device_memory(self, device):
        """From NVML (nvidia-ml-py) when it is installed, else from the CUDA runtime."""
        cupy = self._cupy
        index = device_index(device)
        try:
            import pynvml

            pynvml.nvmlInit()
            try:  # by PCI bus id: CUDA and NVML may number devices differently
                handle = pynvml.nvmlDeviceGetHandleByPciBusId(cupy.cuda.Device(index).pci_bus_id)
                info = pynvml.nvmlDeviceGetMemoryInfo(handle)
                return int(info.total), int(info.free)
            finally:
                pynvml.nvmlShutdown()
        except Exception:  # no nvidia-ml-py, no NVML library, or an NVML error
            pass
        try:
            with cupy.cuda.Device(index):
                free, total = cupy.cuda.runtime.memGetInfo()
            return int(total), int(free)
        except Exception:
            return None, None

    def owns(self, array) -> bool:
        return isinstance(array, self._cupy.ndarray)

    def asarray(self, obj, device):
        cupy = self._cupy
        with cupy.cuda.Device(device_index(device)):
            if not is_device_array(obj):
                # Host data stays on the host: callers cast there and copy once.
                if hasattr(obj, "__dlpack__") and not hasattr(obj, "__array__"):
                    return np.from_dlpack(obj)
                return np.asarray(obj)
            if isinstance(obj, cupy.ndarray):
                # On another GPU: a copy here (kernels read one device's memory).
                return obj if obj.device.id == device_index(device) else cupy.array(obj, copy=True)
            if hasattr(obj, "__cuda_array_interface__"):
                array = cupy.asarray(obj)
            else:
                array = cupy.from_dlpack(obj)
            return array if array.device.id == device_index(device) else cupy.array(array, copy=True)

    # CuPy orders a copy to the host, its array interface and its DLPack export after the
    # current device's current stream: the array's device is made current for them.
    def to_host(self, array):
        with self._cupy.cuda.Device(array.device.id):
            return self._cupy.asnumpy(array)

    def host_view(self, array):
        return self.to_host(array)

    def scalar_on_host(self, array):
        return None

    def from_host(self, host, device):
        with self._cupy.cuda.Device(device_index(device)):
            return self._cupy.asarray(host)

    def copy_from_host(self, dst, host):
        # One host -> device copy into the existing buffer, no device temporary. CuPy's set() is
        # an async copy on the current stream: from pageable memory the call returns once the
        # source is read (the driver stages it); from page-locked memory the copy runs on, so the
        # caller, who may reuse its buffer at once, waits for it.
        host = np.asarray(host, order="C")
        cupy = self._cupy
        with cupy.cuda.Device(dst.device.id):
            dst.set(host)
            if host.nbytes and self._page_locked(host):
                cupy.cuda.get_current_stream().synchronize()

    def _page_locked(self, host) -> bool:
        runtime = self._cupy.cuda.runtime
        try:
            return runtime.pointerGetAttributes(host.ctypes.data).type == runtime.memoryTypeHost
        except Exception:  # (memory the driver does not know: pageable)
            return False

    def numba_stream(self, device_id: int):
        """numba-cuda's handle of CuPy's current stream (the "numba" launch mechanism):
        kernels run after the work CuPy already queued there."""
        cuda = _load_numba_cuda()
        ptr = self._cupy.cuda.get_current_stream().ptr
        stream = self._numba_streams.get((device_id, ptr))
        if stream is None:
            stream = self._numba_streams[(device_id, ptr)] = cuda.external_stream(ptr)
        return stream

    def sm_count_of(self, device_id: int) -> int:
        if device_id not in self._sm_count:
            attrs = self._cupy.cuda.Device(device_id).attributes
            self._sm_count[device_id] = int(attrs["MultiProcessorCount"])
        return self._sm_count[device_id]

    def launch(self, kernel, n, **args):
        if not n:
            return
        key, values = kernel.bind(args, n)
        self._launcher(kernel, values)(int(n), key, args)

    def bound_launch(self, kernel, n, args, given, flat=False):
        # The driver launch binds once: the loaded function, the grid and the flat
        # parameters but the given ones (see cuda_launch.Launcher.bound). It reads a
        # given array's address and device only: with ``flat``, the array as it is.
        names = given_names(kernel, given)
        if n:
            key, values = kernel.bind(args, n)
            run = self._launcher(kernel, values).bound(int(n), key, args, names)
            if run is not None:
                return run
        return super().bound_launch(kernel, n, args, given, flat)

    def _launcher(self, kernel, values):
        """The launcher of ``kernel`` on the one device that its arrays ``values`` are on."""
        devices = {a.device.id for a in values if isinstance(a, self._cupy.ndarray)}
        if len(devices) != 1:
            raise ValueError(f"Kernel {kernel.name!r} reads and writes one device's memory; its arrays are on "
                             f"devices {sorted(devices)}.")
        device_id = devices.pop()
        launcher = self._launchers.get((kernel, device_id))
        if launcher is None:
            launcher = self._launchers[(kernel, device_id)] = Launcher(self, kernel, device_id)
        return launcher

    def _staging_buffers(self):
        if self._staging is None:
            import cupyx

            self._staging = [cupyx.empty_pinned((STAGING_BYTES,), np.uint8) for _ in range(2)]
        return self._staging

    def write_bytes(self, storage, write):
        # Device -> pinned buffer (async, on the current stream) -> write, two buffers deep:
        # piece k+1 is copied while piece k is written.
        cupy = self._cupy
        flat = storage.reshape(-1).view(cupy.uint8)
        with self._staging_lock, cupy.cuda.Device(storage.device.id):
            buffers = self._staging_buffers()
            piece = buffers[0].size
            pieces = [(start, min(start + piece, flat.size)) for start in range(0, flat.size, piece)]
            stream = cupy.cuda.get_current_stream()
            done = [None, None]

            def copy_out(k):
                start, stop = pieces[k]
                flat[start:stop].get(stream=stream, out=buffers[k % 2][: stop - start], blocking=False)
                done[k % 2] = stream.record()

            try:
                if pieces:
                    copy_out(0)
                for k, (start, stop) in enumerate(pieces):
                    if k + 1 < len(pieces):
                        copy_out(k + 1)  # into the other buffer, written out in step k - 1
                    done[k % 2].synchronize()
                    write(memoryview(buffers[k % 2][: stop - start]))
            finally:
                stream.synchronize()  # no copy may still target the buffers once they are free

    def read_bytes(self, storage, readinto):
        # readinto -> pinned buffer -> device (async), two buffers deep: piece k+1 is read
        # from the file while piece k is copied to the device.
        cupy = self._cupy
        flat = storage.reshape(-1).view(cupy.uint8)
        with self._staging_lock, cupy.cuda.Device(storage.device.id):
            buffers = self._staging_buffers()
            piece = buffers[0].size
            stream = cupy.cuda.get_current_stream()
            done = [None, None]
            try:
                for k, start in enumerate(range(0, flat.size, piece)):
                    stop = min(start + piece, flat.size)
                    if done[k % 2] is not None:
                        done[k % 2].synchronize()  # the copy out of this buffer two steps ago
                    host = buffers[k % 2][: stop - start]
                    readinto(memoryview(host))
                    flat[start:stop].set(host, stream=stream)
                    done[k % 2] = stream.record()
            finally:
                stream.synchronize()

    computes_small_floats = False  # CuPy has no bfloat16/float8: reads cast to float32

    def present(self, storage, dtype):
        return storage  # bfloat16/float8 stay raw words: CuPy has no such dtypes

    def address(self, array) -> int:
        return array.data.ptr

    def aligned(self, array):
        size = array.itemsize
        return array.data.ptr % size == 0 and all(step % size == 0 for step in array.strides)

    def device_of(self, array) -> str:
        return f"cuda:{array.device.id}"

    def copy(self, array):
        with self._cupy.cuda.Device(array.device.id):  # (CuPy copies onto the current device)
            return array.copy()

    def copyto(self, dst, src):
        # CuPy copies an overlapping input of its elementwise kernels, but a contiguous
        # pair goes to one cudaMemcpyAsync, which overlapping ranges would race. A source
        # on another device is made contiguous there first: a contiguous pair is one
        # memcpy between the devices, where CuPy's kernel would need peer access.
        cupy = self._cupy
        if isinstance(src, cupy.ndarray) and src.data.device_id != dst.data.device_id:
            if not src.flags.c_contiguous:
                src = self.copy(src)
        elif self.shares_memory(dst, src):
            src = self.copy(src)
        with cupy.cuda.Device(dst.data.device_id):
            cupy.copyto(dst, src)

    def on_device(self, device):
        return self._cupy.cuda.Device(device_index(device))

    def add_into(self, dst, operand, sign):
        with self._cupy.cuda.Device(dst.data.device_id):
            (self._cupy.add if sign > 0 else self._cupy.subtract)(dst, operand, out=dst)

    def add_same(self, storage, value, dtype, shape, sign):
        cupy = self._cupy
        if (storage is None or not isinstance(value, cupy.ndarray) or value.dtype is not dtype or value.shape != shape
                or value.data.device_id != storage.data.device_id or self.shares_memory(storage, value)):
            return False  # (another device's value: the general path copies it here)
        with cupy.cuda.Device(storage.data.device_id):
            (cupy.add if sign > 0 else cupy.subtract)(storage, value, out=storage)
        return True

    def apart_contiguous(self, storage, value):
        return (type(value) is self._cupy.ndarray and value.flags.c_contiguous
                and value.data.device_id == storage.data.device_id and self.aligned(value)
                and not self.shares_memory(storage, value))  # (aligned: a misaligned load faults on a GPU)

    def shares_memory(self, array, other) -> bool:
        if not isinstance(other, self._cupy.ndarray):
            return False  # host memory
        a_low, a_high = _byte_range(array)
        b_low, b_high = _byte_range(other)
        if a_low >= b_high or b_low >= a_high:
            return False
        return layouts_share_memory((array.data.ptr, array.shape, array.strides, array.itemsize),
                                    (other.data.ptr, other.shape, other.strides, other.itemsize))

    def cuda_array_interface(self, storage) -> dict:
        with self._cupy.cuda.Device(storage.device.id):  # (its "stream" entry: the device's current stream)
            return storage.__cuda_array_interface__

    def synchronize(self, device) -> None:
        with self._cupy.cuda.Device(device_index(device)):  # (the current stream is per device)
            self._cupy.cuda.get_current_stream().synchronize()

    def stream_key(self, device):
        with self._cupy.cuda.Device(device_index(device)):  # (the current stream is per device)
            return self._cupy.cuda.get_current_stream().ptr


def _byte_range(array) -> tuple:
    """``[low, high)`` bytes ``array`` can touch; constant work for the C-contiguous
    arrays that writes take (storage, and sources after ``as_storage_array``)."""
    if array.flags.c_contiguous:
        return array.data.ptr, array.data.ptr + array.nbytes
    return byte_bounds(array.data.ptr, array.shape, array.strides, array.itemsize)

