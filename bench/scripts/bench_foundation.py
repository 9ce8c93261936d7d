"""Foundation benchmark (issue 2), CPU ("numpy") backend only.

Measures, in one run:

1. casts of a float32 variable (``Variable.astype``) against ``ml_dtypes`` / NumPy
   ``ndarray.astype`` of the same array: float32 -> bfloat16, float16, float8_e4m3fn,
   float8_e5m2, and bfloat16 -> float32; ``np.copyto`` of float32 into float32 is the
   bandwidth ceiling;
2. ``assign`` / ``assign_add`` of a 3x3 float32 array against ``keras.Variable``
   (Keras's numpy backend) and ``np.copyto``;
3. ``import varstore`` against ``import numpy`` in fresh interpreters;
4. the first cast's compile time with an empty kernel cache, and with a warm one.

Every cast's bits are checked against the baseline's, on the timed data and on an
edge-case array (every float32 high half-word with several low halves: NaN, inf,
subnormals, overflow, ties); a mismatch makes the script exit with status 1.

Usage: python bench/scripts/bench_foundation.py [--json FILE] [--quick]

Keras's numpy backend imports scipy and jax: install them beside keras.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import timeit

import numpy as np

from timing import times_of

TARGETS = {
    "bfloat16": ("speed >= 1.0x ml_dtypes", lambda speed: speed >= 1.0),
    "float16": ("speed >= 2.0x NumPy", lambda speed: speed >= 2.0),
    "assign": ("keras/ours >= 2.0", lambda ratio: ratio >= 2.0),
    "import": ("varstore/numpy <= 2.5", lambda ratio: ratio <= 2.5),
}


# --------------------------------------------------------------------------- helpers


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _modified_files() -> list[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line[3:] for line in out.stdout.splitlines()]


def _kernels_source_hash() -> str | None:
    try:
        from varstore.kernels._targets import _source_hash

        return _source_hash()
    except Exception:
        return None


def _git_commit() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _pair_times(ours, base, warmup: int, repeats: int):
    """Seconds per call of ``ours()`` and ``base()``, interleaved so drift hits both."""
    for _ in range(warmup):
        ours()
        base()
    t_ours, t_base = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ours()
        t1 = time.perf_counter()
        base()
        t2 = time.perf_counter()
        t_ours.append(t1 - t0)
        t_base.append(t2 - t1)
    return t_ours, t_base


def _bits(array) -> np.ndarray:
    """The raw words of an array (uint8/16/32 view), for bit-exact comparison."""
    a = np.ascontiguousarray(array)
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def _compare_bits(label: str, ours, ref, source) -> str | None:
    """None when the bits are equal, else a message naming the first differences."""
    if ours.shape != ref.shape or ours.dtype != ref.dtype:
        return f"{label}: ours is {ours.dtype}{ours.shape}, the baseline {ref.dtype}{ref.shape}"
    a, b = _bits(ours).reshape(-1), _bits(ref).reshape(-1)
    bad = np.flatnonzero(a != b)
    if bad.size == 0:
        return None
    src = _bits(source).reshape(-1)
    width = 2 * src.dtype.itemsize
    wout = 2 * a.dtype.itemsize
    examples = ", ".join(
        f"src 0x{int(src[i]):0{width}x} -> ours 0x{int(a[i]):0{wout}x} vs 0x{int(b[i]):0{wout}x}" for i in bad[:5]
    )
    return f"{label}: {bad.size} of {a.size} results differ from the baseline ({examples})"


def _edge_float32() -> np.ndarray:
    """Every float32 high half-word, each with fixed and random low halves (~1.2M values):
    zeros, subnormals, normals, inf, NaNs with payloads, exact ties of every format."""
    high = np.arange(1 << 16, dtype=np.uint32) << np.uint32(16)
    lows = [0x0000, 0x0001, 0x0FFF, 0x1000, 0x1001, 0x2000, 0x3000, 0x7FFF, 0x8000, 0x8001, 0xFFFF]
    rng = np.random.default_rng(1)
    random_lows = rng.integers(0, 1 << 16, size=(high.size, 7), dtype=np.uint32)
    words = np.concatenate([(high | np.uint32(low)) for low in lows] + [(high[:, None] | random_lows).reshape(-1)])
    return words.view(np.float32)


def _fmt_time(seconds: float, unit: str) -> str:
    if unit == "ms":
        return f"{seconds * 1e3:.3f} ms"
    if unit == "us":
        return f"{seconds * 1e6:.3f} µs"
    return f"{seconds:.4f} s"


# --------------------------------------------------------------------------- sections


def bench_casts(n: int, warmup: int, repeats: int, failures: list) -> dict:
    import ml_dtypes

    import varstore as vs
    from varstore.casting import cast_into

    store = vs.VariableStore(device="cpu")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n, dtype=np.float32)  # weights-like data
    v = vs.Variable(x, name="x32", store=store)

    # Ceiling: a copy of float32 into a preallocated float32 array (2 * N * 4 bytes).
    dst = np.empty_like(x)
    t_copy = times_of(lambda: np.copyto(dst, x), repeats, warmup)
    ceiling_s = statistics.median(t_copy)
    ceiling_bytes = 2 * n * 4
    ceiling_gbs = ceiling_bytes / ceiling_s / 1e9
    # For information: an allocating copy (x.copy()), which pays the page faults of a new
    # output as astype does.
    t_alloc = times_of(lambda: x.copy(), repeats, warmup)
    results = {
        "n": n,
        "data": "float32 standard normal, seed 0",
        "allocating_copy": {
            "op": "x.copy() (float32, new output)",
            "bytes": ceiling_bytes,
            "median_s": statistics.median(t_alloc),
            "min_s": min(t_alloc),
            "gb_per_s": ceiling_bytes / statistics.median(t_alloc) / 1e9,
        },
        "ceiling": {
            "op": "np.copyto(float32 -> float32, preallocated)",
            "bytes": ceiling_bytes,
            "median_s": ceiling_s,
            "min_s": min(t_copy),
            "gb_per_s": ceiling_gbs,
        },
        "casts": [],
    }

    xb = x.astype(ml_dtypes.bfloat16)
    vb = vs.Variable(xb, name="xbf16", store=store)
    cases = [
        # key, label, our call, baseline name, baseline call, source (for messages), bytes/elem
        ("bfloat16", "astype float32->bfloat16", lambda: v.astype("bfloat16"),
         "ml_dtypes x.astype(bfloat16)", lambda: x.astype(ml_dtypes.bfloat16), x, 4 + 2),
        ("float16", "astype float32->float16", lambda: v.astype("float16"),
         "NumPy x.astype(float16)", lambda: x.astype(np.float16), x, 4 + 2),
        ("float8_e4m3fn", "astype float32->float8_e4m3fn", lambda: v.astype("float8_e4m3fn"),
         "ml_dtypes x.astype(float8_e4m3fn)", lambda: x.astype(ml_dtypes.float8_e4m3fn), x, 4 + 1),
        ("float8_e5m2", "astype float32->float8_e5m2", lambda: v.astype("float8_e5m2"),
         "ml_dtypes x.astype(float8_e5m2)", lambda: x.astype(ml_dtypes.float8_e5m2), x, 4 + 1),
        ("bfloat16->float32", "astype bfloat16->float32", lambda: vb.astype("float32"),
         "ml_dtypes xb.astype(float32)", lambda: xb.astype(np.float32), xb, 2 + 4),
    ]

    edge32 = _edge_float32()
    edge_bf16 = np.arange(1 << 16, dtype=np.uint16).view(ml_dtypes.bfloat16)
    for key, label, ours, base_name, base, source, per_elem in cases:
        t_ours, t_base = _pair_times(ours, base, warmup, repeats)
        ours_s, base_s = statistics.median(t_ours), statistics.median(t_base)
        nbytes = n * per_elem
        ours_gbs, base_gbs = nbytes / ours_s / 1e9, nbytes / base_s / 1e9

        # Bits: on the timed data, and on the edge cases.
        for what, got, ref, src in [("timed data", ours(), base(), source)]:
            msg = _compare_bits(f"{label} ({what})", got, ref, src)
            if msg:
                failures.append(msg)
        if key == "bfloat16->float32":
            ve = vs.Variable(edge_bf16, name="edge_" + key.replace(">", ""), store=store)
            got, ref, src = ve.astype("float32"), edge_bf16.astype(np.float32), edge_bf16
        else:
            ve = vs.Variable(edge32, name="edge_" + key, store=store)
            with np.errstate(over="ignore", invalid="ignore"):  # inf/NaN/overflow are the point
                ref = edge32.astype(np.float16 if key == "float16" else getattr(ml_dtypes, key))
            got, src = ve.astype(key), edge32
        msg = _compare_bits(f"{label} (edge cases)", got, ref, src)
        if msg:
            failures.append(msg)
        ve.release()

        results["casts"].append(
            {
                "key": key,
                "op": label,
                "n": n,
                "bytes": nbytes,
                "ours_median_s": ours_s,
                "ours_min_s": min(t_ours),
                "baseline": base_name,
                "baseline_median_s": base_s,
                "baseline_min_s": min(t_base),
                "speed_ratio": base_s / ours_s,  # ours/baseline speed: > 1 means ours is faster
                "ours_gb_per_s": ours_gbs,
                "baseline_gb_per_s": base_gbs,
                "ours_fraction_of_ceiling": ours_gbs / ceiling_gbs,
                "bits_checked": [f"timed data ({n})", f"edge cases ({got.size})"],
            }
        )

    # For information: our kernel into a preallocated output (no allocation, no page
    # faults), the form comparable to the copy ceiling.
    out = np.empty(n, np.uint16)
    t_into = times_of(lambda: cast_into(v._backend, v._storage, "float32", out, "bfloat16"), repeats, warmup)
    into_s = statistics.median(t_into)
    if not np.array_equal(out, xb.view(np.uint16)):
        failures.append("cast_into float32->bfloat16 (preallocated): bits differ from ml_dtypes")
    results["cast_into_bfloat16_preallocated"] = {
        "op": "casting.cast_into float32->bfloat16, preallocated output",
        "median_s": into_s,
        "min_s": min(t_into),
        "gb_per_s": n * 6 / into_s / 1e9,
        "fraction_of_ceiling": n * 6 / into_s / 1e9 / ceiling_gbs,
    }
    v.release()
    vb.release()
    return results


def bench_assign(number: int, repeat: int, failures: list) -> dict:
    import varstore as vs

    store = vs.VariableStore(device="cpu")
    rng = np.random.default_rng(2)
    a = rng.standard_normal((3, 3), dtype=np.float32)
    v = vs.Variable(np.zeros((3, 3), np.float32), name="w", store=store)
    dst = np.zeros((3, 3), np.float32)

    results: dict = {"number": number, "repeat": repeat, "rows": []}
    keras_error = None
    try:
        os.environ["KERAS_BACKEND"] = "numpy"
        import keras

        if keras.backend.backend() != "numpy":
            raise RuntimeError(f"keras runs the {keras.backend.backend()!r} backend, not numpy")
        kv = keras.Variable(np.zeros((3, 3), np.float32))
    except Exception as exc:  # ImportError (scipy/jax missing), wrong backend
        keras_error = f"{type(exc).__name__}: {exc}"
        kv = None
        failures.append(
            f"keras (numpy backend) unavailable, the assign baseline is missing: {keras_error}. "
            f"Keras's numpy backend needs scipy and jax installed."
        )
    results["keras_error"] = keras_error

    def per_call(stmt: str, **names) -> tuple[float, list]:
        timer = timeit.Timer(stmt, globals=names)
        runs = timer.repeat(repeat=repeat, number=number)
        return min(runs) / number, [r / number for r in runs]

    # correctness of what is timed
    v.assign(a)
    if not np.array_equal(v.numpy(), a):
        failures.append("Variable.assign(3x3 float32): the value read back differs")
    v.assign(1.5)
    if not np.all(v.numpy() == np.float32(1.5)):
        failures.append("Variable.assign(1.5): the value read back differs")
    v.assign(a)
    v.assign_add(a)
    if not np.array_equal(v.numpy(), a + a):
        failures.append("Variable.assign_add(3x3 float32): the value read back differs")

    ours_s, ours_runs = per_call("v.assign(a)", v=v, a=a)
    copy_s, copy_runs = per_call("copyto(dst, a)", copyto=np.copyto, dst=dst, a=a)
    row = {
        "op": "assign 3x3 float32 array",
        "ours_s": ours_s,
        "ours_runs_s": ours_runs,
        "numpy_copyto_s": copy_s,
        "numpy_copyto_runs_s": copy_runs,
        "numpy_name": "np.copyto(dst, a)",
    }
    if kv is not None:
        keras_s, keras_runs = per_call("kv.assign(a)", kv=kv, a=a)
        row.update({"keras_s": keras_s, "keras_runs_s": keras_runs, "keras_over_ours": keras_s / ours_s})
    results["rows"].append(row)

    ours_s, ours_runs = per_call("v.assign(1.5)", v=v)
    copy_s, copy_runs = per_call("copyto(dst, 1.5)", copyto=np.copyto, dst=dst)
    row = {
        "op": "assign Python scalar 1.5 (fills 3x3)",
        "ours_s": ours_s,
        "ours_runs_s": ours_runs,
        "numpy_copyto_s": copy_s,
        "numpy_copyto_runs_s": copy_runs,
        "numpy_name": "np.copyto(dst, 1.5)",
    }
    if kv is not None:
        try:
            kv.assign(1.5)
            keras_s, keras_runs = per_call("kv.assign(1.5)", kv=kv)
            row.update({"keras_s": keras_s, "keras_runs_s": keras_runs, "keras_over_ours": keras_s / ours_s})
        except Exception as exc:
            row["keras_note"] = f"keras.Variable.assign(1.5) raises {type(exc).__name__} (needs the same shape)"
    results["rows"].append(row)

    v.assign(np.zeros((3, 3), np.float32))
    ours_s, ours_runs = per_call("v.assign_add(a)", v=v, a=a)
    add_s, add_runs = per_call("add(dst, a, out=dst)", add=np.add, dst=dst, a=a)
    row = {
        "op": "assign_add 3x3 float32 array",
        "ours_s": ours_s,
        "ours_runs_s": ours_runs,
        "numpy_add_out_s": add_s,
        "numpy_add_out_runs_s": add_runs,
        "numpy_name": "np.add(dst, a, out=dst)",
    }
    if kv is not None:
        keras_s, keras_runs = per_call("kv.assign_add(a)", kv=kv, a=a)
        row.update({"keras_s": keras_s, "keras_runs_s": keras_runs, "keras_over_ours": keras_s / ours_s})
    results["rows"].append(row)
    v.release()
    return results


def _child_env(**extra) -> dict:
    env = dict(os.environ)
    env.pop("NUMBA_CACHE_DIR", None)  # it would override VARSTORE_CACHE_DIR
    env.update(extra)
    return env


def bench_import(runs: int) -> dict:
    stmts = {"pass": "pass", "numpy": "import numpy", "varstore": "import varstore"}
    env = _child_env()
    times: dict[str, list] = {k: [] for k in stmts}

    def once(stmt):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", stmt], env=env, check=True)
        return time.perf_counter() - t0

    for stmt in stmts.values():  # warm the OS file cache and .pyc files
        once(stmt)
    for _ in range(runs):  # interleaved
        for key, stmt in stmts.items():
            times[key].append(once(stmt))

    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, varstore; print(','.join(m for m in ('numba', 'ml_dtypes', 'cupy', 'numba_cuda', 'scipy') "
            "if m in sys.modules))",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    results = {"runs": runs}
    for key, ts in times.items():
        results[key] = {"min_s": min(ts), "median_s": statistics.median(ts), "all_s": ts}
    results["ratio_of_medians"] = results["varstore"]["median_s"] / results["numpy"]["median_s"]
    results["ratio_of_mins"] = results["varstore"]["min_s"] / results["numpy"]["min_s"]
    results["heavy_modules_imported_by_varstore"] = probe.stdout.strip().split(",") if probe.stdout.strip() else []
    return results


_COMPILE_CHILD = textwrap.dedent(
    """
    import json, os, time
    t0 = time.perf_counter()
    import numpy as np
    import varstore as vs
    t1 = time.perf_counter()
    from varstore.kernels import build, cast as K  # imports numba, declares the kernels
    t2 = time.perf_counter()
    from varstore.kernels._targets import cache_dir
    folder = cache_dir()
    before = sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)
    v = vs.Variable(np.linspace(-3, 3, 64, dtype=np.float32), store=vs.VariableStore(device="cpu"))
    t3 = time.perf_counter()
    y = v.astype("bfloat16")
    t4 = time.perf_counter()
    y = v.astype("bfloat16")
    t5 = time.perf_counter()
    stats = [d.stats for d in build.DISPATCHERS.values()]
    print(json.dumps({
        "import_varstore_s": t1 - t0,
        "import_kernels_s": t2 - t1,
        "first_astype_s": t4 - t3,
        "second_astype_s": t5 - t4,
        "cache_hits": sum(sum(s.cache_hits.values()) for s in stats),
        "cache_misses": sum(sum(s.cache_misses.values()) for s in stats),
        "cache_dir": folder,
        "cache_files_before": before,
    }))
    """
)


def bench_compile(rounds: int) -> dict:
    def child(cache_base):
        env = _child_env(VARSTORE_CACHE_DIR=cache_base)
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", _COMPILE_CHILD], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            raise RuntimeError(f"compile-time child failed:\n{out.stderr}")
        data = json.loads(out.stdout.strip().splitlines()[-1])
        data["process_wall_s"] = wall
        return data

    cold, warm = [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="varstore-bench-cache-") as base:
            c = child(base)
            files = [f for _, _, fs in os.walk(base) for f in fs]
            c["cache_files_written"] = len(files)
            cold.append(c)
            warm.append(child(base))

    def summary(rows):
        keys = ("first_astype_s", "import_kernels_s", "process_wall_s")
        out = {f"median_{k}": statistics.median(r[k] for r in rows) for k in keys}
        out["runs"] = rows
        return out

    return {"rounds": rounds, "cold": summary(cold), "warm": summary(warm)}


# --------------------------------------------------------------------------- report


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def build_table(res: dict) -> tuple[list[list[str]], dict]:
    header = ["op", "size", "ours", "baseline", "baseline time", "ratio", "ours GB/s", "frac. ceiling", "target", "met"]
    rows = [header]
    met: dict = {}
    casts = res["casts"]
    n = casts["n"]
    ceil = casts["ceiling"]
    rows.append(
        ["np.copyto f32->f32 (ceiling)", f"{n:.0e}", _fmt_time(ceil["median_s"], "ms"), "-", "-", "-",
         f"{ceil['gb_per_s']:.2f}", "1.00", "-", "-"]
    )
    alloc = casts["allocating_copy"]
    rows.append(
        ["x.copy() f32 (allocating, info)", f"{n:.0e}", _fmt_time(alloc["median_s"], "ms"), "-", "-", "-",
         f"{alloc['gb_per_s']:.2f}", f"{alloc['gb_per_s'] / ceil['gb_per_s']:.2f}", "-", "-"]
    )
    for c in casts["casts"]:
        target = TARGETS.get(c["key"])
        ok = target[1](c["speed_ratio"]) if target else None
        if target:
            met[c["key"]] = ok
        rows.append(
            [c["op"], f"{n:.0e}", _fmt_time(c["ours_median_s"], "ms"), c["baseline"],
             _fmt_time(c["baseline_median_s"], "ms"), f"{c['speed_ratio']:.2f}x speed",
             f"{c['ours_gb_per_s']:.2f}", f"{c['ours_fraction_of_ceiling']:.2f}",
             target[0] if target else "-", ("yes" if ok else "NO") if target else "-"]
        )
    into = casts["cast_into_bfloat16_preallocated"]
    rows.append(
        ["cast_into f32->bf16, prealloc. (info)", f"{n:.0e}", _fmt_time(into["median_s"], "ms"), "-", "-", "-",
         f"{into['gb_per_s']:.2f}", f"{into['fraction_of_ceiling']:.2f}", "-", "-"]
    )
    for i, r in enumerate(res["assign"]["rows"]):
        np_name = r["numpy_name"]
        np_key = "numpy_add_out_s" if "numpy_add_out_s" in r else "numpy_copyto_s"
        if "keras_s" in r:
            base, base_t = "keras.Variable (numpy)", _fmt_time(r["keras_s"], "us")
            ratio = f"{r['keras_over_ours']:.2f}x keras/ours"
        else:
            base, base_t, ratio = np_name, _fmt_time(r[np_key], "us"), f"{r[np_key] / r['ours_s']:.2f}x numpy/ours"
        target, ok = ("-", None)
        if i == 0:
            target = TARGETS["assign"][0]
            ok = TARGETS["assign"][1](r["keras_over_ours"]) if "keras_s" in r else False
            met["assign"] = ok
        rows.append(
            [r["op"], "3x3", _fmt_time(r["ours_s"], "us"), base, base_t, ratio, "-", "-", target,
             "-" if ok is None else ("yes" if ok else "NO")]
        )
        if "keras_s" not in r:
            continue
        rows.append(
            [f"  ({r['op'].split()[0]} numpy reference)", "3x3", "-", np_name, _fmt_time(r[np_key], "us"),
             f"{r[np_key] / r['ours_s']:.2f}x numpy/ours", "-", "-", "-", "-"]
        )
    imp = res["import"]
    ok = TARGETS["import"][1](imp["ratio_of_medians"])
    met["import"] = ok
    rows.append(
        ["import varstore (median)", "-", _fmt_time(imp["varstore"]["median_s"], "s"), "import numpy (median)",
         _fmt_time(imp["numpy"]["median_s"], "s"), f"{imp['ratio_of_medians']:.2f}x varstore/numpy", "-", "-",
         TARGETS["import"][0], "yes" if ok else "NO"]
    )
    rows.append(
        ["import varstore (min)", "-", _fmt_time(imp["varstore"]["min_s"], "s"), "import numpy (min)",
         _fmt_time(imp["numpy"]["min_s"], "s"), f"{imp['ratio_of_mins']:.2f}x varstore/numpy", "-", "-", "-", "-"]
    )
    rows.append(
        ["python -c pass (median)", "-", "-", "interpreter start", _fmt_time(imp["pass"]["median_s"], "s"), "-", "-",
         "-", "-", "-"]
    )
    comp = res["compile"]
    rows.append(
        ["first astype bf16, empty cache (cold)", "64", _fmt_time(comp["cold"]["median_first_astype_s"], "s"), "-",
         "-", "-", "-", "-", "-", "-"]
    )
    rows.append(
        ["first astype bf16, warm cache", "64", _fmt_time(comp["warm"]["median_first_astype_s"], "s"), "-", "-", "-",
         "-", "-", "-", "-"]
    )
    return rows, met


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="FILE", help="write every figure to FILE as JSON")
    parser.add_argument("--quick", action="store_true", help="1e6 elements and fewer repeats (a smoke run)")
    args = parser.parse_args(argv)

    if args.quick:
        n, warmup, repeats = 1_000_000, 3, 10
        number, repeat = 20_000, 3
        import_runs, compile_rounds = 5, 1
    else:
        n, warmup, repeats = 10_000_000, 3, 15
        number, repeat = 200_000, 5
        import_runs, compile_rounds = 20, 3

    failures: list[str] = []
    meta = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "cwd": os.getcwd(),
        "git_commit": _git_commit(),
        "modified_tracked_files": _modified_files(),
        "kernels_source_hash": _kernels_source_hash(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "backend": "numpy (CPU)",
        "loadavg_at_start": list(os.getloadavg()),
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "numba": _version("numba"),
            "ml_dtypes": _version("ml_dtypes"),
            "keras": _version("keras"),
            "varstore": _version("varstore"),
        },
        "settings": {
            "n": n,
            "warmup": warmup,
            "repeats": repeats,
            "assign_number": number,
            "assign_repeat": repeat,
            "import_runs": import_runs,
            "compile_rounds": compile_rounds,
            "quick": args.quick,
        },
    }
    print(f"varstore foundation benchmark  {meta['date']}")
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    print(f"  {meta['cpu_model']}, {meta['cpu_count']} cores; {versions}")
    print(f"  {meta['command']}")
    print(f"  load average at start: {meta['loadavg_at_start'][0]:.2f} (other work on the machine skews every figure)")

    res: dict = {"meta": meta}
    print("casts ...", flush=True)
    res["casts"] = bench_casts(n, warmup, repeats, failures)
    print("assign ...", flush=True)
    res["assign"] = bench_assign(number, repeat, failures)
    res["meta"]["versions"]["scipy"] = _version("scipy")
    res["meta"]["versions"]["jax"] = _version("jax")
    print("import time ...", flush=True)
    res["import"] = bench_import(import_runs)
    print("compile time ...", flush=True)
    res["compile"] = bench_compile(compile_rounds)

    res["meta"]["loadavg_at_end"] = list(os.getloadavg())
    rows, met = build_table(res)
    res["targets"] = {k: {"target": TARGETS[k][0], "met": v} for k, v in met.items()}
    res["failures"] = failures
    print()
    print(_table(rows))
    print()
    print("ratio: casts = baseline time / our time (ours/baseline speed, > 1: ours faster); assign = keras time / our "
          "time; import = varstore time / numpy time. Times are medians (casts, import) or best of "
          f"{repeat} x {number} calls (assign). GB/s counts bytes read + written; the ceiling is np.copyto.")
    imp = res["import"]
    print(f"modules `import varstore` loads among numba/ml_dtypes/cupy/numba_cuda/scipy: "
          f"{imp['heavy_modules_imported_by_varstore'] or 'none'}")
    comp = res["compile"]
    print(
        f"compile: cold first astype {comp['cold']['median_first_astype_s']:.3f} s "
        f"(+ {comp['cold']['median_import_kernels_s']:.3f} s importing numba/kernels), warm "
        f"{comp['warm']['median_first_astype_s']:.3f} s (+ {comp['warm']['median_import_kernels_s']:.3f} s); "
        f"cache misses cold/warm: {[r['cache_misses'] for r in comp['cold']['runs']]}/"
        f"{[r['cache_misses'] for r in comp['warm']['runs']]}, "
        f"hits warm: {[r['cache_hits'] for r in comp['warm']['runs']]}"
    )
    print("targets: " + ", ".join(f"{k} ({TARGETS[k][0]}): {'met' if v else 'NOT met'}" for k, v in met.items()))

    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
        print(f"wrote {args.json}")
    if failures:
        print("\nFAILED:", file=sys.stderr)
        for msg in failures:
            print("  " + msg, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
