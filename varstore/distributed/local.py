"""``LocalGroup(n)``: n ranks in one process, one thread each.

For tests and notebooks: the same collectives as MPI and NCCL, with the replicas side
by side, exact, and no launcher. Each rank's code runs in its own thread
(:meth:`LocalGroup.run`), and the collectives meet at a barrier; a sum adds the ranks'
arrays in rank order, so every rank gets the same bits.
"""

from __future__ import annotations

import threading

from .. import backends
from ..backends.base import is_device_array
from ..validation import check_seconds
from .group import DistributedError, Group, origin


class _World:
    """Where the ranks of one LocalGroup meet: a reusable barrier, the items of the
    exchange under way, and the first failure.

    threading.Barrier cannot serve: once a failing rank aborts it, a peer still waking
    from a wait that had completed gets BrokenBarrierError too, and cannot tell that
    from a wait that never completed. Here a wait is over when its generation has
    passed, whatever happened since, and a failure is recorded (under the lock, first
    one kept) before any waiter is woken to read it."""

    def __init__(self, size: int, timeout: float):
        self.size = size
        self.timeout = timeout
        self.reset()

    def reset(self) -> None:
        self.condition = threading.Condition()
        self.arrived = 0
        self.generation = 0
        self.failure = None  # (rank, error): the first rank whose code raised, or whose wait timed out
        self.slots: list = [None] * self.size

    def fail(self, rank: int, error: BaseException) -> None:
        with self.condition:
            if self.failure is None:
                self.failure = (rank, error)
            self.condition.notify_all()


class LocalRank(Group):
    """One rank of a :class:`LocalGroup` (give it to that rank's ReplicatedStore)."""

    backend = "local"

    def __init__(self, world: _World, rank: int):
        super().__init__(rank, world.size, rank, world.timeout)
        self._world = world

    def fail(self, error: BaseException) -> None:
        self._world.fail(self.rank, error)

    def _wait(self, what: str) -> None:
        world = self._world
        with world.condition:
            if world.failure is None:
                generation = world.generation
                world.arrived += 1
                if world.arrived == world.size:
                    world.arrived = 0
                    world.generation += 1
                    world.condition.notify_all()
                    return
                ended = world.condition.wait_for(
                    lambda: world.generation != generation or world.failure is not None, self.timeout)
                if world.generation != generation:
                    return  # everyone arrived; a failure since then is for the next wait to report
                if not ended:
                    error = self._timeout_error(what)
                    world.failure = (self.rank, error)
                    world.condition.notify_all()
                    raise error
            rank, error = world.failure
        raise self._failed_error(*origin(rank, error), what)

    def _exchange(self, item, what: str) -> list:
        world = self._world
        world.slots[self.rank] = item
        self._wait(what)
        items = list(world.slots)
        self._wait(what)  # nobody writes the next item before everyone has read this one
        return items

    def _allgather_bytes(self, data: bytes) -> list:
        return self._exchange(data, "an exchange")

    def _run(self, ops: list) -> None:
        arrays = self._exchange([op.array for op in ops], "a collective")
        results = []
        for i, op in enumerate(ops):
            # Computed on this rank's device (ranks may hold different GPUs; CuPy computes
            # on the current device): each input copied here where it is elsewhere.
            backend = backends.get("cuda" if is_device_array(op.array) else "numpy")
            device = backend.device_of(op.array)
            with backend.on_device(device):
                if op.kind == "broadcast":
                    results.append(backend.copy(backend.asarray(arrays[op.root][i], device)))
                    continue
                total = backend.copy(backend.asarray(arrays[0][i], device))
                for r in range(1, self.size):
                    total += backend.asarray(arrays[r][i], device)
            results.append(total)
        self._wait("a collective")  # every rank has read every input
        for op, result in zip(ops, results, strict=True):
            backends.get("cuda" if is_device_array(op.array) else "numpy").copyto(op.array, result)


class LocalGroup:
    """``n`` ranks in this process: ``LocalGroup(4).run(fn)`` calls ``fn(group)`` on four
    threads, one per rank, and returns their results in rank order.

    Args:
        size: the number of ranks (>= 1).
        timeout: seconds a collective waits for the other ranks before raising
            DistributedError (a rank that failed ends the others' waits at once).

    >>> import varstore as vs
    >>> def step(group):
    ...     store = vs.ReplicatedStore(group=group, device="cpu")
    ...     v = store.variable(0.0, name="v", aggregation="sum", synchronization="on_write")
    ...     with store.replica_step():
    ...         v.assign_add(group.rank + 1.0)
    ...     store.sync()
    ...     return float(v.numpy())
    >>> vs.distributed.LocalGroup(3).run(step)
    [6.0, 6.0, 6.0]
    """

    def __init__(self, size: int, timeout: float = 60.0):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"LocalGroup needs a number of ranks >= 1; received size={size!r}.")
        self._world = _World(size, check_seconds("timeout", timeout))
        self.groups = [LocalRank(self._world, r) for r in range(size)]

    @property
    def size(self) -> int:
        return self._world.size

    def run(self, fn, *args, **kwargs) -> list:
        """``[fn(group_0, *args, **kwargs), ..., fn(group_n-1, ...)]``, each on its own thread.

        If a rank raises, the others' waits end at once with DistributedError naming
        that rank and its error, and the first error raised by a rank's own code (or a
        rank's timeout) is raised here, with a note naming the rank."""
        results: list = [None] * self.size
        errors: list = [None] * self.size
        self._world.reset()  # a failure of an earlier run does not carry over

        def body(rank):
            try:
                results[rank] = fn(self.groups[rank], *args, **kwargs)
            except BaseException as error:  # noqa: B036 - reported to the caller below
                errors[rank] = error
                self._world.fail(rank, error)

        threads = [threading.Thread(target=body, args=(r,), name=f"varstore-rank-{r}") for r in range(self.size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if not any(e is not None for e in errors):
            return results
        # A rank's own error before the others' reports of one; the earliest own first.
        first = self._world.failure
        own = [(r, e) for r, e in enumerate(errors)
               if e is not None and not (isinstance(e, DistributedError) and e.failed_rank is not None)]
        if first is not None and any(e is first[1] for _, e in own):
            own.insert(0, first)
        rank, error = (own or [(r, e) for r, e in enumerate(errors) if e is not None])[0]
        if hasattr(error, "add_note"):
            error.add_note(f"(raised on rank {rank} of a LocalGroup({self.size}))")
        raise error

    def __repr__(self) -> str:
        return f"<LocalGroup size={self.size}>"
