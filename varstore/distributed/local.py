"""``LocalGroup(n)``: n ranks in one process, one thread each.

For tests and notebooks: the same collectives as MPI and NCCL, with the replicas side
by side, exact, and no launcher. Each rank's code runs in its own thread
(:meth:`LocalGroup.run`), and the collectives meet at a barrier; a sum adds the ranks'
arrays in rank order, so every rank gets the same bits.
"""

from __future__ import annotations

import threading

from .group import DistributedError, Group


class _World:
    def __init__(self, size: int, timeout: float):
        self.size = size
        self.timeout = timeout
        self.barrier = threading.Barrier(size, timeout=timeout)
        self.slots: list = [None] * size


class LocalRank(Group):
    """One rank of a :class:`LocalGroup` (give it to that rank's ReplicatedStore)."""

    backend = "local"

    def __init__(self, world: _World, rank: int):
        super().__init__(rank, world.size, rank, world.timeout)
        self._world = world

    def _wait(self, what: str) -> None:
        try:
            self._world.barrier.wait()
        except threading.BrokenBarrierError:
            raise self._timeout_error(what) from None

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
            if op.kind == "broadcast":
                results.append(arrays[op.root][i].copy())
                continue
            total = arrays[0][i].copy()
            for r in range(1, self.size):
                total += arrays[r][i]
            results.append(total)
        self._wait("a collective")  # every rank has read every input
        for op, result in zip(ops, results):
            op.array[...] = result


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
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds; received {timeout!r}.")
        self._world = _World(size, float(timeout))
        self.groups = [LocalRank(self._world, r) for r in range(size)]

    @property
    def size(self) -> int:
        return self._world.size

    def run(self, fn, *args, **kwargs) -> list:
        """``[fn(group_0, *args, **kwargs), ..., fn(group_n-1, ...)]``, each on its own thread.

        If a rank raises, the others' waits end at once and the first rank's own error is
        raised here (a note names the rank); the consequent DistributedErrors of the
        others are dropped."""
        results: list = [None] * self.size
        errors: list = [None] * self.size
        # A fresh barrier for each run: one broken by a failed run stays broken.
        self._world.barrier = threading.Barrier(self.size, timeout=self._world.timeout)

        def body(rank):
            try:
                results[rank] = fn(self.groups[rank], *args, **kwargs)
            except BaseException as error:  # noqa: B036 - reported to the caller below
                errors[rank] = error
                self._world.barrier.abort()

        threads = [threading.Thread(target=body, args=(r,), name=f"varstore-rank-{r}") for r in range(self.size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        causes = [(r, e) for r, e in enumerate(errors) if e is not None and not isinstance(e, DistributedError)]
        failed = causes or [(r, e) for r, e in enumerate(errors) if e is not None]
        if failed:
            rank, error = failed[0]
            if hasattr(error, "add_note"):
                error.add_note(f"(raised on rank {rank} of a LocalGroup({self.size}))")
            raise error
        return results

    def __repr__(self) -> str:
        return f"<LocalGroup size={self.size}>"
