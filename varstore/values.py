"""Turning user values (scalars, lists, host or device arrays, variables) into arrays in
storage form, and writing them into a variable's storage."""

from __future__ import annotations

import numpy as np

from .casting import cast, cast_into, cast_on_host
from .dtypes import DTYPES, WORD_DTYPES, infer_python_dtype, storage_dtype

_PY_SCALARS = (bool, int, float)


def as_storage_array(value, backend, device):
    """``(array, dtype)``: ``value`` as a C-contiguous array in storage form.

    The array is ``backend``'s own (no copy where possible) or, for host data on a GPU
    backend, a host NumPy array: callers cast it on the host and copy it once.

    Raises:
        ValueError: a value of a dtype varstore does not support (complex, strings,
            ragged lists...).
    """
    from .variable import Variable

    if isinstance(value, Variable):
        array = value._live_storage()
        if value._backend is not backend:
            array = value._backend.host_view(array)
        return array, value._dtype
    if isinstance(value, (_PY_SCALARS, list, tuple)):
        array = np.asarray(value)
    else:
        array = backend.asarray(value, device)
    name = array.dtype.name
    if name in WORD_DTYPES:  # ml_dtypes (or CuPy's bfloat16) arrays: their raw words
        array = array.view(storage_dtype(name))
    elif name not in DTYPES:
        raise ValueError(
            f"Unsupported value of type {type(value).__name__} with dtype {name}. "
            f"Expected real numbers of one of the dtypes {list(DTYPES)}."
        )
    xp = backend.xp if backend.owns(array) else np
    return xp.asarray(array, order="C"), name  # (ascontiguousarray would make 0-d 1-d)


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
    if array.ndim == 0 and storage.ndim != 0:
        if backend.owns(array):
            backend.xp.copyto(storage, cast(backend, array, array_dtype, dtype, backend.device_of(array)))
        else:
            storage.fill(cast_on_host(array, array_dtype, dtype)[()])
        return
    if backend.owns(array):
        cast_into(backend, array, array_dtype, storage, dtype)
    else:
        host = array if array_dtype == dtype else cast_on_host(array, array_dtype, dtype)
        backend.copy_from_host(storage, host)


def as_operand(backend, array, array_dtype: str, dtype: str, device: str):
    """``array`` cast to ``dtype`` as an array of ``backend`` (for assign_add/sub)."""
    if not backend.owns(array):
        host = array if array_dtype == dtype else cast_on_host(array, array_dtype, dtype)
        return backend.from_host(host, device)
    if array_dtype == dtype:
        return array
    return cast(backend, array, array_dtype, dtype, device)
