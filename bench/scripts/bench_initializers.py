"""Issue 3 benchmark (CPU): random fills against NumPy's Philox generator.

    python bench/scripts/bench_initializers.py [--n 10000000] [--json FILE]

Ours fills an existing variable in place (`Initializer.fill`); NumPy's baseline is
`Generator(Philox(seed)).random(n, dtype=float32)` / `.standard_normal(...)`, allocating
as the issue states it, and with `out=` into an existing array. Each figure is the median of
repeated calls after warm-ups; results are checked (moments, bounds, determinism) inside.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np

import varstore as vs
from timing import median_time
from varstore import initializers as I


def check(values: np.ndarray, mean: float, std: float, lo=-np.inf, hi=np.inf, what="") -> None:
    x = values.astype(np.float64)
    ok = abs(x.mean() - mean) < 0.01 * max(std, 1) and abs(x.std() / std - 1) < 0.01 and x.min() >= lo and x.max() <= hi
    if not ok:
        sys.exit(f"FAILED check {what}: mean {x.mean()}, std {x.std()}, min {x.min()}, max {x.max()}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--json")
    args = parser.parse_args()
    n = args.n
    store = vs.VariableStore(device="cpu")
    generator = np.random.Generator(np.random.Philox(1234))
    out = np.empty(n, np.float32)
    rows = []

    def row(op, dtype, ours_fn, baseline_name, baseline_fn, bytes_written):
        ours = median_time(ours_fn, args.repeats)
        entry = {"op": op, "dtype": dtype, "n": n, "ours_s": ours, "ours_gb_s": bytes_written / ours / 1e9,
                 "samples_per_s": n / ours}
        if baseline_fn is not None:
            base = median_time(baseline_fn, args.repeats)
            entry.update(baseline=baseline_name, baseline_s=base, speedup=base / ours)
        rows.append(entry)

    cases = [
        ("RandomUniform", I.RandomUniform(0.0, 1.0, seed=1), (0.5, 1 / 12**0.5, 0.0, 1.0),
         "Philox().random(n, float32)", lambda: generator.random(n, dtype=np.float32),
         "Philox().random(out=)", lambda: generator.random(dtype=np.float32, out=out)),
        ("RandomNormal", I.RandomNormal(0.0, 1.0, seed=1), (0.0, 1.0, -6.0, 6.0),
         "Philox().standard_normal(n, float32)", lambda: generator.standard_normal(n, dtype=np.float32),
         "Philox().standard_normal(out=)", lambda: generator.standard_normal(dtype=np.float32, out=out)),
        ("TruncatedNormal", I.TruncatedNormal(0.0, 1.0, seed=1), (0.0, I.TRUNCATION_CORRECTION, -2.0, 2.0),
         None, None, None, None),
    ]
    for name, init, (mean, std, lo, hi), base_name, base_fn, out_name, out_fn in cases:
        for dtype in ("float32", "bfloat16", "float64"):
            var = vs.Variable("zeros", shape=(n,), dtype=dtype, store=store)
            fill = lambda init=init, var=var, dtype=dtype: init.fill(var._backend, var._storage, dtype)  # noqa: E731
            fill()
            first = var.numpy().copy()
            fill()
            if not np.array_equal(first.view(np.uint8), var.numpy().view(np.uint8)):
                sys.exit(f"FAILED: {name} {dtype} is not deterministic")
            tol_std = std if dtype != "bfloat16" else std  # bf16 rounding barely moves the moments
            check(var.numpy(), mean, tol_std, lo, hi, f"{name} {dtype}")
            written = n * var.nbytes // n
            if dtype == "float32" and base_fn is not None:
                row(name, dtype, fill, base_name, base_fn, written)
                row(name + " (baseline in place)", dtype, fill, out_name, out_fn, written)
            else:
                row(name, dtype, fill, None, None, written)
            var.release()

    ceiling = median_time(lambda: out.fill(0.5), args.repeats)
    print(f"{'op':<36} {'dtype':<9} {'ours':>10} {'GB/s':>6} {'baseline':<38} {'base':>10} {'speedup':>8}")
    for r in rows:
        base = f"{r['baseline_s'] * 1e3:8.2f} ms" if "baseline_s" in r else ""
        speed = f"{r['speedup']:7.2f}x" if "speedup" in r else ""
        print(f"{r['op']:<36} {r['dtype']:<9} {r['ours_s'] * 1e3:8.2f} ms {r['ours_gb_s']:6.2f} "
              f"{r.get('baseline', ''):<38} {base:>10} {speed:>8}")
    print(f"ceiling: ndarray.fill of {n} float32: {ceiling * 1e3:.2f} ms ({4 * n / ceiling / 1e9:.2f} GB/s)")
    if args.json:
        meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": platform.python_version(),
                "numpy": np.__version__, "varstore": vs.__version__, "n": n, "repeats": args.repeats,
                "fill_ceiling_s": ceiling}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
