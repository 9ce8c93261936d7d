"""A multi-process self-test: ``mpiexec -n N python -m varstore.distributed.selftest``.

Each rank prints one JSON line (``{"rank", "size", "backend", "ok", ...}``) and exits 0
when every check passed. Scenarios (the first argument):

- ``semantics`` (default): broadcast after different initial values, a step of on_write
  updates of every aggregation over several dtypes and buckets, on_read aggregation, a
  divergence injected on one rank found by check_replicas, and a collective
  save/load round trip (``--dir`` names a folder every rank can see).
- ``mismatch``: one rank updates an extra variable; every rank must raise
  DistributedError from sync() (the line carries the message).
- ``timeout``: the last rank never calls sync(); the others must raise DistributedError
  within ``--timeout`` seconds.
- ``die``: the last rank exits abruptly before sync(); the job must end, not hang.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def _variables(store, rank):
    """Variables of every kind, with rank-dependent initial values (broadcast fixes them)."""
    rng = np.random.default_rng(rank)
    made = {}
    specs = [
        ("w_sum_f32", "float32", "sum", "on_write", (64, 33)),
        ("w_mean_f64", "float64", "mean", "on_write", (17,)),
        ("w_sum_i32", "int32", "sum", "auto", (5, 7)),
        ("w_mean_bf16", "bfloat16", "mean", "on_write", (300,)),
        ("w_first_f32", "float32", "only_first_replica", "on_write", (8,)),
        ("w_none_f32", "float32", "none", "on_write", (4,)),
        ("metric_sum", "float32", "sum", "on_read", ()),
        ("metric_mean", "float64", "mean", "on_read", (3,)),
        ("local_i64", "int64", "none", "none", (2,)),
    ]
    for i in range(12):  # many small ones: several buckets at bucket_mb=0.004
        specs.append((f"layer{i}/kernel", "float32", "sum", "on_write", (16, 16)))
    for name, dtype, aggregation, sync, shape in specs:
        value = np.round(rng.uniform(-8, 8, size=shape))
        made[name] = store.get_or_create(name, value, shape, dtype, aggregation=aggregation, synchronization=sync)
    return made


def semantics(group, folder: str) -> dict:
    import varstore as vs

    rank, n = group.rank, group.size
    store = vs.ReplicatedStore(group=group, device="cpu", bucket_mb=0.004)
    v = _variables(store, rank)
    checks = []
    store.broadcast()
    assert store.check_replicas() == {}, "replicas differ after broadcast"
    v["metric_sum"].assign(0.0)  # cross-replica: every replica 0/n
    v["metric_mean"].assign(np.zeros(3))
    start = {k: x.numpy().astype(np.float64) for k, x in v.items()}
    checks.append("broadcast")

    with store.replica_step():
        for var in v.values():
            var.assign_add(np.full(var.shape, rank + 1))  # queued (on_write/auto) or local
    stats = store.sync()
    total = n * (n + 1) / 2
    want = {"sum": total, "mean": total / n, "only_first_replica": 1.0, "none": rank + 1.0}
    for name, var in v.items():
        got = var.numpy().astype(np.float64)
        if var.synchronization in ("on_write", "auto"):
            expected = start[name] + want[var.aggregation]
        else:
            expected = start[name] + rank + 1
        assert np.array_equal(got, expected), f"{name}: {got.ravel()[:4]} != {expected.ravel()[:4]}"
    checks.append(f"sync:{stats.buckets}buckets/{stats.collectives}collectives")

    metric = store.read_aggregated(v["metric_sum"])
    assert float(metric) == total, f"read_aggregated sum: {float(metric)} != {total}"
    mean = np.asarray(store.read_aggregated(v["metric_mean"]))
    assert np.array_equal(mean, np.full(3, total / n)), f"read_aggregated mean: {mean}"
    checks.append("read_aggregated")

    if n > 1:
        if rank == n - 1:
            v["layer3/kernel"].assign_add(1.0)
        diverged = store.check_replicas()
        assert diverged == {"layer3/kernel": [n - 1]}, f"check_replicas gave {diverged}"
        store.broadcast(root=0, variables=[v["layer3/kernel"]])
        assert store.check_replicas() == {}
        checks.append("check_replicas")

    path = os.path.join(folder, "selftest.safetensors")
    store.save(path)
    fresh = vs.ReplicatedStore(group=group, device="cpu")
    w = _variables(fresh, rank + 100)
    fresh.load(path)
    for name, var in v.items():
        if var.synchronization in ("on_write", "auto") and var.aggregation != "none":
            assert np.array_equal(w[name].numpy(), var.numpy()), f"load {name}"
    assert float(fresh.read_aggregated(w["metric_sum"])) == float(metric), "on_read sum after load"
    checks.append("save_load")
    return {"ok": True, "checks": checks, "collectives": dict(group.calls)}


def mismatch(group) -> dict:
    import varstore as vs

    store = vs.ReplicatedStore(group=group, device="cpu")
    a = store.variable(np.zeros(4, np.float32), name="a", aggregation="sum", synchronization="on_write")
    b = store.variable(np.zeros(4, np.float32), name="b", aggregation="sum", synchronization="on_write")
    with store.replica_step():
        a.assign_add(1.0)
        if group.rank == group.size - 1:
            b.assign_add(1.0)
    try:
        store.sync()
    except vs.distributed.DistributedError as error:
        unchanged = bool(np.all(a.numpy() == 0) and np.all(b.numpy() == 0))
        return {"ok": unchanged and store.pending != [], "error": str(error)}
    return {"ok": False, "error": None}


def timeout(group) -> dict:
    import varstore as vs

    store = vs.ReplicatedStore(group=group, device="cpu")
    a = store.variable(np.zeros(4, np.float32), name="a", aggregation="sum", synchronization="on_write")
    if group.rank == group.size - 1:
        time.sleep(group.timeout * 3)
        return {"ok": True, "skipped_sync": True}
    with store.replica_step():
        a.assign_add(1.0)
    began = time.monotonic()
    try:
        store.sync()
    except vs.distributed.DistributedError as error:
        return {"ok": True, "error": str(error), "seconds": round(time.monotonic() - began, 2)}
    return {"ok": False}


def die(group) -> dict:
    import varstore as vs

    store = vs.ReplicatedStore(group=group, device="cpu")
    a = store.variable(np.zeros(4, np.float32), name="a", aggregation="sum", synchronization="on_write")
    if group.rank == group.size - 1:
        os._exit(3)
    with store.replica_step():
        a.assign_add(1.0)
    store.sync()
    return {"ok": False, "note": "sync returned although a rank died"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m varstore.distributed.selftest")
    parser.add_argument("scenario", nargs="?", default="semantics", choices=["semantics", "mismatch", "timeout", "die"])
    parser.add_argument("--backend", default="auto", choices=["auto", "mpi", "nccl", "local"])
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--dir", default=".", help="a folder every rank can see (semantics: the checkpoint)")
    parser.add_argument("--report", help="a folder where each rank also writes its line as rank<N>.json")
    args = parser.parse_args(argv)
    import varstore as vs

    group = vs.distributed.init(args.backend, timeout=args.timeout)
    line = {"rank": group.rank, "size": group.size, "backend": group.backend}
    try:
        if args.scenario == "semantics":
            line.update(semantics(group, args.dir))
        else:
            line.update(globals()[args.scenario](group))
    except Exception as error:  # reported as this rank's line
        line.update(ok=False, error=f"{type(error).__name__}: {error}")
    print(json.dumps(line), flush=True)
    if args.report:
        with open(os.path.join(args.report, f"rank{line['rank']}.json"), "w") as f:
            json.dump(line, f)
    return 0 if line.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
