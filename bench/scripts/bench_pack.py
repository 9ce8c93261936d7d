"""Issue 8 benchmark: the multi-tensor pack and unpack kernels that ``sync()`` runs around
each collective, against the copy and the add of the array module (the ceiling).

    python bench/scripts/bench_pack.py [--device cpu|cuda:0] [--elements N] [--variables K]
                                       [--repeats R] [--json FILE]

One rank (``LocalGroup(1)``), ``K`` float32 and ``K`` bfloat16 variables of ``N / K``
elements each, aggregation mean, one ``assign_add`` each in a replica step. It then times,
for each dtype's bucket (one bucket: ``bucket_mb`` is set above the total):

- ``pack``: the bucket's updates into its staging buffer (float32 words, one launch);
- ``unpack``: the staging buffer, divided by 2 (a mean of two ranks) and added to the
  variables (one launch);
- the baselines on arrays of the same element count: ``copy`` (``xp.copyto`` of float32:
  what pack does at best) and ``add`` (``xp.add(a, b, out=a)``: unpack reads two arrays
  and writes one, as this does).

Each figure is the median of R timed calls after one untimed call, with the device
synchronized around each. Times per element and bytes moved per second (pack: 4 read +
4 written for float32, 2 + 4 for bfloat16; unpack: 4 + 4 read + 4 written, 4 + 2 + 2) are
printed. ``VARSTORE_NUM_THREADS`` sets the CPU threads.
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
from varstore.distributed import LocalGroup
from varstore.distributed import buckets as B

MOVED = {  # bytes per element: (pack, unpack)
    "float32": (8, 12),
    "bfloat16": (6, 8),
    "copy": (8, 8),
    "add": (12, 12),
}


def _median(fn, repeats, synchronize):
    fn()
    synchronize()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def measure(group, device, elements, variables, repeats):
    store = vs.ReplicatedStore(group=group, device=device, bucket_mb=1 << 20)
    backend, synchronize = store._backend, store._backend.synchronize
    each = elements // variables
    rows = []
    for dtype in ("float32", "bfloat16"):
        made = [store.variable("zeros", shape=(each,), dtype=dtype, name=f"{dtype}_{i}", aggregation="mean",
                               synchronization="on_write") for i in range(variables)]
        grad = backend.empty((each,), np.dtype(np.float32), store.device)
        grad.fill(1)
        with store.replica_step():
            for v in made:
                v.assign_add(grad)
        updates = [u for u in store._pending.values() if u.variable._dtype == dtype]
        store._pending.clear()
        (bucket,) = B.plan(updates, float("inf"))
        tables = B.Tables(backend, store.device)
        staging = backend.empty((bucket.elements,), np.dtype(bucket.staging), store.device)
        where = B.layout(bucket)
        pack = _median(functools.partial(B.pack, tables, bucket, staging, where), repeats, synchronize)
        unpack = _median(functools.partial(B.unpack, tables, bucket, staging, where, 2), repeats, synchronize)
        expected = 0.5 * (1 + repeats)  # every unpack added 1 / 2
        got = float(np.asarray(made[0].numpy(), np.float32)[0])
        if got != expected:
            raise SystemExit(f"{dtype}: unpack gave {got}, expected {expected}")
        for name, seconds, moved in (("pack", pack, MOVED[dtype][0]), ("unpack", unpack, MOVED[dtype][1])):
            rows.append({"kernel": name, "dtype": dtype, "elements": bucket.elements, "variables": variables,
                         "seconds": seconds, "ns_per_element": seconds / bucket.elements * 1e9,
                         "gb_per_s": moved * bucket.elements / seconds / 1e9})
    xp = backend.xp
    a = backend.empty((each * variables,), np.dtype(np.float32), store.device)
    b = backend.empty((each * variables,), np.dtype(np.float32), store.device)
    a.fill(1)
    b.fill(2)
    for name, fn in (("copy", lambda: xp.copyto(a, b)), ("add", lambda: xp.add(a, b, out=a))):
        seconds = _median(fn, repeats, synchronize)
        rows.append({"kernel": name, "dtype": "float32", "elements": a.size, "variables": 1, "seconds": seconds,
                     "ns_per_element": seconds / a.size * 1e9, "gb_per_s": MOVED[name][0] * a.size / seconds / 1e9})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--elements", type=int, default=26_214_400, help="in all, per dtype (default: 100 MiB of f32)")
    parser.add_argument("--variables", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.elements < args.variables or args.variables < 1 or args.repeats < 1:
        parser.error("need --elements >= --variables >= 1 and --repeats >= 1")
    rows = LocalGroup(1).run(lambda g: measure(g, args.device, args.elements, args.variables, args.repeats))[0]
    for r in rows:
        print(f"{r['kernel']:>7} {r['dtype']:>9} {r['elements']:>10} elements in {r['variables']:>6} tensors "
              f"{r['seconds'] * 1e3:9.3f} ms {r['ns_per_element']:7.3f} ns/element {r['gb_per_s']:8.2f} GB/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "numpy": np.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
