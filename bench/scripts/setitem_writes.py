"""The host time of ``v[::2, 1::3] = b`` by how many times a variable has been written.

A variable prepares a slice-assign at its second write of a layout (key, value dtype and
shape: ``varstore.prepared_writes``): its first write, its second and its later ones
cost differently. This writes ``b`` (float32, (16, 11)) into 1,000 fresh (32, 32)
float32 variables, once each, then a second time each, then a third, and reports the
mean time per write of each pass, the best of three tries (in cache: small arrays, the
same code again and again). The variables' contents are checked against NumPy's.

Usage: ``python bench/scripts/setitem_writes.py [LABEL]``; prints one line.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import varstore as vs

KEY = (slice(None, None, 2), slice(1, None, 3))
COUNT = 1000


def _pass_us(variables, value) -> float:
    start = time.perf_counter()
    for v in variables:
        v[KEY] = value
    return (time.perf_counter() - start) / len(variables) * 1e6


def main() -> None:
    value = np.arange(16 * 11, dtype=np.float32).reshape(16, 11)
    want = np.zeros((32, 32), np.float32)
    want[KEY] = value
    passes = []
    for _ in range(3):
        store = vs.VariableStore(device="cpu")
        variables = [store.variable(np.zeros((32, 32), np.float32)) for _ in range(COUNT)]
        passes.append([_pass_us(variables, value) for _ in range(3)])
        if not all(np.array_equal(v.numpy(), want) for v in variables):
            raise SystemExit("v[::2, 1::3] = b: a variable differs from NumPy's result")
    first, second, third = (min(p[i] for p in passes) for i in range(3))
    print(" ".join(sys.argv[1:]) or "", f"first write {first:.1f} µs, second {second:.1f} µs, third {third:.1f} µs")


if __name__ == "__main__":
    main()
