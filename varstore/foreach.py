"""Updates of many variables at once: ``vs.foreach.assign``, ``assign_add``,
``assign_sub``, ``scale`` and ``global_norm``.

The variables (of one store and device, float dtypes) are grouped by (variable dtype,
value dtype); each group is one launch of the multi-tensor kernel
``kernels.updates.foreach``. Results are those of the per-variable calls: a value is
converted to its variable's dtype (as ``v.assign_add(x)`` converts it), then
``v + alpha * x`` is computed in float32 (float64 for float64 variables) as one fused
multiply-add and rounded once to the variable's dtype. With ``alpha`` 1 that is exactly
``v.assign_add(x)``.

Values are arrays (host, or the store's device) or variables, the variable's shape or
0-d (which fills). Each value is read as it was when the call began: one that shares
memory with a variable being updated (other than its own) is copied first. Every entry is
checked (lengths, variables of one store and device, float dtypes, no variable twice,
shapes, values that convert) before anything is written: a bad entry changes nothing.
Inside a ``StatelessScope``, and for the synced variables of a replicated store (whose
writes queue inside ``replica_step()``), the updates go through each variable's own
``assign``/``assign_add``.

A call remembers its plan (the tables of addresses it uploads): a later call with the
same variables and the same value objects (arrays whose memory it reads in place, or
variables) launches at once. The plan keeps those objects alive (the
:data:`PLANS` most recently made plans are kept); an array whose ``shape`` or ``dtype`` attribute is set in
place between two calls is read as it was described at the first call.

>>> import numpy as np, varstore as vs
>>> store = vs.VariableStore(device="cpu")
>>> a, b = store.variable(np.ones(3, np.float32), name="a"), store.variable(np.ones(2, np.float32), name="b")
>>> vs.foreach.assign_sub([a, b], [np.full(3, 2.0, np.float32), np.full(2, 4.0, np.float32)], alpha=0.5)
>>> a.numpy(), b.numpy()
(array([0., 0., 0.], dtype=float32), array([-1., -1.], dtype=float32))
>>> round(vs.foreach.global_norm([a, b]), 6)
1.414214
"""

from __future__ import annotations

import bisect
import math
import operator
import threading

import numpy as np

from . import backends, kernels, scopes
from .array_protocols import ArrayProtocols
from .backends.base import is_device_array
from .casting import element_conversion, readable
from .dtypes import is_float, standardize_dtype
from .errors import ArgumentTypeError
from .multi_tensor import (
    Tables,
    check_variables,
    compute_dtype,
    conversions,
    destination_word,
    float_name,
    sequence,
    source_word,
)
from .validation import check_number
from .variable import is_routed, live_storage, write_operand

#: How many plans the module remembers (least recently used ones are dropped).
PLANS = 8

_ASSIGN, _ADD, _SCALE = 0, 1, 2  # kernels.updates.ASSIGN, ADD, SCALE (numba loads at the first launch)


def assign(variables, values) -> None:
    """``v.assign(x)`` for each pair (``x`` the variable's shape, or 0-d)."""
    _update(variables, values, _ASSIGN, 1.0, "foreach.assign")


def assign_add(variables, values, alpha=1.0) -> None:
    """``v += alpha * x`` for each pair."""
    alpha = check_number("alpha", alpha, "a finite number")
    _update(variables, values, _ADD, alpha, "foreach.assign_add")


def assign_sub(variables, values, alpha=1.0) -> None:
    """``v -= alpha * x`` for each pair."""
    alpha = check_number("alpha", alpha, "a finite number")
    _update(variables, values, _ADD, -alpha, "foreach.assign_sub")


def scale(variables, factor) -> None:
    """``v *= factor`` for each variable (computed as ``v * factor`` in float32, float64
    for float64 variables, rounded once)."""
    factor = check_number("factor", factor, "a finite number")
    _update(variables, None, _SCALE, factor, "foreach.scale")


def global_norm(values) -> float:
    """``sqrt(sum of the squares of every element of every value)``: the norm that
    clipping by global norm divides by. Values: variables, or arrays of real numbers
    (host or device); a None is skipped. The squares are summed in float64, from one
    multi-tensor pack of every value into one float32 (float64 for float64 values)
    buffer per device."""
    values = sequence(values, "values", "foreach.global_norm")
    total = 0.0
    for (backend, device), arrays in _by_device(values).items():
        total += sum_of_squares(backend, device, arrays)
    return math.sqrt(total)


# ------------------------------------------------------------------ plans
class _Plan:
    """The launches of one call: per group, the kernel arguments (tables uploaded)."""

    __slots__ = ("variables", "values", "mode", "backend", "stores", "launches", "cacheable", "operands")

    def __init__(self, variables, values, mode, backend, stores, launches, cacheable, operands):
        self.variables, self.values, self.mode = variables, values, mode
        self.backend, self.stores, self.launches, self.cacheable = backend, stores, launches, cacheable
        self.operands = operands  # every array the launches read by address, alive while the plan is

    def valid(self) -> bool:
        return all(store.releases == count for store, count in self.stores)

    def run(self, alpha: float) -> None:
        for launch in self.launches:
            launch(alpha)


_plans: dict = {}  # (variables, mode) -> _Plan, oldest made first
_plans_lock = threading.Lock()


def _cached(variables: tuple, values, mode: int):
    """The plan of an earlier call with these variables and the same value objects
    (compared by identity), or None."""
    try:
        plan = _plans.get((variables, mode))
    except TypeError:  # an unhashable item: not a variable (checked, and refused, below)
        return None
    if plan is None:
        return None
    if values is not None and (len(values) != len(plan.values) or not all(map(operator.is_, values, plan.values))):
        return None
    if not plan.valid():
        with _plans_lock:
            _plans.pop((variables, mode), None)
        return None
    return plan


def _update(variables, values, mode: int, alpha: float, what: str) -> None:
    if mode != _SCALE and not isinstance(values, (list, tuple)):
        values = sequence(values, "values", what)  # (a generator: read once; None refused)
    if isinstance(variables, (list, tuple)) and not scopes.ACTIVE:
        key = tuple(variables)
        plan = _cached(key, values, mode)
        if plan is not None:
            plan.run(alpha)
            return
    variables = check_variables(variables, what)
    if values is not None:
        values = list(values)
        if len(values) != len(variables):
            raise ValueError(f"{what}: {len(variables)} variables and {len(values)} values; expected one value "
                             f"per variable.")
    if not variables:
        return
    if scopes.ACTIVE or any(map(is_routed, variables)):
        _one_by_one(variables, values, mode, alpha, what)
        return
    plan = _plan(tuple(variables), values, mode, what)
    if plan.cacheable and not scopes.ACTIVE:
        with _plans_lock:
            _plans.pop((plan.variables, mode), None)
            _plans[(plan.variables, mode)] = plan
            while len(_plans) > PLANS:
                del _plans[next(iter(_plans))]
    plan.run(alpha)


def _plan(variables: tuple, values, mode: int, what: str) -> _Plan:
    """Check every entry and build the launches (nothing is written here)."""
    first = variables[0]
    _, _, backend, device = first.stored
    stores = {id(first.store): first.store}
    method = "assign" if mode == _ASSIGN else "assign_add"
    address = backend.address
    targets = [(v, *v.stored[:2]) for v in variables]
    keep: list = [storage for _, storage, _ in targets]  # (a variable released by another thread: its memory
    # stays ours until the plan is dropped, so a launch never writes freed memory)
    target_addresses = [address(storage) for _, storage, _ in targets]
    extents = _Extents(target_addresses, [storage.nbytes for _, storage, _ in targets])
    groups: dict = {}
    cacheable = True
    for i, (variable, storage, dtype) in enumerate(targets):
        if values is None:
            operand, operand_dtype, at = storage, dtype, target_addresses[i]
        else:
            operand, operand_dtype, direct = _operand(variable, values[i], backend, device, method, stores)
            at = target_addresses[i] if operand is storage else address(operand)
            if operand is not storage and extents.overlap(at, operand.nbytes):
                operand = backend.copy(operand)  # read as it was before the call
                at, direct = address(operand), False
            cacheable = cacheable and direct
        keep.append(operand)  # (the kernel reads it through its address: it must live as long as the plan)
        member = (variable.size, target_addresses[i], at, 0 if operand.ndim == 0 and variable.size != 1 else 1)
        groups.setdefault((dtype, operand_dtype), []).append(member)
    tables = Tables(backend, device)
    launches = []
    for (dtype, operand_dtype), members in groups.items():
        compute = compute_dtype(dtype)
        conv = conversions(operand_dtype, dtype)
        sizes, w, x, step = zip(*members, strict=True)
        args = tables.chunked(sizes, {"tensor_variable": np.array(w, np.uint64),
                                      "tensor_value": np.array(x, np.uint64), "tensor_step": np.array(step, np.int64)})
        same = operand_dtype == dtype == compute
        args.update(like_w=tables.like(source_word(dtype, compute)), like_wd=tables.like(destination_word(dtype)),
                    like_x=tables.like(source_word(operand_dtype, dtype)), alpha=1.0, mode=mode,
                    kind=0 if compute == "float32" else 1, same=int(same),
                    small=kernels.updates.small_path(conv["to_variable"], kernels.updates.VALUE_ROUTES,
                                                     conv["to_compute"], conv["from_compute"]),
                    **conv)
        launches.append(backend.bound_launch(kernels.updates.foreach, len(args["chunk_tensor"]), args, "alpha"))
    counts = tuple((store, store.releases) for store in stores.values())
    return _Plan(variables, None if values is None else list(values), mode, backend, counts, launches, cacheable,
                 keep)


def _operand(variable, value, backend, device, method: str, stores: dict) -> tuple:
    """``(array, dtype, direct)``: what the kernel reads for ``value``; ``direct`` where
    it is the value's own memory, which a later call may read again in place."""
    shape = variable.shape
    if isinstance(value, ArrayProtocols):
        storage, dtype, value_backend, value_device = value.stored
        if storage is None:
            live_storage(value)  # raises, naming the released variable
        if value_backend is backend and value_device == device and is_float(dtype) and (
                value.shape == shape or value.ndim == 0):
            stores.setdefault(id(value.store), value.store)
            return storage, dtype, True
    elif backend.owns(value) and (value.shape == shape or value.ndim == 0) and backend.device_of(value) == device:
        dtype = float_name(value.dtype)
        if dtype is not None and value.flags.c_contiguous and backend.aligned(value):
            return value, dtype, True
    operand = write_operand(variable, value, method)  # checked, converted to the variable's dtype
    if not operand.flags.c_contiguous:
        operand = backend.copy(operand)
    return operand, variable.stored.dtype, False


class _Extents:
    """The byte ranges of the variables being updated, to find values that share memory
    with one of them (bisection over the sorted ranges)."""

    def __init__(self, addresses, sizes):
        ranges = sorted(zip(addresses, sizes, strict=True))
        self.starts = [start for start, _ in ranges]
        self.ends = [start + size for start, size in ranges]

    def overlap(self, start: int, nbytes: int) -> bool:
        if nbytes == 0:
            return False
        k = bisect.bisect_left(self.ends, start + 1)  # the first range that ends after start
        return k < len(self.starts) and self.starts[k] < start + nbytes


def _one_by_one(variables, values, mode: int, alpha: float, what: str) -> None:
    """The updates through each variable's own methods (scopes, replica routing); every
    operand is checked first."""
    if mode == _SCALE:
        operands = [None] * len(variables)
    else:
        method = "assign" if mode == _ASSIGN else "assign_add"
        operands = [write_operand(v, x, method, private=True) for v, x in zip(variables, values, strict=True)]
    if mode != _ASSIGN:  # (reads the variable: a replicated store's cross-replica rules, checked for every one first)
        for variable in variables:
            variable.store.check_write(variable, what)
    for variable, operand in zip(variables, operands, strict=True):
        _, dtype, backend, device = variable.stored
        wide = np.float64 if dtype == "float64" else np.float32
        with backend.on_device(device):  # (the scaling below is the array module's)
            if mode == _SCALE:
                variable.assign(readable(backend, variable.value, dtype).astype(wide) * wide(alpha))
                continue
            numbers = readable(backend, operand, dtype)
            if mode == _ASSIGN:
                variable.assign(numbers)
            elif alpha == 1.0:
                variable.assign_add(numbers)
            elif alpha == -1.0:
                variable.assign_sub(numbers)
            else:
                variable.assign_add(numbers.astype(wide) * wide(alpha))


# ------------------------------------------------------------------ global norm
def _by_device(values) -> dict:
    """``{(backend, device): [(array, dtype), ...]}`` of the values (None skipped)."""
    out: dict = {}
    for i, value in enumerate(values):
        if value is None:
            continue
        if isinstance(value, ArrayProtocols):
            storage, dtype, backend, device = value.stored
            if storage is None:
                live_storage(value)
        else:
            backend = backends.get("cuda" if is_device_array(value) else "numpy")
            array = backend.xp.asarray(value)
            if not array.dtype.isnative:  # (the kernels read native words)
                array = array.astype(array.dtype.newbyteorder("="))
            device = backend.device_of(array)
            dtype = float_name(array.dtype) or _real_name(array.dtype, i)
            storage = array if array.flags.c_contiguous else backend.copy(array)
        out.setdefault((backend, device), []).append((storage, dtype))
    return out


def _real_name(dtype, i: int) -> str:
    if np.dtype(dtype).kind in "biu":
        return standardize_dtype(dtype)
    raise ArgumentTypeError(f"foreach.global_norm: values[{i}] holds {dtype} elements; expected real numbers.")


def sum_of_squares(backend, device, arrays) -> float:
    """The sum of squares of ``arrays``: ``(storage array, dtype)`` pairs (contiguous,
    native words) on one device; one pack launch per dtype into a float32 (float64)
    buffer, then one dot product in float64."""
    return sums_of_squares(backend, device, [arrays])[0]


def sums_of_squares(backend, device, lists) -> list:
    """:func:`sum_of_squares` of each list of ``lists``, summed on the device and copied
    to the host together: one wait for the device's queued work, not one per list."""
    with backend.on_device(device):
        totals = [_squares(backend, device, arrays) for arrays in lists]
        return [float(total) for total in backend.to_host(backend.xp.stack(totals))]


def _squares(backend, device, arrays):
    """The sum of squares of ``arrays`` as a 0-d float64 array of ``backend`` (pieces
    added in order, as float64 numbers: the bits of a host sum of the same pieces)."""
    K = kernels.multi_tensor
    tables = Tables(backend, device)
    total = backend.xp.zeros((), np.float64)
    groups: dict = {}
    for array, dtype in arrays:
        groups.setdefault(dtype, []).append(array)
    for dtype, members in groups.items():
        staging_dtype = "float64" if dtype in ("float64", "int64", "uint64", "int32", "uint32") else "float32"
        sizes = [a.size for a in members]
        staging = backend.empty((sum(sizes),), np.dtype(staging_dtype), device)
        if staging.size == 0:
            continue
        args = tables.chunked(sizes, {"tensor_address": np.array([backend.address(a) for a in members], np.uint64),
                                      "tensor_step": np.ones(len(members), np.int64),
                                      "tensor_negate": np.zeros(len(members), np.int64)})
        conversion = element_conversion(dtype, staging_dtype)
        backend.launch(K.pack, len(args["chunk_tensor"]), staging=staging.view(destination_word(staging_dtype)),
                       like=tables.like(source_word(dtype, staging_dtype)), kind=K.STAGE_F64 if staging_dtype ==
                       "float64" else K.STAGE_F32, conversion=conversion, **K.pack_paths(conversion), **args)
        for start in range(0, staging.size, _NORM_PIECE):  # (float64 pieces: a bounded temporary)
            wide = staging[start:start + _NORM_PIECE].astype(np.float64)
            total = total + backend.xp.dot(wide, wide)
    return total


#: Elements of the staging buffer widened to float64 at a time by ``sum_of_squares``.
_NORM_PIECE = 1 << 22
