"""The multi-tensor kernels of ``ReplicatedStore.sync()``: pack (the queued updates of many
variables into one staging buffer) and unpack (the reduced buffer, divided for a mean,
added to the variables), without the collective between them. ``python -m
varstore.bench.sync`` times whole syncs against the raw all-reduce.

The launches run as in a sync that repeats the last one's updates: with the launch
arguments kept (each pack uploads its operands' addresses; since 2026-12-06, before
which every launch made its tables). One rank (``LocalGroup(1)``), aggregation mean;
the size's float32 element count N is
spread over K = min(1000, N / 256) variables of the dtype, one bucket for all of them,
each holding one queued ``assign_add``. Below the rotation span, K more variables and
another bucket per copy. The baselines are the array library's copy (what pack does at
best) and in-place add (unpack reads two arrays and writes one, as this does) of N
float32 elements.

Byte accounting per element: pack reads the update and writes float32 staging (4 + 4
for float32, 2 + 4 for bfloat16); unpack reads the staging and the variable and writes
the variable (4 + 4 + 4, 4 + 2 + 2).
"""

from __future__ import annotations

import numpy as np

import varstore as vs
from varstore import backends
from varstore.distributed import LocalGroup
from varstore.distributed import buckets as B
from varstore.dtypes import host_dtype
from varstore.variable import write_operand

from .ops_base import ELEMENT, Case, cycle, require, rotation

SYNC_DTYPES = ("float32", "bfloat16")
MOST_VARIABLES = 1000
MIN_VARIABLE = 256  # elements


def _moved(kernel: str, dtype: str, n: int) -> int:
    item = host_dtype(dtype).itemsize
    return n * (ELEMENT + item if kernel == "pack" else ELEMENT + 2 * item)


def _buckets(ctx, dtype: str, n: int, copies: int):
    """(store, buckets, tables, stagings, layouts) of ``copies`` buckets of K variables,
    each with one queued ``assign_add`` of ones; every staging buffer packed once."""
    variables = max(1, min(MOST_VARIABLES, n // MIN_VARIABLE))
    each = n // variables
    staging_bytes = variables * each * np.dtype(B.STAGING[dtype]).itemsize

    def setup(group):
        store = vs.ReplicatedStore(group=group, device=ctx.device, bucket_mb=1 << 20)
        backend, _ = backends.for_device(store.device)
        made = [store.variable("zeros", shape=(each,), dtype=dtype, name=f"v{i}", aggregation="mean",
                               synchronization="on_write") for i in range(copies * variables)]
        ones = backend.empty((each,), np.dtype(np.float32), store.device)
        ones.fill(1)
        # What `v.assign_add(ones)` queues in a replica step; the benchmark runs the
        # kernels itself, no sync.
        updates = [B.Update(v, "add", write_operand(v, ones, "assign_add", private=True), False, i)
                   for i, v in enumerate(made)]
        buckets = B.plan(updates, staging_bytes)
        tables = B.Tables(backend, store.device)
        stagings = [backend.empty((b.elements,), np.dtype(b.staging), store.device) for b in buckets]
        layouts = [B.layout(b) for b in buckets]
        for bucket, staging, where in zip(buckets, stagings, layouts, strict=True):
            B.pack(tables, bucket, staging, where)
        return store, buckets, tables, stagings, layouts

    return LocalGroup(1).run(setup)[0]


def make_build_sync(kernel: str, dtype: str):
    def build(ctx, nbytes):
        n = nbytes // ELEMENT
        k = rotation(ctx, _moved(kernel, dtype, n))
        store, buckets, tables, stagings, layouts = _buckets(ctx, dtype, n, k)
        require(len(buckets) == k, f"the plan cut {len(buckets)} buckets, expected {k}")
        calls = [0] * k
        # Launch arguments made once per bucket, as a sync that repeats the last one's
        # updates keeps them (distributed/reducer.py): each pack still uploads its
        # operands' addresses.
        if kernel == "pack":
            kept = [B.pack_arguments(tables, b, w) for b, w in zip(buckets, layouts, strict=True)]
        else:
            kept = [B.unpack_arguments(tables, b, w, 2) for b, w in zip(buckets, layouts, strict=True)]

        def ours(i):
            if kernel == "pack":
                B.pack(tables, buckets[i], stagings[i], layouts[i], kept[i])
            else:
                B.unpack(tables, buckets[i], stagings[i], layouts[i], arguments=kept[i])
            calls[i] += 1

        fns = {"ours": cycle([lambda i=i: ours(i) for i in range(k)])}
        xp = ctx.native.xp
        outs = [xp.zeros(n, np.float32) for _ in range(k)]
        sources = [xp.ones(n, np.float32) for _ in range(k)]
        pairs = zip(outs, sources, strict=True)
        entries = [ctx.native.copy(o, s) if kernel == "pack" else ctx.native.add(o, s) for o, s in pairs]
        fns[entries[0][0] + " (float32)"] = cycle([e[1] for e in entries])

        def check():
            staging = ctx.native.to_host(stagings[0])
            require(bool(np.all(staging == 1.0)), f"pack {dtype}: the staging buffer does not hold the updates (1.0)")
            expected = 0.5 * (calls[0] if kernel == "unpack" else 0)  # every unpack added 1 / 2
            for u in buckets[0].updates[:: max(1, len(buckets[0].updates) // 8)]:
                got = ctx.native.to_host(u.variable.stored.storage).view(host_dtype(dtype)).astype(np.float64)
                require(bool(np.all(got == expected)),
                        f"{kernel} {dtype}: {u.variable.path} holds {got[:3]}..., expected {expected} after "
                        f"{calls[0]} unpacks")

        moved = _moved(kernel, dtype, sum(b.elements for b in buckets[:1]))
        return Case(fns, moved, check, keep=[store, outs, sources])

    return build
