"""Scale-out: replicated stores over NCCL (GPU data), MPI (host data and bootstrap), or
threads in one process (``LocalGroup``).

>>> import varstore as vs
>>> group = vs.distributed.init()          # doctest: +SKIP
>>> store = vs.ReplicatedStore(group=group)  # doctest: +SKIP

Launch one process per GPU with ``mpiexec -n N python train.py``. :func:`init` finds the
ranks from MPI, else from ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, else runs as one
process. mpi4py and CuPy's NCCL are imported only when a group needs them.
"""

from __future__ import annotations

import os

from ..errors import BackendUnavailableError
from ..validation import check_seconds
from .group import Collective, DistributedError, Group
from .local import LocalGroup, LocalRank
from .mpi import MpiGroup
from .nccl import NcclGroup, import_nccl

__all__ = ["Collective", "DistributedError", "Group", "LocalGroup", "LocalRank", "default_group", "init",
           "launched_by_mpi", "environment_world"]

BACKENDS = ("auto", "nccl", "mpi", "local")
#: Variables an MPI launcher sets in each process (MPICH/Hydra, PMIx, Open MPI, MVAPICH).
_MPI_MARKERS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_by_mpi() -> bool:
    """True when this process was started by an MPI launcher (mpiexec, mpirun, srun --mpi)."""
    return any(name in os.environ for name in _MPI_MARKERS)


def environment_world() -> tuple:
    """``(rank, size, local_rank)`` from ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (torchrun's
    names), else ``(0, 1, 0)``; ValueError naming a malformed one."""
    values = {}
    for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", None)):
        text = os.environ.get(name)
        if text is None:
            values[name] = default
            continue
        try:
            values[name] = int(text)
        except ValueError:
            raise ValueError(f"The environment variable {name}={text!r} is not an integer.") from None
    rank, size = values["RANK"], values["WORLD_SIZE"]
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={size} do not describe a rank of a group.")
    local = values["LOCAL_RANK"] if values["LOCAL_RANK"] is not None else rank
    return rank, size, local


def init(backend: str = "auto", *, timeout: float = 300.0) -> Group:
    """This process's rank of a new group.

    Args:
        backend: ``"nccl"`` (CuPy arrays, one GPU per rank: the rank's local rank picks
            it), ``"mpi"`` (mpi4py; host arrays, CuPy arrays staged through the host),
            ``"local"`` (this process alone: a group of one), or ``"auto"``: under an MPI
            launcher, NCCL when a GPU and NCCL can be used, else MPI; otherwise a group
            of one (NCCL when ``WORLD_SIZE`` > 1).
        timeout: seconds a collective waits for the other ranks before raising
            DistributedError (never a hang).

    Raises:
        BackendUnavailableError: the engine cannot run here ("NCCL needs a CUDA device",
            mpi4py missing, NCCL across ranks without MPI for its bootstrap).
    """
    if backend not in BACKENDS:
        raise ValueError(f"Invalid value for argument `backend`. Expected one of {list(BACKENDS)}. "
                         f"Received: backend={backend!r}")
    timeout = check_seconds("timeout", timeout)
    if backend == "auto":
        backend = _auto()
    if backend == "local":
        return LocalGroup(1, timeout).groups[0]
    if backend == "mpi":
        return MpiGroup(timeout=timeout)
    import_nccl()  # the clear "NCCL needs a CUDA device" before any MPI start-up
    if launched_by_mpi():
        host = MpiGroup(timeout=timeout)
        return NcclGroup(host.rank, host.size, host.local_rank, host=host, timeout=timeout)
    rank, size, local = environment_world()
    return NcclGroup(rank, size, local, host=None, timeout=timeout)


def _auto() -> str:
    if launched_by_mpi():
        try:
            import_nccl()
            return "nccl"
        except BackendUnavailableError:
            return "mpi"
    return "nccl" if environment_world()[1] > 1 else "local"


_default = None


def default_group() -> Group:
    """The group ReplicatedStores join when none is given: ``init("auto")``, made once."""
    global _default
    if _default is None:
        _default = init("auto")
    return _default
