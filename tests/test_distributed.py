"""Tier a: ReplicatedStore semantics on LocalGroup(1..4), plans, failures (CPU)."""

from __future__ import annotations

import numpy as np
import pytest

import varstore as vs
from varstore.distributed import DistributedError, LocalGroup
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
