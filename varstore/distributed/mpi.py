"""The MPI engine (mpi4py): host arrays reduced by MPI, CuPy arrays staged through the
host. Also the bootstrap and host exchanges of the NCCL engine.

mpi4py is imported on first use. The collectives are non-blocking (``Iallreduce``,
``Ibcast``, ``Iallgather``) and polled against the group's deadline; after a timeout the
MPI state cannot be trusted, so the process aborts the MPI job when it exits (MPI_Finalize
would otherwise wait for the missing rank forever).

A rank that fails tells the others (:meth:`MpiGroup.fail`, called for an exception that
ends the program): each group keeps a receive posted on a communicator of its own for
such a notice, and every wait polls it with its collectives, so a peer learns the real
error at once instead of waiting out the timeout.
"""

from __future__ import annotations

import atexit
import struct
import sys
import time
import weakref

import numpy as np

from ..errors import BackendUnavailableError
from .group import Group, origin, wait_for

#: The most bytes of a failure notice: (origin rank, length) as two int32, then the
#: error's text in UTF-8, cut to fit.
NOTICE_BYTES = 4096
_NOTICE_TAG = 1
_live: weakref.WeakSet = weakref.WeakSet()  # groups an uncaught exception is reported to
_posted: list = []  # notice receives still posted, cancelled before MPI_Finalize
_hooked = False


def _hook() -> None:
    """Report an exception that ends the program to every MpiGroup's peers (after the
    previous excepthook has printed it), and cancel the posted notice receives at exit."""
    global _hooked
    if _hooked:
        return
    _hooked = True
    # Registered after mpi4py's own exit handler, so it runs before MPI_Finalize (an
    # uncancelled receive is reported as a leak by some MPI libraries).
    atexit.register(_cancel_posted)
    if hasattr(sys, "ps1") or sys.flags.interactive:
        return  # an interactive session shows every error through the hook: none ends it
    previous = sys.excepthook

    def excepthook(kind, value, traceback):
        # The traceback first, flushed: once the other ranks hear of the failure they
        # may end the job (mpiexec then kills this rank), and this rank's own report of
        # the error must not be lost with it.
        try:
            previous(kind, value, traceback)
            sys.stderr.flush()
        finally:
            for group in list(_live):
                group.fail(value)

    sys.excepthook = excepthook


def _cancel_posted() -> None:
    for request in _posted:
        try:
            request.Cancel()
            request.Wait()
        except Exception:  # noqa: S110 - MPI may be finalized or aborting already
            pass
    _posted.clear()


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
    """A group over an MPI communicator (default ``MPI.COMM_WORLD``).

    The first one made wraps ``sys.excepthook``: an exception that ends the program is
    sent to the other ranks of every MpiGroup (:meth:`fail`) before it is printed."""

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
        # Notices travel on a communicator of their own: on the group's, the posted
        # any-source receive could take a message the program sends itself.
        self._notices = self._comm.Dup()
        self._notice = np.zeros(NOTICE_BYTES, np.uint8)
        self._notice_request = self._notices.Irecv([self._notice, MPI.BYTE], source=MPI.ANY_SOURCE, tag=_NOTICE_TAG)
        _posted.append(self._notice_request)
        self._failure = None  # (rank, "Type: message") of a peer's notice, once received
        self._told = None  # the notice this rank sent, and its requests (MPI still reads the buffer)
        _live.add(self)
        _hook()

    @property
    def comm(self):
        return self._comm

    def close(self) -> None:
        """Cancel this group's notice receive and free its notice communicator (a group
        no longer used; the exit does this for the groups still open)."""
        if self._notices is None:
            return
        _live.discard(self)
        if self._notice_request in _posted:
            _posted.remove(self._notice_request)
        try:
            if self._notice_request != self._MPI.REQUEST_NULL:  # (null once a notice came)
                self._notice_request.Cancel()
                self._notice_request.Wait()
        finally:
            self._notices.Free()
            self._notices = None

    def raw_allreduce(self, array) -> None:
        self._comm.Allreduce(self._MPI.IN_PLACE, array, op=self._MPI.SUM)

    def fail(self, error: BaseException) -> None:
        if self._told is not None:
            return
        try:
            MPI = self._MPI
            rank, text = origin(self.rank, error)
            data = text.encode("utf-8", "replace")[:NOTICE_BYTES - 8]
            notice = np.zeros(8 + len(data), np.uint8)
            struct.pack_into("<ii", notice, 0, rank, len(data))
            notice[8:] = np.frombuffer(data, np.uint8)
            # Not to the rank the error came from: it knows, and may still be running.
            requests = [self._notices.Isend([notice, MPI.BYTE], dest=r, tag=_NOTICE_TAG)
                        for r in range(self.size) if r not in (self.rank, rank)]
            self._told = (notice, requests)
            # A small message is sent as soon as it is posted; past this, the peers fall
            # back on their timeout.
            deadline = time.monotonic() + min(self.timeout, 5.0)
            while not MPI.Request.Testall(requests) and time.monotonic() < deadline:
                time.sleep(1e-4)
        except Exception:  # noqa: S110 - called while an error ends the program: that error is the one to show
            pass

    def _peer_failure(self):
        """``(rank, "Type: message")`` from a peer's notice, or None."""
        if self._failure is None and self._notices is not None and self._notice_request.Test():
            rank, length = struct.unpack_from("<ii", self._notice, 0)
            self._failure = (rank, self._notice[8:8 + length].tobytes().decode("utf-8", "replace"))
        return self._failure

    def _check_peers(self, what: str) -> None:
        """Raise a peer's failure before starting a collective it will never join."""
        if self._peer_failure() is not None:
            raise self._failed_error(*self._failure, what)

    def _wait(self, requests: list, what: str) -> None:
        MPI = self._MPI
        completed = []

        def done():
            if MPI.Request.Testall(requests):
                completed.append(True)
                return True
            return self._peer_failure() is not None

        wait_for(done, time.monotonic() + self.timeout, lambda: self._give_up(what))
        if not completed:
            self.abort_at_exit()  # the requests stay posted: the failed peer never matches them
            raise self._failed_error(*self._failure, what)

    def _give_up(self, what: str):
        self.abort_at_exit()
        raise self._timeout_error(what)

    def abort_at_exit(self) -> None:
        """Abort the MPI job when this process exits: MPI's finalize would wait for a rank
        that failed or stopped answering (called after a failure or timeout, here and by
        an NCCL group over this one)."""
        if not self._aborting:
            self._aborting = True
            atexit.register(self._comm.Abort, 1)

    def _allgather_bytes(self, data: bytes) -> list:
        # Every buffer is bound to a name until its request completes (MPI reads and
        # writes them after the call returns), and the exchange uses fixed-size blocks
        # (no count arrays to keep alive for an Iallgatherv).
        self._check_peers("an exchange")
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
        self._check_peers("a collective")
        hosts = [op.array if isinstance(op.array, np.ndarray) else op.array.get() for op in ops]
        requests = []
        for op, host in zip(ops, hosts, strict=True):
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
        for op, host in zip(ops, hosts, strict=True):
            if host is not op.array:
                op.array.set(host)
