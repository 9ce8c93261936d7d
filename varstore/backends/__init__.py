"""Choosing a backend: ``vs.backend()``, ``vs.devices()`` and ``VARSTORE_BACKEND``.

Detection imports CuPy (about 0.6 s) only when it is needed, and never when
``VARSTORE_BACKEND=numpy``. numba's ``cuda.is_available()`` is not used: it says True
under the CUDA simulator.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading

from ..errors import ArgumentTypeError, BackendUnavailableError
from .base import Backend
from .numpy import NumpyBackend

BACKENDS = ("numpy", "cuda")
_instances: dict[str, Backend] = {}
_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def cuda_unavailable_reason() -> str | None:
    """Why the cuda backend cannot run here, or None when it can."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install
        return f"CuPy is not importable ({type(exc).__name__}: {exc}); install varstore[cuda]"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError without a driver
        return f"no usable CUDA driver ({type(exc).__name__}: {exc})"
    if count == 0:
        return "the CUDA driver reports no device"
    if importlib.util.find_spec("numba_cuda") is None:
        return "numba-cuda is not installed; install varstore[cuda]"
    return None


def _forced() -> str | None:
    value = os.environ.get("VARSTORE_BACKEND")
    if value is None or value == "":
        return None
    if value not in BACKENDS:
        raise ValueError(
            f"Invalid value for environment variable VARSTORE_BACKEND. Expected one of "
            f"{list(BACKENDS)}. Received: VARSTORE_BACKEND={value!r}"
        )
    return value


def backend() -> str:
    """The default backend: ``"cuda"`` when CuPy imports and a CUDA device is usable,
    else ``"numpy"``. ``VARSTORE_BACKEND=numpy|cuda`` forces it.

    Raises:
        BackendUnavailableError: ``VARSTORE_BACKEND=cuda`` on a host that cannot run it.
    """
    forced = _forced()
    if forced == "numpy":
        return "numpy"
    reason = cuda_unavailable_reason()
    if forced == "cuda" and reason is not None:
        raise BackendUnavailableError(f"VARSTORE_BACKEND=cuda, but the cuda backend cannot run here: {reason}")
    return "numpy" if reason is not None else "cuda"


def get(name: str) -> Backend:
    """The backend instance called ``name`` (one per process)."""
    instance = _instances.get(name)
    if instance is not None:
        return instance
    with _lock:
        if name not in _instances:
            if name == "cuda":
                reason = cuda_unavailable_reason()
                if reason is not None:
                    raise BackendUnavailableError(f"The cuda backend cannot run here: {reason}")
                from .cuda import CudaBackend  # (CuPy and numba-cuda: loaded when a GPU is used)

                _instances[name] = CudaBackend()
            else:
                _instances[name] = NumpyBackend()
        return _instances[name]


def devices() -> list[str]:
    """Device names of the default backend: ``["cpu"]`` or ``["cuda:0", ...]``."""
    return get(backend()).devices()


def for_device(device) -> tuple[Backend, str]:
    """The backend that runs ``device`` and the device's canonical name.

    ``"cpu"`` always works (the numpy backend); ``"cuda"`` means ``"cuda:0"``.

    Raises:
        ValueError: ``device`` is not a device name of this host.
    """
    if device is None:
        name = backend()
        return get(name), get(name).devices()[0]
    if not isinstance(device, str):
        raise ArgumentTypeError(f"Invalid device: {device!r}. Expected a device name such as 'cpu' or 'cuda:0'.")
    if device == "cpu":
        return get("numpy"), "cpu"
    if device == "cuda":
        device = "cuda:0"
    if device.startswith("cuda:") and device[5:].isdigit():
        reason = cuda_unavailable_reason()
        if reason is None:
            cuda = get("cuda")
            if device in cuda.devices():
                return cuda, device
        known = ["cpu"] + (cuda.devices() if reason is None else [])
        why = f" (CUDA cannot run here: {reason})" if reason else ""
        raise ValueError(f"Invalid device: {device!r}. Expected one of {known}{why}.")
    raise ValueError(f"Invalid device: {device!r}. Expected 'cpu' or 'cuda:N'; this host has {devices()}.")
