"""``store.sync()`` against the raw engine call: ``python -m varstore.bench.sync``.

Launch it as the job it measures: ``mpiexec -n 2 python -m varstore.bench.sync`` (MPI on
the CPU), or one process per GPU for NCCL. For each variable count (1 / 100 / 1,000 /
10,000 by default) at the same total bytes (float32), it times, on every rank, with the
ranks started together by a barrier:

- ``raw``: one all-reduce of one flat buffer of the total bytes, called on the engine
  directly (``group.raw_allreduce``: ``NcclCommunicator.allReduce`` + stream sync, or
  ``MPI.Allreduce``);
- ``fused``: ``store.sync()`` after one ``assign_add`` per variable in a replica step,
  buckets of ``--bucket-mb`` (default 25);
- ``unfused``: the same with ``bucket_mb=0``: one collective per variable.

Each figure is the median of ``--repeats`` timed calls after two untimed ones; the
queueing of the updates (the ``assign_add`` calls) is timed apart from ``sync()``.
Rank 0 prints the table (and ``--json FILE``); ``collectives`` is the number of
collective calls one sync issued.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time

import numpy as np

import varstore as vs
from varstore import backends


def _median_seconds(fn, repeats, barrier):
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        barrier()
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def measure(group, count, total_bytes, repeats, bucket_mb, device):
    elements = max(1, total_bytes // 4 // count)
    rows = {}
    backend, device = backends.for_device(group.device if device is None else device)  # (as ReplicatedStore)
    flat = backend.empty((elements * count,), np.dtype(np.float32), device)
    flat.fill(1)
    sync_device = functools.partial(backend.synchronize, device)
    rows["raw"] = {"seconds": _median_seconds(lambda: group.raw_allreduce(flat), repeats, group.barrier),
                   "collectives": 1}
    for label, mb in (("fused", bucket_mb), ("unfused", 0)):
        store = vs.ReplicatedStore(group=group, device=device, bucket_mb=mb)
        grads = []
        made = []
        for i in range(count):
            made.append(store.variable("zeros", shape=(elements,), name=f"v{i}", aggregation="mean",
                                       synchronization="on_write"))
            grads.append(backend.empty((elements,), np.dtype(np.float32), store.device))
            grads[-1].fill(1)
        stats, queue_times, times = [], [], []
        for i in range(2 + repeats):  # two untimed rounds, then the timed ones
            began = time.perf_counter()
            with store.replica_step():
                for v, g in zip(made, grads, strict=True):
                    v.assign_add(g)
            queued = time.perf_counter() - began
            group.barrier()
            began = time.perf_counter()
            stats.append(store.sync())
            sync_device()
            if i >= 2:
                times.append(time.perf_counter() - began)
                queue_times.append(queued)
        rows[label] = {"seconds": statistics.median(times), "collectives": stats[-1].collectives,
                       "buckets": stats[-1].buckets, "queue_seconds": statistics.median(queue_times)}
        expected = float(2 + repeats)  # every sync added mean(1) = 1 to zeros
        got = float(made[-1].numpy()[0])
        if got != expected:
            raise SystemExit(f"{label} sync gave {got}, expected {expected}: the benchmark's check failed")
        for v in made:
            v.release()
    return {"variables": count, "elements_each": elements, "bytes": elements * count * 4, **rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m varstore.bench.sync", description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="auto", choices=["auto", "mpi", "nccl"])
    parser.add_argument("--total-mb", type=float, default=100.0, help="MiB per variable count (default 100)")
    parser.add_argument("--counts", default="1,100,1000,10000")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--bucket-mb", type=float, default=25.0)
    parser.add_argument("--device", default=None, help="store device (default: the group's GPU for NCCL, else cpu)")
    parser.add_argument("--json", help="write the rows to this file (rank 0)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a collective may wait (default 300)")
    args = parser.parse_args(argv)
    group = vs.distributed.init(args.backend, timeout=args.timeout)
    if group.backend == "local":
        raise SystemExit("the raw baseline needs an engine: --backend mpi or nccl (launch under mpiexec)")
    device = args.device or (None if group.backend == "nccl" else "cpu")
    total = int(args.total_mb * 2**20)
    rows = []
    for count in (int(c) for c in args.counts.split(",")):
        row = measure(group, count, total, args.repeats, args.bucket_mb, device)
        rows.append(row)
        if group.rank == 0:
            raw = row["raw"]["seconds"]
            for label in ("raw", "fused", "unfused"):
                r = row[label]
                extra = "" if label == "raw" else (f"  {r['buckets']:>5} buckets"
                                                   f"  queue {r['queue_seconds'] * 1e3:8.2f} ms"
                                                   f"  raw/sync {raw / r['seconds']:.2f}")
                print(f"{count:>6} vars x {row['elements_each']:>9} f32  {label:<8} {r['seconds'] * 1e3:9.3f} ms "
                      f"{row['bytes'] / r['seconds'] / 1e9:8.2f} GB/s  {r['collectives']:>6} collectives{extra}",
                      flush=True)
    if group.rank == 0 and args.json:
        meta = {"backend": group.backend, "ranks": group.size, "total_mb": args.total_mb, "repeats": args.repeats,
                "bucket_mb": args.bucket_mb, "date": time.strftime("%Y-%m-%d"), "numpy": np.__version__}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
