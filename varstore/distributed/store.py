"""ReplicatedStore: a VariableStore with one replica per rank, whose ``aggregation`` and
``synchronization`` are enforced (tf.distribute's semantics).

Every rank runs the same program (SPMD) and makes the same variables in the same order;
each rank's store holds its replica. Outside a replica step ("cross-replica context")
writes apply on every rank as given, which keeps replicas equal when every rank writes
the same value.

========================  =================================================================
synchronization           writes and reads
========================  =================================================================
``on_write``, ``auto``    Inside ``with store.replica_step():``, ``assign``/``assign_add``/
                          ``assign_sub`` are queued (reads still see the old value) and
                          ``store.sync()`` applies them reduced across ranks by
                          ``aggregation``: ``sum`` adds the replicas' updates, ``mean``
                          averages them, ``only_first_replica`` applies rank 0's on every
                          rank, ``none`` applies each rank's own update locally.
``on_read``               Writes stay local (replicas differ). ``store.read_aggregated(v)``
                          reduces by ``aggregation`` without changing them; checkpoints hold
                          the aggregated value. A cross-replica ``assign`` of a ``sum``
                          variable writes value/n to every replica (integers: value // n,
                          and the remainder to rank 0), so the aggregate is the value.
``none``                  Replica-local: never synced, never compared.
========================  =================================================================

Integer variables cannot have ``aggregation="mean"``, nor bool ones ``sum``/``mean``, when
they are synced: a clear ValueError at creation.
"""

from __future__ import annotations

import hashlib
import json
import threading
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np

from .. import checkpoint, scopes
from ..backends.base import is_device_array
from ..casting import accumulate_into
from ..dtypes import INT_DTYPES
from ..errors import ArgumentTypeError
from ..store import VariableStore
from ..values import write
from ..variable import accumulate_in_place, assign_in_place, live_storage, setitem_in_place, write_operand
from . import buckets as B
from . import default_group
from .group import DistributedError, Group
from .local import LocalGroup
from .reducer import Reducer

SYNCED = ("on_write", "auto", "on_read")


class SyncStats(NamedTuple):
    """What one ``sync()`` did: updates applied, buckets, collectives issued (0 for
    updates applied locally), and bytes reduced (staging)."""

    updates: int
    buckets: int
    collectives: int
    bytes: int


class ReplicatedStore(VariableStore):
    """A VariableStore whose variables have one replica per rank of ``group``.

    Args:
        group: a group from ``vs.distributed.init()`` or one rank of a
            ``vs.distributed.LocalGroup`` (default: ``vs.distributed.default_group()``).
        device: as for VariableStore; default: the group's GPU for NCCL, else the
            default device.
        memory_limit: as for VariableStore (staging buffers are temporaries outside it).
        bucket_mb: the most MiB of staging one collective of ``sync()`` carries
            (0: one collective per variable).
    """

    def __init__(self, group=None, device=None, memory_limit=None, bucket_mb: float = 25):
        if isinstance(group, LocalGroup):
            raise TypeError(
                f"ReplicatedStore takes one rank's group; received the whole {group!r}. Run the rank's "
                f"code with LocalGroup.run(fn): it calls fn(group) with each rank's group."
            )
        group = default_group() if group is None else group
        if not isinstance(group, Group):
            raise TypeError(f"group must come from vs.distributed.init() or a LocalGroup; received {group!r}.")
        if isinstance(bucket_mb, bool) or not isinstance(bucket_mb, (int, float)) or not bucket_mb >= 0:
            raise (ValueError if type(bucket_mb) in (int, float) else ArgumentTypeError)(
                f"bucket_mb must be a number of MiB >= 0; received bucket_mb={bucket_mb!r}.")
        super().__init__(group.device if device is None else device, memory_limit)
        if group.device is not None and self._device not in (group.device, "cpu"):  # (NCCL: its communicator's GPU)
            raise ValueError(f"This rank's {group.backend} group runs its collectives on {group.device}; a store "
                             f"on {self._device} cannot sync through it. Leave `device` out (or use 'cpu').")
        self._group = group
        self._bucket_bytes = float(bucket_mb) * 2**20
        self._pending: dict = {}
        self._gradient_steps: list = []  # (apply, [(variable, private operand), ...]) in queue order
        self._order: dict = {}
        self._routing = _ReplicaWrites(self)
        self._created = 0
        self._in_step = threading.local()
        self._reducer = Reducer(self._backend, self._device, group)

    @property
    def group(self) -> Group:
        return self._group

    @property
    def bucket_mb(self) -> float:
        return self._bucket_bytes / 2**20

    def __repr__(self) -> str:
        return (f"<ReplicatedStore device={self._device}, variables={len(self)}, rank={self._group.rank}/"
                f"{self._group.size} ({self._group.backend})>")

    # ---------------------------------------------------------------- creation
    @property
    def counter_device(self) -> str:
        return self._device

    def _admit(self, path, dtype, aggregation, synchronization, device):
        if synchronization in SYNCED:
            B.check_syncable(path, dtype, aggregation, synchronization, device, self._device)

    def _write_routing(self, synchronization):
        return self._routing if synchronization in SYNCED else None

    def _register(self, path, variable, nbytes, backend):
        with self._lock:
            self._order[variable] = self._created
            self._created += 1
        super()._register(path, variable, nbytes, backend)

    # ------------------------------------------------------------- replica step
    @contextmanager
    def replica_step(self):
        """Inside, writes to this store's on_write/auto variables are queued (this
        thread's); ``sync()`` applies them. Steps may nest; updates wait for sync().

        A queued update holds the value as it was when written: a variable, or an array
        of the store's backend, passed to ``assign``/``assign_add``/``assign_sub`` is
        copied (one copy on its device), so writing to it before ``sync()`` does not
        change the update."""
        depth = getattr(self._in_step, "depth", 0)
        self._in_step.depth = depth + 1
        try:
            yield self
        finally:
            self._in_step.depth = depth

    def _stepping(self) -> bool:
        return getattr(self._in_step, "depth", 0) > 0 and (not scopes.ACTIVE or scopes.stateless_scope() is None)

    @property
    def pending(self) -> list:
        """Paths of the variables with updates waiting for ``sync()``, in creation order."""
        with self._lock:
            return [u.variable.path for u in sorted(self._pending.values(), key=lambda u: u.order)]

    # Writes of synced variables come here (through their strategy, _ReplicaWrites).
    def _assign(self, variable, value):
        if self._stepping() and variable.synchronization != "on_read":
            self._queue(variable, "assign", write_operand(variable, value, "assign", private=True), False)
            return variable
        if self._cross_replica_sum(variable):
            return assign_in_place(variable, self._replica_share(variable, value))
        return assign_in_place(variable, value)

    def _accumulate(self, variable, value, sign, method):
        if self._stepping() and variable.synchronization != "on_read":
            self._queue(variable, "add", write_operand(variable, value, method, private=True), sign < 0)
            return variable
        self._refuse_cross_replica(variable, method)
        return accumulate_in_place(variable, write_operand(variable, value, method), sign)

    def _setitem(self, variable, key, value):
        if self._stepping() and variable.synchronization != "on_read":
            raise ValueError(
                f"var[key] = ... inside replica_step() on the {variable.synchronization} variable "
                f"{variable.path!r}: sliced writes are not synced. Assign the whole new value "
                f"(var.assign), or write the slice outside the step on every rank."
            )
        self._refuse_cross_replica(variable, "var[key] = ...")
        setitem_in_place(variable, key, value)

    def _cross_replica_sum(self, variable) -> bool:
        """A write to an on_read sum variable outside a replica step (and outside a
        StatelessScope, whose writes touch no replica)."""
        return (variable.synchronization == "on_read" and variable.aggregation == "sum" and not self._stepping()
                and (not scopes.ACTIVE or scopes.stateless_scope() is None))

    def _refuse_cross_replica(self, variable, method):
        if self._cross_replica_sum(variable):
            raise ValueError(
                f"{method} on the on_read variable {variable.path!r} with aggregation='sum' outside a "
                f"replica step would count the value once per replica ({self._group.size}). Write it "
                f"inside store.replica_step(), or assign() the aggregated total (each replica gets 1/n)."
            )

    def _replica_share(self, variable, value):
        """This rank's part of a cross-replica assign of an on_read sum variable."""
        n = self._group.size
        storage, (_, dtype, backend, _) = live_storage(variable), variable.stored
        if dtype in INT_DTYPES:  # (our cast: Python ints out of bounds refused, floats saturate, NaN is 0)
            whole = np.asarray(backend.host_view(write_operand(variable, value, "assign")), storage.dtype)
            share = whole // n
            return share + (whole - share * n) if self._group.rank == 0 else share
        if not backend.owns(value) and is_device_array(value):  # (torch's, numba's: read through the backend)
            value = backend.asarray(value, variable.device)
        array = np.asarray(backend.host_view(value) if backend.owns(value) else value)
        return array.astype(np.float64) / n if n > 1 else array  # (one replica: converted once, by the assign)

    def _queue(self, variable, mode, operand, negate):
        with self._lock:
            if any(v is variable for _, queued in self._gradient_steps for v, _ in queued):  # (sync() runs the
                # queued writes before the queued optimizer steps: a write after a step would change their order)
                raise ValueError(f"{variable.path!r} has an optimizer step queued in this replica step, which "
                                 f"sync() would apply after this write. Write it after store.sync().")
            previous = self._pending.get(variable)
            if previous is not None and mode == "add":  # fold into one private full array
                storage, dtype, backend, device = variable.stored
                combined = backend.empty(storage.shape, storage.dtype, device)
                if previous.negate:
                    backend.fill(combined, combined.dtype.type(0))  # (on its device: 0 is all-zero words)
                    accumulate_into(backend, combined, previous.operand, dtype, -1)
                else:
                    write(backend, combined, dtype, previous.operand, dtype)
                accumulate_into(backend, combined, operand, dtype, -1 if negate else 1)
                mode, operand, negate = previous.mode, combined, False
            self._pending[variable] = B.Update(variable, mode, operand, negate, self._order[variable])

    def queue_gradients(self, apply, pairs) -> bool:
        """Inside a replica step, queue an optimizer step (False outside one): each
        gradient checked and copied now in its variable's dtype, as a queued ``assign_add``
        is; ``sync()`` reduces them by aggregation and calls ``apply(gradients, variables,
        dtypes)`` once, with storage arrays."""
        if not self._stepping():
            return False
        for variable, _ in pairs:
            if variable.store is not self or variable.synchronization not in ("on_write", "auto"):
                raise ValueError(f"An optimizer step inside replica_step() updates on_write/auto variables of this "
                                 f"store; {variable.path!r} is {variable.synchronization} (or in another store).")
        operands = [(v, write_operand(v, g, "assign", private=True)) for v, g in pairs]
        with self._lock:
            self._gradient_steps.append((apply, operands))
        return True

    def check_write(self, variable, method: str) -> None:
        if variable.store is self and variable.synchronization in SYNCED:
            self._refuse_cross_replica(variable, method)

    # --------------------------------------------------------------------- sync
    def sync(self) -> SyncStats:
        """Apply the queued updates, reduced across the ranks (collective); then each
        queued optimizer step in order: its gradients reduced by aggregation, then the
        step, once, on every rank.

        The ranks first compare a hash of their bucket plans and all raise
        DistributedError, naming the difference, if they differ; the updates then stay
        queued and no variable changes."""
        with self._lock:
            updates = [u for u in self._pending.values() if not u.variable.released]
            self._pending = {}
            steps, self._gradient_steps = self._gradient_steps, []
        try:
            plan, repeat = self._reducer.sync_plan(updates, self._bucket_bytes)
            self._agree_on_plan(plan, "sync()", repeat)
        except BaseException:
            with self._lock:
                for u in updates:
                    self._pending.setdefault(u.variable, u)
                self._gradient_steps[:0] = steps
            raise
        before = self._group.calls["sum"] + self._group.calls["broadcast"]
        k = 0
        try:
            self._reducer.reduce(plan, divisor=self._group.size, repeat=repeat)
            buckets, nbytes = sum(1 for b in plan if b.collective), sum(b.nbytes for b in plan if b.collective)
            for k, (apply, operands) in enumerate(steps):  # noqa: B007 (k: where a failure re-queues from)
                gradient_plan, gradients = self._reduce_gradients(operands)
                apply(gradients, [v for v, _ in operands], [v.stored.dtype for v, _ in operands])
                buckets += sum(1 for b in gradient_plan if b.collective)
                nbytes += sum(b.nbytes for b in gradient_plan if b.collective)
        except BaseException:
            with self._lock:  # (the steps not run stay queued: a step checks everything before it writes)
                self._gradient_steps[:0] = steps[k:]
            raise
        collectives = self._group.calls["sum"] + self._group.calls["broadcast"] - before
        return SyncStats(len(updates) + sum(len(o) for _, o in steps), buckets, collectives, nbytes)

    def _reduce_gradients(self, operands) -> tuple:
        """``(plan, gradients)``: one step's gradients reduced, as storage arrays."""
        updates = [B.Update(v, "assign", g, False, self._order[v]) for v, g in operands]
        plan = B.plan(updates, self._bucket_bytes)
        self._agree_on_plan(plan, "sync() (optimizer step)")
        out = {id(v): self._backend.empty(v.shape, live_storage(v).dtype, self._device) for v, _ in operands}
        self._reducer.reduce(plan, self._group.size, targets=[[out[id(u.variable)] for u in b.updates] for b in plan],
                             keep=False)
        return plan, [out[id(v)] for v, _ in operands]

    def free_cached(self) -> None:
        """Drop the kept sync staging buffers and launch tables, then as
        VariableStore.free_cached."""
        self._reducer.free_cached()
        super().free_cached()

    def _forget(self, variable) -> None:
        super()._forget(variable)
        self._reducer.forget_plan()  # (its unpack tables hold the released storage)

    def _agree_on_plan(self, plan, what: str, repeat=None) -> None:
        """Raise DistributedError where the ranks' plans differ (``repeat``: the
        reducer's kept plan, with its digest made once)."""
        group = self._group
        if group.size == 1:
            return
        digests = group.allgather_bytes(B.digest(plan) if repeat is None else repeat.digest)
        if len(set(digests)) == 1:
            return
        described = group.allgather_bytes(
            json.dumps([b.describe() for b in plan if b.collective], separators=(",", ":")).encode())
        plans = [json.loads(d) for d in described]
        differing = [r for r in range(group.size) if digests[r] != digests[0]]
        raise DistributedError(
            f"{what}: the ranks' sync plans differ, so their collectives would not match. Rank 0: "
            f"{_summary(plans[0])}; rank {differing[0]}: {_summary(plans[differing[0]])}. Every rank must "
            f"update the same variables (same shapes and dtypes, assign vs add) before each sync()."
        )

    # ------------------------------------------------------------ collectives
    def read_aggregated(self, variable):
        """The value of ``variable`` reduced across the replicas by its aggregation
        (collective for on_read variables; others: this replica's value). The replicas
        are not changed."""
        if variable.store is not self:
            raise ValueError(f"read_aggregated: variable {variable.path!r} is not in this store.")
        storage = live_storage(variable)
        out = self._backend.empty(variable.shape, storage.dtype, self._device)
        if variable.synchronization != "on_read" or variable.aggregation == "none":
            self._backend.copyto(out, storage)
        else:
            update = B.Update(variable, "assign", storage, False, self._order[variable])
            plan = B.plan([update], float("inf"))
            self._agree_on_plan(plan, "read_aggregated()")
            self._reducer.reduce(plan, self._group.size, targets=[[out]], keep=False)
        return self._backend.present(out, variable.stored.dtype)

    def broadcast(self, root: int = 0, variables=None) -> None:
        """Make every on_write/auto variable (or those in ``variables``) equal to rank
        ``root``'s, bit for bit: after initialization with different seeds, or to repair
        a divergence (collective)."""
        if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < self._group.size:
            raise (ValueError if type(root) is int else ArgumentTypeError)(
                f"broadcast: root must be a rank in [0, {self._group.size}); received {root!r}.")
        chosen = self._chosen(variables, "broadcast")
        self._broadcast(chosen, root, "broadcast()")

    def _broadcast(self, variables, root, what):
        updates = [B.Update(v, "assign", live_storage(v), False, self._order[v]) for v in variables]
        plan = B.plan(updates, self._bucket_bytes, raw=True)
        plan = [b._replace(collective="broadcast") for b in plan]
        self._agree_on_plan(plan, what)
        self._reducer.reduce(plan, 1, keep=False, root=root)

    def _chosen(self, variables, what):
        if variables is None:
            return [v for v in self.variables if v.synchronization in ("on_write", "auto")]
        chosen = list(variables)
        strangers = [getattr(v, "path", repr(v)) for v in chosen if getattr(v, "_store", None) is not self]
        if strangers:
            raise ValueError(f"{what}: {strangers} are not variables of this store.")
        return chosen

    def check_replicas(self) -> dict:
        """Compare every on_write/auto variable whose aggregation is not "none" (those
        replicas apply their own updates, and may differ) across the ranks (collective): a
        checksum of each replica's bytes is gathered. Returns ``{path: [ranks whose
        replica differs from rank 0's]}`` for the variables that diverged (empty: all
        equal). Raises DistributedError when the ranks do not hold the same variables."""
        variables = [v for v in self._chosen(None, "check_replicas") if v.aggregation != "none"]
        names = [v.path for v in variables]
        sums = [hashlib.blake2b(self._backend.to_host(live_storage(v)).tobytes(), digest_size=16).hexdigest()
                for v in variables]
        gathered = [json.loads(m) for m in self._group.allgather_bytes(json.dumps([names, sums]).encode())]
        if any(g[0] != names for g in gathered):
            other = next(r for r, g in enumerate(gathered) if g[0] != names)
            raise DistributedError(
                f"check_replicas(): rank {self._group.rank} holds {len(names)} replicated variables and rank "
                f"{other} {len(gathered[other][0])}, or their paths differ.")
        diverged = {}
        for i, path in enumerate(names):
            ranks = [r for r, g in enumerate(gathered) if g[1][i] != gathered[0][1][i]]
            if ranks:
                diverged[path] = ranks
        return diverged

    # ------------------------------------------------------------- checkpoints
    def save(self, file) -> None:
        """Collective: rank 0 writes the checkpoint (as VariableStore.save), with the
        aggregated value of each on_read variable; every rank raises if it failed."""
        values = {}
        for variable in self.variables:
            if variable.synchronization == "on_read" and variable.aggregation != "none":
                values[variable.path] = _storage_of(self.read_aggregated(variable), variable)
        error = None
        if self._group.rank == 0:
            try:
                checkpoint.save(self, file, values=values)
            except Exception as caught:  # every rank learns of it below
                error = caught
        self._group.agree(error, "save()")

    def load(self, file, strict: bool = True) -> list:
        """Collective: rank 0 reads the checkpoint (as VariableStore.load: checked whole
        before anything is written) and every rank gets its values; an on_read sum
        variable's aggregated value is shared out as by a cross-replica assign. Returns
        the file's paths that were not loaded (``strict=False``)."""
        error, skipped = None, []
        if self._group.rank == 0:
            try:
                skipped = checkpoint.load(self, file, strict)
            except Exception as caught:
                error = caught
        self._group.agree(error, "load()")
        loaded = json.loads(self._group.allgather_bytes(json.dumps(
            [p for p in self._variables if p not in set(skipped)] if self._group.rank == 0 else []).encode())[0])
        skipped = json.loads(self._group.allgather_bytes(json.dumps(skipped).encode())[0])
        variables = [self[p] for p in loaded]
        self._broadcast(variables, 0, "load()")
        for variable in variables:
            if variable.synchronization == "on_read" and variable.aggregation == "sum" and self._group.size > 1:
                assign_in_place(variable, self._replica_share(variable, variable.numpy()))
        return skipped


def _storage_of(presented, variable):
    """A presented value (``Variable.value`` form) back as the variable's storage words."""
    words = live_storage(variable).dtype
    return presented.view(words) if presented.dtype != words else presented


def _summary(plan: list) -> str:
    if not plan:
        return "no collective updates"
    parts = []
    for b in plan[:4]:
        paths = [u[0] for u in b["updates"]]
        shown = paths[:6] + (["..."] if len(paths) > 6 else [])
        parts.append(f"{b['collective']} of {b['aggregation']}/{b['dtype']} {shown}")
    more = f" and {len(plan) - 4} more buckets" if len(plan) > 4 else ""
    return f"{len(plan)} buckets: " + "; ".join(parts) + more


class _ReplicaWrites:
    """The write strategy (as ``varstore.variable.LocalWrites``) of a ReplicatedStore's
    synced variables: their writes queued inside a replica step, applied in place outside."""

    __slots__ = ("store",)
    shortcuts = False  # every write comes here: a step may queue it

    def __init__(self, store: ReplicatedStore):
        self.store = store

    def assign(self, variable, value):
        return self.store._assign(variable, value)

    def accumulate(self, variable, value, sign: int, method: str):
        return self.store._accumulate(variable, value, sign, method)

    def setitem(self, variable, key, value) -> None:
        self.store._setitem(variable, key, value)
