"""What each backend's own array library offers: the clock, the ceilings and the baselines.

``NumpyNative`` (NumPy and ml_dtypes on the CPU) and ``CupyNative`` (CuPy on a GPU) have
the same methods; the suite picks one by the backend's name and never asks which it has.
A baseline method returns ``None`` where the library has no such operation (CuPy has no
bfloat16 or float8 casts).
"""

from __future__ import annotations

import os

import numpy as np

from varstore.dtypes import host_dtype

from .measure import CudaEventClock, HostClock

# Buffers are rotated until they span this much, so that small sizes are not timed out of
# a cache that a real workload would not have warm.
CPU_ROTATION_BYTES = 64 * 2**20


def _fsync_write(host: np.ndarray, path: str, fsync: bool = True) -> None:
    with open(path, "wb") as f:
        host.tofile(f)
        f.flush()
        if fsync:
            os.fsync(f.fileno())


class NumpyNative:
    name = "numpy"

    def __init__(self, device: str = "cpu"):
        self.xp = np
        self.clock = HostClock(lambda: None)
        self.rotation_bytes = CPU_ROTATION_BYTES

    def describe(self) -> dict:
        return {"device_name": _cpu_model(), "ceiling_copy": "np.copyto", "ceiling_fill": "ndarray.fill(0)",
                "ceiling_h2d": "np.copyto"}

    # ---- the ceilings
    def copy_fn(self, dst, src):
        return lambda: np.copyto(dst, src)

    def h2d_fn(self, dst, host):
        return lambda: np.copyto(dst, host)

    def fill_fn(self, dst):
        return lambda: dst.fill(0)

    # ---- data
    def from_host(self, host: np.ndarray):
        return host.copy()

    def to_host(self, array) -> np.ndarray:
        return np.asarray(array)

    def release_memory(self) -> None:
        pass

    # ---- baselines
    def astype(self, x, dst: str):
        """(label, fn) casting the array ``x`` (of its host dtype) to ``dst``."""
        numpy_types = ("float16", "float32", "float64")
        label = "NumPy" if x.dtype.name in numpy_types and dst in numpy_types else "ml_dtypes"
        target = host_dtype(dst)
        return label, lambda: x.astype(target)

    def random(self, kind: str, out, seed: int):
        """(label, fn) filling ``out`` (float32 or float64) with NumPy's Philox generator."""
        generator = np.random.Generator(np.random.Philox(seed))
        dtype = out.dtype.type
        if kind == "uniform":
            return "NumPy Philox random(out=)", lambda: generator.random(dtype=dtype, out=out)
        if kind == "normal":
            return "NumPy Philox standard_normal(out=)", lambda: generator.standard_normal(dtype=dtype, out=out)
        return None

    def qr(self, matrix):
        return "numpy.linalg.qr", lambda: np.linalg.qr(matrix)

    def eye(self, shape):
        return "numpy.eye", lambda: np.eye(*shape, dtype=np.float32)

    def fill_value(self, out, value):
        return "ndarray.fill", lambda: out.fill(value)

    def copy_from_host(self, out, host):
        return "np.copyto", lambda: np.copyto(out, host)

    def copy(self, out, src):
        return "np.copyto", lambda: np.copyto(out, src)

    def setitem(self, out, key, value):
        return "NumPy setitem", lambda: out.__setitem__(key, value)

    def getitem_copy(self, array, key):
        return "NumPy a[key].copy()", lambda: array[key].copy()

    def add(self, out, x):
        return "np.add(out=)", lambda: np.add(out, x, out=out)

    def uniform_arrays(self, shape, count: int, limit: float, holder: list):
        """(label, fn): ``count`` new float32 arrays of uniform values in [-limit, limit)."""
        generator = np.random.default_rng(1)

        def make():
            holder[:] = [(generator.random(shape, np.float32) * np.float32(2 * limit) - np.float32(limit))
                         for _ in range(count)]

        return f"NumPy default_rng uniform x{count}", make

    def zeros(self, shape, holder: list):
        def make():
            holder[:] = [np.zeros(shape, np.float32)]

        return "numpy.zeros", make

    def save(self, array, path: str):
        return "tofile + fsync", lambda: _fsync_write(array, path)

    def save_no_fsync(self, array, path: str):
        return "tofile, no fsync", lambda: _fsync_write(array, path, fsync=False)

    def load(self, path: str, holder: list):
        def read():
            holder[:] = [np.fromfile(path, np.float32)]

        return "np.fromfile", read


class CupyNative:
    name = "cupy"

    def __init__(self, device: str = "cuda:0"):
        import cupy

        # Baselines, ceilings and events on the device ours runs on.
        cupy.cuda.Device(int(device.split(":")[1])).use()
        self.cp = cupy
        self.xp = cupy
        self.clock = CudaEventClock(cupy)
        l2 = cupy.cuda.Device().attributes.get("L2CacheSize", 50 * 2**20)
        self.rotation_bytes = 2 * l2
        self._generators = {}

    def describe(self) -> dict:
        cp = self.cp
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return {"device_name": name, "sms": props["multiProcessorCount"],
                "l2_bytes": self.rotation_bytes // 2,
                "ceiling_copy": "cudaMemcpyAsync device to device", "ceiling_fill": "cudaMemsetAsync",
                "ceiling_h2d": "cudaMemcpyAsync from pinned host memory"}

    def _stream(self) -> int:
        return self.cp.cuda.get_current_stream().ptr

    # ---- the ceilings
    def copy_fn(self, dst, src):
        runtime = self.cp.cuda.runtime
        return lambda: runtime.memcpyAsync(dst.data.ptr, src.data.ptr, src.nbytes,
                                           runtime.memcpyDeviceToDevice, self._stream())

    def h2d_fn(self, dst, host):
        runtime = self.cp.cuda.runtime
        pinned = self.cp.cuda.alloc_pinned_memory(host.nbytes)
        staged = np.frombuffer(pinned, host.dtype, host.size).reshape(host.shape)
        staged[...] = host
        keep = (pinned, staged)  # the pinned block lives as long as the function

        def copy(keep=keep):
            runtime.memcpyAsync(dst.data.ptr, keep[1].ctypes.data, host.nbytes,
                                runtime.memcpyHostToDevice, self._stream())

        return copy

    def fill_fn(self, dst):
        runtime = self.cp.cuda.runtime
        return lambda: runtime.memsetAsync(dst.data.ptr, 0, dst.nbytes, self._stream())

    # ---- data
    def from_host(self, host: np.ndarray):
        return self.cp.asarray(host)

    def to_host(self, array) -> np.ndarray:
        return self.cp.asnumpy(array)

    def release_memory(self) -> None:
        self.cp.cuda.get_current_stream().synchronize()
        self.cp.get_default_memory_pool().free_all_blocks()
        self.cp.get_default_pinned_memory_pool().free_all_blocks()

    # ---- baselines
    def astype(self, x, dst: str):
        if dst not in ("float16", "float32", "float64") or x.dtype.name not in ("float16", "float32"):
            return None  # CuPy has no bfloat16 or float8 casts
        return "CuPy astype", lambda: x.astype(dst)

    def random(self, kind: str, out, seed: int):
        cp = self.cp
        if seed not in self._generators:  # one generator per run: curand's setup is not timed
            self._generators[seed] = cp.random.RandomState(seed)
        generator = self._generators[seed]
        if kind == "uniform":
            return "cupy.random.random", lambda: generator.random_sample(out.shape, dtype=out.dtype)
        if kind == "normal":
            return "cupy.random.standard_normal", lambda: generator.standard_normal(out.shape, dtype=out.dtype)
        return None

    def qr(self, matrix):
        return "cupy.linalg.qr", lambda: self.cp.linalg.qr(matrix)

    def eye(self, shape):
        return "cupy.eye", lambda: self.cp.eye(*shape, dtype=self.cp.float32)

    def fill_value(self, out, value):
        return "ndarray.fill", lambda: out.fill(value)

    def copy_from_host(self, out, host):
        return "cupy ndarray.set", lambda: out.set(host)

    def copy(self, out, src):
        return "cupy.copyto", lambda: self.cp.copyto(out, src)

    def setitem(self, out, key, value):
        return "CuPy setitem", lambda: out.__setitem__(key, value)

    def getitem_copy(self, array, key):
        return "CuPy a[key].copy()", lambda: array[key].copy()

    def add(self, out, x):
        return "cupy.add(out=)", lambda: self.cp.add(out, x, out=out)

    def uniform_arrays(self, shape, count: int, limit: float, holder: list):
        generator = self.cp.random.default_rng(1)

        def make():
            holder[:] = [(generator.random(shape, self.cp.float32) * (2 * limit) - limit).astype(self.cp.float32)
                         for _ in range(count)]

        return f"CuPy default_rng uniform x{count}", make

    def zeros(self, shape, holder: list):
        def make():
            holder[:] = [self.cp.zeros(shape, self.cp.float32)]

        return "cupy.zeros", make

    def save(self, array, path: str):
        return "asnumpy + tofile + fsync", lambda: _fsync_write(self.cp.asnumpy(array), path)

    def save_no_fsync(self, array, path: str):
        return "asnumpy + tofile, no fsync", lambda: _fsync_write(self.cp.asnumpy(array), path, fsync=False)

    def load(self, path: str, holder: list):
        def read():
            holder[:] = [self.cp.asarray(np.fromfile(path, np.float32))]

        return "np.fromfile + cupy.asarray", read


NATIVES = {"numpy": NumpyNative, "cuda": CupyNative}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f", {os.cpu_count()} cores"
    except OSError:
        pass
    import platform

    return (platform.processor() or platform.machine()) + f", {os.cpu_count()} cores"
