"""The benchmarked operations of ``varstore bench``, in the suite's order, and ``select``.

Each op builds a :class:`~.ops_base.Case` for a size (the bytes of the op's float32
data): the functions to time (ours first, then the baselines), the bytes one call must
move, which ceiling it is held against, and a check of ours' result (a fast but wrong
kernel fails the run). The builders live by family:

- ``ops_writes``: the scalar fill, assigns, strided and row writes;
- ``ops_random``: the initializers, and Philox fills in bfloat16 and float64;
- ``ops_casts``: ``v.astype`` between float32 and the 16- and 8-bit floats;
- ``ops_store``: creation, a model's build, checkpoints and their host memory;
- ``ops_calls``: per-call host time, and ``import varstore``;
- ``ops_sync``: the pack and unpack kernels of ``ReplicatedStore.sync()``;
- ``ops_base``: what they share (:class:`Case`, :class:`Op`, shapes, rotation, checks).
"""

from __future__ import annotations

from .ops_base import (
    ELEMENT,
    MAX_ROTATION,
    SMALL_ONLY,
    Case,
    CheckFailed,
    Op,
    cycle,
    rotation,
    square_shape,
)
from .ops_calls import (
    CREATED,
    IMPORT_BYTES,
    build_calls_assign_add,
    build_calls_assign_add_keras,
    build_calls_astype,
    build_calls_create,
    build_calls_element,
    build_calls_fill,
    build_calls_row,
    build_import,
)
from .ops_casts import CASTS, make_build_cast
from .ops_foreach import build_foreach_assign_sub, build_optimizer_adam, build_optimizer_sgd
from .ops_random import (
    INITIALIZERS,
    RANDOM,
    RANDOM_DTYPES,
    expected_distribution,
    make_build_initializer,
    make_build_random,
)
from .ops_store import build_create, build_load, build_model, build_save
from .ops_sync import SYNC_DTYPES, make_build_sync
from .ops_writes import (
    build_assign_device,
    build_assign_host,
    build_columns,
    build_fill,
    build_fill_float64,
    build_row_write,
    build_rows,
    build_strided,
    build_strided_fill,
    build_strided_read,
    make_build_accumulate,
    make_build_converting_strided,
)

__all__ = ["ELEMENT", "MAX_ROTATION", "OPS", "BY_NAME", "Case", "CheckFailed", "Op", "cycle", "expected_distribution",
           "rotation", "select", "square_shape"]

OPS = [Op("fill", "v.assign(1.5): a scalar fills the variable in place", build_fill)]
OPS += [
    Op(f"init/{name}", f"{name}: the initializer fills an existing float32 variable in place",
       make_build_initializer(name),
       max_bytes=SMALL_ONLY if name == "orthogonal" else None,
       skip_reason="a QR decomposition of the whole matrix; measured up to 4 MiB" if name == "orthogonal" else "")
    for name in INITIALIZERS
]
OPS += [Op(f"random/{kind}_{dtype}", f"{kind}: the Philox fill of an existing {dtype} variable in place",
           make_build_random(kind, dtype))
        for kind in RANDOM for dtype in RANDOM_DTYPES]
OPS += [Op(f"cast/{src}->{dst}", f"v.astype({dst!r}) of a {src} variable", make_build_cast(src, dst))
        for src, dst in CASTS]
OPS += [
    Op("assign/host", "v.assign(a NumPy array): host to the variable's memory", build_assign_host),
    Op("assign/device", "v.assign(an array on the variable's device)", build_assign_device),
    Op("assign/scalar_float64", "v.assign(1.0) on float64: an 8-byte pattern, which no memset writes",
       build_fill_float64),
    Op("slice/strided", "v[::2, 1::3] = b, b on the device, float32", build_strided),
    Op("slice/strided_float64->float32", "v[::2, 1::3] = b, b float64 on the device, converted into a float32 variable",
       make_build_converting_strided("float32")),
    Op("slice/strided_float64->bfloat16", "v[::2, 1::3] = b, b float64 on the device, converted into a bfloat16 "
       "variable", make_build_converting_strided("bfloat16")),
    Op("slice/read", "v[::2, 1::3]: a new array of the region, float32", build_strided_read),
    Op("slice/fill", "v[::2, 1::3] = 1.5: a scalar into a strided region, float32", build_strided_fill),
    Op("slice/rows", "v[1:-1] = b: a contiguous range of rows, b on the device, float32", build_rows),
    Op("slice/columns", "v[:, 8:-8] = b on a variable 16-32x wider than tall: rows of contiguous columns, float32",
       build_columns),
    Op("slice/row", "v[0, :] = 99 against copy, modify, assign back", build_row_write, metric="us"),
    Op("accumulate/bfloat16", "v.assign_add(x) on a bfloat16 variable, x a bfloat16 variable of its shape",
       make_build_accumulate("bfloat16", scalar=False)),
    Op("accumulate/bfloat16_scalar", "v.assign_add(0.5) on a bfloat16 variable",
       make_build_accumulate("bfloat16", scalar=True)),
    Op("create", "store.variable('zeros', shape): a new variable (the previous one deleted)", build_create,
       metric="us"),
    Op("store/build", "(256, 256) glorot_uniform kernels and (256,) zeros biases filling the size, in a new store",
       build_model, metric="us"),
    Op("calls/row", "v[0, :] = 99 on a (64, N) float32 variable: per-call host time", build_calls_row,
       metric="us"),
    Op("calls/element", "v[1, 2] = 3.0 on a (64, N) float32 variable: per-call host time", build_calls_element,
       metric="us"),
    Op("calls/fill", "v.assign(1.5) on N float32: per-call host time", build_calls_fill, metric="us"),
    Op("calls/astype", "v.astype('bfloat16') of N float32: per-call host time", build_calls_astype,
       metric="us"),
    Op("calls/assign_add", "v.assign_add(x), x an array of the variable's dtype and shape", build_calls_assign_add,
       metric="us"),
    Op("calls/assign_add_keras", "calls/assign_add against keras.Variable.assign_add (np.add(out=) without Keras)",
       build_calls_assign_add_keras, metric="us"),
    Op("calls/create", f"{CREATED} glorot_uniform (4, 4) variables in a new store (one call)", build_calls_create,
       metric="us"),
    Op("foreach/assign_sub", "vs.foreach.assign_sub over 1,000 float32 variables (the size: all of them)",
       build_foreach_assign_sub),
    Op("optimizer/adam", "one vs.optimizers.Adam step over 50 float32 variables (the size: all of them)",
       build_optimizer_adam),
    Op("optimizer/sgd", "one vs.optimizers.SGD step, momentum 0.9, over 50 float32 variables (the size: all of them)",
       build_optimizer_sgd),
    Op("checkpoint/save", "store.save(file): atomic safetensors write with fsync", build_save),
    Op("checkpoint/load", "store.load(file) into the existing variable", build_load),
]
OPS += [Op(f"sync/{kernel}_{dtype}", f"{kernel} of the queued updates of {dtype} variables, one bucket, one rank",
           make_build_sync(kernel, dtype))
        for dtype in SYNC_DTYPES for kernel in ("pack", "unpack")]
OPS += [Op("import", "import varstore in a fresh interpreter, against import numpy", build_import, metric="us",
           max_bytes=IMPORT_BYTES, skip_reason="independent of the size: measured at 4 KiB")]
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
