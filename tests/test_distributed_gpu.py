"""Tier c on a GPU: a one-rank NCCL communicator (skipped without a CUDA device and NCCL).

What one GPU can show: every dtype synced through NCCL, and a 1,000-variable, 100 MiB
sync equal to the same updates applied locally. Its speed against the raw all-reduce is
measured by ``python -m varstore.bench.sync --backend nccl`` (bench/RESULTS.md), not
asserted here.
"""

from __future__ import annotations

import numpy as np
import pytest

import varstore as vs
from helpers import to_host
from varstore.dtypes import WORD_DTYPES, host_dtype

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def nccl_group():
    try:
        return vs.distributed.init("nccl", timeout=60)
    except vs.BackendUnavailableError as error:
        pytest.skip(str(error))


def test_nccl_group_of_one(nccl_group):
    assert (nccl_group.backend, nccl_group.rank, nccl_group.size) == ("nccl", 0, 1)
    assert nccl_group.device == "cuda:0"


@pytest.mark.parametrize("dtype", [d for d in vs.DTYPES])
def test_every_dtype_syncs_through_nccl(nccl_group, dtype):
    store = vs.ReplicatedStore(group=nccl_group)
    aggregation = "only_first_replica" if dtype == "bool" else "sum"
    v = store.variable(np.full((33, 7), 3), dtype=dtype, name="v", aggregation=aggregation,
                       synchronization="on_write")
    w = store.variable(np.full(5, 8), dtype=dtype, name="w", aggregation="only_first_replica",
                       synchronization="on_write")
    before = dict(nccl_group.calls)
    with store.replica_step():
        if dtype == "bool":
            v.assign(np.zeros((33, 7), bool))
        else:
            v.assign_add(np.full((33, 7), 2))
        w.assign(np.full(5, 1))
    stats = store.sync()
    # (bool: v and w are both only_first_replica, one bucket, one broadcast)
    assert stats.collectives == (1 if dtype == "bool" else 2)
    assert nccl_group.calls["batches"] == before.get("batches", 0) + 1
    np.testing.assert_array_equal(v.numpy().astype(np.float64), 0 if dtype == "bool" else 5)
    np.testing.assert_array_equal(w.numpy().astype(np.float64), 1)
    mean = store.variable(np.full(4, 6), dtype=dtype, name="m", synchronization="on_read",
                          aggregation="only_first_replica" if dtype == "bool" else "sum")
    aggregated = to_host(store.read_aggregated(mean))  # (a CuPy array: raw words for the small floats)
    if dtype in WORD_DTYPES:
        aggregated = aggregated.view(host_dtype(dtype))
    np.testing.assert_array_equal(aggregated.astype(np.float64), 1 if dtype == "bool" else 6)


def test_a_thousand_variables_of_100_mib_sync_like_local_updates(nccl_group):
    import cupy

    store = vs.ReplicatedStore(group=nccl_group)
    plain = vs.VariableStore(device=store.device)
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 2 * 26_214, size=1000)
    sizes = (sizes * (100 * 2**20 // 4 / sizes.sum())).astype(int) + 1
    made, local, grads = [], [], []
    for i, n in enumerate(sizes):
        start = cupy.asarray(rng.standard_normal(n).astype(np.float32))
        made.append(store.variable(start, name=f"v{i}", aggregation="mean", synchronization="on_write"))
        local.append(plain.variable(start, name=f"v{i}"))
        grads.append(cupy.asarray(rng.standard_normal(n).astype(np.float32)))
    with store.replica_step():
        for v, g in zip(made, grads, strict=True):
            v.assign_sub(g)
    stats = store.sync()
    for v, g in zip(local, grads, strict=True):
        v.assign_sub(g)
    # A bit over 100 MiB, cut at 25 MiB between variables: 5 buckets, one collective each.
    assert stats.updates == 1000 and stats.collectives == stats.buckets == 5
    for a, b in zip(made, local, strict=True):
        assert cupy.array_equal(a.value, b.value)
