"""Training-loop primitives: ``vs.foreach`` over many variables against a Python loop of
the per-variable call, timed in the same run.

The size is the bytes of all the variables together (float32), spread over
:data:`VARIABLES` variables (at least one element each): 256 KiB is 1,000 (64,) variables.
"""

from __future__ import annotations

import numpy as np

import varstore as vs

from .ops_base import ELEMENT, Case, require, storage_of

VARIABLES = 1000


def build_foreach_assign_sub(ctx, nbytes):
    each = max(1, nbytes // ELEMENT // VARIABLES)
    store = ctx.new_store()
    ours = [store.variable("zeros", shape=(each,), dtype="float32", name=f"f{i}") for i in range(VARIABLES)]
    loop = [store.variable("zeros", shape=(each,), dtype="float32", name=f"l{i}") for i in range(VARIABLES)]
    grads = [ctx.native.from_host(np.full(each, 0.5, np.float32)) for _ in range(VARIABLES)]

    def python_loop():
        for v, g in zip(loop, grads, strict=True):
            v.assign_sub(g)

    fns = {"ours": lambda: vs.foreach.assign_sub(ours, grads), "Python loop of v.assign_sub": python_loop}

    def check():
        got = np.stack([ctx.native.to_host(storage_of(v)) for v in ours])
        require(bool(np.all(got == got.flat[0])) and got.flat[0] < 0 and got.flat[0] % 0.5 == 0,
                "foreach.assign_sub: the variables differ or are not whole multiples of the update")

    return Case(fns, 3 * VARIABLES * each * ELEMENT, check, keep=[store, grads])
