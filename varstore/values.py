"""Turning user values (scalars, lists, host or device arrays, variables) into arrays in
storage form, and writing them into a variable's storage."""

from __future__ import annotations

import numpy as np

from .casting import (
    accumulate_into,
    cast,
    cast_into,
    cast_on_host,
    cast_scalar_on_host,
    destination_words,
    needs_kernel,
)
from .dtypes import DTYPES, INT_DTYPES, REGISTRY, WORD_DTYPES, infer_python_dtype, storage_dtype

_PY_SCALARS = (bool, int, float)
_SUPPORTED = frozenset(DTYPES)


def as_storage_array(value, backend, device, into: str | None = None):
    """``(array, dtype)``: ``value`` as a C-contiguous array in storage form.

    The array is ``backend``'s own (no copy where possible) or, for host data on a GPU
    backend, a host NumPy array: callers cast it on the host and copy it once. ``into``:
    the dtype the value is for, if known: Python ints it cannot hold are refused.

    Raises:
        ValueError: a value of a dtype varstore does not support (complex, strings,
            ragged lists...).
        OverflowError: Python ints out of the bounds of the integer dtype ``into``, as
            NumPy refuses them (arrays of other integer dtypes wrap, as NumPy's casts).
    """
    if type(value) is np.ndarray:  # the common case first: this is on every assign's path
        array = value
    elif isinstance(value, (_PY_SCALARS, list, tuple)):
        array = _python_array(value)
        if into is not None and array.dtype.kind in "iu":
            _check_python_ints(array, into)
    else:
        read = getattr(value, "read_stored", None)  # a Variable: what its `value` reads (scopes too)
        if read is not None:
            array, dtype, source = read()
            if source is not backend:
                array = source.host_view(array)
            elif value.device != device:
                array = backend.asarray(array, device)  # another GPU's: copied here
            return array, dtype
        array = backend.asarray(value, device)
    if not array.dtype.isnative:  # big-endian data: the kernels read native words
        array = array.astype(array.dtype.newbyteorder("="))
    name = dtype_name(array.dtype)
    if name in WORD_DTYPES:  # ml_dtypes (or CuPy's bfloat16) arrays: their raw words
        array = array.view(storage_dtype(name))
    elif name not in _SUPPORTED:
        raise _unsupported(value, array)
    if not array.flags.c_contiguous:
        array = backend.copy(array) if backend.owns(array) else np.asarray(array, order="C")
    elif backend.owns(array) and not backend.aligned(array):  # (a misaligned load faults on a GPU)
        array = backend.copy(array)
    return array, name


def _python_array(value) -> np.ndarray:
    """``np.asarray`` of a Python scalar, list or tuple; ValueError naming the problem for
    ints beyond 64 bits and ragged lists, where NumPy's own message names neither."""
    try:
        array = np.asarray(value)
    except ValueError as exc:  # (ragged nesting)
        raise ValueError(f"Unsupported value: a {type(value).__name__} whose nested lists have different lengths "
                         f"(NumPy: {exc}). Expected a scalar, or nested lists of one shape.") from None
    if array.dtype.kind == "O" and all(type(x) is int for x in array.reshape(-1)):
        shown = str(max(array.reshape(-1), key=abs))
        shown = shown if len(shown) <= 30 else f"{shown[:12]}... ({len(shown.lstrip('-'))} digits)"
        raise OverflowError(f"Python integer {shown} does not fit 64 bits, the widest integer dtype; give it as "
                            f"a float for a float variable.")
    return array


def _check_python_ints(array: np.ndarray, dtype: str) -> None:
    record = REGISTRY.get(dtype)
    bounds = None if record is None else record.bounds
    if bounds is None or not array.size:  # (floats, bool: NumPy's conversion)
        return
    low, high = int(array.min()), int(array.max())
    if low < bounds[0] or high > bounds[1]:
        raise OverflowError(f"Python integer {low if low < bounds[0] else high} out of bounds for {dtype} "
                            f"[{bounds[0]}, {bounds[1]}] (NumPy refuses it too; an array of a wider dtype "
                            f"wraps, as its astype does).")


_names: dict = {}


def dtype_name(dtype: np.dtype) -> str:
    """``dtype.name``, cached: NumPy computes it in Python, in microseconds."""
    name = _names.get(dtype)
    if name is None:
        name = _names[dtype] = dtype.name
    return name


def default_dtype(value, array_dtype: str, array) -> str:
    """The dtype a variable made from ``value`` gets when none is given: the array's own,
    or for Python scalars and lists, as Keras: floatx() / int32 / bool."""
    if isinstance(value, np.generic) or not isinstance(value, (_PY_SCALARS, list, tuple)):
        return array_dtype  # (np.float64 subclasses float but has its own dtype)
    name = infer_python_dtype(array.dtype.kind)
    if name == "int32" and array.size and (array.min() < -(2**31) or array.max() >= 2**31):
        raise ValueError(
            f"Python ints that do not fit int32 (the dtype Python ints get) were given: "
            f"min {array.min()}, max {array.max()}. Pass dtype='int64'."
        )
    return name


def write(backend, storage, dtype: str, array, array_dtype: str) -> None:
    """Write ``array`` (storage form, from :func:`as_storage_array`) into ``storage``,
    cast to ``dtype``. Its shape equals the storage's, or it has one element (0-d),
    which fills every element. Host arrays are cast on the host and copied once."""
    if array.ndim == 0 and storage.ndim != 0:  # a scalar fills: converted once, on the host where it is readable
        scalar = backend.scalar_on_host(array) if backend.owns(array) else array
        if scalar is None:  # (a GPU's: converted there, and broadcast by the array module, with no wait)
            word = array if array_dtype == dtype else cast(backend, array, array_dtype, dtype,
                                                           backend.device_of(storage))
            backend.setitem(storage, Ellipsis, word)
            return
        if needs_kernel(array_dtype, dtype):
            scalar = cast_scalar_on_host(scalar, array_dtype, dtype)
        else:  # the array module's own conversion, as for arrays (integers wrap)
            scalar = scalar.astype(storage.dtype, casting="unsafe")
        backend.fill(storage, scalar[()])
        return
    if backend.owns(array):
        cast_into(backend, array, array_dtype, storage, dtype)
    else:
        host = array if array_dtype == dtype else cast_on_host(array, array_dtype, dtype)
        backend.copy_from_host(storage, host)


def as_operand(backend, array, array_dtype: str, dtype: str, device: str):
    """``array`` cast to ``dtype`` as an array of ``backend`` (for assign_add/sub)."""
    if not backend.owns(array) or (array.ndim == 0 and array_dtype != dtype and type(array) is np.ndarray):
        if array_dtype == dtype:
            host = array
        elif array.ndim == 0:  # (a scalar: its cast remembered; copied, as the caller may keep it)
            host = cast_scalar_on_host(array, array_dtype, dtype).copy()
        else:
            host = cast_on_host(array, array_dtype, dtype)
        return backend.from_host(host, device)
    if array_dtype == dtype:
        return array
    return cast(backend, array, array_dtype, dtype, device)


def add_own_words(stored, shape: tuple, value, sign: int) -> bool:
    """The shortcut of ``assign_add``/``assign_sub`` on a small-float variable (record
    ``stored``, ``shape``): a C-contiguous array of its backend, of the variable's own
    dtype (``ml_dtypes.bfloat16``...) and shape, or a variable of that dtype and shape on
    the same device, added as its words by our kernel without the general path's checks
    and conversion; or a Python float or int, whose converted words are remembered. False,
    with nothing written, for any other value (and for one that shares the storage's
    memory)."""
    storage, backend = stored.storage, stored.backend
    if storage is None:
        return False
    kind = type(value)
    if kind is float or kind is int:  # (the general path's words for it, remembered)
        words = _scalar_words.get((value, kind, stored.dtype))
        if words is None:
            words = _remember_scalar_words(value, kind, stored.dtype)
            if words is None:
                return False
        accumulate_into(backend, storage, backend.from_host(words, stored.device), stored.dtype, sign)
        return True
    if kind is np.ndarray:
        if value.shape != shape or not value.flags.c_contiguous or not backend.owns(value):
            return False
        if dtype_name(value.dtype) != stored.dtype or not value.dtype.isnative:
            return False
        words = value.view(storage.dtype)
    else:
        read = getattr(value, "read_stored", None)  # a variable: what its value reads, in storage form
        if read is None:
            return False
        words, dtype, source = read()
        if source is not backend or dtype != stored.dtype or words.shape != shape:
            return False
        if backend.device_of(words) != stored.device:
            return False
    if backend.shares_memory(storage, words):
        return False
    accumulate_into(backend, storage, words, stored.dtype, sign)
    return True


def _remember_scalar_words(value, kind, dtype: str):
    """A one-element host array of ``dtype``'s words for the Python float or int
    ``value``, converted as the general path converts it (from float64 or int64, rounded
    once), and remembered by (value, type, dtype); None for zeros, NaNs and ints beyond
    int64, whose equal keys do not mean equal bits (0.0 == -0.0) or which take the
    general path's checks."""
    if value != value or value == 0 or (kind is int and not -(1 << 63) <= value < (1 << 63)):
        return None
    scalar = np.asarray(value)  # float64 or int64, as _python_array makes it
    words = destination_words(cast_scalar_on_host(scalar, dtype_name(scalar.dtype), dtype).reshape(1).copy())
    if len(_scalar_words) >= _MAX_SCALAR_WORDS:
        _scalar_words.clear()
    _scalar_words[(value, kind, dtype)] = words
    return words


# (Python scalar, its type, small-float dtype) -> the one-element host array of its words,
# which ``assign_add`` adds: a training loop adds the same few constants (1.0, the step).
_scalar_words: dict = {}
_MAX_SCALAR_WORDS = 1024


def as_region_source(backend, array, array_dtype: str, dtype: str, device: str):
    """``(operand, operand_dtype)``: ``array`` as an array of ``backend`` for the strided
    and indexed kernels, which convert as they write. Host arrays travel as they are (one
    transfer of their own bytes); a one-element value is converted on the host first, so
    the kernel copies a value of the variable's dtype."""
    if array.size == 1 and array_dtype != dtype:
        return as_operand(backend, array, array_dtype, dtype, device), dtype
    if backend.owns(array):
        return array, array_dtype
    return backend.from_host(array, device), array_dtype


def _unsupported(value, array) -> Exception:
    """The error for a value that holds no real numbers: TypeError for a string or bytes
    given as the value, ValueError for an array of another kind."""
    kinds = {"U": "text", "S": "bytes", "O": "Python objects", "c": "complex numbers", "V": "raw records",
             "M": "dates", "m": "time spans"}
    what = kinds.get(array.dtype.kind, f"dtype {array.dtype}")
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:60] + "..."
    expected = f"Expected real numbers (a scalar, array or variable) of one of the dtypes {list(DTYPES)}."
    if isinstance(value, (str, bytes)):
        return TypeError(f"Unsupported value {shown} of type {type(value).__name__}: {what}. {expected}")
    return ValueError(f"Unsupported value of type {type(value).__name__} holding {what}. {expected}")


def state_array(variable, value, what: str):
    """``value`` as a new storage array of ``variable``'s dtype and exact shape (for
    ``load_state``, ``stateless_call`` and StatelessScope); ValueError naming both shapes
    otherwise."""
    _, dtype, backend, device = variable.stored
    array, array_dtype = as_storage_array(value, backend, device, dtype)
    if array.shape != variable.shape:
        raise ValueError(
            f"{what}: the value for variable {variable.path!r} has shape {array.shape}; expected "
            f"the variable's shape {variable.shape}."
        )
    out = backend.empty(variable.shape, storage_dtype(dtype), device)
    write(backend, out, dtype, array, array_dtype)
    return out


# Python scalars that the array module's own conversion (``storage.fill``, ``storage[key] =``)
# turns into exactly the bits the general path writes (as_storage_array, then our cast
# kernels where they apply), per storage dtype: ``(int_lo, int_hi, float_mode)``.
# Ints: within [int_lo, int_hi] (the dtype's range; for floats, where every int is exact,
# so no rounding happens at all). float_mode: 2 every Python float (float64 storage: no
# conversion; bool: NumPy's float -> bool is the general path's too); 1 normal float32
# numbers and zeros only (NaN, inf, overflow and subnormal results keep the kernel,
# which quiets NaNs its own way and raises no floating-point warnings); 0 none
# (float -> int saturates in our kernel). Bools: always (0/1). Small floats: never.
_F32_MAX = float(np.finfo(np.float32).max)
_F32_TINY = float(np.finfo(np.float32).tiny)
SCALAR_FILLS = {
    "float32": (-(1 << 24), 1 << 24, 1),
    "float64": (-(1 << 53), 1 << 53, 2),
    "bool": (-(1 << 63), (1 << 63) - 1, 2),  # (the ints np.asarray makes int64)
    **{name: (int(np.iinfo(name).min), int(np.iinfo(name).max), 0) for name in INT_DTYPES},
}
# Storage dtypes whose same-dtype assign_add/assign_sub is the array module's add/subtract.
NATIVE_ADD = frozenset({"float32", "float64", *INT_DTYPES})


def plain_scalar(limits: tuple, value) -> bool:
    """True when ``value`` is a Python scalar the array module may write itself into a
    storage whose ``SCALAR_FILLS`` entry is ``limits``."""
    kind = type(value)
    if kind is float:
        mode = limits[2]
        if mode == 1:
            return (_F32_TINY <= value <= _F32_MAX) or (-_F32_MAX <= value <= -_F32_TINY) or value == 0.0
        return mode == 2
    if kind is int:
        return limits[0] <= value <= limits[1]
    return kind is bool
