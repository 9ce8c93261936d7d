"""Issue 4 benchmark (CPU): strided slice-assign against NumPy's own, and the row write
against the Keras docs' copy-modify-assign.

    python bench/scripts/bench_slicing.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

import varstore as vs
from timing import times_of


def interleaved(fn_a, fn_b, repeats):
    """Median and min of two functions timed in alternation (the same machine state)."""
    a, b = [], []
    for _ in range(repeats):
        a += times_of(fn_a, 1, 0)
        b += times_of(fn_b, 1, 0)
    return (statistics.median(a), min(a)), (statistics.median(b), min(b))


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
    times_of(ours, 3, 0), times_of(numpy_own, 3, 0)
    (t_ours, min_ours), (t_numpy, min_numpy) = interleaved(ours, numpy_own, 41)
    useful = 2 * b.nbytes  # bytes read + written
    rows.append({"op": "v[::2, 1::3] = b, (4000, 1000) float32", "ours_s": t_ours, "ours_min_s": min_ours,
                 "baseline": "NumPy a[::2, 1::3] = b", "baseline_s": t_numpy, "baseline_min_s": min_numpy,
                 "ratio_baseline_over_ours": t_numpy / t_ours, "ratio_of_mins": min_numpy / min_ours,
                 "ours_gb_s": useful / t_ours / 1e9})

    # The same write from a float64 source: converted inside the strided kernel (float32:
    # vs NumPy's converting assign; bfloat16: vs ml_dtypes', which casts then assigns).
    import ml_dtypes

    b64 = b.astype(np.float64)
    for dtype, host in (("float32", np.float32), ("bfloat16", ml_dtypes.bfloat16)):
        ref = np.zeros((4000, 1000), host)
        w = vs.Variable(np.zeros((4000, 1000)), dtype=dtype, store=store)

        def ours_converting(w=w):
            w[::2, 1::3] = b64

        def reference(ref=ref):
            ref[::2, 1::3] = b64

        ours_converting()
        reference()
        if not np.array_equal(np.asarray(w.numpy()).view(np.uint8), ref.view(np.uint8)):
            sys.exit(f"FAILED: the converting write into {dtype} differs from NumPy/ml_dtypes")
        (t_ours, min_ours), (t_ref, min_ref) = interleaved(ours_converting, reference, 21)
        base = "NumPy" if dtype == "float32" else "ml_dtypes"
        rows.append({"op": f"v[::2, 1::3] = b float64 -> {dtype}", "ours_s": t_ours, "ours_min_s": min_ours,
                     "baseline": f"{base} a[::2, 1::3] = b (float64 b)", "baseline_s": t_ref, "baseline_min_s": min_ref,
                     "ratio_baseline_over_ours": t_ref / t_ours, "ratio_of_mins": min_ref / min_ours,
                     "ours_gb_s": (b64.nbytes + b.size * ref.itemsize) / t_ours / 1e9})

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
    row_times, cma_times = times_of(row_write, 51, 3), times_of(copy_modify_assign, 7, 3)
    t_row, t_cma = statistics.median(row_times), statistics.median(cma_times)
    rows.append({"op": "v[0, :] = 99, (4096, 4096) float32", "ours_s": t_row, "ours_min_s": min(row_times),
                 "baseline": "value = v.numpy(); value[0, :] = 99; v.assign(value)", "baseline_s": t_cma,
                 "baseline_min_s": min(cma_times), "ratio_baseline_over_ours": t_cma / t_row,
                 "ratio_of_mins": min(cma_times) / min(row_times), "ours_gb_s": 4096 * 4 / t_row / 1e9})

    for r in rows:
        print(f"{r['op']:<42} ours {r['ours_s'] * 1e6:9.1f} us (min {r['ours_min_s'] * 1e6:8.1f})   "
              f"{r['baseline']:<55} {r['baseline_s'] * 1e6:9.1f} us (min {r['baseline_min_s'] * 1e6:8.1f})   "
              f"baseline/ours {r['ratio_baseline_over_ours']:6.2f}x (mins {r['ratio_of_mins']:6.2f}x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "numpy": np.__version__, "rows": rows}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
