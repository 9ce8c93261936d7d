"""Launch geometry and arguments, the one place they are decided: CUDA grids for the
generated loops, CPU chunks for the thread pool that runs the CPU loops (they release
the GIL), and the flat parameter list of a CUDA launch."""

from __future__ import annotations

import os

import numpy as np

from .templates import FORMAT_FIELDS, loop_arrays, scalar_params

THREADS_PER_BLOCK = 256
# Blocks per SM where the launch does not know how many fit at once (the numba-cuda
# launch); a grid-stride loop covers the rest, so large arrays do not need one thread
# per element. The driver launch asks the driver instead (``blocks_per_sm``): a grid of
# exactly the blocks that fit runs in one wave, where a fixed 8 leaves a part-full last
# wave for kernels of more than 32 registers per thread.
BLOCKS_PER_SM = 8
# The simulator runs each thread as a Python thread (0.1-0.8 ms each): keep it tiny.
SIMULATOR_GEOMETRY = (4, 32)


def grid_for(n: int, sm_count: int, simulator: bool = False, blocks_per_sm: int = BLOCKS_PER_SM) -> tuple[int, int]:
    """(blocks, threads_per_block) for a grid-stride loop over ``n`` elements: one thread
    per element up to ``blocks_per_sm`` blocks on each SM."""
    if simulator:
        return SIMULATOR_GEOMETRY
    blocks = (max(int(n), 1) + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    return min(blocks, max(int(sm_count), 1) * max(int(blocks_per_sm), 1)), THREADS_PER_BLOCK


# Below this many elements per thread, handing work to another thread costs more than it
# saves (a few microseconds per task against about 0.7 ns per element).
MIN_CPU_CHUNK = 1 << 16


#: What launchers tell each process of the processes they started on its host: MPICH's
#: Hydra, Open MPI, MVAPICH, torchrun.
LOCAL_PROCESS_COUNTS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE",
                        "LOCAL_WORLD_SIZE")


def cpu_workers() -> int:
    """Threads for the CPU loops: ``VARSTORE_NUM_THREADS``, else the usable cores, shared
    out among the processes a launcher started on this host (:func:`local_processes`):
    each of 2 ranks on 2 cores ran 2 threads, which made a sync 2x slower.

    Where the launcher left a process the cores it has itself (no binding; a container's
    cores), every local process shares them. Where it bound the process to fewer (a
    core, a socket), the processes are taken as spread evenly over the launcher's cores:
    ``ceil(processes * cores / launcher's cores)`` of them share this set."""
    value = os.environ.get("VARSTORE_NUM_THREADS")
    if value:
        if not (value.strip().isascii() and value.strip().isdecimal()) or int(value) < 1:
            raise ValueError(f"Invalid value for environment variable VARSTORE_NUM_THREADS. Expected a positive "
                             f"integer (threads for the CPU kernels). Received: VARSTORE_NUM_THREADS={value!r}")
        return int(value)
    cores, local = usable_cores(), local_processes()
    if local == 1:
        return cores
    launcher = launcher_cores()
    sharing = local if launcher <= cores else -(-local * cores // launcher)
    return max(1, cores // max(1, sharing))


def launcher_cores() -> int:
    """The cores of the process that started this one (a launcher: mpiexec's proxy,
    torchrun's agent), or of the machine where they cannot be read."""
    try:
        return len(os.sched_getaffinity(os.getppid()))
    except (AttributeError, OSError):  # (not on Linux; the parent gone or not ours to read)
        return os.cpu_count() or 1


def local_processes() -> int:
    """The processes a launcher started on this host (1 where none says, or a value is
    not a positive integer)."""
    for name in LOCAL_PROCESS_COUNTS:
        value = os.environ.get(name, "").strip()
        if value.isascii() and value.isdecimal() and int(value) >= 1:
            return int(value)
    return 1


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_chunks(n: int, workers: int, minimum: int = MIN_CPU_CHUNK) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n)``: one chunk per worker (multiples of
    64 items), or a single chunk when the work is too small to share (fewer than two
    chunks of ``minimum`` items)."""
    count = min(workers, n // max(int(minimum), 1))
    if count <= 1:
        return [(0, n)]
    step = -(-n // count)
    step = -(-step // 64) * 64 if minimum >= 64 else step
    return [(start, min(start + step, n)) for start in range(0, n, step)]



# ------------------------------------------------------------------ launching
def cuda_grid(kernel, n: int, sm_count: int, simulator: bool = False, per_thread: int = 1,
              blocks_per_sm: int = BLOCKS_PER_SM) -> tuple[int, int]:
    """(blocks, threads_per_block) of ``kernel`` over ``n`` indices: a grid-stride loop
    over elements (``per_thread`` indices per thread on the wide path: see
    ``wide.vector_width``), or for multi-tensor kernels one block per chunk; at most
    ``blocks_per_sm`` blocks per SM."""
    if kernel.template != "chunks":
        return grid_for(-(-int(n) // per_thread), sm_count, simulator, blocks_per_sm)
    if simulator:
        return SIMULATOR_GEOMETRY
    return min(max(int(n), 1), max(int(sm_count), 1) * max(int(blocks_per_sm), 1)), THREADS_PER_BLOCK


def indices_per_thread(kernel, width: int, args: dict) -> int:
    """Indices per thread of a launch whose wide path takes ``width``
    (``wide.vector_width``): 1 where a stepped array's step is not 0, or an array walks a
    region's last axis with another stride than 1, since every index then takes the
    general step."""
    if width > 1 and any(args[a.step] for a in kernel.arrays if a.step):
        return 1
    if width > 1 and kernel.template == "region" and any(args[f"{a.name}_strides"][-1] != 1 for a in kernel.arrays):
        return 1
    return width


def cuda_arguments(kernel, spec, args: dict, address) -> list:
    """The CUDA loop's flat parameters after start and stop, as the numbers a launch
    passes: each array as ``address(array)``, tuples field by field, each value of the
    parameter's width (Python ints and floats are 64-bit)."""
    flat = [address(args[a.name]) for a in loop_arrays(kernel)]
    for s in kernel.scalars:
        flat_scalar(s.kind, args[s.name], flat)
    return flat


def flat_scalar(kind: str, value, flat: list) -> None:
    """Append scalar ``value`` of ``kind`` to ``flat`` as the CUDA loop's parameters take
    it: tuples field by field, each value of its parameter's width."""
    if kind == "i64":
        flat.append(int(value))
    elif kind == "u32":
        flat.append(_U32(value))
    elif kind == "u64":
        flat.append(_U64(value))
    elif kind == "f32":
        flat.append(_F32(value))
    elif kind == "f64":
        flat.append(float(value))
    elif kind == "format":
        flat.extend(_U32(v) for v in value)
    elif kind == "axes":
        flat.extend(int(v) for v in value)
    else:  # conversion: route, two formats, lo, hi, mask
        route, src_fmt, dst_fmt, lo, hi, mask = value
        flat.append(int(route))
        flat.extend(_U32(v) for v in src_fmt[:FORMAT_FIELDS])
        flat.extend(_U32(v) for v in dst_fmt[:FORMAT_FIELDS])
        flat += [int(lo), int(hi), _U64(mask)]


def argument_slots(kernel, spec) -> dict:
    """``{argument name: (first flat parameter, how many)}`` of the list
    :func:`cuda_arguments` makes (after start and stop)."""
    slots = {a.name: (i, 1) for i, a in enumerate(loop_arrays(kernel))}
    offset = len(slots)
    for s in kernel.scalars:
        width = len(scalar_params(s, spec.axes))
        slots[s.name] = (offset, width)
        offset += width
    return slots


_U32 = np.uint32
_U64 = np.uint64
_F32 = np.float32


def numba_launch(kernel, n: int, args: dict, address, sm_count: int, stream=0) -> None:
    """Launch ``kernel``'s CUDA loop through numba-cuda's own dispatcher (one explicit
    signature, every argument a scalar): the launch of the CUDA simulator, and of numba
    device arrays. ``address(array)`` gives an array's device address."""
    from . import _targets, wide  # (numba: loaded by the first launch, not with the backends)

    key, _ = kernel.bind(args, n)
    loop, spec = kernel.loop_for("numba", key, args)
    per_thread = indices_per_thread(kernel, wide.vector_width(kernel, spec), args)
    blocks, threads = cuda_grid(kernel, n, sm_count, _targets.simulator_enabled(), per_thread)
    loop[blocks, threads, stream](0, n, *cuda_arguments(kernel, spec, args, address))

