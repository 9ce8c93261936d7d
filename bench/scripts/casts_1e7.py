"""``v.astype(dtype)`` of 1e7 elements against ml_dtypes' (NumPy's for float16) astype.

The suite's cast ops run at powers of two; this one measures the 10-million-element
figure that bench/RESULTS.md tracks (target: float32 <-> bfloat16 at least 1.5x
ml_dtypes). Per pair of dtypes: the bits are compared with the baseline's first, then
18 calls of ours and of the baseline alternate; the first 3 of each are warm-ups and the
median of the other 15 is reported.

Usage: ``python bench/scripts/casts_1e7.py [OUT.json]`` (on the default backend's
first device; a cuda store synchronizes nothing here, so use it on the CPU).
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import ml_dtypes
import numpy as np

import varstore as vs

N = 10**7
WARMUP, CALLS = 3, 18
PAIRS = [("float32", "bfloat16"), ("float32", "float16"), ("float32", "float8_e4m3fn"), ("float32", "float8_e5m2"),
         ("bfloat16", "float32"), ("float16", "float32"), ("float8_e4m3fn", "float32"), ("float8_e5m2", "float32")]
HOST = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16,
        "float8_e4m3fn": ml_dtypes.float8_e4m3fn, "float8_e5m2": ml_dtypes.float8_e5m2}


def main(out: str | None) -> None:
    x = np.random.default_rng(0).standard_normal(N, dtype=np.float32) * np.float32(4)
    store = vs.VariableStore(device="cpu")
    rows = []
    for src, dst in PAIRS:
        host = x.astype(HOST[src])
        v = store.variable(host, dtype=src, name=f"{src}_to_{dst}")

        def ours(v=v, dst=dst):
            return v.astype(dst)

        def baseline(host=host, dst=dst):
            return host.astype(HOST[dst])

        if np.asarray(ours()).tobytes() != baseline().tobytes():
            raise SystemExit(f"astype {src} -> {dst}: our bits differ from the baseline's")
        times = {"ours": [], "baseline": []}
        for i in range(CALLS):
            for name, fn in (("ours", ours), ("baseline", baseline)):
                start = time.perf_counter()
                fn()
                if i >= WARMUP:
                    times[name].append(time.perf_counter() - start)
        label = "NumPy" if "float16" in (src, dst) else "ml_dtypes"
        ours_s, base_s = statistics.median(times["ours"]), statistics.median(times["baseline"])
        rows.append(dict(src=src, dst=dst, ours_median_s=ours_s, baseline_median_s=base_s, baseline=label))
        print(f"{src} -> {dst}: ours {ours_s * 1e3:.2f} ms, {label} {base_s * 1e3:.2f} ms, "
              f"{base_s / ours_s:.2f}x", flush=True)
    if out:
        with open(out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
