"""Tier a: a replicated store's syncs that repeat the last one's updates reuse its plan and
launch tables (``varstore.distributed.reducer``), and give the same values as a fresh
plan, however the updates change (CPU)."""

from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pytest

import varstore as vs
from varstore.distributed import LocalGroup
from varstore.distributed import buckets as B
from varstore.multi_tensor import Tables
from varstore.stored import StorageRecord


def _counting(monkeypatch):
    """Count this thread's fresh plans and table uploads (each rank of a LocalGroup is a
    thread): ``counts()`` gives them."""
    local = threading.local()
    plan, upload = B.plan, Tables.upload

    def counts():
        if not hasattr(local, "counts"):
            local.counts = {"plan": 0, "upload": 0}
        return local.counts

    def counted_plan(*args, **kwargs):
        counts()["plan"] += 1
        return plan(*args, **kwargs)

    def counted_upload(self, columns):
        counts()["upload"] += 1
        return upload(self, columns)

    monkeypatch.setattr(B, "plan", counted_plan)
    monkeypatch.setattr(Tables, "upload", counted_upload)
    return counts


@pytest.mark.parametrize("n", [1, 2])
def test_a_repeated_sync_reuses_its_plan_and_tables_and_gives_fresh_values(monkeypatch, n):
    counts = _counting(monkeypatch)

    def body(group):
        store = vs.ReplicatedStore(group=group, device="cpu", bucket_mb=1e-4)  # (100 bytes: several buckets)
        a = store.variable(np.zeros(40), dtype="float32", name="a", aggregation="mean")
        b = store.variable(np.zeros(30), dtype="bfloat16", name="b", aggregation="sum")
        c = store.variable(np.full(20, 5.0), dtype="float32", name="c", aggregation="sum")
        seen = []
        for step in range(4):
            before = dict(counts())
            r = group.rank + 1
            with store.replica_step():
                a.assign_add(np.full(40, step * r, np.float32))
                b.assign_sub(np.arange(30) * r)
                c.assign(float(step + r))  # a scalar: fills c
            stats = store.sync()
            seen.append((dict(counts()), before, stats.buckets))
            total = sum(range(1, group.size + 1))
            expect_a = sum(s * total for s in range(step + 1)) / group.size
            np.testing.assert_array_equal(a.numpy(), np.full(40, expect_a, np.float32))
            np.testing.assert_array_equal(b.numpy().astype(np.float64),
                                          (-(np.arange(30) * total) * (step + 1)).astype(vs.dtypes.host_dtype(
                                              "bfloat16")).astype(np.float64))
            np.testing.assert_array_equal(c.numpy(), np.full(20, sum(step + q for q in range(1, group.size + 1))))
        return seen

    for seen in LocalGroup(n).run(body):
        first_after, first_before, buckets = seen[0]
        assert buckets == 3 and first_after["plan"] > first_before["plan"]  # the first sync plans
        # a fresh plan uploads two tables per bucket: pack's (with its operands' addresses), unpack's
        assert first_after["upload"] - first_before["upload"] == 2 * buckets
        for after, before, _ in seen[1:]:
            assert after["plan"] == before["plan"]  # no fresh plan
            assert after["upload"] - before["upload"] == buckets  # the operands' addresses only


def test_a_changed_update_makes_a_fresh_plan_with_the_right_values(monkeypatch):
    counts = _counting(monkeypatch)

    def body(group):
        store = vs.ReplicatedStore(group=group, device="cpu")
        v = store.variable(np.full(8, 10.0), dtype="float32", name="v", aggregation="sum")
        w = store.variable(np.full(8, 1.0), dtype="float32", name="w", aggregation="sum")
        steps = [
            lambda: v.assign_add(np.ones(8)),
            lambda: v.assign_add(np.ones(8)),  # the same: reused
            lambda: v.assign_sub(np.ones(8)),  # a sign
            lambda: v.assign(np.full(8, 3.0)),  # a mode
            lambda: v.assign(4.0),  # a fill
            lambda: (v.assign(4.0), w.assign_add(np.ones(8))),  # another variable
        ]
        plans = []
        for step in steps:
            with store.replica_step():
                step()
            before = counts()["plan"]
            store.sync()
            plans.append(counts()["plan"] - before)
        np.testing.assert_array_equal(v.numpy(), np.full(8, 4.0, np.float32))
        np.testing.assert_array_equal(w.numpy(), np.full(8, 2.0, np.float32))
        return plans

    assert LocalGroup(1).run(body) == [[1, 0, 1, 1, 1, 1]]


def test_the_kept_plan_holds_no_operand_and_lets_a_released_variable_go():
    def body(group):
        store = vs.ReplicatedStore(group=group, device="cpu")
        v = store.variable(np.zeros(64), dtype="float32", name="v", aggregation="sum")
        w = store.variable(np.zeros(64), dtype="float32", name="w", aggregation="sum")
        update = np.ones(64, np.float32)
        for _ in range(2):
            with store.replica_step():
                v.assign_add(update)
                w.assign_add(update)
            store.sync()
        kept = store._reducer._last
        assert kept is not None and all(u.operand is None for b in kept._buckets for u in b.updates)
        del kept
        storage = weakref.ref(w.stored.storage)
        w.release()
        assert store._reducer._last is None  # (its unpack tables held w's storage)
        with store.replica_step():
            v.assign_add(update)
        store.sync()
        gc.collect()
        np.testing.assert_array_equal(v.numpy(), np.full(64, 3.0, np.float32))
        return storage() is None

    assert LocalGroup(1).run(body) == [True]


def test_a_variable_holding_another_storage_array_gets_fresh_unpack_tables():
    """Defensive: the unpack tables address storage arrays; where a variable's array
    changed between syncs, they are made again, and the new array gets the update."""

    def body(group):
        store = vs.ReplicatedStore(group=group, device="cpu")
        v = store.variable(np.zeros(16), dtype="float32", name="v", aggregation="sum")
        for _ in range(2):
            with store.replica_step():
                v.assign_add(np.ones(16))
            store.sync()
        old = v.stored.storage
        new = np.full(16, 100.0, np.float32)
        record = v._stored
        v._stored = StorageRecord(new, record.dtype, record.backend, record.device)
        with store.replica_step():
            v.assign_add(np.ones(16))
        store.sync()
        return old.copy(), new.copy()

    [(old, new)] = LocalGroup(1).run(body)
    np.testing.assert_array_equal(old, np.full(16, 2.0, np.float32))  # not written by the third sync
    np.testing.assert_array_equal(new, np.full(16, 101.0, np.float32))


def test_a_sync_on_another_stream_makes_its_own_plan_and_tables(monkeypatch):
    """Kept tables were allocated in their stream's order: a sync under another current
    stream (``Backend.stream_key``) makes fresh ones, and the values stay right."""
    counts = _counting(monkeypatch)

    def body(group):
        store = vs.ReplicatedStore(group=group, device="cpu")
        v = store.variable(np.zeros(8), dtype="float32", name="v", aggregation="sum")
        streams = iter([1, 1, 2, 2, 1])
        monkeypatch.setattr(store._backend, "stream_key", lambda device: next(streams))
        fresh = []
        for _ in range(5):
            with store.replica_step():
                v.assign_add(np.ones(8))
            before = counts()["plan"]
            store.sync()
            fresh.append(counts()["plan"] - before)
        np.testing.assert_array_equal(v.numpy(), np.full(8, 5.0, np.float32))
        return fresh

    assert LocalGroup(1).run(body) == [[1, 0, 1, 0, 1]]


def test_a_rank_whose_updates_change_while_the_others_repeat_is_still_refused():
    """A kept plan's digest is still compared on every sync: where one rank reuses its
    plan and another queues other updates, every rank raises and nothing changes."""
    from varstore.distributed import DistributedError

    def body(group):
        store = vs.ReplicatedStore(group=group, device="cpu")
        a = store.variable(np.zeros(4), dtype="float32", name="a", aggregation="sum")
        b = store.variable(np.zeros(4), dtype="float32", name="b", aggregation="sum")
        for _ in range(2):
            with store.replica_step():
                a.assign_add(np.ones(4))
            store.sync()
        with store.replica_step():
            (a if group.rank == 0 else b).assign_add(np.ones(4))
        with pytest.raises(DistributedError, match="plans differ"):
            store.sync()
        return a.numpy().tolist(), b.numpy().tolist(), store.pending

    # (a: two sums of 1 + 1)
    assert LocalGroup(2).run(body) == [([4.0] * 4, [0.0] * 4, ["a"]), ([4.0] * 4, [0.0] * 4, ["b"])]
