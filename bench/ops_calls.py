"""Per-call host time: small ops where Python overhead, not bandwidth, is the cost, each
against the array library's own op (and Keras 3's, numpy backend, up to 1 MiB), timed in
the same run; and the start-up, ``import varstore`` in a fresh interpreter against
``import numpy``.

The size is the bytes of the op's float32 operand (1,024 elements at 4 KiB).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np

from varstore.dtypes import host_dtype

from .ops_base import ELEMENT, Case, CheckFailed, bits, host_normal, require, storage_of


def build_calls_row(ctx, nbytes):
    n = nbytes // ELEMENT
    shape = (64, n)
    store = ctx.new_store()
    v = store.variable("zeros", shape=shape, dtype="float32", name="rows")
    plain = ctx.native.xp.zeros(shape, np.float32)

    def ours():
        v[0, :] = 99

    fns = {"ours": ours}
    label, fn = ctx.native.setitem(plain, (0, slice(None)), 99)
    fns[label + " a[0, :] = 99"] = fn

    def check():
        host = ctx.native.to_host(storage_of(v))
        require(bool(np.all(host[0] == 99.0)) and not host[1:].any(), "v[0, :] = 99: wrong rows")

    return Case(fns, n * ELEMENT, check, keep=[store, plain])


def build_calls_element(ctx, nbytes):
    n = nbytes // ELEMENT
    shape = (64, n)
    store = ctx.new_store()
    v = store.variable("zeros", shape=shape, dtype="float32", name="elements")
    plain = ctx.native.xp.zeros(shape, np.float32)

    def ours():
        v[1, 2] = 3.0

    fns = {"ours": ours}
    label, fn = ctx.native.setitem(plain, (1, 2), 3.0)
    fns[label + " a[1, 2] = 3.0"] = fn

    def check():
        host = ctx.native.to_host(storage_of(v))
        require(host[1, 2] == 3.0 and np.count_nonzero(host) == 1, "v[1, 2] = 3.0: wrong elements")

    return Case(fns, ELEMENT, check, keep=[store, plain])


def build_calls_fill(ctx, nbytes):
    n = nbytes // ELEMENT
    store = ctx.new_store()
    v = store.variable("zeros", shape=(n,), dtype="float32", name="filled")
    out = ctx.native.xp.zeros((n,), np.float32)
    label, fn = ctx.native.fill_value(out, 1.5)
    fns = {"ours": lambda: v.assign(1.5), label: fn}

    def check():
        require(bool(np.all(ctx.native.to_host(storage_of(v)) == 1.5)), "v.assign(1.5): not all 1.5")

    return Case(fns, n * ELEMENT, check, keep=[store, out])


def build_calls_astype(ctx, nbytes):
    n = nbytes // ELEMENT
    host = host_normal(n, seed=11, edges=True)
    store = ctx.new_store()
    v = store.variable(host, name="source")
    x = ctx.native.from_host(host)
    fns = {"ours": lambda: v.astype("bfloat16")}
    baseline = ctx.native.astype(x, "bfloat16")
    if baseline is not None:
        fns[baseline[0] + " astype"] = baseline[1]

    def check():
        got = bits(ctx.native.to_host(v.astype("bfloat16")))
        want = bits(host.astype(host_dtype("bfloat16")))
        finite = np.isfinite(host)  # (ml_dtypes drops NaN payloads; our kernel keeps them)
        require(bool(np.array_equal(got[finite], want[finite])), "v.astype('bfloat16') differs from ml_dtypes")

    return Case(fns, n * (ELEMENT + 2), check, keep=[store, x])


def build_calls_assign_add(ctx, nbytes):
    n = nbytes // ELEMENT
    store = ctx.new_store()
    v = store.variable("zeros", shape=(n,), dtype="float32", name="sum")
    x = ctx.native.from_host(np.full(n, 0.5, np.float32))
    out = ctx.native.xp.zeros((n,), np.float32)
    label, fn = ctx.native.add(out, x)
    fns = {"ours": lambda: v.assign_add(x), label: fn}

    def check():
        got = ctx.native.to_host(storage_of(v))
        require(bool(np.all(got == got[0])) and got[0] > 0 and got[0] % 0.5 == 0, "v.assign_add(x): uneven sums")

    return Case(fns, 3 * n * ELEMENT, check, keep=[store, x, out])


def build_calls_assign_add_keras(ctx, nbytes):
    """calls/assign_add against ``keras.Variable.assign_add``, as an op of its own: a call
    that slow, timed in alternation with ours and the array module's, leaves them colder
    caches and would measure them slower than they run."""
    n = nbytes // ELEMENT
    store = ctx.new_store()
    v = store.variable("zeros", shape=(n,), dtype="float32", name="sum")
    x = ctx.native.from_host(np.full(n, 0.5, np.float32))
    fns = {"ours": lambda: v.assign_add(x)}
    out = ctx.native.xp.zeros((n,), np.float32)
    keras = ctx.keras_for(nbytes)
    if keras:
        host = np.full(n, 0.5, np.float32)
        kv = keras.Variable(np.zeros(n, np.float32))
        fns["keras.Variable.assign_add (numpy backend)"] = lambda: kv.assign_add(host)
    else:  # (the array module's add, so that the op keeps a baseline where Keras is not installed)
        label, fn = ctx.native.add(out, x)
        fns[label] = fn

    def check():
        got = ctx.native.to_host(storage_of(v))
        require(bool(np.all(got == got[0])) and got[0] > 0 and got[0] % 0.5 == 0, "v.assign_add(x): uneven sums")

    return Case(fns, 3 * n * ELEMENT, check, keep=[store, x, out])


CREATED = 300  # variables of shape (4, 4) per call (the size does not change them)


def build_calls_create(ctx, nbytes):
    made: list = []

    def ours():
        store = ctx.new_store()
        made[:] = [store, [store.variable("glorot_uniform", shape=(4, 4), dtype="float32", name=f"w{i}")
                           for i in range(CREATED)]]

    fns = {"ours": ours}
    arrays: list = []
    label, fn = ctx.native.uniform_arrays((4, 4), CREATED, math.sqrt(6.0 / 8.0), arrays)
    fns[label] = fn
    keras = ctx.keras_for(nbytes)
    if keras:
        held: list = []

        def keras_create():
            held[:] = [keras.Variable(initializer="glorot_uniform", shape=(4, 4), dtype="float32")
                       for _ in range(CREATED)]

        fns["keras.Variable (numpy backend)"] = keras_create

    def check():
        store, variables = made
        limit = math.sqrt(6.0 / 8.0)
        values = np.stack([ctx.native.to_host(storage_of(w)) for w in variables])
        require(len(store) == CREATED and bool(np.all(np.abs(values) <= limit)), "glorot_uniform out of its limit")
        require(len({values[i].tobytes() for i in range(CREATED)}) == CREATED, "two variables drew the same values")

    return Case(fns, None, check)


# ---------------------------------------------------------------- start-up

# What ``import varstore`` must not load: the compilers and the GPU stack load on first use.
HEAVY = ("numba", "numba_cuda", "cupy", "ml_dtypes")
IMPORT_BYTES = 4 * 2**10  # the import does not depend on the size: measured at the smallest


def _python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def build_import(ctx, nbytes):
    def run(code):
        def call():
            done = _python(code)
            if done.returncode != 0:
                raise CheckFailed(f"python -c {code!r} failed: {done.stderr.strip()[-300:]}")

        return call

    fns = {"ours": run("import varstore"), "import numpy": run("import numpy")}

    def check():
        done = _python(f"import sys, varstore; print([m for m in sys.modules if m.split('.')[0] in {HEAVY!r}])")
        require(done.returncode == 0 and done.stdout.strip() == "[]",
                f"import varstore loaded {done.stdout.strip() or done.stderr.strip()[-300:]}")

    return Case(fns, None, check)
