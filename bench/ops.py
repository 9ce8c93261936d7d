"""The benchmarked operations of ``varstore bench``, in the suite's order, and ``select``.

Each op builds a :class:`~.ops_base.Case` for a size (the bytes of the op's float32
data): the functions to time (ours first, then the baselines), the bytes one call must
move, which ceiling it is held against, and a check of ours' result (a fast but wrong
kernel fails the run). The builders live by family:

- ``ops_writes``: the scalar fill, assigns, strided and row writes;
- ``ops_random``: the initializers;
- ``ops_casts``: ``v.astype`` between float32 and the 16- and 8-bit floats;
- ``ops_store``: creation and checkpoints;
- ``ops_calls``: per-call host time;
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
    build_calls_assign_add,
    build_calls_astype,
    build_calls_create,
    build_calls_fill,
    build_calls_row,
)
from .ops_casts import CASTS, make_build_cast
from .ops_random import INITIALIZERS, expected_distribution, make_build_initializer
from .ops_store import build_create, build_load, build_save
from .ops_writes import build_assign_device, build_assign_host, build_fill, build_row_write, build_strided

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
