"""Host time of the writes of one scalar: ``v.assign_add(1)``, ``v.assign(1.5)`` and
``v[key] = 2.0`` (one element, a strided region, a row) on a (64, 16) variable of
float32, bfloat16 and int8 (and the adds on float16 and float8_e4m3fn), against NumPy's
``np.add(a, 1, out=a)`` and ``a[3, 4] = 2.0``, and ``Identity().fill`` of a (256, 256)
float32 array. The suite's ``calls`` ops time
float32 only; here the dtypes whose scalars our kernels convert are timed too.

Usage: ``python bench/scripts/scalar_writes.py OUT.json`` (CPU; best of 7 ``timeit``
repeats, µs per call).
"""

from __future__ import annotations

import json
import sys
import timeit

import numpy as np

import varstore as vs
from varstore import backends
from varstore.initializers import Identity


def best(call, number: int = 20000) -> float:
    """µs per call: the best of 7 repeats of ``number`` calls, after one."""
    call()
    return min(timeit.repeat(call, number=number, repeat=7)) / number * 1e6


def main(out: str) -> None:
    store = vs.VariableStore(device="cpu")
    times = {}
    for dtype in ("float32", "bfloat16", "int8"):
        v = store.variable(np.zeros((64, 16), np.float32), dtype=dtype)
        times[f"{dtype} v.assign_add(1)"] = best(lambda v=v: v.assign_add(1))
        times[f"{dtype} v.assign(1.5)"] = best(lambda v=v: v.assign(1.5))
        for text, key in (("v[3, 4]", (3, 4)), ("v[::2, 1::3]", (slice(None, None, 2), slice(1, None, 3))),
                          ("v[0, :]", (0, slice(None)))):
            times[f"{dtype} {text} = 2.0"] = best(lambda v=v, key=key: v.__setitem__(key, 2.0))
    for dtype in ("float16", "float8_e4m3fn"):  # (the other small floats' adds: our kernel, as bfloat16's)
        v = store.variable(np.zeros((64, 16), np.float32), dtype=dtype)
        times[f"{dtype} v.assign_add(1)"] = best(lambda v=v: v.assign_add(1))
        times[f"{dtype} v.assign_sub(0.5)"] = best(lambda v=v: v.assign_sub(0.5))
    a = np.zeros((64, 16), np.float32)
    times["numpy a += 1"] = best(lambda: np.add(a, 1, out=a))
    times["numpy a[3, 4] = 2.0"] = best(lambda: a.__setitem__((3, 4), 2.0))
    storage, identity, backend = np.empty((256, 256), np.float32), Identity(), backends.get("numpy")
    times["Identity().fill (256, 256) float32"] = best(lambda: identity.fill(backend, storage, "float32"), 2000)
    with open(out, "w") as f:
        json.dump(times, f, indent=1)
    for name, us in times.items():
        print(f"{name}: {us:.2f} us")


if __name__ == "__main__":
    main(sys.argv[1])
