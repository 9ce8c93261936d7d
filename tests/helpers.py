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
    """Any backend array (NumPy or CuPy; or a NumPy scalar, as ``v[i, j]`` gives one) as
    a NumPy array."""
    if isinstance(array, np.ndarray):
        return array
    if isinstance(array, np.generic):
        return np.asarray(array)
    return array.get()


def data_pointer(array) -> int:
    if isinstance(array, np.ndarray):
        return array.__array_interface__["data"][0]
    return array.data.ptr


def run_kernel(target: str, kernel, n: int, **args) -> None:
    """Run ``kernel`` over ``n`` indices on ``target`` with arguments by name; NumPy
    array arguments are updated in place.

    "cpu" is the numpy backend's launch. On "cuda" the arrays go through numba's own
    device arrays and numba-cuda's launch, so no CuPy is needed and the same call works
    under the simulator.
    """
    if target == "cpu":
        from varstore import backends

        backends.get("numpy").launch(kernel, n, **args)
        return
    from numba import cuda

    from varstore.kernels._targets import simulator_enabled
    from varstore.kernels.launch import numba_launch

    device = {k: cuda.to_device(v) if isinstance(v, np.ndarray) else v for k, v in args.items()}
    sm_count = 1 if simulator_enabled() else cuda.get_current_device().MULTIPROCESSOR_COUNT
    numba_launch(kernel, n, device, device_address, sm_count)
    cuda.synchronize()
    for name, host in args.items():
        if isinstance(host, np.ndarray):
            device[name].copy_to_host(host)


def device_address(array) -> int:
    """The address of a numba device array (host memory under the simulator)."""
    if SIMULATOR:
        return array.__array_interface__["data"][0]
    return array.__cuda_array_interface__["data"][0]


def sample_size(full: int) -> int:
    """How many elements a kernel test may run: everything on CPU/GPU, a slice under the
    simulator (each simulated element costs Python time)."""
    return min(full, 4096) if SIMULATOR else full


def record_cpu_runs(monkeypatch, kernel, runs):
    """Record the (start, stop) of every call of ``kernel``'s CPU loops."""
    loop_for = kernel.loop_for

    def recorded(target, key, args):
        loop, spec = loop_for(target, key, args)

        def run(start, stop, *values):
            runs.append((start, stop))
            return loop(start, stop, *values)

        return run, spec

    monkeypatch.setattr(kernel, "loop_for", recorded)


def strongly_connected_components(successors: dict) -> list[list]:
    """The strongly connected components (Tarjan) of the graph ``{node: successors}``,
    nodes visited in sorted order; each component a list of nodes."""
    order, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(v):
        order[v] = low[v] = len(order)
        stack.append(v)
        on_stack.add(v)
        for w in successors[v]:
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            component = stack[stack.index(v):]
            del stack[stack.index(v):]
            on_stack.difference_update(component)
            components.append(component)

    for v in sorted(successors):
        if v not in order:
            visit(v)
    return components
