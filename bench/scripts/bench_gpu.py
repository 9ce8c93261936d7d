"""GPU benchmark: our kernels on a CUDA device against the device-to-device copy ceiling,
CuPy and PyTorch (when present), timed with CUDA events on CuPy's current stream.

    python bench/scripts/bench_gpu.py [--json FILE] [--elements N]

Every row is the median of ``--repeats`` timed calls after two warm-ups; the ours/baseline
pairs are timed in alternation. Bandwidth counts bytes read plus bytes written once each
(the fewest a kernel must move); "of copy" is that bandwidth over the measured
device-to-device copy's. Needs a CUDA device; on a host without one it says so and exits 2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

import varstore as vs
from varstore.backends import get as get_backend
from varstore.casting import cast_into
from varstore.dtypes import storage_dtype


def paired(cp, fns: dict, repeats: int) -> dict:
    """Median seconds of each function, timed in alternation."""
    for fn in fns.values():
        fn()
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name] += event_times_once(cp, fn)
    return {name: statistics.median(t) for name, t in times.items()}


def event_times_once(cp, fn) -> list:
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    fn()
    stop.record()
    stop.synchronize()
    return [cp.cuda.get_elapsed_time(start, stop) / 1e3]


def profile_small_calls(cp, backend) -> int:
    """Where the time of a one-element write and of a bare kernel launch goes."""
    import cProfile
    import pstats

    from varstore.kernels import cast as K

    store = vs.VariableStore(device="cuda:0")
    small = store.variable("zeros", shape=(4, 4), name="small")
    src = cp.zeros(16, cp.uint32)
    dst = cp.zeros(16, cp.float64)
    for label, fn in (("v[1, 2] = 3.0", lambda: small.__setitem__((1, 2), 3.0)),
                      ("launch widen_f32 on 16 elements", lambda: backend.launch(K.widen_f32, 16, src=src, dst=dst))):
        for _ in range(20):
            fn()
        cp.cuda.Device().synchronize()
        start = time.perf_counter()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(300):
            fn()
        profiler.disable()
        cp.cuda.Device().synchronize()
        print(f"== {label}: {(time.perf_counter() - start) / 300 * 1e6:.1f} us per call (profiled)")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(18)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json")
    parser.add_argument("--elements", type=int, default=2**28,
                        help="float32 elements of the large arrays (2**28 = 1 GiB)")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--profile", action="store_true", help="cProfile small writes and launches, then exit")
    args = parser.parse_args()
    try:
        import cupy as cp

        cp.cuda.runtime.getDeviceCount()
        backend = get_backend("cuda")
    except Exception as error:  # noqa: BLE001 - any failure here means "no usable GPU"
        print(f"bench_gpu: no usable CUDA device ({type(error).__name__}: {error})", file=sys.stderr)
        return 2
    try:
        import torch

        torch_ok = torch.cuda.is_available()
    except ImportError:
        torch, torch_ok = None, False

    if args.profile:
        return profile_small_calls(cp, backend)
    n, reps = args.elements, args.repeats
    print(f"{'op':72s} {'ms':>9s} {'GB/s':>7s} {'of copy':>7s} {'baseline ms':>11s} {'base/ours':>9s}")
    props = cp.cuda.runtime.getDeviceProperties(0)
    rows = []

    def row(op, seconds, nbytes, baseline=None, baseline_seconds=None):
        entry = {"op": op, "ms": seconds * 1e3, "GB/s": nbytes / seconds / 1e9 if nbytes else None}
        if baseline:
            entry.update(baseline=baseline, baseline_ms=baseline_seconds * 1e3, speedup=baseline_seconds / seconds)
        rows.append(entry)
        ceiling = rows[0]["GB/s"]
        gbs = f"{entry['GB/s']:7.0f}" if entry["GB/s"] else "       "
        frac = f"{entry['GB/s'] / ceiling:7.0%}" if entry["GB/s"] else "       "
        base = f"{entry['baseline_ms']:11.4f} {entry['speedup']:8.2f}x" if baseline else ""
        print(f"{op:72s} {entry['ms']:9.4f} {gbs} {frac} {base}", flush=True)

    # ---- the ceiling: a large device-to-device copy
    a = cp.random.random(n, dtype=cp.float32)
    b = cp.empty_like(a)

    def device_copy():
        return cp.cuda.runtime.memcpyAsync(b.data.ptr, a.data.ptr, a.nbytes, 3, cp.cuda.get_current_stream().ptr)

    memcpy = paired(cp, {"memcpy": device_copy}, reps)["memcpy"]
    ceiling = 2 * a.nbytes / memcpy / 1e9
    row("D2D copy (cudaMemcpyAsync), float32", memcpy, 2 * a.nbytes)

    # ---- initializers: in-place fills of a 1 GiB float32 variable
    store = vs.VariableStore(device="cuda:0")
    target = store.variable("zeros", shape=(n,), dtype="float32", name="fill_target")
    storage = target._storage
    torch_out = torch.empty(n, dtype=torch.float32, device="cuda") if torch_ok else None
    fills = [
        ("RandomUniform", vs.initializers.RandomUniform(seed=1),
         lambda: cp.random.random(n, dtype=cp.float32), lambda: torch_out.uniform_()),
        ("RandomNormal", vs.initializers.RandomNormal(seed=1),
         lambda: cp.random.standard_normal(n, dtype=cp.float32), lambda: torch_out.normal_()),
        ("TruncatedNormal", vs.initializers.TruncatedNormal(seed=1), None, None),
        ("Zeros", vs.initializers.Zeros(), lambda: storage.fill(0), lambda: torch_out.zero_()),
    ]
    for name, init, cupy_fn, torch_fn in fills:
        fns = {"ours": lambda init=init: init.fill(backend, storage, "float32")}
        if cupy_fn:
            fns["cupy"] = cupy_fn
        if torch_fn and torch_ok:
            fns["torch"] = torch_fn
        t = paired(cp, fns, reps)
        for base in ("cupy", "torch"):
            if base in t:
                row(f"{name} fill, float32 (ours vs {base})", t["ours"], 4 * n, base, t[base])
        if len(t) == 1:
            row(f"{name} fill, float32", t["ours"], 4 * n)
    # float64 and bfloat16 fills
    for dtype, itemsize in (("float64", 8), ("bfloat16", 2)):
        m = n * 4 // itemsize
        other = store.variable("zeros", shape=(m,), dtype=dtype, name=f"fill_{dtype}")
        for name, init in (("RandomUniform", vs.initializers.RandomUniform(seed=1)),
                           ("RandomNormal", vs.initializers.RandomNormal(seed=1)),
                           ("TruncatedNormal", vs.initializers.TruncatedNormal(seed=1))):
            t = paired(cp, {"ours": lambda init=init, s=other._storage, d=dtype: init.fill(backend, s, d)}, reps)
            row(f"{name} fill, {dtype}", t["ours"], 4 * n)
        store.delete(f"fill_{dtype}")
    store.delete("fill_target")

    # ---- casts: whole-array astype kernels against CuPy / PyTorch
    x = cp.random.standard_normal(n, dtype=cp.float32)
    for dst, itemsize in (("bfloat16", 2), ("float16", 2), ("float8_e4m3fn", 1), ("float64", 8)):
        out = backend.empty((n,), storage_dtype(dst), "cuda:0")
        fns = {"ours": lambda out=out, dst=dst: cast_into(backend, x, "float32", out, dst)}
        if dst in ("float16", "float64"):
            fns["cupy"] = lambda dst=dst: x.astype(dst)
        if torch_ok and dst in ("bfloat16", "float16", "float8_e4m3fn"):
            tx = torch.as_tensor(x, device="cuda")
            fns["torch"] = lambda tx=tx, dst=dst: tx.to(getattr(torch, dst))
        t = paired(cp, fns, reps)
        nbytes = n * (4 + itemsize)
        for base in ("cupy", "torch"):
            if base in t:
                row(f"astype float32 -> {dst} (ours vs {base})", t["ours"], nbytes, base, t[base])

    # ---- strided slice-assign on a (16384, 16384) float32 variable (1 GiB)
    side = int(round((n) ** 0.5))
    v = vs.Variable(cp.zeros((side, side), cp.float32), store=store, name="sliced")
    plain = cp.zeros((side, side), cp.float32)
    region = plain[::2, 1::3]
    src = cp.random.random(region.shape, dtype=cp.float32)
    src64 = src.astype(cp.float64)

    def assign_ours(value=src):
        v[::2, 1::3] = value

    def assign_cupy(value=src):
        plain[::2, 1::3] = value

    t = paired(cp, {"ours": assign_ours, "cupy": assign_cupy}, reps)
    row("v[::2, 1::3] = b, float32 (ours vs cupy)", t["ours"], 2 * src.nbytes, "cupy", t["cupy"])
    t = paired(cp, {"ours": lambda: assign_ours(src64), "cupy": lambda: assign_cupy(src64)}, reps)
    row("v[::2, 1::3] = b, float64 source -> float32 (ours vs cupy)", t["ours"], src64.nbytes + src.nbytes, "cupy",
        t["cupy"])

    def row_write():
        v[0, :] = 99.0

    def copy_modify_assign():
        w = v.value.copy()
        w[0, :] = 99.0
        v.assign(w)

    t = paired(cp, {"ours": row_write, "copy_modify_assign": copy_modify_assign}, max(5, reps // 3))
    row("v[0, :] = 99 (ours vs copy-modify-assign)", t["ours"], 4 * side, "copy_modify_assign", t["copy_modify_assign"])
    t = paired(cp, {"ours": row_write, "cupy": lambda: plain.__setitem__((0, slice(None)), 99.0)}, reps)
    row("v[0, :] = 99 (ours vs cupy a[0, :] = 99)", t["ours"], 4 * side, "cupy", t["cupy"])
    store.delete("sliced")

    # ---- per-call overhead: a one-element write (host wall time, synchronized)
    small = store.variable("zeros", shape=(4, 4), name="small")
    host_small = cp.zeros((4, 4), cp.float32)

    def wall(fn, count=2000):
        fn()
        cp.cuda.Device().synchronize()
        start = time.perf_counter()
        for _ in range(count):
            fn()
        cp.cuda.Device().synchronize()
        return (time.perf_counter() - start) / count

    ours_small = wall(lambda: small.__setitem__((1, 2), 3.0))
    cupy_small = wall(lambda: host_small.__setitem__((1, 2), 3.0))
    row("v[1, 2] = 3.0 on a (4, 4) variable: per call (ours vs cupy)", ours_small, None, "cupy", cupy_small)
    ours_assign = wall(lambda: small.assign(host_small))
    row("v.assign(cupy (4, 4)): per call", ours_assign, None)

    # ---- a model: 500 x [(256, 256) glorot_uniform + (256,) zeros]
    def build():
        model = vs.VariableStore(device="cuda:0")
        for i in range(500):
            model.variable("glorot_uniform", shape=(256, 256), name=f"kernel_{i}")
            model.variable("zeros", shape=(256,), name=f"bias_{i}")
        cp.cuda.Device().synchronize()
        return model

    build()
    builds = []
    for _ in range(5):
        start = time.perf_counter()
        model = build()
        builds.append(time.perf_counter() - start)
        info = model.memory_info()
        del model
    row("build 1000 variables (500 x (256,256) glorot_uniform + (256,) zeros)", statistics.median(builds), None)
    creations = []
    for _ in range(5):
        s2 = vs.VariableStore(device="cuda:0")
        start = time.perf_counter()
        for i in range(500):
            s2.variable("zeros", shape=(16,), name=f"v{i}")
        cp.cuda.Device().synchronize()
        creations.append((time.perf_counter() - start) / 500)
    row("create one (16,) zeros variable (per variable)", statistics.median(creations), None)

    import numba
    import numba_cuda

    meta = {
        "device": props["name"].decode() if isinstance(props["name"], bytes) else props["name"],
        "sms": props["multiProcessorCount"],
        "cupy": cp.__version__, "numba": numba.__version__, "numba_cuda": numba_cuda.__version__,
        "numpy": np.__version__, "torch": torch.__version__ if torch_ok else None,
        "elements": n, "repeats": reps, "ceiling_GBps": ceiling, "model_memory_info": info,
    }
    print(f"{meta['device']} ({meta['sms']} SMs); cupy {meta['cupy']}, numba {meta['numba']}, "
          f"numba-cuda {meta['numba_cuda']}, torch {meta['torch']}; {n} float32 elements")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
