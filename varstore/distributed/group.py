"""The group interface: ranks, and the collectives a replicated store needs.

A group is one rank's handle on a set of ``size`` processes (or threads, for
:class:`~varstore.distributed.local.LocalGroup`). Every method is *collective*: all ranks
call it, in the same order. Each engine runs the data collectives of one call as one
batch (NCCL: one group call) and waits for them with a deadline, so a rank that died or
never came raises :class:`DistributedError` instead of hanging. A rank whose code raised
tells the others (:meth:`Group.fail`): their waits end at once with its error, named as
that rank's, and a timeout is reported only when no rank failed.
"""

from __future__ import annotations

import abc
import collections
import time
from typing import NamedTuple

from ..validation import check_seconds


class DistributedError(RuntimeError):
    """A collective failed: a rank died or did not arrive within the group's timeout, or
    the ranks disagree (different sync plans, a failed save on rank 0).

    When it reports another rank's error (a save that failed on rank 0, a rank whose code
    raised while this one waited), ``failed_rank`` is that rank and ``failure`` its error
    as ``"Type: message"``; both are None otherwise."""

    def __init__(self, message: str, failed_rank: int | None = None, failure: str | None = None):
        super().__init__(message)
        self.failed_rank = failed_rank
        self.failure = failure


class Collective(NamedTuple):
    """One in-place collective on ``array`` (a flat NumPy or CuPy array): ``"sum"`` (all-
    reduce) or ``"broadcast"`` (from ``root``, bit for bit)."""

    kind: str
    array: object
    root: int = 0


class Group(abc.ABC):
    """One rank of a group. ``rank``, ``size``, ``local_rank`` (the rank among those on
    this host: it picks the GPU), ``backend`` ("local", "mpi" or "nccl"), ``timeout``
    (seconds a collective may wait for the other ranks).

    ``calls`` counts what ran: ``"batches"`` (engine calls that carry one or more
    collectives), ``"sum"`` and ``"broadcast"`` (data collectives), ``"exchanges"`` (small
    host exchanges such as plan hashes)."""

    backend: str = ""
    #: True: a group of one still runs its collectives through the engine (else they are no-ops).
    runs_alone: bool = False

    def __init__(self, rank: int, size: int, local_rank: int, timeout: float):
        self.rank = int(rank)
        self.size = int(size)
        self.local_rank = int(local_rank)
        self.timeout = check_seconds("timeout", timeout)
        self.calls = collections.Counter()

    @property
    def device(self) -> str | None:
        """The device this rank's stores use by default (None: the default device)."""
        return None

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} backend={self.backend} rank={self.rank}/{self.size} "
                f"local_rank={self.local_rank}>")

    # -------------------------------------------------------------- collectives
    def run(self, ops) -> None:
        """Run the collectives ``ops`` (a list of :class:`Collective`) as one batch."""
        ops = list(ops)
        if not ops:
            return
        for op in ops:
            if op.kind not in ("sum", "broadcast"):
                raise ValueError(f"Unknown collective {op.kind!r}; expected 'sum' or 'broadcast'.")
            if not 0 <= op.root < self.size:
                raise ValueError(f"Collective root {op.root} is not a rank of this group of {self.size}.")
        self.calls["batches"] += 1
        self.calls.update(op.kind for op in ops)
        if self.size > 1 or self.runs_alone:
            self._run(ops)

    def allgather_bytes(self, data: bytes) -> list:
        """Every rank's ``data``, in rank order (small host messages)."""
        self.calls["exchanges"] += 1
        if self.size == 1:
            return [bytes(data)]
        return self._allgather_bytes(bytes(data))

    def agree(self, error: BaseException | None, what: str) -> None:
        """Tell every rank whether ``what`` failed on any of them. The failing rank
        re-raises its own error; the others raise DistributedError naming it, so no rank
        waits forever in the next collective."""
        message = b"" if error is None else describe(error).encode()
        failures = [(r, m.decode()) for r, m in enumerate(self.allgather_bytes(message)) if m]
        if error is not None:
            raise error
        if failures:
            rank, text = failures[0]
            raise DistributedError(f"{what} failed on rank {rank} (of {self.size}): {text}", rank, text)

    def fail(self, error: BaseException) -> None:
        """Tell the other ranks that this one failed with ``error`` and makes no further
        collective call: a rank waiting in a collective of this group, or entering one,
        raises DistributedError naming this rank and the error at once instead of waiting
        out the timeout. ``LocalGroup.run`` calls it when a rank's function raises, an MPI
        or NCCL group when an exception ends the program (``sys.excepthook``). Never
        raises."""
        return None  # (by default there is nothing to do)

    def raw_allreduce(self, array) -> None:
        """One in-place sum of ``array`` by the engine itself, waited for: no batching,
        staging, deadline or counting (the benchmark's baseline for ``sync()``)."""
        raise NotImplementedError(f"the {self.backend} group has no engine call of its own")

    def barrier(self) -> None:
        self.allgather_bytes(b"")

    @abc.abstractmethod
    def _run(self, ops: list) -> None:
        """Run ``ops`` in place across ``size > 1`` ranks, within the timeout."""

    @abc.abstractmethod
    def _allgather_bytes(self, data: bytes) -> list:
        """Exchange ``data`` across ``size > 1`` ranks, within the timeout."""

    # ---------------------------------------------------------------- helpers
    def _failed_error(self, rank: int, failure: str, what: str) -> DistributedError:
        return DistributedError(
            f"rank {self.rank} (of {self.size}, {self.backend}): {what} cannot complete: rank {rank} "
            f"failed: {failure}", rank, failure)

    def _timeout_error(self, what: str) -> DistributedError:
        return DistributedError(
            f"rank {self.rank} (of {self.size}, {self.backend}): {what} did not complete within "
            f"{self.timeout:g} s. Another rank died, or did not make the same collective call "
            f"(every rank must call sync/broadcast/save... in the same order)."
        )


def describe(error: BaseException) -> str:
    """``"Type: message"``: how an error travels to the other ranks."""
    return f"{type(error).__name__}: {error}"


def origin(rank: int, error: BaseException) -> tuple:
    """``(rank, "Type: message")`` of the first real error behind ``error``, raised on
    ``rank``: the peer's it reports, else its own. Passing on the peer's keeps every rank
    naming the same first error, however many ranks relay it."""
    if isinstance(error, DistributedError) and error.failed_rank is not None:
        return error.failed_rank, error.failure
    return rank, describe(error)


def wait_for(done, deadline: float, on_timeout) -> None:
    """Poll ``done()`` until it is true; call ``on_timeout()`` (which raises) past
    ``deadline`` (a ``time.monotonic()`` value). Spins for the first millisecond (most
    collectives of a step end by then), then sleeps 50 µs between polls."""
    spin_until = time.monotonic() + 1e-3
    while not done():
        now = time.monotonic()
        if now > deadline:
            on_timeout()
        if now > spin_until:
            time.sleep(5e-5)
