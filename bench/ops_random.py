"""Random fills and initializers: every Keras initializer filling an existing float32
variable, and the Philox fills in the other float dtypes (bfloat16, float64).

Byte accounting: a fill writes N·itemsize. Each fill's check draws on 2**18 spread
samples: bounds, mean and standard deviation (6-sigma), orthogonality, the identity's
diagonal; the fills of other dtypes are checked for determinism too (the same seed gives
the same bits).
"""

from __future__ import annotations

import math

import numpy as np

from varstore import initializers as I
from varstore.dtypes import host_dtype

from .ops_base import (
    ELEMENT,
    Case,
    bits,
    cycle,
    host_normal,
    require,
    rotation,
    sample,
    square_shape,
    storage_of,
    works,
)

# ---------------------------------------------------------------- initializers

# name -> (factory, NumPy/CuPy baseline kind)
INITIALIZERS = {
    "zeros": (lambda: I.Zeros(), ("fill", 0.0)),
    "ones": (lambda: I.Ones(), ("fill", 1.0)),
    "constant": (lambda: I.Constant(0.5), ("fill", 0.5)),
    "random_uniform": (lambda: I.RandomUniform(seed=1), ("uniform", None)),
    "random_normal": (lambda: I.RandomNormal(seed=1), ("normal", None)),
    "truncated_normal": (lambda: I.TruncatedNormal(seed=1), ("normal", "untruncated")),
    "variance_scaling": (lambda: I.VarianceScaling(seed=1), ("normal", "untruncated")),
    "glorot_uniform": (lambda: I.GlorotUniform(seed=1), ("uniform", None)),
    "glorot_normal": (lambda: I.GlorotNormal(seed=1), ("normal", "untruncated")),
    "he_uniform": (lambda: I.HeUniform(seed=1), ("uniform", None)),
    "he_normal": (lambda: I.HeNormal(seed=1), ("normal", "untruncated")),
    "lecun_uniform": (lambda: I.LecunUniform(seed=1), ("uniform", None)),
    "lecun_normal": (lambda: I.LecunNormal(seed=1), ("normal", "untruncated")),
    "orthogonal": (lambda: I.Orthogonal(seed=1), ("qr", None)),
    "identity": (lambda: I.Identity(), ("eye", None)),
}

# Keras 3's variance-scaling family: (scale, mode, distribution).
SCALING = {
    "variance_scaling": (1.0, "fan_in", "truncated_normal"),
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "glorot_normal": (1.0, "fan_avg", "truncated_normal"),
    "he_uniform": (2.0, "fan_in", "uniform"),
    "he_normal": (2.0, "fan_in", "truncated_normal"),
    "lecun_uniform": (1.0, "fan_in", "uniform"),
    "lecun_normal": (1.0, "fan_in", "truncated_normal"),
}
TRUNCATED_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2]


def expected_distribution(name: str, shape) -> tuple:
    """(mean, std, lowest, highest) of the values ``name`` draws for ``shape``."""
    if name == "random_uniform":
        return 0.0, 0.1 / math.sqrt(12), -0.05, 0.05
    if name == "random_normal":
        return 0.0, 0.05, -math.inf, math.inf
    if name == "truncated_normal":
        return 0.0, 0.05 * TRUNCATED_STD, -0.1, 0.1
    scale, mode, distribution = SCALING[name]
    fan_in, fan_out = I.compute_fans(shape)
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    std = math.sqrt(scale / fan)
    if distribution == "uniform":
        return 0.0, std, -math.sqrt(3) * std, math.sqrt(3) * std
    return 0.0, std, -2 * std / TRUNCATED_STD, 2 * std / TRUNCATED_STD


def check_initializer(ctx, name: str, storage, shape) -> None:
    factory, (kind, value) = INITIALIZERS[name]
    if kind == "fill":
        got = sample(ctx, storage)
        require(bool(np.all(got == value)), f"{name}: sampled values are not all {value}")
        return
    if kind == "eye":
        xp = ctx.native.xp
        diagonal = ctx.native.to_host(xp.diagonal(storage))
        nonzero = int(xp.count_nonzero(storage))
        require(bool(np.all(diagonal == 1.0)) and nonzero == min(shape),
                f"identity: {nonzero} nonzeros, diagonal {diagonal[:4]}")
        return
    if kind == "qr":
        rows = ctx.native.to_host(storage[:64]).astype(np.float64)
        gram = rows @ rows.T
        error = float(np.abs(gram - np.eye(rows.shape[0])).max())
        require(error < 1e-4, f"orthogonal: rows are not orthonormal (max |W W^T - I| = {error:.2e})")
        return
    mean, std, lo, hi = expected_distribution(name, shape)
    got = sample(ctx, storage).astype(np.float64)
    m = got.size
    require(bool(np.all(np.isfinite(got))), f"{name}: non-finite values")
    require(got.min() >= lo - 1e-6 * abs(lo) and got.max() <= hi + 1e-6 * abs(hi),
            f"{name}: values outside [{lo:.4g}, {hi:.4g}]: [{got.min():.4g}, {got.max():.4g}]")
    require(abs(got.mean() - mean) <= 6 * std / math.sqrt(m),
            f"{name}: mean {got.mean():.4g}, expected {mean} ± {6 * std / math.sqrt(m):.2g}")
    require(abs(got.std() / std - 1) <= 6 / math.sqrt(m) + 1e-3, f"{name}: std {got.std():.4g}, expected {std:.4g}")


def make_build_initializer(name: str):
    def build(ctx, nbytes):
        factory, (kind, value) = INITIALIZERS[name]
        n = nbytes // ELEMENT
        shape = square_shape(n)
        k = rotation(ctx, nbytes)
        store = ctx.new_store()
        # Not zeros: a fill that writes nothing, or an identity that leaves the off-diagonal,
        # must fail the check.
        variables = [store.variable(I.Constant(7.0), shape=shape, dtype="float32", name=f"v{i}") for i in range(k)]
        initializer = factory()
        backend = ctx.backend
        storages = [storage_of(v) for v in variables]
        fns = {"ours": cycle([lambda s=s: initializer.fill(backend, s, "float32") for s in storages])}
        xp = ctx.native.xp
        outs = [xp.ones(shape, np.float32) for _ in range(k)]
        baseline = None
        if kind == "fill":
            baseline = [ctx.native.fill_value(o, value) for o in outs]
        elif kind in ("uniform", "normal"):
            baseline = [ctx.native.random(kind, o, seed=1) for o in outs]
        elif kind == "qr":
            baseline = [ctx.native.qr(ctx.native.from_host(host_normal(n, 2, 1.0).reshape(shape).T))]
        elif kind == "eye":
            baseline = [ctx.native.eye(shape)]
        if baseline and baseline[0]:
            label = baseline[0][0] + (f" ({value})" if value == "untruncated" else "")
            fns[label] = cycle([b[1] for b in baseline])
        if ctx.torch:
            touts = [ctx.torch.empty(shape) for _ in range(k)]
            entries = [ctx.torch.initializer(name, t) for t in touts]
            if entries[0]:
                fns["torch " + entries[0][0]] = cycle([e[1] for e in entries])

        def check():
            for v in variables[:1]:  # quick runs make fewer calls than there are copies
                check_initializer(ctx, name, storage_of(v), shape)

        return Case(fns, nbytes, check, ceiling="fill", keep=[store, outs])

    return build


# ---------------------------------------------------------------- Philox fills in other dtypes

# op name's kind -> (initializer class, its name in expected_distribution, NumPy/CuPy baseline kind)
RANDOM = {
    "uniform": (I.RandomUniform, "random_uniform", "uniform"),
    "normal": (I.RandomNormal, "random_normal", "normal"),
    "truncated_normal": (I.TruncatedNormal, "truncated_normal", "normal"),
}
RANDOM_DTYPES = ("bfloat16", "float64")
# Relative rounding of the dtype: a value drawn just inside a bound may round onto or past it.
ROUNDING = {"bfloat16": 2.0**-8, "float64": 1e-12}


def _torch_random(ctx, kind: str, out):
    init = ctx.torch.torch.nn.init
    if kind == "uniform":
        return "Tensor.uniform_", lambda: out.uniform_(-0.05, 0.05)
    if kind == "normal":
        return "Tensor.normal_", lambda: out.normal_(0.0, 0.05)
    return "nn.init.trunc_normal_", lambda: init.trunc_normal_(out, 0.0, 0.05, -0.1, 0.1)


def make_build_random(kind: str, dtype: str):
    """``kind`` (a key of :data:`RANDOM`) filling an existing ``dtype`` variable of N elements
    (N·4 bytes the float32 size), against the array library's Philox or curand draw: of
    ``dtype`` where the library has it, else of float32 (NumPy and CuPy have no bfloat16)."""
    cls, name, baseline_kind = RANDOM[kind]

    def build(ctx, nbytes):
        n = nbytes // ELEMENT
        shape = square_shape(n)
        itemsize = host_dtype(dtype).itemsize
        k = rotation(ctx, n * itemsize)
        store = ctx.new_store()
        variables = [store.variable(I.Constant(7.0), shape=shape, dtype=dtype, name=f"v{i}") for i in range(k)]
        initializer = cls(seed=1)
        backend = ctx.backend
        storages = [storage_of(v) for v in variables]
        fns = {"ours": cycle([lambda s=s: initializer.fill(backend, s, dtype) for s in storages])}
        native_dtype = dtype if dtype == "float64" else "float32"
        outs = [ctx.native.xp.ones(shape, native_dtype) for _ in range(k)]
        entries = [ctx.native.random(baseline_kind, o, seed=1) for o in outs]
        notes = [note for note, applies in (("untruncated", kind == "truncated_normal"),
                                            ("float32", native_dtype != dtype)) if applies]
        label = entries[0][0] + (f" ({', '.join(notes)})" if notes else "")
        fns[label] = cycle([e[1] for e in entries])
        if ctx.torch:
            torch = ctx.torch.torch
            touts = [torch.ones(shape, dtype=getattr(torch, dtype), device=ctx.torch.device) for _ in range(k)]
            entries = [_torch_random(ctx, kind, t) for t in touts]
            if works(entries[0][1]):
                fns["torch " + entries[0][0]] = cycle([e[1] for e in entries])

        def values(storage) -> np.ndarray:
            return sample(ctx, storage).view(host_dtype(dtype)).astype(np.float64)

        def check():
            storage = storages[0]
            got = values(storage)
            mean, std, lo, hi = expected_distribution(name, shape)
            m, slack = got.size, ROUNDING[dtype]
            require(bool(np.all(np.isfinite(got))), f"{kind} {dtype}: non-finite values")
            require(got.min() >= lo - slack * abs(lo) and got.max() <= hi + slack * abs(hi),
                    f"{kind} {dtype}: values outside [{lo:.4g}, {hi:.4g}]: [{got.min():.4g}, {got.max():.4g}]")
            require(abs(got.mean() - mean) <= 6 * std / math.sqrt(m),
                    f"{kind} {dtype}: mean {got.mean():.4g}, expected {mean} ± {6 * std / math.sqrt(m):.2g}")
            require(abs(got.std() / std - 1) <= 6 / math.sqrt(m) + 1e-3 + slack,
                    f"{kind} {dtype}: std {got.std():.4g}, expected {std:.4g}")
            before = bits(sample(ctx, storage))
            initializer.fill(backend, storage, dtype)
            require(bool(np.array_equal(bits(sample(ctx, storage)), before)),
                    f"{kind} {dtype}: a second fill with the same seed gave other bits")

        return Case(fns, n * itemsize, check, ceiling="fill", keep=[store, outs])

    return build
