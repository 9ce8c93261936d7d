"""Issue 4 benchmark (CPU): strided slice-assign against NumPy's own, and the row write
against the Keras docs' copy-modify-assign.

    python bench/bench_slicing.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

import varstore as vs


def median_time(fn, repeats=15, warmup=3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json")
    args = parser.parse_args()
    store = vs.VariableStore(device="cpu")
    rows = []

    # v[::2, 1::3] = b on a (4000, 1000) float32 variable.
    a = np.zeros((4000, 1000), np.float32)
    b = np.random.default_rng(0).random((2000, 333), dtype=np.float32)
    v = vs.Variable(a.copy(), store=store)

    def ours():
        v[::2, 1::3] = b

    def numpy_own():
        a[::2, 1::3] = b

    ours()
    numpy_own()
    if not np.array_equal(v.numpy(), a):
        sys.exit("FAILED: v[::2, 1::3] = b differs from NumPy")
    t_ours, t_numpy = median_time(ours), median_time(numpy_own)
    useful = 2 * b.nbytes  # bytes read + written
    rows.append({"op": "v[::2, 1::3] = b, (4000, 1000) float32", "ours_s": t_ours, "baseline": "NumPy a[::2, 1::3] = b",
                 "baseline_s": t_numpy, "ratio_baseline_over_ours": t_numpy / t_ours, "ours_gb_s": useful / t_ours / 1e9})

    # v[0, :] = 99 on (4096, 4096) float32 vs the R docs' copy, modify, assign.
    big = vs.Variable(np.zeros((4096, 4096), np.float32), store=store)

    def row_write():
        big[0, :] = 99

    def copy_modify_assign():
        value = big.numpy()
        value[0, :] = 99
        big.assign(value)

    row_write()
    if not (big.numpy()[0] == 99).all():
        sys.exit("FAILED: the row write")
    t_row, t_cma = median_time(row_write, repeats=51), median_time(copy_modify_assign, repeats=7)
    rows.append({"op": "v[0, :] = 99, (4096, 4096) float32", "ours_s": t_row,
                 "baseline": "value = v.numpy(); value[0, :] = 99; v.assign(value)", "baseline_s": t_cma,
                 "ratio_baseline_over_ours": t_cma / t_row, "ours_gb_s": 4096 * 4 / t_row / 1e9})

    for r in rows:
        print(f"{r['op']:<42} ours {r['ours_s'] * 1e6:10.1f} us   {r['baseline']:<55} {r['baseline_s'] * 1e6:10.1f} us   "
              f"baseline/ours {r['ratio_baseline_over_ours']:8.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "numpy": np.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
