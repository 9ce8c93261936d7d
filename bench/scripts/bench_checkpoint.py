"""Issue 6 benchmark: save and load of a 1 GiB store against writing and reading the same
bytes with ``ndarray.tofile`` / ``np.fromfile``, and the extra host memory each takes.

    python bench/scripts/bench_checkpoint.py [--json FILE] [--folder DIR] [--device cpu]

The store holds 16 float32 variables of 64 MiB. Our save is atomic (temporary file, fsync,
rename, folder fsync), so the baseline is timed twice: with an fsync before close (the same
durability) and without. Loads read files that were just written (the page cache is warm
for both). Throughput is bytes of tensor data per second. Peak extra host memory is the
rise of the process's peak RSS during the call (Linux: reset through /proc/self/clear_refs)
and tracemalloc's peak (NumPy reports its buffers to it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc

import numpy as np

import varstore as vs

VARIABLES = 16
ELEMENTS = 16 * 1024 * 1024  # 64 MiB of float32 each: 1 GiB in all


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_extra(fn) -> dict:
    """Run ``fn`` once; the rise of peak RSS over the RSS before it, and tracemalloc's peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        rss_ok = True
    except OSError:
        rss_ok = False
    before = _status_kib("VmRSS")
    tracemalloc.start()
    fn()
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    after = _status_kib("VmHWM")
    rise = (after - before) * 1024 if (rss_ok and before is not None and after is not None) else None
    return {"peak_rss_rise_bytes": rise, "tracemalloc_peak_bytes": traced}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json")
    parser.add_argument("--folder", default=tempfile.gettempdir())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    store = vs.VariableStore(device=args.device)
    rng = np.random.default_rng(0)
    host = [rng.standard_normal(ELEMENTS, dtype=np.float32) for _ in range(VARIABLES)]
    for i, values in enumerate(host):
        store.variable(values, name=f"w{i}")
    nbytes = VARIABLES * ELEMENTS * 4
    folder = tempfile.mkdtemp(prefix="varstore-bench-", dir=args.folder)
    ours_file = os.path.join(folder, "store.safetensors")
    plain_file = os.path.join(folder, "plain.bin")

    def plain_save(fsync: bool):
        with open(plain_file, "wb") as f:
            for values in host:
                values.tofile(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())

    def plain_load():
        return [np.fromfile(plain_file, np.float32, count=ELEMENTS, offset=i * ELEMENTS * 4) for i in range(VARIABLES)]

    ops = {
        "save (ours, atomic + fsync)": lambda: store.save(ours_file),
        "tofile + fsync": lambda: plain_save(True),
        "tofile, no fsync": lambda: plain_save(False),
        "load (ours, into the variables)": lambda: store.load(ours_file),
        "fromfile (new arrays)": plain_load,
    }
    for fn in ops.values():  # warm-up: files exist, pages are cached
        fn()
    times = {name: [] for name in ops}
    for _ in range(args.repeats):
        for name, fn in ops.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    memory = {
        "save": peak_extra(ops["save (ours, atomic + fsync)"]),
        "load": peak_extra(ops["load (ours, into the variables)"]),
        "fromfile": peak_extra(plain_load),
    }
    for i, values in enumerate(host):  # the loaded bits are the saved bits
        assert np.array_equal(store[f"w{i}"].numpy(), values)

    medians = {name: statistics.median(t) for name, t in times.items()}
    rows = []
    print(f"store: {VARIABLES} x {ELEMENTS * 4 >> 20} MiB float32 = {nbytes / 2**30:.2f} GiB on {store.device}; "
          f"folder {folder}; median of {args.repeats}")
    print(f"{'op':34s} {'s':>7s} {'GB/s':>7s}")
    for name, t in medians.items():
        rows.append({"op": name, "seconds": t, "GBps": nbytes / t / 1e9})
        print(f"{name:34s} {t:7.3f} {nbytes / t / 1e9:7.2f}")
    ratios = {
        "save / (tofile + fsync)": medians["tofile + fsync"] / medians["save (ours, atomic + fsync)"],
        "save / (tofile, no fsync)": medians["tofile, no fsync"] / medians["save (ours, atomic + fsync)"],
        "load / fromfile": medians["fromfile (new arrays)"] / medians["load (ours, into the variables)"],
    }
    for name, r in ratios.items():
        print(f"throughput ratio {name}: {r:.2f}")
    for name, m in memory.items():
        rise = m["peak_rss_rise_bytes"]
        print(f"peak extra host memory, {name}: RSS rise {rise / 2**20:.1f} MiB" if rise is not None else
              f"peak extra host memory, {name}: RSS rise unknown",
              f"; tracemalloc peak {m['tracemalloc_peak_bytes'] / 2**20:.2f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "ratios": ratios, "memory": memory, "bytes": nbytes,
                       "times": times, "folder": folder}, f, indent=1)
    for name in (ours_file, plain_file):
        os.unlink(name)
    os.rmdir(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
