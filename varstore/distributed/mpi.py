"""The MPI engine (mpi4py): host arrays reduced by MPI, CuPy arrays staged through the
host. Also the bootstrap and host exchanges of the NCCL engine.

mpi4py is imported on first use. The collectives are non-blocking (``Iallreduce``,
``Ibcast``, ``Iallgather``) and polled against the group's deadline; after a timeout the
MPI state cannot be trusted, so the process aborts the MPI job when it exits (MPI_Finalize
would otherwise wait for the missing rank forever).
"""

from __future__ import annotations

import atexit
import time

import numpy as np

from ..errors import BackendUnavailableError
from .group import Group, wait_for


def import_mpi():
    """``mpi4py.MPI``, or a BackendUnavailableError saying how to get it."""
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise BackendUnavailableError(
            f"The MPI engine needs mpi4py and an MPI library: pip install 'varstore[mpi]' (mpi4py and "
            f"the mpich wheel), or mpi4py built against your cluster's MPI. Import failed: {error}"
        ) from error
    return MPI


class MpiGroup(Group):
    """A group over an MPI communicator (default ``MPI.COMM_WORLD``)."""

    backend = "mpi"

    def __init__(self, comm=None, timeout: float = 300.0):
        MPI = import_mpi()
        self._MPI = MPI
        self._comm = MPI.COMM_WORLD if comm is None else comm
        node = self._comm.Split_type(MPI.COMM_TYPE_SHARED)
        local_rank = node.Get_rank()
        node.Free()
        super().__init__(self._comm.Get_rank(), self._comm.Get_size(), local_rank, timeout)
        self._aborting = False

    @property
    def comm(self):
        return self._comm

    def raw_allreduce(self, array) -> None:
        self._comm.Allreduce(self._MPI.IN_PLACE, array, op=self._MPI.SUM)

    def _wait(self, requests: list, what: str) -> None:
        MPI = self._MPI
        wait_for(lambda: MPI.Request.Testall(requests), time.monotonic() + self.timeout,
                 lambda: self._give_up(what))

    def _give_up(self, what: str):
        if not self._aborting:
            self._aborting = True
            atexit.register(self._comm.Abort, 1)
        raise self._timeout_error(what)

    def _allgather_bytes(self, data: bytes) -> list:
        # Every buffer is bound to a name until its request completes (MPI reads and
        # writes them after the call returns), and the exchange uses fixed-size blocks
        # (no count arrays to keep alive for an Iallgatherv).
        length = np.array([len(data)], np.int64)
        lengths = np.zeros(self.size, np.int64)
        self._wait([self._comm.Iallgather(length, lengths)], "an exchange")
        width = max(int(lengths.max()), 1)
        mine = np.zeros(width, np.uint8)
        mine[:len(data)] = np.frombuffer(data, np.uint8)
        gathered = np.empty(width * self.size, np.uint8)
        self._wait([self._comm.Iallgather(mine, gathered)], "an exchange")
        self._wait([self._comm.Ibarrier()], "an exchange")  # (see _run)
        return [gathered[r * width:r * width + int(n)].tobytes() for r, n in enumerate(lengths)]

    def _run(self, ops: list) -> None:
        MPI = self._MPI
        hosts = [op.array if isinstance(op.array, np.ndarray) else op.array.get() for op in ops]
        requests = []
        for op, host in zip(ops, hosts):
            if op.kind == "sum":
                requests.append(self._comm.Iallreduce(MPI.IN_PLACE, host, op=MPI.SUM))
            else:
                requests.append(self._comm.Ibcast(host.view(np.uint8), root=op.root))
        self._wait(requests, "a collective")
        # A rank's requests can complete while a peer still needs this rank's progress
        # to receive its part (seen with the mpich wheel: the peer then waited forever, and
        # an exiting rank left it so). A barrier keeps every rank progressing until all
        # ranks have their results.
        self._wait([self._comm.Ibarrier()], "a collective")
        for op, host in zip(ops, hosts):
            if host is not op.array:
                op.array.set(host)
