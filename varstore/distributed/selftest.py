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
- ``failures`` (MPI): each of :data:`CASES` (a plan mismatch, a save and a load that
  fail on rank 0, a step that raises on the last rank) ``--rounds`` times; every rank
  must raise the first real error at once: its own, or a DistributedError naming the
  rank it came from. The line counts the rounds and carries the first wrong error.
- ``crash``: the last rank's step raises and the error is left uncaught; the others,
  waiting in sync(), must raise a DistributedError naming it at once (not a timeout).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

import varstore as vs

from .mpi import MpiGroup


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
    store = vs.ReplicatedStore(group=group, device="cpu")
    a = store.variable(np.zeros(4, np.float32), name="a", aggregation="sum", synchronization="on_write")
    if group.rank == group.size - 1:
        os._exit(3)
    with store.replica_step():
        a.assign_add(1.0)
    store.sync()
    return {"ok": False, "note": "sync returned although a rank died"}


# ---------------------------------------------------------------- failures
# Each case fails on some rank and leaves the variables as they were; check() says
# whether a rank's exception is the first real error, as every rank must raise it.

def _unchanged(store, variable, pending):
    assert not variable.numpy().any() and store.pending == pending, (
        f"after the failure {variable.path!r} is {variable.numpy()} with pending updates {store.pending}")


def plan_case(group, folder, pause=0.0):
    """Rank 0's "w" is float32, the others' float64: every rank's sync() finds the plans differ."""
    store = vs.ReplicatedStore(group=group, device="cpu")
    w = store.variable(np.zeros(4, np.float32 if group.rank == 0 else np.float64), name="w", aggregation="sum",
                       synchronization="on_write")
    with store.replica_step():
        w.assign_add(1.0)
    time.sleep(pause * group.rank)
    try:
        store.sync()
    except Exception:
        _unchanged(store, w, ["w"])
        raise


def prepare(folder: str) -> None:
    """What the save and load cases need in ``folder`` (made by one rank, before them)."""
    os.makedirs(os.path.join(folder, "a-folder"), exist_ok=True)
    written = vs.VariableStore(device="cpu")
    written.variable(np.ones(4, np.float32), name="w")
    written.save(os.path.join(folder, "four.safetensors"))


def save_case(group, folder, pause=0.0):
    """Rank 0 saves to a path that is a folder: an IsADirectoryError there."""
    store = vs.ReplicatedStore(group=group, device="cpu")
    store.variable(np.zeros(4, np.float32), name="w")
    time.sleep(pause * group.rank)
    store.save(os.path.join(folder, "a-folder"))


def load_case(group, folder, pause=0.0):
    """Rank 0 loads a file whose "w" has 4 elements into a "w" of 5: a ValueError there."""
    path = os.path.join(folder, "four.safetensors")
    store = vs.ReplicatedStore(group=group, device="cpu")
    w = store.variable(np.zeros(5, np.float32), name="w")
    time.sleep(pause * group.rank)
    try:
        store.load(path)
    except Exception:
        _unchanged(store, w, [])
        raise


def step_case(group, folder, pause=0.0):
    """The last rank's replica step raises (after ``pause`` s: the others wait in sync()
    by then); the others' sync() must name its error."""
    store = vs.ReplicatedStore(group=group, device="cpu")
    w = store.variable(np.zeros(4, np.float32), name="w", aggregation="sum", synchronization="on_write")
    with store.replica_step():
        w.assign_add(1.0)
        if group.rank == group.size - 1:
            time.sleep(pause)
            raise ValueError(f"bad batch on rank {group.rank}")
    try:
        store.sync()
    except Exception:
        _unchanged(store, w, ["w"])
        raise


CASES = {"plan": plan_case, "save": save_case, "load": load_case, "step": step_case}


def expected(case: str, rank: int, size: int) -> tuple:
    """``(type name, text in the message, failed_rank)`` of the error ``rank`` must raise."""
    last = size - 1
    if case == "plan":
        return "DistributedError", "sync plans differ", None
    if case == "save":
        if rank == 0:
            return "IsADirectoryError", "is a folder; expected a file path", None
        return "DistributedError", f"save() failed on rank 0 (of {size}): IsADirectoryError: save: ", 0
    if case == "load":
        if rank == 0:
            return "ValueError", "shapes or dtypes differ", None
        return "DistributedError", f"load() failed on rank 0 (of {size}): ValueError: load(", 0
    if rank == last:
        return "ValueError", f"bad batch on rank {last}", None
    return "DistributedError", f"cannot complete: rank {last} failed: ValueError: bad batch on rank {last}", last


def check(case: str, rank: int, size: int, error) -> str | None:
    """None when ``error`` is what ``rank`` must raise in ``case``, else what is wrong."""
    kind, text, failed_rank = expected(case, rank, size)
    got = "no error" if error is None else f"{type(error).__name__}: {error}"
    if error is None or type(error).__name__ != kind or text not in str(error):
        return f"rank {rank} of {size}, {case}: expected {kind} with {text!r}; got {got}"
    if getattr(error, "failed_rank", None) != failed_rank:
        return f"rank {rank} of {size}, {case}: expected failed_rank={failed_rank}; got {got} naming " \
               f"{getattr(error, 'failed_rank', None)}"
    return None


def failures(group, folder: str, rounds: int) -> dict:
    """Every case of CASES ``rounds`` times (odd rounds: the ranks arrive staggered)."""
    if group.backend != "mpi":
        raise ValueError(f"the failures scenario runs on the mpi backend; received {group.backend!r}.")
    if group.rank == 0:
        prepare(folder)
    group.barrier()
    wrong, right, slowest = [], {}, 0.0
    for case, fn in CASES.items():
        right[case] = 0
        for i in range(rounds):
            # A step failure leaves the waiting ranks' collectives posted, never to be
            # matched: each round of it gets a communicator of its own.
            g = MpiGroup(group.comm.Dup(), timeout=group.timeout) if case == "step" else group
            began, error = time.monotonic(), None
            try:
                fn(g, folder, pause=0.02 * (i % 2))
            except Exception as caught:
                error = caught
                if case == "step":
                    g.fail(caught)  # as an uncaught error would: the rank leaves the group
            slowest = max(slowest, time.monotonic() - began)
            problem = check(case, g.rank, g.size, error)
            if g is not group:
                g.close()
                g.close()  # (twice is a no-op)
            if problem is None:
                right[case] += 1
            else:
                wrong.append(problem)
    return {"ok": not wrong, "right": right, "wrong": wrong[:3], "slowest": round(slowest, 3)}


def crash(group) -> dict:
    store = vs.ReplicatedStore(group=group, device="cpu")
    w = store.variable(np.zeros(4, np.float32), name="w", aggregation="sum", synchronization="on_write")
    with store.replica_step():
        w.assign_add(1.0)
        if group.rank == group.size - 1:
            time.sleep(0.5)  # the others wait in sync() by now
            raise ValueError(f"bad batch on rank {group.rank}")
    began = time.monotonic()
    try:
        store.sync()
    except vs.distributed.DistributedError as error:
        problem = check("step", group.rank, group.size, error)
        return {"ok": problem is None, "error": str(error), "problem": problem,
                "seconds": round(time.monotonic() - began, 3)}
    return {"ok": False, "error": None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m varstore.distributed.selftest")
    parser.add_argument("scenario", nargs="?", default="semantics",
                        choices=["semantics", "mismatch", "timeout", "die", "failures", "crash"])
    parser.add_argument("--backend", default="auto", choices=["auto", "mpi", "nccl", "local"])
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--dir", default=".", help="a folder every rank can see (semantics: the checkpoint)")
    parser.add_argument("--report", help="a folder where each rank also writes its line as rank<N>.json")
    parser.add_argument("--rounds", type=int, default=20, help="failures: the rounds of each case")
    args = parser.parse_args(argv)
    group = vs.distributed.init(args.backend, timeout=args.timeout)
    line = {"rank": group.rank, "size": group.size, "backend": group.backend}
    failed = None
    try:
        if args.scenario == "semantics":
            line.update(semantics(group, args.dir))
        elif args.scenario == "failures":
            line.update(failures(group, args.dir, args.rounds))
        else:
            line.update(globals()[args.scenario](group))
    except Exception as error:  # reported as this rank's line
        line.update(ok=False, error=f"{type(error).__name__}: {error}")
        failed = error
    print(json.dumps(line), flush=True)
    if args.report:
        with open(os.path.join(args.report, f"rank{line['rank']}.json"), "w") as f:
            json.dump(line, f)
    if args.scenario == "failures" and group.backend == "mpi":
        # Every rank's line is written before a rank left with abandoned step collectives
        # aborts the job at its exit.
        group.comm.Barrier()
    if args.scenario == "crash" and failed is not None and group.rank == group.size - 1:
        raise failed  # uncaught, so sys.excepthook tells the other ranks
    return 0 if line.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
