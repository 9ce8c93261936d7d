"""How a replicated store runs its sync plans: every bucket packed into its staging
buffer, their collectives in one batch, every bucket unpacked.

A training loop queues the same updates before every ``sync()``. So the reducer keeps
the last sync's plan with what its launches need beyond the operands: the layouts, the
pack's chunk tables, fill steps and signs, and the unpack's tables with the variables'
addresses, uploaded once. A sync whose updates name the same variables, in the same
order, with the same mode, sign and fill, on the same stream, reuses them; each sync
still uploads its operands' addresses, and checks that every variable still holds the
storage array its unpack table addresses. The staging buffers are kept the same way.
"""

from __future__ import annotations

import numpy as np

from ..variable import live_storage
from . import buckets as B
from .group import Collective


class Reducer:
    """The pack, collective and unpack steps of a store's syncs on ``device``, through
    ``group``, with the last sync's plan and launch arguments kept (see the module)."""

    def __init__(self, backend, device: str, group):
        self._backend = backend
        self._device = device
        self._group = group
        self._tables = None
        self._staging: dict = {}  # (position, dtype, elements) -> buffer kept between syncs
        self._last: _Repeat | None = None

    def free_cached(self) -> None:
        """Drop the kept staging buffers and launch tables."""
        self._staging.clear()
        self._last = None

    def forget_plan(self) -> None:
        """Drop the kept plan and its tables (a variable was released: they hold its
        storage array)."""
        self._last = None

    def sync_plan(self, updates: list, bucket_bytes: float) -> tuple:
        """``(plan, repeat)`` of ``updates``: ``buckets.plan``, and what :meth:`reduce`
        takes as ``repeat`` (with the plan's digest, made once): the last sync's where
        these updates repeat it."""
        key = [(u.variable, u.mode, u.negate, u.operand.size == 1 and u.variable.size != 1) for u in updates]
        stream = self._backend.stream_key(self._device)
        last = self._last
        if last is not None and last.bucket_bytes == bucket_bytes and last.stream == stream and _same(last.key, key):
            return last.plan_of(updates), last
        plan = B.plan(updates, bucket_bytes)
        last = self._last = _Repeat(key, bucket_bytes, stream, plan, updates)
        return plan, last

    def reduce(self, plan: list, divisor: int, targets=None, keep: bool = True, root: int = 0,
               repeat: _Repeat | None = None) -> None:
        """Pack every bucket, run their collectives as one batch (broadcasts from
        ``root``), unpack every bucket (into ``targets``, per bucket, where given).
        ``keep``: keep the staging buffers for the next call with this plan (sync's).
        ``repeat``: :meth:`sync_plan`'s, for its plan: the launch arguments kept."""
        if self._tables is None:
            self._tables = B.Tables(self._backend, self._device)
        tables = self._tables
        staged = self._staging_buffers(plan, keep)
        layouts = repeat.layouts() if repeat is not None else [B.layout(bucket) for bucket in plan]
        for i, (bucket, staging, where) in enumerate(zip(plan, staged, layouts, strict=True)):
            kept = None if repeat is None else repeat.pack_arguments(i)
            made = B.pack(tables, bucket, staging, where, kept)
            if repeat is not None and kept is None:  # (made with the addresses, in one transfer: kept without)
                repeat.keep_pack_arguments(i, made)
        self._group.run([Collective(bucket.collective, staging, root)
                         for bucket, staging in zip(plan, staged, strict=True) if bucket.collective])
        for i, (bucket, staging, where) in enumerate(zip(plan, staged, layouts, strict=True)):
            mean = bucket.aggregation == "mean" and bucket.collective == "sum"
            d = divisor if mean else 1
            if repeat is not None:
                B.unpack(tables, bucket, staging, where, arguments=repeat.unpack_arguments(tables, i, bucket, d))
            else:
                B.unpack(tables, bucket, staging, where, d, None if targets is None else targets[i])

    def _staging_buffers(self, plan, keep: bool) -> list:
        """A staging buffer per bucket. ``keep``: those of sync() are kept for the next
        sync with the same plan (a fresh host buffer costs a page fault per 4 KiB); the
        buffers of an earlier, different plan are dropped."""
        new = [((i, b.staging, b.elements), b) for i, b in enumerate(plan)]
        kept = self._staging if keep else {}
        buffers = [kept.get(key) for key, _ in new]
        buffers = [buf if buf is not None else self._backend.empty((b.elements,), np.dtype(b.staging), self._device)
                   for buf, (_, b) in zip(buffers, new, strict=True)]
        if keep:
            self._staging = {key: buf for (key, _), buf in zip(new, buffers, strict=True)}
        return buffers


def _same(a: list, b: list) -> bool:
    """Whether two keys name the same variables (by identity: a Variable's ``==`` compares
    values), modes, signs and fills, in order."""
    return len(a) == len(b) and all(x[0] is y[0] and x[1:] == y[1:] for x, y in zip(a, b))  # noqa: B905


class _Repeat:
    """A sync plan kept for the syncs that repeat it: each bucket's update positions in
    the sync's list, its layout, and its launch arguments once made. It keeps no
    operand: the buckets it holds have their updates' operands dropped."""

    def __init__(self, key: list, bucket_bytes: float, stream, plan: list, updates: list):
        self.key = key  # (holds the variables: their ids cannot be reused while kept)
        self.bucket_bytes = bucket_bytes
        self.stream = stream  # (the tables are made in its order: another stream makes its own)
        position = {id(u): i for i, u in enumerate(updates)}
        self._positions = [[position[id(u)] for u in bucket.updates] for bucket in plan]
        self._buckets = [bucket._replace(updates=tuple(u._replace(operand=None) for u in bucket.updates))
                         for bucket in plan]
        self._digest = None
        self._layouts = None
        self._pack: dict = {}
        self._unpack: dict = {}  # bucket -> (divisor, storage arrays addressed, arguments)

    def plan_of(self, updates: list) -> list:
        """The kept plan's buckets holding ``updates`` (which repeat the key)."""
        return [bucket._replace(updates=tuple(updates[i] for i in positions))
                for bucket, positions in zip(self._buckets, self._positions, strict=True)]

    @property
    def digest(self) -> bytes:
        """The plan's ``buckets.digest`` (made on first use: one rank never needs it)."""
        if self._digest is None:
            self._digest = B.digest(self._buckets)
        return self._digest

    def layouts(self) -> list:
        if self._layouts is None:
            self._layouts = [B.layout(bucket) for bucket in self._buckets]
        return self._layouts

    def pack_arguments(self, i: int) -> dict | None:
        """Bucket ``i``'s pack arguments without the operands' addresses, once kept."""
        return self._pack.get(i)

    def keep_pack_arguments(self, i: int, arguments: dict) -> None:
        self._pack[i] = {name: value for name, value in arguments.items() if name != "tensor_address"}

    def unpack_arguments(self, tables, i: int, bucket, divisor: int) -> dict:
        """Bucket ``i``'s unpack arguments, made again where a variable holds another
        storage array than the kept table addresses (or the divisor changed)."""
        storages = [live_storage(u.variable) for u in bucket.updates]
        kept = self._unpack.get(i)
        if kept is not None and kept[0] == divisor and all(a is b for a, b in zip(kept[1], storages)):  # noqa: B905
            return kept[2]
        arguments = B.unpack_arguments(tables, bucket, self.layouts()[i], divisor, storages)
        self._unpack[i] = (divisor, storages, arguments)
        return arguments
