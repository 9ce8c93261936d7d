"""Issue 5 benchmark (CPU): variable creation against keras.Variable, and a 1,000-variable
model build with its time split into Python overhead and fill.

    python bench/scripts/bench_store.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "numpy")

import varstore as vs


def create_500_ours() -> float:
    store = vs.VariableStore(device="cpu")
    start = time.perf_counter()
    for _ in range(500):
        store.variable("zeros", shape=(16,), dtype="float32")
    elapsed = time.perf_counter() - start
    assert len(store) == 500 and not store["variable_499"].numpy().any()
    return elapsed


def create_500_keras() -> float:
    import keras

    start = time.perf_counter()
    made = [keras.Variable("zeros", shape=(16,), dtype="float32") for _ in range(500)]
    elapsed = time.perf_counter() - start
    assert len(made) == 500 and not np.asarray(made[-1].value).any()
    return elapsed


def build_model(store, layers: int):
    """``layers`` x [(256, 256) glorot_uniform kernel, (256,) zeros bias]."""
    made = []
    for i in range(layers):
        made.append(store.variable("glorot_uniform", shape=(256, 256), name=f"kernel_{i}"))
        made.append(store.variable("zeros", shape=(256,), name=f"bias_{i}"))
    return made


def model_split(layers: int = 500) -> dict:
    """Build the model in a fresh store, timing every initializer fill inside the build
    (overhead = build - fills), then redo the same fills into the now-mapped memory: the
    difference is the first touch of freshly allocated pages, which the build pays."""
    import varstore.initializers as I

    spent = [0.0]
    originals = {cls: cls.fill for cls in (I.GlorotUniform, I.Zeros)}

    def timed(original):
        def fill(self, backend, storage, dtype):
            start = time.perf_counter()
            original(self, backend, storage, dtype)
            spent[0] += time.perf_counter() - start

        return fill

    store = vs.VariableStore(device="cpu")
    for cls, original in originals.items():
        cls.fill = timed(original)
    try:
        start = time.perf_counter()
        made = build_model(store, layers)
        build = time.perf_counter() - start
    finally:
        for cls, original in originals.items():
            cls.fill = original
    fill = spent[0]
    glorot, zeros = I.GlorotUniform(seed=1), I.Zeros()
    start = time.perf_counter()
    for v in made:
        (glorot if v.ndim == 2 else zeros).fill(v._backend, v._storage, v._dtype)
    refill = time.perf_counter() - start
    limit = np.sqrt(6 / 512)
    assert np.abs(made[0].numpy()).max() <= limit and made[0].numpy().std() > limit / 3
    info = store.memory_info()
    assert info["variables"] == 2 * layers and info["variable_bytes"] == layers * (256 * 256 + 256) * 4
    return {"build_s": build, "fill_s": fill, "overhead_s": build - fill, "refill_warm_s": refill,
            "variables": 2 * layers, "bytes": info["variable_bytes"]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    create_500_ours(), create_500_keras()  # warm-up: compile, imports
    ours = [create_500_ours() for _ in range(args.repeats)]
    keras_times = [create_500_keras() for _ in range(args.repeats)]
    t_ours, t_keras = statistics.median(ours), statistics.median(keras_times)

    model_split(4)  # warm-up
    splits = [model_split() for _ in range(3)]
    split = sorted(splits, key=lambda s: s["build_s"])[1]  # the median build

    import keras

    rows = {
        "create_500": {"ours_s": t_ours, "keras_s": t_keras, "keras_over_ours": t_keras / t_ours,
                       "ours_runs_s": ours, "keras_runs_s": keras_times},
        "model_1000": split,
    }
    print(f"500 x Variable('zeros', (16,), float32)   ours {t_ours * 1e3:7.2f} ms ({t_ours / 500 * 1e6:5.1f} us each)"
          f"   keras.Variable (numpy backend) {t_keras * 1e3:7.2f} ms   keras/ours {t_keras / t_ours:5.2f}x"
          f"   (issue: >= 5x)")
    print(f"model of {split['variables']} variables ({split['bytes'] / 2**20:.1f} MiB: (256, 256) glorot_uniform + "
          f"(256,) zeros)   build {split['build_s'] * 1e3:7.1f} ms = fills {split['fill_s'] * 1e3:7.1f} ms + "
          f"Python overhead {split['overhead_s'] * 1e3:6.1f} ms ({split['overhead_s'] / split['variables'] * 1e6:5.1f} "
          f"us per variable); the same fills into mapped memory: {split['refill_warm_s'] * 1e3:6.1f} ms (the rest "
          f"of the fills' time is the first touch of new pages)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "numpy": np.__version__,
                       "keras": keras.__version__, "python": sys.version.split()[0], "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
