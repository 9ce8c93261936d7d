"""The benchmarked operations: what ours does, what it is compared with, and its check.

Each op builds a :class:`Case` for a size (the bytes of the op's float32 data): the
functions to time (ours first, then the baselines), the bytes one call must move, which
ceiling it is held against, and a check of ours' result that raises :class:`CheckFailed`
(a fast but wrong kernel fails the run).

Byte accounting: a fill writes N·itemsize; a cast reads and writes
N·(in + out); a copy or an assign moves 2·N·size; a strided assign moves the region's
bytes twice (read and written); a row write counts the row; save and load count the
file's tensor bytes once.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable

import numpy as np

from varstore import initializers as I
from varstore.dtypes import host_dtype

ELEMENT = 4  # every op's size is the bytes of its float32 data
MAX_ROTATION = 64


class CheckFailed(AssertionError):
    """Ours gave a wrong result inside the benchmark."""


@dataclasses.dataclass
class Case:
    fns: dict  # label -> zero-argument function; "ours" first
    bytes_moved: int | None
    check: Callable[[], None]
    ceiling: str | None = None  # "copy", "fill" or "h2d": the same-size op it is held against
    keep: list = dataclasses.field(default_factory=list)  # objects that must live while timing


@dataclasses.dataclass(frozen=True)
class Op:
    name: str
    summary: str
    build: Callable
    metric: str = "GB/s"  # what the plot shows: "GB/s" or "us" per call
    max_bytes: int | None = None  # larger sizes are skipped, with this reason
    skip_reason: str = ""


# ---------------------------------------------------------------- helpers


def square_shape(n: int) -> tuple[int, int]:
    """A 2-D shape of ``n`` elements (n a power of two): rows <= cols, both powers of two."""
    rows = 2 ** (int(math.log2(n)) // 2)
    return rows, n // rows


def rotation(ctx, bytes_per_copy: int) -> int:
    """How many copies of the buffers to cycle through so that they outgrow the cache
    (no more than half the calls a measurement makes: each copy is used warm)."""
    wanted = -(-ctx.native.rotation_bytes // max(bytes_per_copy, 1))
    return max(1, min(MAX_ROTATION, ctx.max_copies, wanted))


def cycle(fns: list) -> Callable:
    """One function calling each of ``fns`` in turn."""
    if len(fns) == 1:
        return fns[0]
    state = {"i": 0}

    def call():
        i = state["i"]
        state["i"] = (i + 1) % len(fns)
        return fns[i]()

    return call


def host_normal(n: int, seed: int, scale: float = 1.0, edges: bool = False) -> np.ndarray:
    """float32 normal data; with ``edges``, its first elements are the cases casts get wrong
    (NaN, inf, overflow, subnormals, ties). Past 2**20 elements the draws repeat: a GiB of
    fresh normals would cost seconds per case, and only the bytes' count matters here."""
    base = np.random.default_rng(seed).standard_normal(min(n, 2**20), dtype=np.float32) * np.float32(scale)
    data = np.empty(n, np.float32)
    whole = n - n % base.size
    data[:whole].reshape(-1, base.size)[...] = base
    data[whole:] = base[: n - whole]
    if not edges:
        return data
    edges = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-45, 65504.0, 65520.0,
                      448.0, 464.0, 57344.0, 61440.0, 3.4e38, 1.0 + 2**-8, 1.0 + 3 * 2**-8,
                      2**-14, 2**-24, 2**-9, 2**-10], dtype=np.float32)
    m = min(n, edges.size)
    data[:m] = edges[:m]
    return data


def sample(ctx, array, m: int = 2**18) -> np.ndarray:
    """About ``m`` elements spread evenly over ``array``, on the host."""
    flat = array.reshape(-1)
    stride = max(1, flat.size // m)
    return ctx.native.to_host(flat[::stride])


def sample_indices(n: int, m: int = 2**16) -> np.ndarray:
    """The first 4096 indices and ``m`` more spread over ``n``."""
    spread = np.linspace(0, n - 1, num=min(n, m), dtype=np.int64)
    return np.unique(np.concatenate([np.arange(min(n, 4096)), spread]))


def require(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def bits(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    return array.view(f"u{array.dtype.itemsize}")


def storage_of(variable):
    # The benchmark times the in-place paths the public calls use.
    return variable._storage


# ---------------------------------------------------------------- fill


def build_fill(ctx, nbytes):
    n = nbytes // ELEMENT
    shape = square_shape(n)
    k = rotation(ctx, nbytes)
    store = ctx.new_store()
    variables = [store.variable("zeros", shape=shape, dtype="float32", name=f"v{i}") for i in range(k)]
    fns = {"ours": cycle([lambda v=v: v.assign(1.5) for v in variables])}
    outs = [ctx.native.xp.ones(shape, np.float32) for _ in range(k)]
    label, _ = ctx.native.fill_value(outs[0], 1.5)
    fns[label] = cycle([ctx.native.fill_value(o, 1.5)[1] for o in outs])
    if ctx.torch:
        touts = [ctx.torch.empty(shape) for _ in range(k)]
        fns["torch " + ctx.torch.fill_value(touts[0], 1.5)[0]] = cycle(
            [ctx.torch.fill_value(t, 1.5)[1] for t in touts])

    def check():
        # The first copy: quick runs make fewer calls than there are copies.
        for v in variables[:1]:
            got = sample(ctx, storage_of(v))
            require(bool(np.all(got == 1.5)),
                    f"v.assign(1.5) left {np.count_nonzero(got != 1.5)} sampled elements != 1.5")

    return Case(fns, nbytes, check, ceiling="fill", keep=[store, outs])


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


# ---------------------------------------------------------------- casts

CASTS = [
    ("float32", "float16"), ("float16", "float32"),
    ("float32", "bfloat16"), ("bfloat16", "float32"),
    ("float32", "float8_e4m3fn"), ("float8_e4m3fn", "float32"),
    ("float32", "float8_e5m2"), ("float8_e5m2", "float32"),
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


# ---------------------------------------------------------------- assign


def build_assign_host(ctx, nbytes):
    n = nbytes // ELEMENT
    shape = square_shape(n)
    k = rotation(ctx, nbytes)
    hosts = [host_normal(n, seed=4 + i, scale=1.0).reshape(shape) for i in range(min(k, 4))]
    store = ctx.new_store()
    variables = [store.variable("zeros", shape=shape, dtype="float32", name=f"v{i}") for i in range(k)]
    pairs = [(v, hosts[i % len(hosts)]) for i, v in enumerate(variables)]
    fns = {"ours": cycle([lambda v=v, h=h: v.assign(h) for v, h in pairs])}
    outs = [ctx.native.xp.ones(shape, np.float32) for _ in range(k)]
    entries = [ctx.native.copy_from_host(o, hosts[i % len(hosts)]) for i, o in enumerate(outs)]
    fns[entries[0][0]] = cycle([e[1] for e in entries])
    if ctx.torch:
        entries = [ctx.torch.copy_from_host(ctx.torch.empty(shape), hosts[i % len(hosts)]) for i in range(k)]
        fns["torch " + entries[0][0]] = cycle([e[1] for e in entries])
    keras = ctx.keras_for(nbytes)
    if keras:
        kv = keras.Variable(hosts[0])
        fns["keras.Variable.assign (numpy backend)"] = lambda: kv.assign(hosts[0])

    def check():
        for i, v in enumerate(variables[:1]):
            require(bool(np.array_equal(sample(ctx, storage_of(v)), sample(ctx, hosts[i % len(hosts)]))),
                    "v.assign(host array): the variable does not hold the host array")

    return Case(fns, 2 * nbytes, check, ceiling="h2d", keep=[store, outs])


def build_assign_device(ctx, nbytes):
    n = nbytes // ELEMENT
    shape = square_shape(n)
    k = rotation(ctx, 2 * nbytes)
    source = ctx.native.from_host(host_normal(n, seed=5, scale=1.0).reshape(shape))
    sources = [source] + [source.copy() for _ in range(k - 1)]
    store = ctx.new_store()
    variables = [store.variable("zeros", shape=shape, dtype="float32", name=f"v{i}") for i in range(k)]
    fns = {"ours": cycle([lambda v=v, s=s: v.assign(s) for v, s in zip(variables, sources, strict=True)])}
    outs = [ctx.native.xp.ones(shape, np.float32) for _ in range(k)]
    entries = [ctx.native.copy(o, s) for o, s in zip(outs, sources, strict=True)]
    fns[entries[0][0]] = cycle([e[1] for e in entries])
    if ctx.torch:
        tsrc = ctx.torch.tensor(ctx.native.to_host(source))
        entries = [ctx.torch.copy(ctx.torch.empty(shape), tsrc) for _ in range(k)]
        fns["torch " + entries[0][0]] = cycle([e[1] for e in entries])

    def check():
        for v in variables[:1]:
            require(bool(ctx.native.xp.array_equal(storage_of(v), source)),
                    "v.assign(device array): the variable does not hold the source")

    return Case(fns, 2 * nbytes, check, ceiling="copy", keep=[store, outs, sources])


# ---------------------------------------------------------------- slices

STRIDED = (slice(None, None, 2), slice(1, None, 3))


def build_strided(ctx, nbytes):
    n = nbytes // ELEMENT
    shape = square_shape(n)
    k = rotation(ctx, nbytes)
    xp = ctx.native.xp
    region_shape = np.empty(shape, np.bool_)[STRIDED].shape
    source = ctx.native.from_host(host_normal(int(np.prod(region_shape)), seed=6, scale=1.0).reshape(region_shape) + 8)
    store = ctx.new_store()
    variables = [store.variable("zeros", shape=shape, dtype="float32", name=f"v{i}") for i in range(k)]

    def ours(v):
        v[STRIDED] = source

    fns = {"ours": cycle([lambda v=v: ours(v) for v in variables])}
    outs = [xp.ones(shape, np.float32) for _ in range(k)]
    entries = [ctx.native.setitem(o, STRIDED, source) for o in outs]
    fns[entries[0][0]] = cycle([e[1] for e in entries])
    if ctx.torch:
        tsrc = ctx.torch.tensor(ctx.native.to_host(source))
        entries = [ctx.torch.setitem(ctx.torch.empty(shape).zero_(), STRIDED, tsrc) for _ in range(k)]
        fns["torch " + entries[0][0]] = cycle([e[1] for e in entries])

    def check():
        for v in variables[:1]:
            storage = storage_of(v)
            require(bool(xp.array_equal(storage[STRIDED], source)), "v[::2, 1::3] = b: the region does not hold b")
            nonzero = int(xp.count_nonzero(storage))
            require(nonzero == source.size,
                    f"v[::2, 1::3] = b: {nonzero - source.size} elements outside the region changed")

    useful = 2 * source.size * ELEMENT
    return Case(fns, useful, check, ceiling="copy", keep=[store, outs])


def build_row_write(ctx, nbytes):
    n = nbytes // ELEMENT
    shape = square_shape(n)
    xp = ctx.native.xp
    host = host_normal(n, seed=7, scale=1.0).reshape(shape)
    store = ctx.new_store()
    v = store.variable(host, name="v")
    plain = ctx.native.from_host(host)

    def row_write():
        v[0, :] = 99.0

    def copy_modify_assign():  # the Keras docs' way: the whole variable travels twice
        value = v.numpy()
        value[0, :] = 99.0
        v.assign(value)

    fns = {"ours": row_write, "copy-modify-assign": copy_modify_assign}
    label, fn = ctx.native.setitem(plain, (0, slice(None)), 99.0)
    fns[label + " a[0, :] = 99"] = fn

    def check():
        storage = storage_of(v)
        require(bool(xp.all(storage[0] == 99.0)), "v[0, :] = 99: row 0 is not 99")
        rest = ctx.native.to_host(storage[1:2])
        require(bool(np.array_equal(rest, host[1:2])), "v[0, :] = 99: row 1 changed")

    return Case(fns, shape[1] * ELEMENT, check, ceiling=None, keep=[store, plain])


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


# ---------------------------------------------------------------- per-call host time
# Small ops where Python overhead, not bandwidth, is the cost: each against the array
# library's own op, timed in the same run. The size is the bytes of the op's float32
# operand (1,024 elements at 4 KiB).


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

    def check():
        other = ctx.new_store()
        other.variable("zeros", shape=(n,), dtype="float32", name="weights")
        other.load(path)
        require(bool(ctx.native.xp.array_equal(storage_of(other["weights"]), plain)),
                "store.save: the file does not hold the variable")

    return Case(fns, nbytes, check, ceiling=None, keep=[store, plain])


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

    def check():
        got = ctx.native.to_host(storage_of(store["weights"]))
        require(bool(np.array_equal(got, host)), "store.load: the variable does not hold the file's tensor")

    return Case(fns, nbytes, check, ceiling=None, keep=[writer, store])


# ---------------------------------------------------------------- the list

SMALL_ONLY = 4 * 2**20

OPS = [Op("fill", "v.assign(1.5): a scalar fills the variable in place", build_fill)]
OPS += [
    Op(f"init/{name}", f"{name}: the initializer fills an existing float32 variable in place",
       make_build_initializer(name),
       max_bytes=SMALL_ONLY if name == "orthogonal" else None,
       skip_reason="a QR decomposition of the whole matrix; measured up to 4 MiB" if name == "orthogonal" else "")
    for name in INITIALIZERS
]
OPS += [Op(f"cast/{src}->{dst}", f"v.astype({dst!r}) of a {src} variable", make_build_cast(src, dst))
        for src, dst in CASTS]
OPS += [
    Op("assign/host", "v.assign(a NumPy array): host to the variable's memory", build_assign_host),
    Op("assign/device", "v.assign(an array on the variable's device)", build_assign_device),
    Op("slice/strided", "v[::2, 1::3] = b, b on the device, float32", build_strided),
    Op("slice/row", "v[0, :] = 99 against copy, modify, assign back", build_row_write, metric="us"),
    Op("create", "store.variable('zeros', shape): a new variable (the previous one deleted)", build_create,
       metric="us"),
    Op("calls/row", "v[0, :] = 99 on a (64, N) float32 variable: per-call host time", build_calls_row,
       metric="us"),
    Op("calls/fill", "v.assign(1.5) on N float32: per-call host time", build_calls_fill, metric="us"),
    Op("calls/astype", "v.astype('bfloat16') of N float32: per-call host time", build_calls_astype,
       metric="us"),
    Op("calls/assign_add", "v.assign_add(x), x an array of the variable's dtype and shape", build_calls_assign_add,
       metric="us"),
    Op("calls/create", f"{CREATED} glorot_uniform (4, 4) variables in a new store (one call)", build_calls_create,
       metric="us"),
    Op("checkpoint/save", "store.save(file): atomic safetensors write with fsync", build_save),
    Op("checkpoint/load", "store.load(file) into the existing variable", build_load),
]
BY_NAME = {op.name: op for op in OPS}


def select(names) -> list[Op]:
    """The ops named, in the suite's order: a name, or a group such as ``cast`` or ``init``.

    Raises:
        ValueError: a name that is neither an op nor a group.
    """
    if not names:
        return list(OPS)
    chosen = set()
    for name in names:
        matches = [op.name for op in OPS if op.name == name or op.name.split("/")[0] == name]
        if not matches:
            groups = sorted({op.name.split("/")[0] for op in OPS if "/" in op.name})
            raise ValueError(
                f"Invalid value for argument `--ops`. Expected op names or groups: groups {groups}, "
                f"ops {[op.name for op in OPS]}. Received: {name!r}"
            )
        chosen.update(matches)
    return [op for op in OPS if op.name in chosen]
