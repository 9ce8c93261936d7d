"""The NCCL engine (``cupy.cuda.nccl``): CuPy arrays reduced on the GPUs, all the
collectives of one call in one NCCL group call, on CuPy's current stream.

The unique id that joins the ranks goes from rank 0 to the others over MPI (an exchange
with the host group's deadline: a rank 0 that cannot make one tells the others why); with
one rank no MPI is needed. NCCL's own start-up (``ncclCommInitRank``) and, from NCCL
2.22, the connections its first collective makes have no deadline: a rank lost there is
waited for. Each rank uses the GPU ``local_rank % device count``. Host
(NumPy) arrays are staged through the GPU. The group waits for its collectives (an event
recorded after them) with a deadline; past it, or when a peer failed, the communicator is
aborted (``ncclCommAbort``), MPI is set to abort at exit (its finalize would wait for the
lost rank), and the call raises. One lock orders the threads that use the communicator
(NCCL's calls on one communicator are not thread-safe).
"""

from __future__ import annotations

import threading
import time

import numpy as np

from .. import backends
from ..errors import BackendUnavailableError
from .group import DistributedError, Group, describe, wait_for


def import_nccl():
    """``cupy.cuda.nccl``, or a BackendUnavailableError saying why it cannot be used."""
    reason = backends.cuda_unavailable_reason()
    if reason is not None:
        raise BackendUnavailableError(f"NCCL needs a CUDA device, and none can be used here: {reason}")
    try:
        from cupy.cuda import nccl

        nccl.get_version()
    except Exception as error:  # ImportError, or a CuPy built without NCCL
        raise BackendUnavailableError(
            f"NCCL is not available to CuPy here: pip install 'varstore[nccl]' (the NCCL library for "
            f"your CUDA). Error: {type(error).__name__}: {error}"
        ) from error
    return nccl


class NcclGroup(Group):
    """A group over one NCCL communicator. ``host`` (an MpiGroup, needed when ``size > 1``)
    carries the bootstrap and the small host exchanges."""

    backend = "nccl"
    runs_alone = True  # one rank still goes through NCCL: the engine a one-GPU host exercises

    def __init__(self, rank: int = 0, size: int = 1, local_rank: int = 0, host=None, timeout: float = 300.0):
        nccl = import_nccl()
        import cupy

        if size > 1 and host is None:
            raise BackendUnavailableError(
                f"NCCL across {size} ranks needs MPI to hand its unique id from rank 0 to the others: "
                f"pip install 'varstore[mpi]' and launch with mpiexec -n {size}."
            )
        super().__init__(rank, size, local_rank, timeout)
        self._nccl = nccl
        self._cupy = cupy
        self._host = host
        self.device_id = local_rank % cupy.cuda.runtime.getDeviceCount()
        cupy.cuda.Device(self.device_id).use()
        self._lock = threading.Lock()
        self._comm = nccl.NcclCommunicator(size, self._unique_id(), rank)
        self._types = {
            np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64,
            np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.int8): nccl.NCCL_INT8,
            np.dtype(np.uint8): nccl.NCCL_UINT8, np.dtype(np.int32): nccl.NCCL_INT32,
            np.dtype(np.uint32): nccl.NCCL_UINT32, np.dtype(np.int64): nccl.NCCL_INT64,
            np.dtype(np.uint64): nccl.NCCL_UINT64,
        }

    @property
    def device(self) -> str:
        return f"cuda:{self.device_id}"

    @property
    def communicator(self):
        """The ``cupy.cuda.nccl.NcclCommunicator`` (for raw calls, as the benchmark makes)."""
        return self._comm

    def _unique_id(self):
        """Rank 0's NCCL unique id, on every rank: sent through the host group's exchange
        (bounded by its deadline), with rank 0's error instead where it could make none."""
        error = None
        if self.rank == 0:
            try:
                message = _id_message(self._nccl.get_unique_id())
            except Exception as exc:  # (e.g. no network interface NCCL can use)
                error, message = exc, b"E" + describe(exc).encode()
        if self.size > 1:
            message = self._host.allgather_bytes(message if self.rank == 0 else b"")[0]
        if error is not None:
            raise error
        if message[:1] == b"E":
            text = message[1:].decode()
            raise DistributedError(f"rank {self.rank} (of {self.size}, nccl): the NCCL start-up failed on rank 0: "
                                   f"{text}", 0, text)
        return _unique_id_of(message)

    def raw_allreduce(self, array) -> None:
        with self._lock, self._cupy.cuda.Device(self.device_id):
            stream = self._cupy.cuda.get_current_stream()
            self._comm.allReduce(array.data.ptr, array.data.ptr, array.size, self._types[array.dtype],
                                 self._nccl.NCCL_SUM, stream.ptr)
            stream.synchronize()

    def _allgather_bytes(self, data: bytes) -> list:
        return self._host._allgather_bytes(data)

    def _run(self, ops: list) -> None:
        cupy, nccl = self._cupy, self._nccl
        failure = self._peer_failure()
        if failure is not None:  # the failed peer would never join these collectives
            raise self._failed_error(*failure, "a collective")
        ops = [op for op in ops if op.array.size]  # (NCCL is given no empty buffer)
        if not ops:
            return
        with self._lock, cupy.cuda.Device(self.device_id):
            arrays = [op.array if isinstance(op.array, cupy.ndarray) else cupy.asarray(op.array) for op in ops]
            stream = cupy.cuda.get_current_stream()
            nccl.groupStart()
            try:
                for op, array in zip(ops, arrays, strict=True):
                    if op.kind == "sum":
                        self._comm.allReduce(array.data.ptr, array.data.ptr, array.size, self._types[array.dtype],
                                             nccl.NCCL_SUM, stream.ptr)
                    else:
                        count, datatype = self._words(array)
                        self._comm.bcast(array.data.ptr, count, datatype, op.root, stream.ptr)
            finally:
                nccl.groupEnd()
            # An event after the collectives: work other threads queue on the stream later
            # does not hold the wait. A peer's failure notice (through the host group) ends
            # the wait as a timeout does: the communicator is aborted, as the peer will never join.
            done = stream.record()
            wait_for(lambda: done.done or self._peer_failure() is not None, time.monotonic() + self.timeout,
                     lambda: self._give_up("a collective"))
            if not done.done:
                self._abort()
                raise self._failed_error(*self._peer_failure(), "a collective")
            for op, array in zip(ops, arrays, strict=True):
                if array is not op.array:
                    op.array[...] = array.get()

    def _words(self, array) -> tuple:
        """``(count, NCCL type)`` to broadcast ``array``'s bytes as: the widest word that
        divides them (bits are copied, never read as numbers), below the 2**31 elements
        that cupy's ``bcast`` takes."""
        nccl = self._nccl
        for width, datatype in ((8, nccl.NCCL_UINT64), (4, nccl.NCCL_UINT32), (2, nccl.NCCL_FLOAT16),
                                (1, nccl.NCCL_UINT8)):
            if array.nbytes % width == 0 and array.nbytes // width < 2**31:
                return array.nbytes // width, datatype
        raise ValueError(f"A broadcast of {array.nbytes} bytes is too large for one NCCL call; lower bucket_mb.")

    def fail(self, error: BaseException) -> None:
        if self._host is not None:
            self._host.fail(error)

    def _peer_failure(self):
        return None if self._host is None else self._host._peer_failure()

    def _abort(self) -> None:
        try:
            self._comm.abort()
        except Exception:  # noqa: S110 - the error that made us abort is the one to raise
            pass
        if self._host is not None:  # (MPI's finalize would wait for the lost rank)
            self._host.abort_at_exit()

    def _give_up(self, what: str):
        self._abort()
        raise self._timeout_error(what)


def _id_message(uid) -> bytes:
    """CuPy's NCCL unique id (a tuple of its 128 ``char`` values) as bytes to send,
    tagged with the signedness of rank 0's ``char``: "S" (x86: -128..127) where a value
    is negative, else "U" (aarch64: 0..255; or no byte above 127, read either way)."""
    return (b"S" if min(uid, default=0) < 0 else b"U") + bytes(value & 0xFF for value in uid)


def _unique_id_of(message: bytes) -> tuple:
    """The unique id :func:`_id_message` sent, as rank 0's CuPy gave it."""
    if message[:1] == b"S":
        return tuple(value - 256 if value >= 128 else value for value in message[1:])
    return tuple(message[1:])
