"""Writes into existing variables: the scalar fills (float32, and float64's 8-byte
pattern), assigns from the host and from the device, the strided slice-assign (same
dtype, and converting from float64), a scalar into a strided region, a range of rows, and
the row write; and the strided read, the slice-assign's mirror.

Byte accounting: a fill writes N·4 (a float64 fill of the size: the size); a scalar into
a region writes the region; an assign moves 2·N·4; a strided assign or a range of rows moves the
region's bytes twice (read and written; a converting one reads float64 and writes the
variable's dtype); a strided read too (read, and written into the new result); a row
write counts the row; an accumulate reads and writes the
variable and reads a same-shape operand (3·N·2 for bfloat16; 2·N·2 with a scalar).
"""

from __future__ import annotations

import numpy as np

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

# ---------------------------------------------------------------- fill


def build_fill(ctx, nbytes, dtype: str = "float32", value: float = 1.5):
    """v.assign(value) on ``dtype`` variables of the size (float32 1.5: a 4-byte pattern,
    the driver's memset on a GPU; float64 1.0: an 8-byte one, which no memset writes)."""
    word = np.dtype(dtype)
    n = nbytes // word.itemsize
    shape = square_shape(n)
    k = rotation(ctx, nbytes)
    store = ctx.new_store()
    variables = [store.variable("zeros", shape=shape, dtype=dtype, name=f"v{i}") for i in range(k)]
    fns = {"ours": cycle([lambda v=v: v.assign(value) for v in variables])}
    outs = [ctx.native.xp.ones(shape, word) for _ in range(k)]  # (written once: no first-touch faults timed)
    label, _ = ctx.native.fill_value(outs[0], value)
    fns[label] = cycle([ctx.native.fill_value(o, value)[1] for o in outs])
    if ctx.torch:
        touts = [ctx.torch.empty(shape).to(getattr(ctx.torch.torch, dtype)) for _ in range(k)]
        fns["torch " + ctx.torch.fill_value(touts[0], value)[0]] = cycle(
            [ctx.torch.fill_value(t, value)[1] for t in touts])

    def check():
        # The first copy: quick runs make fewer calls than there are copies.
        for v in variables[:1]:
            wrong = np.count_nonzero(sample(ctx, storage_of(v)) != value)
            require(not wrong, f"v.assign({value}) left {wrong} sampled elements != {value}")

    return Case(fns, nbytes, check, ceiling="fill", keep=[store, outs])


def build_fill_float64(ctx, nbytes):
    return build_fill(ctx, nbytes, "float64", 1.0)


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
def warm_writes(variables, write) -> None:
    """Each copy written twice before timing, as a training loop's variables are after
    two steps: a variable prepares a slice-assign at its second write of a layout
    (``varstore.prepared_writes``), and the rotation may call each copy only once or
    twice in a measurement. The first two writes' cost is in bench/RESULTS.md."""
    for v in variables:
        write(v)
        write(v)


STRIDED = (slice(None, None, 2), slice(1, None, 3))


def build_strided(ctx, nbytes):
    return build_region_write(ctx, nbytes, STRIDED, "v[::2, 1::3] = b", seed=6)


def build_strided_fill(ctx, nbytes):
    """v[::2, 1::3] = 1.5: a scalar written to a strided region (a GPU: our region fill,
    the scalar a launch parameter)."""
    n = nbytes // ELEMENT
    shape = square_shape(n)
    k = rotation(ctx, nbytes)
    xp = ctx.native.xp
    store = ctx.new_store()
    variables = [store.variable("zeros", shape=shape, dtype="float32", name=f"v{i}") for i in range(k)]
    fns = {"ours": cycle([lambda v=v: v.__setitem__(STRIDED, 1.5) for v in variables])}
    outs = [xp.zeros(shape, np.float32) for _ in range(k)]
    entries = [ctx.native.setitem(o, STRIDED, 1.5) for o in outs]
    fns[entries[0][0]] = cycle([e[1] for e in entries])
    if ctx.torch:
        entries = [ctx.torch.setitem(ctx.torch.empty(shape).zero_(), STRIDED, 1.5) for _ in range(k)]
        fns["torch " + entries[0][0]] = cycle([e[1] for e in entries])
    region = np.empty(shape, np.bool_)[STRIDED].size

    def check():
        for v in variables[:1]:
            storage = storage_of(v)
            require(bool(xp.all(storage[STRIDED] == 1.5)), "v[::2, 1::3] = 1.5: the region does not hold 1.5")
            require(int(xp.count_nonzero(storage)) == region, "v[::2, 1::3] = 1.5: elements outside the region changed")

    return Case(fns, region * ELEMENT, check, ceiling="fill", keep=[store, outs])


ROWS = slice(1, -1)
COLUMNS = (slice(None), slice(8, -8))


def build_region_write(ctx, nbytes, key, label: str, wide: bool = False, seed: int = 9):
    """``v[key] = b`` on float32 variables of the size, b on the device (the case of
    ``slice/strided``, ``slice/rows`` and ``slice/columns``); ``wide``: the variable 4
    times wider and 4 times shorter than ``square_shape``'s. Moves the region's bytes twice."""
    n = nbytes // ELEMENT
    shape = square_shape(n)
    if wide:
        shape = (max(shape[0] // 4, 1), shape[1] * 4) if shape[0] >= 4 else shape
    k = rotation(ctx, nbytes)
    xp = ctx.native.xp
    region_shape = np.empty(shape, np.bool_)[key].shape
    source = ctx.native.from_host(host_normal(int(np.prod(region_shape)), seed=seed, scale=1.0).reshape(region_shape)
                                  + 8)
    store = ctx.new_store()
    variables = [store.variable("zeros", shape=shape, dtype="float32", name=f"v{i}") for i in range(k)]

    def ours(v):
        v[key] = source

    warm_writes(variables, ours)
    fns = {"ours": cycle([lambda v=v: ours(v) for v in variables])}
    outs = [xp.ones(shape, np.float32) for _ in range(k)]
    entries = [ctx.native.setitem(o, key, source) for o in outs]
    fns[entries[0][0]] = cycle([e[1] for e in entries])
    if ctx.torch:
        tsrc = ctx.torch.tensor(ctx.native.to_host(source))
        entries = [ctx.torch.setitem(ctx.torch.empty(shape).zero_(), key, tsrc) for _ in range(k)]
        fns["torch " + entries[0][0]] = cycle([e[1] for e in entries])

    def check():
        for v in variables[:1]:
            storage = storage_of(v)
            require(bool(xp.array_equal(storage[key], source)), f"{label}: the region does not hold b")
            outside = int(xp.count_nonzero(storage)) - source.size
            require(outside == 0, f"{label}: {outside} elements outside the region changed")

    return Case(fns, 2 * source.size * ELEMENT, check, ceiling="copy", keep=[store, outs])


def build_rows(ctx, nbytes):
    """v[1:-1] = b: every row but the first and the last, a contiguous range (one axis at
    stride 1 on both sides: a GPU's wide path)."""
    return build_region_write(ctx, nbytes, ROWS, "v[1:-1] = b")


def build_columns(ctx, nbytes):
    """v[:, 8:-8] = b on a variable 16-32 times wider than tall: rows of contiguous
    columns (a GPU's row kernel, a warp per segment of a row)."""
    return build_region_write(ctx, nbytes, COLUMNS, "v[:, 8:-8] = b", wide=True)


def build_strided_read(ctx, nbytes):
    """``v[::2, 1::3]``: a new array holding the region, against the array library's
    ``a[::2, 1::3].copy()`` (a view, then a C-ordered copy; PyTorch: ``.contiguous()``).
    The key is one constant object, as a training loop's usually is (an equal key built
    at each call adds its parsing: docs/variables.md). On the CPU a result of 32 MiB or
    more comes from our host cache (as ``astype``'s do), the baselines' from fresh pages
    of the OS: from 256 MiB variables on (regions of 43 MiB and up), part of the
    difference is that allocation."""
    n = nbytes // ELEMENT
    shape = square_shape(n)
    k = rotation(ctx, nbytes)
    host = host_normal(n, seed=13, scale=1.0).reshape(shape)
    store = ctx.new_store()
    variables = [store.variable(host, name=f"v{i}") for i in range(k)]
    for v in variables:  # (the second read of a region prepares it: timed reads are later ones)
        v[STRIDED], v[STRIDED]
    fns = {"ours": cycle([lambda v=v: v[STRIDED] for v in variables])}
    arrays = [ctx.native.from_host(host) for _ in range(k)]
    entries = [ctx.native.getitem_copy(a, STRIDED) for a in arrays]
    fns[entries[0][0]] = cycle([e[1] for e in entries])
    if ctx.torch:
        entries = [ctx.torch.getitem_copy(ctx.torch.tensor(host), STRIDED) for _ in range(k)]
        fns[entries[0][0]] = cycle([e[1] for e in entries])

    def check():
        got, again = variables[0][STRIDED], variables[0][STRIDED]
        require(got.flags.c_contiguous and tuple(got.shape) == host[STRIDED].shape,
                f"v[::2, 1::3]: a result of shape {tuple(got.shape)}, expected {host[STRIDED].shape} in C order")
        require(bool(np.array_equal(ctx.native.to_host(got), host[STRIDED])), "v[::2, 1::3]: not the region's values")
        require(not ctx.native.xp.shares_memory(got, again) and not ctx.native.xp.shares_memory(got, storage_of(
            variables[0])), "v[::2, 1::3]: a result shares memory with the variable or with another result")

    region = host[STRIDED]
    return Case(fns, 2 * region.size * ELEMENT, check, ceiling="copy", keep=[store, arrays])


def make_build_converting_strided(dst: str):
    """``v[::2, 1::3] = b`` with b float64 and the variable ``dst``: the kernel converts
    each element as it writes it (no temporary)."""

    def build(ctx, nbytes):
        n = nbytes // ELEMENT
        shape = square_shape(n)
        k = rotation(ctx, nbytes)
        xp = ctx.native.xp
        region_shape = np.empty(shape, np.bool_)[STRIDED].shape
        # float64 values that float32 holds exactly: ml_dtypes rounds float64 through float32
        # (twice), ours once, and the two agree on these.
        host = (host_normal(int(np.prod(region_shape)), seed=12, scale=1.0) + np.float32(8)).astype(np.float64)
        host = host.reshape(region_shape)
        source = ctx.native.from_host(host)
        store = ctx.new_store()
        variables = [store.variable("zeros", shape=shape, dtype=dst, name=f"v{i}") for i in range(k)]

        def ours(v):
            v[STRIDED] = source

        warm_writes(variables, ours)
        fns = {"ours": cycle([lambda v=v: ours(v) for v in variables])}
        outs = []
        if dst == "float32" or ctx.native.name == "numpy":  # CuPy has no bfloat16
            outs = [xp.ones(shape, host_dtype(dst)) for _ in range(k)]
            entries = [ctx.native.setitem(o, STRIDED, source) for o in outs]
            label = "ml_dtypes setitem" if dst != "float32" else entries[0][0]
            fns[label + " (float64 b)"] = cycle([e[1] for e in entries])
        if ctx.torch:
            torch = ctx.torch.torch
            tsrc = ctx.torch.tensor(host)
            touts = [torch.zeros(shape, dtype=getattr(torch, dst), device=ctx.torch.device) for _ in range(k)]
            entries = [ctx.torch.setitem(t, STRIDED, tsrc) for t in touts]
            if works(entries[0][1]):
                fns["torch " + entries[0][0] + " (float64 b)"] = cycle([e[1] for e in entries])
        expected = bits(host.astype(host_dtype(dst)))

        def check():
            for v in variables[:1]:
                storage = storage_of(v)
                got = bits(ctx.native.to_host(storage[STRIDED]))
                wrong = int(np.count_nonzero(got != expected))
                require(wrong == 0, f"v[::2, 1::3] = b (float64 -> {dst}): {wrong} of {expected.size} elements differ "
                        "from NumPy/ml_dtypes' conversion")
                nonzero = int(xp.count_nonzero(storage))
                require(nonzero == expected.size,
                        f"v[::2, 1::3] = b (float64 -> {dst}): {nonzero - expected.size} elements outside the "
                        "region changed")

        moved = host.nbytes + host.size * host_dtype(dst).itemsize  # float64 read, dst written
        return Case(fns, moved, check, ceiling="copy", keep=[store, outs, source])

    return build


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


# ---------------------------------------------------------------- accumulate


def make_build_accumulate(dtype: str, scalar: bool):
    """``v.assign_add(x)`` on a ``dtype`` variable: ``x`` a variable of its shape and
    dtype (on the device), or the Python scalar 0.5. Computed in float32 and rounded
    once, as ml_dtypes' in-place add (PyTorch's ``add_`` keeps a Python scalar in
    float32: the same sums for 0.5)."""

    def build(ctx, nbytes):
        n = nbytes // ELEMENT
        shape = square_shape(n)
        item = host_dtype(dtype)
        arrays = 2 if scalar else 3  # (read and write the variable; read the operand)
        k = rotation(ctx, n * item.itemsize)  # (the variables rotate; the operand is shared)
        store = ctx.new_store()
        variables = [store.variable("zeros", shape=shape, dtype=dtype, name=f"v{i}") for i in range(k)]
        steps = np.resize(np.array([0.5, 0.25, 0.25], item), n).reshape(shape)  # (not one value; 0.5 at i % 3 == 0)
        x = 0.5 if scalar else store.variable(steps, dtype=dtype, name="x")
        fns = {"ours": cycle([lambda v=v: v.assign_add(x) for v in variables])}
        operand = item.type(0.5) if scalar else steps
        if ctx.native.name == "numpy":  # (CuPy has no bfloat16 or float8 dtype)
            hosts = [np.zeros(shape, item) for _ in range(k)]
            fns["NumPy add(out=) (ml_dtypes)"] = cycle([lambda h=h: np.add(h, operand, out=h) for h in hosts])
        if ctx.torch:
            entry = ctx.torch.add_([np.zeros(shape, item) for _ in range(k)], 0.5 if scalar else steps, dtype)
            if entry:
                fns[entry[0]] = cycle(entry[1])

        def check():
            # One more call on the first variable, against ml_dtypes' sum of the same words.
            before = np.array(ctx.native.to_host(storage_of(variables[0])), copy=True).view(item)
            variables[0].assign_add(x)
            got = ctx.native.to_host(storage_of(variables[0])).view(item)
            want = (before.astype(np.float32) + np.asarray(operand).astype(np.float32)).astype(item)
            wrong = np.count_nonzero(bits(got) != bits(want))
            require(wrong == 0, f"v.assign_add({'0.5' if scalar else 'x'}) on {dtype}: {wrong} elements differ "
                                f"from ml_dtypes' sum")

        return Case(fns, arrays * n * item.itemsize, check, ceiling="copy", keep=[store])

    return build
