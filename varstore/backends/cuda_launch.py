"""The driver launch of the generated CUDA loops: per kernel and device a
:class:`Launcher` loads each specialization's cubin (else PTX) with the CUDA driver
through CuPy, sizes its grid from the driver's occupancy, and launches it with raw
pointers and typed scalars on CuPy's current stream; :class:`BoundLaunch` is such a
launch made once for repeated calls. ``VARSTORE_CUDA_LAUNCH=numba`` launches through
numba-cuda instead.
"""

from __future__ import annotations

import os
import warnings

from ..kernels.launch import (
    BLOCKS_PER_SM,
    THREADS_PER_BLOCK,
    argument_slots,
    cuda_arguments,
    cuda_grid,
    flat_scalar,
    indices_per_thread,
    numba_launch,
)
from ..kernels.wide import vector_width

#: How kernels are launched: "driver" (default: the PTX numba-cuda compiled, loaded with
#: the CUDA driver through CuPy and launched with raw pointers and typed scalars) or
#: "numba" (numba-cuda's own launch of the same loop; for comparison and as a fallback).
LAUNCH_MECHANISMS = ("driver", "numba")


def launch_mechanism() -> str:
    value = os.environ.get("VARSTORE_CUDA_LAUNCH", "driver")
    if value not in LAUNCH_MECHANISMS:
        raise ValueError(f"Invalid value for environment variable VARSTORE_CUDA_LAUNCH. Expected one of "
                         f"{list(LAUNCH_MECHANISMS)}. Received: VARSTORE_CUDA_LAUNCH={value!r}")
    return value


class Launcher:
    """Launches one kernel on one device: per specialization, the loaded function and
    what its launch needs, so that a call is a dictionary lookup, the flat argument list
    and one driver launch on CuPy's current stream. No host synchronization, no
    allocation."""

    def __init__(self, backend, kernel, device_id: int):
        self.backend = backend
        self.kernel = kernel
        self.device_id = device_id
        self.sm_count = backend.sm_count_of(device_id)
        self.mechanism = launch_mechanism()
        # bind key -> (CuPy Function or None, Specialization, parameter count, indices per
        # thread, blocks per SM)
        self.functions: dict = {}
        cc = backend.xp.cuda.Device(device_id).compute_capability  # e.g. "90"
        self.target = "numba" if self.mechanism == "numba" else f"ptx:{int(cc[:-1])}.{int(cc[-1])}"

    def __call__(self, n: int, key: tuple, args: dict) -> None:
        cupy = self.backend.xp
        previous = cupy.cuda.runtime.getDevice()
        if previous != self.device_id:
            cupy.cuda.runtime.setDevice(self.device_id)
        try:
            if self.mechanism == "driver":
                function, spec, count, per_thread, blocks_per_sm = self._function(key, args)
                if function is not None:
                    flat = self._flat(spec, args, count)
                    per_thread = indices_per_thread(self.kernel, per_thread, args)
                    blocks, threads = cuda_grid(self.kernel, n, self.sm_count, per_thread=per_thread,
                                                blocks_per_sm=blocks_per_sm)
                    function((blocks,), (threads,), (0, n, *flat))
                    return
            stream = self.backend.numba_stream(self.device_id)
            numba_launch(self.kernel, n, args, _address, self.sm_count, stream)
        finally:
            if previous != self.device_id:
                cupy.cuda.runtime.setDevice(previous)

    def bound(self, n: int, key: tuple, args: dict, names: tuple):
        """A :class:`BoundLaunch` of ``args`` (checked by the caller) over ``n`` indices,
        the arguments ``names`` given by each call; None where this specialization does
        not launch through the driver (the numba mechanism, or a module it refused)."""
        if self.mechanism != "driver":
            return None
        function, spec, count, per_thread, blocks_per_sm = self._function(key, args)
        if function is None:
            return None
        slots = argument_slots(self.kernel, spec)
        kinds = {s.name: s.kind for s in self.kernel.scalars}
        places = tuple((2 + slots[name][0], 2 + sum(slots[name]), kinds.get(name)) for name in names)
        held = tuple(args[a.name] for a in self.kernel.arrays if a.name in slots and a.name not in names)
        per_thread = indices_per_thread(self.kernel, per_thread, args)
        blocks, threads = cuda_grid(self.kernel, n, self.sm_count, per_thread=per_thread, blocks_per_sm=blocks_per_sm)
        return BoundLaunch(self, function, (blocks,), (threads,), [0, n, *self._flat(spec, args, count)], places,
                            held)

    def _function(self, key: tuple, args: dict) -> tuple:
        """``(CuPy Function or None, Specialization, parameter count, indices per
        thread, blocks per SM)`` of one specialization, loaded on its first use."""
        hit = self.functions.get(key)
        if hit is None:
            loop, spec = self.kernel.loop_for(self.target, key, args)
            # (a module loads into the current device's context: a bound launch may be
            # made while another device is current)
            runtime = self.backend.xp.cuda.runtime
            previous = runtime.getDevice()
            if previous != self.device_id:
                runtime.setDevice(self.device_id)
            try:
                function = self._load(loop)
                blocks_per_sm = self._resident_blocks(function)
            finally:
                if previous != self.device_id:
                    runtime.setDevice(previous)
            hit = self.functions[key] = (function, spec, len(loop.params), vector_width(self.kernel, spec),
                                         blocks_per_sm)
        return hit

    def _flat(self, spec, args: dict, count: int) -> list:
        """The flat parameters after start and stop, checked against the PTX's count."""
        flat = cuda_arguments(self.kernel, spec, args, _address)
        if len(flat) + 2 != count:  # (a tuple of the wrong length: the launch would read past it)
            raise ValueError(f"Kernel {self.kernel.name!r} takes {count - 2} flat parameters after start and "
                             f"stop; the arguments give {len(flat)}.")
        return flat

    def _resident_blocks(self, function) -> int:
        """Blocks of ``THREADS_PER_BLOCK`` threads of ``function`` that fit on one SM at
        once (its registers decide), from the driver; ``BLOCKS_PER_SM`` where it cannot
        say."""
        if function is None:
            return BLOCKS_PER_SM
        try:
            blocks = self.backend.xp.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(
                function.ptr, THREADS_PER_BLOCK, 0)
        except Exception:  # noqa: BLE001 - (an older CuPy or driver: the fixed geometry still works)
            return BLOCKS_PER_SM
        return max(int(blocks), 1)

    def _load(self, loop):
        """The loaded function of ``loop``: its cubin, else its PTX (JIT-compiled by the
        driver). None when the driver refuses both (e.g. PTX newer than the driver and no
        nvJitLink): that specialization then launches through numba-cuda, which links
        with its own tools, and a warning says why."""
        cupy = self.backend.xp
        errors = []
        with self.backend.load_lock:
            for image in (loop.cubin, loop.ptx.encode()):
                if image is None:
                    continue
                module = cupy.cuda.function.Module()
                try:
                    module.load(image)
                    return module.get_function(loop.entry)
                except Exception as exc:  # CUDADriverError: unsupported PTX version, no kernel image...
                    errors.append(f"{type(exc).__name__}: {exc}")
        warnings.warn(f"varstore: the CUDA driver cannot load kernel {self.kernel.name!r} ({'; '.join(errors)}); "
                      f"it launches through numba-cuda instead.", RuntimeWarning, stacklevel=4)
        return None


class BoundLaunch:
    """``run(*values)`` of :meth:`Launcher.bound`: the function, the grid and the flat
    parameters were made once; a call puts the given values in their places (an array:
    its address, and it must be on the launcher's device; a scalar: its fields at their
    widths) and launches on CuPy's current stream. The fixed arrays whose addresses it
    passes stay referenced (``held``), as the numpy backend's bound call holds its own."""

    def __init__(self, launcher, function, blocks, threads, fixed: list, places: tuple, held: tuple):
        self.function, self.blocks, self.threads, self.fixed, self.places = function, blocks, threads, fixed, places
        self.runtime = launcher.backend.xp.cuda.runtime
        self.device_id, self.kernel_name, self.held = launcher.device_id, launcher.kernel.name, held

    def __call__(self, *values) -> None:
        flat = self.fixed.copy()
        for (first, stop, kind), value in zip(self.places, values, strict=True):
            if kind is None:  # an array
                if value.device.id != self.device_id:
                    raise ValueError(f"Kernel {self.kernel_name!r} was bound on device {self.device_id}; an "
                                     f"array on device {value.device.id} was given.")
                flat[first] = value.data.ptr
            else:
                part: list = []
                flat_scalar(kind, value, part)
                if len(part) != stop - first:  # (else every later parameter would shift)
                    raise ValueError(f"Kernel {self.kernel_name!r} takes {stop - first} parameter(s) for this "
                                     f"argument; the value given gives {len(part)}: {value!r}.")
                flat[first:stop] = part
        runtime, device_id = self.runtime, self.device_id
        previous = runtime.getDevice()
        if previous != device_id:
            runtime.setDevice(device_id)
        try:
            self.function(self.blocks, self.threads, tuple(flat))
        finally:
            if previous != device_id:
                runtime.setDevice(previous)


def _address(array) -> int:
    return array.data.ptr
