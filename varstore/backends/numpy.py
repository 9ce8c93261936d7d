"""The numpy backend: NumPy storage; kernels compiled for the CPU with numba."""

from __future__ import annotations

import numpy as np

from ..dtypes import WORD_DTYPES, host_dtype
from .base import Backend, is_device_array


class NumpyBackend(Backend):
    name = "numpy"
    xp = np

    def devices(self) -> list[str]:
        return ["cpu"]

    def empty(self, shape, dtype, device):
        return np.empty(shape, dtype)

    def owns(self, array) -> bool:
        return isinstance(array, np.ndarray)

    def asarray(self, obj, device):
        if is_device_array(obj):
            return _device_to_host(obj)
        try:
            return np.asarray(obj)
        except (TypeError, RuntimeError, BufferError):
            if hasattr(obj, "__dlpack__"):
                return np.from_dlpack(obj)
            raise

    def to_host(self, array):
        return np.array(array, copy=True)

    def host_view(self, array):
        return array

    def from_host(self, host, device):
        return host

    def copy_from_host(self, dst, host):
        np.copyto(dst, host)

    def launch(self, kernel, n, *args):
        if n:
            kernel.cpu(*args)

    def present(self, storage, dtype):
        if dtype in WORD_DTYPES:
            return storage.view(host_dtype(dtype))
        return storage

    readable = present  # ml_dtypes gives NumPy real bfloat16/float8 numbers

    def device_of(self, array) -> str:
        return "cpu"


def _device_to_host(obj) -> np.ndarray:
    """Copy a GPU array (CuPy, torch.cuda, numba...) to the host."""
    try:
        import cupy
    except ImportError as exc:
        raise TypeError(
            f"Cannot read a device array ({type(obj).__name__}) on the numpy backend without "
            f"CuPy installed: copy it to the host first."
        ) from exc
    return cupy.asnumpy(cupy.asarray(obj))
