"""Casts: ``v.astype(dtype)`` of a variable between float32 and the 16- and 8-bit floats,
and from float32 to float64, checked bit for bit against ml_dtypes/NumPy on 4096 leading elements (NaN, inf,
overflow, subnormals, ties) and 65,536 spread over the array.

Byte accounting: a cast reads and writes N·(in + out).
"""

from __future__ import annotations

import numpy as np

from varstore.dtypes import host_dtype

from .ops_base import ELEMENT, Case, bits, cycle, host_normal, require, rotation, sample_indices

CASTS = [
    ("float32", "float16"), ("float16", "float32"),
    ("float32", "bfloat16"), ("bfloat16", "float32"),
    ("float32", "float8_e4m3fn"), ("float8_e4m3fn", "float32"),
    ("float32", "float8_e5m2"), ("float8_e5m2", "float32"),
    ("float32", "float64"),  # (NaN payloads kept, where CuPy's cast drops them)
]


def make_build_cast(src: str, dst: str):
    def build(ctx, nbytes):
        n = nbytes // ELEMENT
        host = host_normal(n, seed=3, scale=4.0, edges=True).astype(host_dtype(src))  # ml_dtypes rounds the f32 data
        in_size, out_size = host_dtype(src).itemsize, host_dtype(dst).itemsize
        k = rotation(ctx, n * (in_size + out_size))
        store = ctx.new_store()
        variables = [store.variable(host, dtype=src, name=f"v{i}") for i in range(k)]
        last = [None]

        def ours(v):
            last[0] = v.astype(dst)

        fns = {"ours": cycle([lambda v=v: ours(v) for v in variables])}
        if src in ("float32", "float16") or ctx.native.name == "numpy":
            sources = [ctx.native.from_host(host) for _ in range(k)]
            entries = [ctx.native.astype(x, dst) for x in sources]
            if entries[0]:
                fns[entries[0][0]] = cycle([e[1] for e in entries])
        if ctx.torch:
            entries = [ctx.torch.astype(host, src, dst) for _ in range(k)]
            if entries[0]:
                fns["torch .to()"] = cycle([e[1] for e in entries])

        index = sample_indices(n)
        expected = bits(host[index].astype(host_dtype(dst)))

        def check():
            for v in variables[:1]:
                got = bits(ctx.native.to_host(v.astype(dst)).reshape(-1)[index])
                wrong = np.flatnonzero(got != expected)
                require(wrong.size == 0, f"astype {src} -> {dst}: {wrong.size} of {index.size} checked elements differ "
                        f"from ml_dtypes/NumPy, first at index {index[wrong[:1]]}")

        return Case(fns, n * (in_size + out_size), check, ceiling="copy", keep=[store, last])

    return build
