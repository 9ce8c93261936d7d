"""Tier a: ReplicatedStore semantics on LocalGroup(1..4), plans, failures (CPU)."""

from __future__ import annotations

import numpy as np
import pytest

import varstore as vs
from varstore.distributed import DistributedError, LocalGroup, selftest
from varstore.distributed import buckets as B

AGGREGATIONS = ("sum", "mean", "only_first_replica", "none")
SYNCS = ("on_write", "on_read", "auto", "none")
DTYPES = ("float32", "float64", "int32", "bfloat16")


def _refused(dtype, aggregation, synchronization):
    return dtype == "int32" and aggregation == "mean" and synchronization != "none"


def _reduce(values, aggregation, rank):
    n = len(values)
    return {"sum": sum(values), "mean": sum(values) / n, "only_first_replica": values[0],
            "none": values[rank]}[aggregation]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("synchronization", SYNCS)
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_semantics_matrix(n, synchronization, aggregation, dtype):
    """assign_add / assign_sub / assign inside a step, sync, read_aggregated, and a
    cross-replica assign: exact values (small integers) on every rank."""

    def body(group):
        store = vs.ReplicatedStore(group=group, device="cpu")
        if _refused(dtype, aggregation, synchronization):
            with pytest.raises(ValueError, match="mean"):
                store.variable(np.full((2, 3), 10), dtype=dtype, name="v", aggregation=aggregation,
                               synchronization=synchronization)
            assert "v" not in store
            return None
        v = store.variable(np.full((2, 3), 10), dtype=dtype, name="v", aggregation=aggregation,
                           synchronization=synchronization)
        r = group.rank
        out = {}
        with store.replica_step():
            v.assign_add(np.full((2, 3), r + 1))
            v.assign_sub(1)  # folded with the add: update r
            out["during"] = v.numpy().astype(np.float64)
        stats = store.sync()
        out["after_add"] = v.numpy().astype(np.float64)
        out["stats"] = stats
        out["aggregated"] = np.asarray(store.read_aggregated(v)).astype(np.float64)
        with store.replica_step():
            v.assign(np.full((2, 3), 2 * r))
        store.sync()
        out["after_assign"] = v.numpy().astype(np.float64)
        if synchronization == "on_read" and aggregation == "sum":
            with pytest.raises(ValueError, match="outside a replica step"):
                v.assign_add(1)
            v.assign(np.full((2, 3), 12 * n))  # cross-replica: each replica gets 12
            out["cross"] = np.asarray(store.read_aggregated(v)).astype(np.float64)
            out["cross_local"] = v.numpy().astype(np.float64)
        return out

    results = LocalGroup(n).run(body)
    if _refused(dtype, aggregation, synchronization):
        return
    for rank, out in enumerate(results):
        ranks = range(n)
        if synchronization in ("on_write", "auto"):
            queued = aggregation != "none"
            assert np.all(out["during"] == 10), "queued updates are not visible before sync()"
            want_add = 10 + _reduce([q for q in ranks], aggregation, rank)
            want_assign = _reduce([2 * q for q in ranks], aggregation, rank)
            assert out["stats"].collectives == (1 if queued and n >= 1 else 0)
            np.testing.assert_array_equal(out["aggregated"], want_add)  # replicas equal: the local value
        else:  # on_read / none: local writes
            assert np.all(out["during"] == 10 + rank)
            want_add = 10 + rank
            want_assign = 2 * rank
            assert out["stats"].updates == 0
            if synchronization == "on_read":
                want = _reduce([10 + q for q in ranks], aggregation, rank)
                np.testing.assert_array_equal(out["aggregated"], want)
            else:
                np.testing.assert_array_equal(out["aggregated"], want_add)
        np.testing.assert_array_equal(out["after_add"], want_add)
        np.testing.assert_array_equal(out["after_assign"], want_assign)
        if "cross" in out:
            np.testing.assert_array_equal(out["cross"], 12 * n)
            np.testing.assert_array_equal(out["cross_local"], 12)


# ---------------------------------------------------------------------- helpers
def _store(group, **kwargs):
    return vs.ReplicatedStore(group=group, device="cpu", **kwargs)


def _one_rank():
    return LocalGroup(1).groups[0]


def test_a_cross_replica_assign_reads_a_device_array_through_the_backend():
    """An on_read sum variable's cross-replica assign of a device array the backend does
    not own (a torch CUDA tensor) goes through the backend's asarray, as a plain assign
    does: here, a store on the host without CuPy, the backend's clear error, and nothing
    written."""
    import importlib.util

    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy would read the stand-in's address")

    class DeviceArray:
        shape, dtype = (2,), "torch.float32"
        __cuda_array_interface__ = {"shape": (2,), "typestr": "<f4", "data": (0, False), "version": 3}

    store = _store(_one_rank())
    v = store.variable(np.ones(2), dtype="float32", name="m", synchronization="on_read", aggregation="sum")
    with pytest.raises(TypeError, match=r"Cannot read a device array \(DeviceArray\) on the numpy backend"):
        v.assign(DeviceArray())
    assert v.numpy().tolist() == [1.0, 1.0]


def test_a_single_replicas_cross_replica_assign_converts_once():
    """With one replica the share is the whole value, converted by the assign alone:
    ``2**62 + 2**54 + 1`` into bfloat16 is 0x5e81 (through float64: 0x5e80)."""
    store = _store(_one_rank())
    v = store.variable(np.zeros(2), dtype="bfloat16", name="m", synchronization="on_read", aggregation="sum")
    v.assign(np.array([2**62 + 2**54 + 1, 3], np.int64))
    assert v.numpy().view(np.uint16).tolist() == [0x5E81, 0x4040]


def test_synced_variables_off_the_stores_device_are_refused(monkeypatch):
    """sync() packs a store's synced variables on its own device: a synced variable placed
    elsewhere is refused at creation, naming both devices; a replica-local one is not
    checked."""
    from varstore.distributed import buckets

    with pytest.raises(ValueError, match=r"'w' would be on cpu, with synchronization='on_write'.*own device, "
                                         r"cuda:0\. Leave `device` out"):
        buckets.check_syncable("w", "float32", "mean", "on_write", "cpu", "cuda:0")
    buckets.check_syncable("w", "float32", "mean", "on_write", "cuda:0", "cuda:0")
    seen = []
    monkeypatch.setattr(buckets, "check_syncable", lambda *args: seen.append(args))
    store = _store(_one_rank())
    store.variable(np.zeros(2), name="a", device="cpu")
    store.variable(np.zeros(2), name="b", synchronization="none")
    assert [(args[0], args[4], args[5]) for args in seen] == [("a", "cpu", "cpu")]


# ------------------------------------------------------------------------ plans
def test_bucket_cut_points_follow_bucket_mb_creation_order_and_staging_bytes():
    store = _store(_one_rank(), bucket_mb=10_000 / 2**20)  # 10,000 bytes
    made = [
        store.variable(np.zeros(1000, np.float32), name="a", aggregation="sum", synchronization="on_write"),
        store.variable(np.zeros(1000, np.float32), name="b", aggregation="sum", synchronization="on_write"),
        store.variable(np.zeros(1000, np.float32), name="c", aggregation="sum", synchronization="on_write"),
        store.variable(np.zeros(3000, np.float32), name="big", aggregation="sum", synchronization="on_write"),
        store.variable(np.zeros(1000, np.float32), name="d", aggregation="sum", synchronization="on_write"),
        store.variable(np.zeros(2000, np.float32), name="m", aggregation="mean", synchronization="on_write"),
        store.variable(np.zeros(1500, np.float32), name="h1", dtype="bfloat16", aggregation="sum",
                       synchronization="on_write"),
        store.variable(np.zeros(1500, np.float32), name="h2", dtype="bfloat16", aggregation="sum",
                       synchronization="on_write"),
    ]
    with store.replica_step():
        for v in reversed(made):  # queued in another order: the plan is in creation order
            v.assign_add(1.0)
    updates = list(store._pending.values())
    plan = B.plan(updates, store._bucket_bytes)
    got = [(b.aggregation, b.dtype, [u.variable.path for u in b.updates]) for b in plan]
    assert got == [
        ("sum", "float32", ["a", "b"]),  # 8,000 bytes; + c would be 12,000
        ("sum", "float32", ["c"]),  # + big would pass the cap
        ("sum", "float32", ["big"]),  # 12,000 bytes: too big for any bucket, alone
        ("sum", "float32", ["d"]),
        ("mean", "float32", ["m"]),
        ("sum", "bfloat16", ["h1"]),  # 1,500 bfloat16 = 6,000 bytes of float32 staging
        ("sum", "bfloat16", ["h2"]),
    ]
    assert [b.nbytes for b in plan] == [8000, 4000, 12000, 4000, 8000, 6000, 6000]
    unfused = B.plan(updates, 0)
    assert [len(b.updates) for b in unfused] == [1] * len(made)
    assert len(B.plan(updates, float("inf"))) == 3  # one per (aggregation, dtype)
    stats = store.sync()
    assert stats == vs.SyncStats(updates=8, buckets=7, collectives=7, bytes=48000)
    assert all(np.all(v.numpy() == 1) for v in made)


def test_plan_digest_is_deterministic_and_sees_every_difference():
    def digest_of(order, shapes=(4, 4), mode="add", bucket_mb=25):
        store = _store(_one_rank(), bucket_mb=bucket_mb)
        vs_ = [store.variable(np.zeros(s, np.float32), name=f"v{i}", aggregation="sum",
                              synchronization="on_write") for i, s in enumerate(shapes)]
        with store.replica_step():
            for i in order:
                vs_[i].assign_add(1.0) if mode == "add" else vs_[i].assign(1.0)
        return B.digest(B.plan(list(store._pending.values()), store._bucket_bytes))

    reference = digest_of([0, 1])
    assert digest_of([1, 0]) == reference  # the order updates were written in does not matter
    assert digest_of([0, 1]) == reference  # nor a new store
    assert digest_of([0]) != reference
    assert digest_of([0, 1], shapes=(4, 5)) != reference
    assert digest_of([0, 1], mode="assign") != reference
    assert digest_of([0, 1], bucket_mb=0) != reference  # other cut points


def test_fused_sync_issues_one_collective_per_bucket_and_unfused_one_per_variable():
    def run(bucket_mb):
        def body(group):
            store = _store(group, bucket_mb=bucket_mb)
            made = [store.variable(np.zeros(10, np.float32), name=f"v{i}", aggregation="mean",
                                   synchronization="on_write") for i in range(20)]
            with store.replica_step():
                for v in made:
                    v.assign_add(np.full(10, 2.0 * group.rank))
            before = group.calls["batches"]
            stats = store.sync()
            assert group.calls["batches"] - before == 1  # one engine call however many buckets
            assert all(np.all(v.numpy() == group.size - 1) for v in made)
            return stats

        return LocalGroup(2).run(body)[0]

    assert run(25).collectives == 1 and run(25).buckets == 1
    assert run(0).collectives == 20


def test_bfloat16_updates_are_reduced_in_float32_staging():
    def body(group):
        store = _store(group)
        v = store.variable(256.0, dtype="bfloat16", name="v", aggregation="sum", synchronization="on_write")
        with store.replica_step():
            v.assign_add(0.75)
        store.sync()
        return float(v.numpy())

    # 256 + (0.75 + 0.75) = 257.5 -> 258 in bfloat16 (spacing 2). Reduced in bfloat16, each
    # 256 + 0.75 would round back to 256.
    assert LocalGroup(2).run(body) == [258.0, 258.0]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64", "float8_e4m3fn", "float8_e5m2",
                                   "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"])
def test_one_rank_sync_equals_the_local_update_bit_for_bit(dtype):
    rng = np.random.default_rng(7)
    start = rng.uniform(-50, 50, size=(37, 5))
    ops = [("assign_add", rng.uniform(-3, 3, size=(37, 5))), ("assign_sub", 1.25), ("assign_add", 0.5)]
    if dtype.startswith(("int", "uint")):
        start, ops = np.round(start), [(m, np.round(x) if isinstance(x, np.ndarray) else 2) for m, x in ops]
    ops.append(("assign", rng.uniform(-9, 9, size=(37, 5)).round()))
    for method, x in ops:
        local = vs.VariableStore(device="cpu").variable(start, dtype=dtype, name="v")
        store = _store(_one_rank())
        replicated = store.variable(start, dtype=dtype, name="v", aggregation="sum", synchronization="on_write")
        getattr(local, method)(x)
        with store.replica_step():
            getattr(replicated, method)(x)
        assert store.sync().updates == 1
        np.testing.assert_array_equal(replicated.value.view(np.uint8), local.value.view(np.uint8), err_msg=method)


def test_sync_of_every_dtype_sums_two_replicas():
    dtypes = [d for d in vs.DTYPES if d != "bool"]

    def body(group):
        store = _store(group, bucket_mb=0.001)
        made = {d: store.variable(np.full(300, 3), dtype=d, name=d, aggregation="sum", synchronization="on_write")
                for d in dtypes}
        flag = store.variable(False, name="flag", aggregation="only_first_replica", synchronization="on_write")
        with store.replica_step():
            for v in made.values():
                v.assign_add(np.full(300, group.rank + 1))
            flag.assign(group.rank == 0)
        store.sync()
        return {d: v.numpy().astype(np.float64) for d, v in made.items()}, bool(flag.numpy())

    for values, flag in LocalGroup(2).run(body):
        assert flag is True
        for d, got in values.items():
            np.testing.assert_array_equal(got, 6, err_msg=d)


# --------------------------------------------------------- broadcast and checks
def test_broadcast_makes_replicas_bit_identical_and_check_replicas_names_a_divergence():
    special = np.array([0x7FC1, 0xFFFF, 0x8000, 0x3F80], np.uint16)  # NaN payloads, -0, 1.0

    def body(group):
        rng = np.random.default_rng(group.rank)
        store = _store(group)
        made = [store.variable(rng.normal(size=(9, 4)), dtype=d, name=f"v_{d}", synchronization="on_write",
                               aggregation="only_first_replica" if d == "bool" else "sum")
                for d in vs.DTYPES]
        words = store.variable(np.zeros(4), dtype="bfloat16", name="words", aggregation="sum")
        if group.rank == 2:
            words.value[...] = special.view(words.value.dtype)
        local = store.variable(np.full(3, group.rank), name="local", synchronization="none")
        metric = store.variable(np.full(3, group.rank), name="metric", synchronization="on_read", aggregation="sum")
        before = store.check_replicas()
        store.broadcast(root=2)
        after = store.check_replicas()
        bits = [v.value.view(np.uint8).tobytes() for v in made] + [words.value.view(np.uint16).tobytes()]
        if group.rank == 1:
            made[3].assign_add(1)
        injected = store.check_replicas()
        return before, after, injected, bits, local.numpy(), metric.numpy()

    results = LocalGroup(3).run(body)
    for rank, (before, after, injected, bits, local, metric) in enumerate(results):
        assert {"v_float32", "v_bfloat16", "v_float64"} <= set(before)  # different seeds: different values
        assert before["v_float32"] == [1, 2]
        assert after == {}
        assert injected == {"v_int32": [1]}
        assert bits[:-1] == results[2][3][:-1] and bits[-1] == special.tobytes()
        np.testing.assert_array_equal(local, rank)  # replica-local: not broadcast
        np.testing.assert_array_equal(metric, rank)  # on_read: not broadcast


# ------------------------------------------------------------------ failures
def test_plan_mismatch_raises_on_every_rank_and_changes_nothing():
    def body(group):
        store = _store(group)
        a = store.variable(np.zeros(4, np.float32), name="a", aggregation="sum", synchronization="on_write")
        b = store.variable(np.zeros(4, np.float32), name="b", aggregation="sum", synchronization="on_write")
        with store.replica_step():
            a.assign_add(1.0)
            if group.rank == 1:
                b.assign_add(1.0)
        with pytest.raises(DistributedError, match=r"plans differ.*Rank 0: 1 buckets.*\['a'\].*rank 1.*\['a', 'b'\]"):
            store.sync()
        assert np.all(a.numpy() == 0) and np.all(b.numpy() == 0)
        return store.pending

    assert LocalGroup(2).run(body) == [["a"], ["a", "b"]]


def test_a_rank_that_never_syncs_gives_a_timeout_error_not_a_hang():
    import time

    def body(group):
        store = _store(group)
        a = store.variable(np.zeros(4, np.float32), name="a", aggregation="sum", synchronization="on_write")
        if group.rank == 0:
            with store.replica_step():
                a.assign_add(1.0)
            store.sync()

    began = time.monotonic()
    with pytest.raises(DistributedError, match=r"did not complete within 0.5 s"):
        LocalGroup(2, timeout=0.5).run(body)
    assert time.monotonic() - began < 10


def test_a_rank_that_fails_ends_the_others_wait_at_once():
    import time

    def body(group):
        store = _store(group)
        a = store.variable(np.zeros(4, np.float32), name="a", aggregation="sum", synchronization="on_write")
        if group.rank == 1:
            raise RuntimeError("rank 1 broke")
        with store.replica_step():
            a.assign_add(1.0)
        store.sync()

    began = time.monotonic()
    with pytest.raises(RuntimeError, match="rank 1 broke") as caught:
        LocalGroup(3, timeout=60).run(body)
    assert time.monotonic() - began < 10
    assert "rank 1 of a LocalGroup(3)" in "".join(getattr(caught.value, "__notes__", ["rank 1 of a LocalGroup(3)"]))


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("case", sorted(selftest.CASES))
def test_every_rank_raises_the_first_real_error_every_time(case, n, tmp_path):
    # Each rank's error leaves its function, as in a program that does not catch it: a
    # peer still waking from a wait that had completed must not take that for a timeout.
    import time

    def body(group, round_, seen):
        try:
            selftest.CASES[case](group, str(tmp_path), pause=0.01 * (round_ % 2))
        except BaseException as error:
            seen[group.rank] = error
            raise

    selftest.prepare(str(tmp_path))
    for round_ in range(20):
        seen = [None] * n
        began = time.monotonic()
        with pytest.raises(BaseException) as raised:
            LocalGroup(n, timeout=10).run(body, round_, seen)
        assert time.monotonic() - began < 3, "the real error must arrive at once, not near the 10 s timeout"
        problems = [selftest.check(case, rank, n, seen[rank]) for rank in range(n)]
        assert problems == [None] * n
        # run() raises a rank's own error, never another rank's report of it.
        assert any(raised.value is e for e in seen)
        assert getattr(raised.value, "failed_rank", None) is None
        if case in ("save", "load", "step"):
            failing = n - 1 if case == "step" else 0
            assert raised.value is seen[failing]
            assert f"rank {failing} of a LocalGroup({n})" in " ".join(raised.value.__notes__)


def test_a_rank_that_never_arrives_times_out_on_every_waiting_rank():
    import time

    seen = {}

    def body(group):
        store = _store(group)
        a = store.variable(np.zeros(4, np.float32), name="a", aggregation="sum", synchronization="on_write")
        if group.rank == 2:
            return  # never syncs
        with store.replica_step():
            a.assign_add(1.0)
        try:
            store.sync()
        except DistributedError as error:
            seen[group.rank] = (error, time.monotonic() - began)
            raise

    began = time.monotonic()
    with pytest.raises(DistributedError, match=r"did not complete within 0.5 s") as raised:
        LocalGroup(3, timeout=0.5).run(body)
    assert raised.value.failed_rank is None
    assert sorted(seen) == [0, 1]
    for error, seconds in seen.values():
        # The first to time out reports its own timeout; the other may report that one.
        assert "did not complete within 0.5 s" in str(error)
        assert 0.45 < seconds < 5


def test_a_local_group_runs_again_after_a_failed_run(tmp_path):
    group = LocalGroup(2, timeout=10)
    with pytest.raises(ValueError, match="bad batch on rank 1"):
        group.run(selftest.step_case, str(tmp_path))

    def body(g):
        store = _store(g)
        v = store.variable(0.0, name="v", aggregation="sum", synchronization="on_write")
        with store.replica_step():
            v.assign_add(g.rank + 1.0)
        store.sync()
        return float(v.numpy())

    assert group.run(body) == [3.0, 3.0]


def test_fail_tells_the_ranks_waiting_in_a_collective_at_once():
    import time

    def body(group):
        store = _store(group)
        a = store.variable(np.zeros(4, np.float32), name="a", aggregation="sum", synchronization="on_write")
        with store.replica_step():
            a.assign_add(1.0)
        if group.rank == 1:
            time.sleep(0.05)  # rank 0 waits in sync() by now
            group.fail(KeyError("no batch"))
            return "left"
        began = time.monotonic()
        with pytest.raises(DistributedError, match=r"rank 0 \(of 2, local\): an exchange cannot complete: rank 1 "
                                                   r"failed: KeyError: 'no batch'") as raised:
            store.sync()
        assert raised.value.failed_rank == 1 and raised.value.failure == "KeyError: 'no batch'"
        assert store.pending == ["a"] and not a.numpy().any()
        return time.monotonic() - began

    seconds, left = LocalGroup(2, timeout=10).run(body)
    assert left == "left" and seconds < 2


# ------------------------------------------------------------------ checkpoints
def test_collective_save_writes_aggregated_on_read_values_and_load_shares_them(tmp_path):
    path = str(tmp_path / "ckpt.safetensors")

    def body(group):
        store = _store(group)
        store.variable(np.arange(4.0), name="w", aggregation="mean", synchronization="on_write")
        metric = store.variable(0.0, name="metric", aggregation="sum", synchronization="on_read")
        count = store.variable(0, name="count", aggregation="sum", synchronization="on_read")
        with store.replica_step():
            metric.assign_add(group.rank + 1.0)
            count.assign_add(group.rank + 1)
        store.save(path)
        fresh = _store(group)
        fw = fresh.variable(np.zeros(4), name="w", aggregation="mean", synchronization="on_write")
        fm = fresh.variable(5.0, name="metric", aggregation="sum", synchronization="on_read")
        fc = fresh.variable(0, name="count", aggregation="sum", synchronization="on_read")
        assert fresh.load(path) == []
        return fw.numpy(), float(fm.numpy()), float(fresh.read_aggregated(fm)), int(fc.numpy()), \
            int(fresh.read_aggregated(fc))

    results = LocalGroup(4).run(body)
    on_disk = vs.VariableStore(device="cpu")
    on_disk.variable(0.0, name="metric")
    on_disk.variable(0, name="count")
    on_disk.variable(np.zeros(4), name="w")
    on_disk.load(path)
    assert float(on_disk["metric"].numpy()) == 10.0 and int(on_disk["count"].numpy()) == 10
    for rank, (w, metric, metric_total, count, count_total) in enumerate(results):
        np.testing.assert_array_equal(w, np.arange(4.0))
        assert metric == 2.5 and metric_total == 10.0
        assert count == (10 // 4 + 10 % 4 if rank == 0 else 10 // 4) and count_total == 10


def test_a_save_that_fails_on_rank_0_raises_on_every_rank(tmp_path):
    def body(group):
        store = _store(group)
        store.variable(1.0, name="w")
        if group.rank == 0:
            with pytest.raises(FileNotFoundError):
                store.save(str(tmp_path / "missing" / "x.safetensors"))
        else:
            with pytest.raises(DistributedError, match=r"save\(\) failed on rank 0.*FileNotFoundError"):
                store.save("ignored")
        return True

    assert LocalGroup(2).run(body) == [True, True]


# ------------------------------------------------------------------ bad input
def test_bad_input_gets_clear_errors():
    group = _one_rank()
    store = _store(group)
    for dtype, aggregation, match in [("int32", "mean", "cannot be averaged"), ("bool", "sum", "cannot be added"),
                                      ("uint8", "mean", "cannot be averaged")]:
        with pytest.raises(ValueError, match=match):
            store.variable(np.zeros(2), dtype=dtype, aggregation=aggregation, synchronization="on_write")
    assert len(store) == 0 and store.memory_info()["variable_bytes"] == 0
    store.variable(np.zeros(2), dtype="int32", aggregation="mean", synchronization="none")  # never synced: allowed
    w = store.variable(np.zeros((2, 2)), name="w", aggregation="sum", synchronization="on_write")
    with store.replica_step():
        with pytest.raises(ValueError, match="sliced writes are not synced"):
            w[0, :] = 1.0
        with pytest.raises(ValueError, match=r"shape \(3,\) does not match"):
            w.assign_add(np.zeros(3))
    assert store.pending == []
    m = store.variable(0.0, name="m", aggregation="sum", synchronization="on_read")
    for write in (lambda: m.assign_add(1.0), lambda: m.assign_sub(1.0), lambda: m.__setitem__((), 1.0)):
        with pytest.raises(ValueError, match="outside a replica step"):
            write()
    with pytest.raises(TypeError, match="whole <LocalGroup size=2>"):
        vs.ReplicatedStore(group=LocalGroup(2), device="cpu")
    with pytest.raises(TypeError, match="group must come from"):
        vs.ReplicatedStore(group="nccl", device="cpu")
    with pytest.raises(ValueError, match="bucket_mb"):
        vs.ReplicatedStore(group=group, device="cpu", bucket_mb=-1)
    with pytest.raises(ValueError, match="root must be a rank"):
        store.broadcast(root=1)
    with pytest.raises(ValueError, match="not in this store"):
        store.read_aggregated(vs.VariableStore(device="cpu").variable(1.0))
    with pytest.raises(ValueError, match="Expected one of"):
        vs.distributed.init("gloo")
    with pytest.raises(ValueError, match="timeout"):
        vs.distributed.init("local", timeout=0)
    with pytest.raises(ValueError, match="size >= 1|ranks >= 1"):
        LocalGroup(0)


def test_outside_a_step_on_write_writes_are_local_and_reads_inside_a_step_see_the_old_value():
    store = _store(_one_rank())
    w = store.variable(np.zeros(3), name="w", aggregation="sum", synchronization="on_write")
    w.assign_add(1.0)
    w[0] = 5.0
    np.testing.assert_array_equal(w.numpy(), [5, 1, 1])
    with store.replica_step():
        w.assign(np.full(3, 7.0))
        w.assign_add(1.0)  # folded into the assign: 8
        np.testing.assert_array_equal(w.numpy(), [5, 1, 1])
        assert store.pending == ["w"]
    assert store.sync().updates == 1
    np.testing.assert_array_equal(w.numpy(), 8)
    assert store.sync() == vs.SyncStats(0, 0, 0, 0)


def test_every_write_of_a_synced_variable_goes_through_the_replica_strategy():
    # The shortcuts of a plain variable (a scalar fill, the array module's add of a value of
    # its dtype and shape) must not bypass the queue of a synced one.
    store = _store(_one_rank())
    w = store.variable(np.zeros(4, np.float32), name="w", aggregation="sum", synchronization="on_write")
    local = store.variable(np.zeros(4, np.float32), name="local", synchronization="none")
    ones = np.ones(4, np.float32)
    with store.replica_step():
        w.assign(1.5)
        w.assign_add(ones)
        local.assign(1.5)
        local.assign_add(ones)
        np.testing.assert_array_equal(w.numpy(), 0)
        np.testing.assert_array_equal(local.numpy(), 2.5)
        assert store.pending == ["w"]
        with pytest.raises(ValueError, match="sliced writes are not synced"):
            w[0] = 1.0
    assert store.sync().updates == 1
    np.testing.assert_array_equal(w.numpy(), 2.5)


def test_a_queued_update_holds_the_value_as_written_not_the_callers_array():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    store = _store(_one_rank())
    w = store.variable(np.zeros(3, np.float32), name="w", aggregation="sum", synchronization="on_write")
    b = store.variable(np.zeros(2), dtype="bfloat16", name="b", aggregation="sum", synchronization="on_write")
    v = store.variable(np.zeros(3, np.float32), name="v", aggregation="sum", synchronization="on_write")
    local = store.variable(np.full(3, 4, np.float32), name="local", synchronization="none")
    grad = np.full(3, 2, np.float32)  # the store's own dtype and backend: nothing converts (copies) it
    words = np.full(2, 3, ml_dtypes.bfloat16)  # kept as a view of its words
    with store.replica_step():
        w.assign_add(grad)
        b.assign(words)
        v.assign(local)  # the variable's storage itself, unless copied
        grad[:] = 100
        words[:] = 0
        local.assign(np.full(3, 9, np.float32))  # replica-local: applied at once
    store.sync()
    np.testing.assert_array_equal(w.numpy(), 2)
    np.testing.assert_array_equal(b.numpy().astype(np.float32), 3)
    np.testing.assert_array_equal(v.numpy(), 4)
    np.testing.assert_array_equal(local.numpy(), 9)


def test_nccl_on_a_host_without_cuda_says_it_needs_a_cuda_device():
    from varstore.backends import cuda_unavailable_reason

    if cuda_unavailable_reason() is None:
        pytest.skip("this host has a usable CUDA device")
    with pytest.raises(vs.BackendUnavailableError, match="NCCL needs a CUDA device"):
        vs.distributed.init("nccl")


def test_environment_world_and_auto(monkeypatch):
    from varstore import distributed

    for name in ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE",
                 "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.environment_world() == (0, 1, 0)
    assert not distributed.launched_by_mpi()
    group = distributed.init()
    assert (group.backend, group.rank, group.size) == ("local", 0, 1)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.environment_world() == (3, 8, 1)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        distributed.environment_world()
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK=3 and WORLD_SIZE=2"):
        distributed.environment_world()
    monkeypatch.setenv("PMI_RANK", "0")
    assert distributed.launched_by_mpi()


def test_stateless_scope_writes_go_to_the_scope_not_to_the_sync_queue():
    store = _store(_one_rank())
    w = store.variable(np.zeros(2), name="w", aggregation="sum", synchronization="on_write")
    m = store.variable(0.0, name="m", aggregation="sum", synchronization="on_read")
    with store.replica_step():
        with vs.StatelessScope() as scope:
            w.assign_add(1.0)
            m.assign_add(2.0)  # allowed in a scope: no replica is written
        assert store.pending == []
    with vs.StatelessScope() as outside:
        m.assign(4.0)  # not shared out: the scope holds the value as given
    np.testing.assert_array_equal(scope.get_current_value(w), [1, 1])
    assert float(scope.get_current_value(m)) == 2.0 and float(outside.get_current_value(m)) == 4.0
    np.testing.assert_array_equal(w.numpy(), 0)
    assert float(m.numpy()) == 0.0


# ------------------------------------------------------- the NCCL group's logic
class _FakeNccl:
    NCCL_SUM, NCCL_FLOAT32, NCCL_UINT64, NCCL_UINT32, NCCL_FLOAT16, NCCL_UINT8 = range(6)

    def __init__(self):
        self.calls = []

    def groupStart(self):  # noqa: N802 (CuPy's names)
        self.calls.append("groupStart")

    def groupEnd(self):  # noqa: N802
        self.calls.append("groupEnd")


class _FakeHost:
    """The MPI group under an NCCL group: its exchange, and its abort at exit."""

    def __init__(self, answer=None):
        self.answer, self.sent, self.aborting = answer, [], False

    def allgather_bytes(self, data):
        self.sent.append(data)
        return self.answer(data) if callable(self.answer) else self.answer

    def _peer_failure(self):
        return None

    def abort_at_exit(self):
        self.aborting = True


class _DeviceArray(np.ndarray):
    """A host array posing as a CuPy array: ``.data.ptr``."""

    @property
    def data(self):
        from types import SimpleNamespace

        return SimpleNamespace(ptr=self.__array_interface__["data"][0])


def _nccl_group(rank=0, size=2, host=None, stream_done=True, event_done=True, timeout=0.05):
    """An NcclGroup over stand-ins for CuPy, NCCL and its communicator (no GPU here)."""
    from types import SimpleNamespace

    from varstore.distributed.group import Group
    from varstore.distributed.nccl import NcclGroup

    group = NcclGroup.__new__(NcclGroup)
    Group.__init__(group, rank, size, 0, timeout)
    import threading

    stream = SimpleNamespace(ptr=7, done=stream_done, record=lambda: SimpleNamespace(done=event_done))

    class Device:
        def __init__(self, index):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    group._cupy = SimpleNamespace(ndarray=_DeviceArray, asarray=lambda a: np.asarray(a).view(_DeviceArray),
                                  cuda=SimpleNamespace(Device=Device, get_current_stream=lambda: stream))
    group._nccl, group._host, group._lock, group.device_id = _FakeNccl(), host, threading.Lock(), 0
    group._comm = SimpleNamespace(ran=[], aborted=[])
    group._comm.allReduce = lambda *args: group._comm.ran.append(("sum", args[2]))
    group._comm.bcast = lambda *args: group._comm.ran.append(("broadcast", args[1]))
    group._comm.abort = lambda: group._comm.aborted.append(True)
    group._types = {np.dtype(np.float32): _FakeNccl.NCCL_FLOAT32}
    return group


def test_the_nccl_unique_id_travels_through_the_host_exchange_and_so_does_rank_0s_failure():
    """Rank 0's unique id reaches the others through the host group's exchange (bounded
    by its deadline, unlike MPI's bcast); where rank 0 cannot make one, every rank raises,
    the others naming rank 0 and its error, instead of waiting forever."""
    from varstore.distributed import DistributedError

    for uid in (tuple(range(-64, 64)), tuple(range(64, 192))):  # (CuPy's chars: signed on x86, unsigned on arm)
        zero = _nccl_group(rank=0, host=_FakeHost(lambda data: [data, b""]))
        zero._nccl.get_unique_id = lambda uid=uid: uid
        assert zero._unique_id() == uid and len(zero._host.sent[0]) == 129
        one = _nccl_group(rank=1, host=_FakeHost([zero._host.sent[0], b""]))
        assert one._unique_id() == uid and one._host.sent == [b""]
    alone = _nccl_group(rank=0, size=1, host=None)
    alone._nccl.get_unique_id = lambda: (5, -3)
    assert alone._unique_id() == (5, -3)
    failing = _nccl_group(rank=0, host=_FakeHost(lambda data: [data, b""]))

    def no_interface():
        raise RuntimeError("NCCL found no socket interface")

    failing._nccl.get_unique_id = no_interface
    with pytest.raises(RuntimeError, match="no socket interface"):
        failing._unique_id()
    told = failing._host.sent[0]
    assert told.startswith(b"E") and b"no socket interface" in told
    other = _nccl_group(rank=1, host=_FakeHost([told, b""]))
    with pytest.raises(DistributedError, match=r"start-up failed on rank 0: RuntimeError: NCCL found no") as caught:
        other._unique_id()
    assert caught.value.failed_rank == 0


def test_nccl_collectives_wait_for_their_event_skip_empty_buffers_and_abort_mpi_at_exit_on_timeout():
    from varstore.distributed import Collective, DistributedError

    ops = [Collective("sum", np.ones(4, np.float32).view(_DeviceArray), 0),
           Collective("sum", np.ones(0, np.float32).view(_DeviceArray), 0)]
    busy = _nccl_group(stream_done=False, event_done=True, host=_FakeHost())  # (later work keeps the stream busy)
    busy.run(ops)
    assert busy._comm.ran == [("sum", 4)] and busy._nccl.calls == ["groupStart", "groupEnd"]
    assert not busy._comm.aborted and not busy._host.aborting
    empty = _nccl_group(host=_FakeHost())
    empty.run([ops[1]])
    assert empty._comm.ran == [] and empty._nccl.calls == []
    stuck = _nccl_group(event_done=False, host=_FakeHost())
    with pytest.raises(DistributedError, match="did not complete within"):
        stuck.run(ops[:1])
    assert stuck._comm.aborted == [True] and stuck._host.aborting


def test_a_store_on_another_gpu_than_its_nccl_groups_is_refused(monkeypatch):
    """An NCCL group's collectives run on its own GPU (its communicator and stream): a
    replicated store there or on the host may use it; one on another GPU is refused at
    construction (its variables would be packed on one device and reduced on another)."""
    from types import SimpleNamespace

    from varstore import backends
    from varstore import store as store_module

    group = _one_rank()
    monkeypatch.setattr(type(group), "device", property(lambda self: "cuda:0"))
    monkeypatch.setattr(group, "backend", "nccl")
    assert vs.ReplicatedStore(group=group, device="cpu").device == "cpu"
    numpy_backend = backends.get("numpy")
    monkeypatch.setattr(store_module, "backends", SimpleNamespace(for_device=lambda device: (numpy_backend, device)))
    assert vs.ReplicatedStore(group=group).device == "cuda:0"  # (the group's own GPU)
    with pytest.raises(ValueError, match=r"nccl group runs its collectives on cuda:0; a store on cuda:1 cannot"):
        vs.ReplicatedStore(group=group, device="cuda:1")
