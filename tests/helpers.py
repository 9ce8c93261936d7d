"""Helpers shared by the tests (importable: pytest puts tests/ on the path)."""

from __future__ import annotations

import os

import numpy as np

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def cuda_reason():
    """Why the cuda backend cannot run in this process, or None."""
    from varstore.backends import cuda_unavailable_reason

    return cuda_unavailable_reason()


def to_host(array) -> np.ndarray:
    """Any backend array (NumPy or CuPy) as a NumPy array."""
    if isinstance(array, np.ndarray):
        return array
    return array.get()


def data_pointer(array) -> int:
    if isinstance(array, np.ndarray):
        return array.__array_interface__["data"][0]
    return array.data.ptr


def run_kernel(target: str, kernel, *args) -> None:
    """Run ``kernel`` on ``target``; NumPy array arguments are updated in place.

    On "cuda" the arrays go through numba's own device arrays, so no CuPy is needed and
    the same call works under the simulator.
    """
    arrays = [a for a in args if isinstance(a, np.ndarray)]
    n = max((a.size for a in arrays), default=0)
    if target == "cpu":
        kernel.cpu(*args)
        return
    from numba import cuda

    from varstore.kernels._targets import simulator_enabled
    from varstore.kernels.launch import grid_for

    device_args = [cuda.to_device(a) if isinstance(a, np.ndarray) else a for a in args]
    sm_count = 1 if simulator_enabled() else cuda.get_current_device().MULTIPROCESSOR_COUNT
    blocks, threads = grid_for(n, sm_count, simulator_enabled())
    kernel.cuda[blocks, threads](*device_args)
    cuda.synchronize()
    for host, dev in zip(args, device_args):
        if isinstance(host, np.ndarray):
            dev.copy_to_host(host)


def sample_size(full: int) -> int:
    """How many elements a kernel test may run: everything on CPU/GPU, a slice under the
    simulator (each simulated element costs Python time)."""
    return min(full, 4096) if SIMULATOR else full
