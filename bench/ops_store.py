"""Stores and checkpoints: a new variable, a model's variables built in a new store,
``store.save`` (atomic safetensors write with fsync) and ``store.load`` into existing
variables, with the host memory a save or a load takes.

Byte accounting: creation counts the variable's bytes; the model build its variables';
save and load count the file's tensor bytes once.
"""

from __future__ import annotations

import math
import os
import tracemalloc

import numpy as np

from varstore import initializers as I

from .ops_base import ELEMENT, Case, host_normal, require, square_shape, storage_of

# ---------------------------------------------------------------- variables


def build_create(ctx, nbytes):
    n = nbytes // ELEMENT
    shape = square_shape(n)
    store = ctx.new_store()
    made: list = []

    def create():
        if made:
            store.delete(made.pop().path)
        made.append(store.variable("zeros", shape=shape, dtype="float32", name="created"))

    fns = {"ours": create}
    holder: list = []
    label, fn = ctx.native.zeros(shape, holder)
    fns[label] = fn
    if ctx.torch:
        theld: list = []
        label, fn = ctx.torch.zeros(shape, theld)
        fns["torch " + label] = fn
    keras = ctx.keras_for(nbytes)
    if keras:
        def keras_create():
            holder[:] = [keras.Variable(initializer="zeros", shape=shape, dtype="float32")]

        fns["keras.Variable (numpy backend)"] = keras_create

    def check():
        require(len(store) == 1 and made[0].shape == shape, f"store holds {len(store)} variables after the creations")
        require(int(ctx.native.xp.count_nonzero(storage_of(made[0]))) == 0, "a zeros variable is not zero")

    return Case(fns, nbytes, check, ceiling="fill", keep=[store])


# (256, 256) glorot_uniform kernel + (256,) zeros bias: one layer of the model build
LAYER_BYTES = (256 * 256 + 256) * ELEMENT


def build_model(ctx, nbytes):
    """A model's variables in a new store: as many (256, 256) ``glorot_uniform`` kernels
    with (256,) ``zeros`` biases as fit in the size (at least one of each), against the
    same fills into variables that exist (ours' time less theirs is the creation's
    overhead: Python, allocation and the first touch of new memory)."""
    layers = max(1, nbytes // LAYER_BYTES)
    made: list = []

    def build_into(store):
        return [store.variable(initializer, shape=shape, dtype="float32", name=f"{kind}_{i}")
                for i in range(layers)
                for kind, initializer, shape in (("kernel", "glorot_uniform", (256, 256)), ("bias", "zeros", (256,)))]

    def ours():
        if made:  # the previous model's memory goes back before the next one is built
            for v in made[1]:
                v.release()
        store = ctx.new_store()
        made[:] = [store, build_into(store)]

    fns = {"ours": ours}
    existing = ctx.new_store()
    targets = build_into(existing)
    glorot, zeros, backend = I.GlorotUniform(seed=1), I.Zeros(), ctx.backend
    pairs = [(glorot if v.ndim == 2 else zeros, storage_of(v)) for v in targets]

    def fills_alone():
        for initializer, storage in pairs:
            initializer.fill(backend, storage, "float32")

    fns["the same fills into existing variables"] = fills_alone
    keras = ctx.keras_for(nbytes)
    if keras:
        held: list = []

        def keras_build():
            held[:] = [keras.Variable(initializer=initializer, shape=shape, dtype="float32")
                       for _ in range(layers)
                       for initializer, shape in (("glorot_uniform", (256, 256)), ("zeros", (256,)))]

        fns["keras.Variable (numpy backend)"] = keras_build

    def check():
        store, variables = made
        limit = math.sqrt(6 / 512)
        kernel = ctx.native.to_host(storage_of(variables[0]))
        largest = float(np.abs(kernel).max())
        require(largest <= limit and kernel.std() > limit / 3,
                f"glorot_uniform kernel: max |w| {largest:.4g} (limit {limit:.4g}), std {kernel.std():.4g}")
        require(not ctx.native.to_host(storage_of(variables[1])).any(), "a zeros bias is not zero")
        info = store.memory_info()
        require(info["variables"] == 2 * layers and info["variable_bytes"] == layers * LAYER_BYTES,
                f"the store holds {info['variables']} variables of {info['variable_bytes']} bytes, "
                f"expected {2 * layers} of {layers * LAYER_BYTES}")

    return Case(fns, layers * LAYER_BYTES, check, keep=[existing, targets])


# ---------------------------------------------------------------- checkpoints


def build_save(ctx, nbytes):
    n = nbytes // ELEMENT
    host = host_normal(n, seed=8, scale=1.0)
    store = ctx.new_store()
    store.variable(host, name="weights")
    path = os.path.join(ctx.tmpdir, "bench.safetensors")
    plain = ctx.native.from_host(host)
    fns = {"ours": lambda: store.save(path)}
    label, fn = ctx.native.save(plain, path + ".raw")
    fns[label] = fn
    label, fn = ctx.native.save_no_fsync(plain, path + ".nosync")
    fns[label] = fn
    memory, extra = memory_check("store.save", nbytes, lambda: store.save(path))

    def check():
        memory()
        other = ctx.new_store()
        other.variable("zeros", shape=(n,), dtype="float32", name="weights")
        other.load(path)
        require(bool(ctx.native.xp.array_equal(storage_of(other["weights"]), plain)),
                "store.save: the file does not hold the variable")

    return Case(fns, nbytes, check, ceiling=None, keep=[store, plain], extra=extra)


def build_load(ctx, nbytes):
    n = nbytes // ELEMENT
    host = host_normal(n, seed=9, scale=1.0)
    path = os.path.join(ctx.tmpdir, "bench.safetensors")
    writer = ctx.new_store()
    writer.variable(host, name="weights")
    writer.save(path)
    ctx.native.save(ctx.native.from_host(host), path + ".raw")[1]()
    store = ctx.new_store()
    store.variable("zeros", shape=(n,), dtype="float32", name="weights")
    fns = {"ours": lambda: store.load(path)}
    holder: list = []
    label, fn = ctx.native.load(path + ".raw", holder)
    fns[label] = fn
    memory, extra = memory_check("store.load", nbytes, lambda: store.load(path))

    def check():
        memory()
        got = ctx.native.to_host(storage_of(store["weights"]))
        require(bool(np.array_equal(got, host)), "store.load: the variable does not hold the file's tensor")

    return Case(fns, nbytes, check, ceiling=None, keep=[writer, store], extra=extra)


# ---------------------------------------------------------------- host memory of a checkpoint


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
    """Run ``fn`` once: the rise of the process's peak RSS over its RSS before (Linux: the
    peak reset through /proc/self/clear_refs; None elsewhere) and tracemalloc's peak (NumPy
    reports its buffers to it)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        before = _status_kib("VmRSS")
    except OSError:
        before = None
    tracemalloc.start()
    try:
        fn()
        traced = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    after = _status_kib("VmHWM")
    rise = (after - before) * 1024 if before is not None and after is not None else None
    return {"peak_rss_rise_bytes": rise, "tracemalloc_peak_bytes": traced}


def memory_check(what: str, nbytes: int, fn):
    """(check, extra): the check fails a checkpoint call that makes a host copy of the
    data (tracemalloc's peak over a quarter of it, plus 64 KiB of bookkeeping); extra is
    the last measurement, for the JSON."""
    measured: dict = {}

    def check():
        measured.update(peak_extra(fn))
        peak = measured["tracemalloc_peak_bytes"]
        require(peak <= nbytes // 4 + 64 * 2**10,
                f"{what}: {peak} bytes of host memory allocated for {nbytes} bytes of data (a copy?)")

    return check, lambda: dict(measured)
