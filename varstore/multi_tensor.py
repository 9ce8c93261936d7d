"""The host side of the multi-tensor update kernels (``varstore.kernels.updates``): word
types, conversions and the per-tensor tables of one launch over a group of tensors.

A group is tensors of one variable dtype and one value (or gradient) dtype; its table
has one row per tensor (its first index in the launch's flat index space and the byte
address of each of its arrays) and the chunks that cut the tensors into pieces of at
most ``kernels.multi_tensor.CHUNK`` elements. Tables are uploaded as one array (one
transfer on a GPU).
"""

from __future__ import annotations

import functools

import numpy as np

from . import kernels
from .array_protocols import ArrayProtocols
from .backends.base import is_device_array
from .casting import destination_words, element_conversion, source_words
from .dtypes import is_float, standardize_dtype, storage_dtype
from .errors import ArgumentTypeError
from .variable import live_storage


def compute_dtype(dtype: str) -> str:
    """The dtype an update of a ``dtype`` variable computes in: float64 for float64,
    float32 for every other float (float16, bfloat16 and float8 included)."""
    return "float64" if dtype == "float64" else "float32"


@functools.cache
def source_word(dtype: str, to: str) -> np.dtype:
    """The word type a kernel reads a ``dtype`` element as, converting it to ``to``."""
    return source_words(np.empty(0, storage_dtype(dtype)), dtype, to).dtype


@functools.cache
def destination_word(dtype: str) -> np.dtype:
    """The word type a kernel stores a ``dtype`` element as."""
    return destination_words(np.empty(1, storage_dtype(dtype))).dtype


@functools.cache
def conversions(value_dtype: str, dtype: str) -> dict:
    """The kernels' three conversions for ``dtype`` variables and ``value_dtype`` values:
    value -> variable words (``to_variable``, as ``assign_add`` converts its operand),
    variable words -> compute bits (``to_compute``) and back (``from_compute``)."""
    compute = compute_dtype(dtype)
    return {"to_variable": element_conversion(value_dtype, dtype), "to_compute": element_conversion(dtype, compute),
            "from_compute": element_conversion(compute, dtype)}


_FLOAT_NAMES: dict = {}  # type(dtype) -> float dtype name, or None


def float_name(dtype) -> str | None:
    """The float dtype name of an array dtype in native byte order, or None (a
    byte-swapped dtype too: the kernels read native words). Looked up by the dtype's
    class: a dtype's ``name`` takes microseconds."""
    if not dtype.isnative:
        return None
    kind = type(dtype)
    if kind in _FLOAT_NAMES:
        return _FLOAT_NAMES[kind]
    try:
        name = standardize_dtype(dtype)
    except (TypeError, ValueError):
        name = None
    name = name if name is not None and is_float(name) else None
    if dtype.kind != "V" or name is not None:  # (structured dtypes share one class)
        _FLOAT_NAMES[kind] = name
    return name


def sequence(items, name: str, what: str) -> list:
    """``items`` (a list, tuple or other iterable, not an array or a string) as a list."""
    if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__") or hasattr(items, "shape"):
        raise ArgumentTypeError(f"{what}: `{name}` must be a list or tuple; received {type(items).__name__}.")
    return list(items)


def check_variables(variables, what: str) -> list:
    """``variables`` as a list of live float variables of one store and device, each
    given once; else the error naming the first that is not."""
    variables = sequence(variables, "variables", what)
    seen = set()
    for i, v in enumerate(variables):
        if not isinstance(v, ArrayProtocols):
            raise ArgumentTypeError(f"{what}: variables[{i}] is {type(v).__name__}; expected a varstore Variable.")
        live_storage(v)  # raises, naming it, for a released variable
        if not is_float(v.stored.dtype):
            raise ValueError(f"{what}: variable {v.path!r} is {v.stored.dtype}; expected float variables.")
        if id(v) in seen:
            raise ValueError(f"{what}: variable {v.path!r} is given twice; give each variable once.")
        seen.add(id(v))
    if variables:
        first = variables[0]
        for v in variables[1:]:
            if v.store is not first.store or v.device != first.device:
                raise ValueError(
                    f"{what}: variables of one store and device are updated together; {first.path!r} is on "
                    f"{first.device} in {first.store!r}, {v.path!r} on {v.device} in {v.store!r}.")
    return variables


class Tables:
    """Uploads a launch's tables as one array, and keeps the one-element arrays that tell
    the kernels a word type."""

    def __init__(self, backend, device):
        self.backend = backend
        self.device = device
        self._likes: dict = {}

    def like(self, dtype) -> object:
        dtype = np.dtype(dtype)
        array = self._likes.get(dtype)
        if array is None:
            array = self._likes[dtype] = self.backend.empty((1,), dtype, self.device)
        return array

    def upload(self, columns: list) -> list:
        """``columns`` (int64 values each) as arrays of the backend, in one transfer."""
        host = np.concatenate([np.asarray(c, np.int64) for c in columns])
        array = self.backend.from_host(host, self.device)
        out, start = [], 0
        for c in columns:
            out.append(array[start:start + len(c)])
            start += len(c)
        return out

    def chunked(self, sizes, columns: dict) -> dict:
        """The kernel arguments of a launch over tensors of ``sizes`` elements:
        ``chunk_tensor``, ``chunk_first``, ``chunk_count``, ``tensor_start`` and each of
        ``columns`` (name -> one value per tensor: addresses as uint64, scales as
        float64, anything else as int64), as arrays of the backend."""
        counts = np.asarray(sizes, np.int64)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64) if counts.size else counts
        tensor, first, count = kernels.multi_tensor.chunks(counts)
        names = ["chunk_tensor", "chunk_first", "chunk_count", "tensor_start", *columns]
        host = [tensor, first, count, starts] + [_int64_words(values) for values in columns.values()]
        lengths = [len(c) for c in host]
        array = self.backend.from_host(np.concatenate(host) if host else np.empty(0, np.int64), self.device)
        out, at = {}, 0
        for name, length, values in zip(names, lengths, [None] * 4 + list(columns.values()), strict=True):
            part = array[at:at + length]
            at += length
            kind = np.asarray(values).dtype if values is not None else np.dtype(np.int64)
            out[name] = part.view(kind) if kind in (np.dtype(np.uint64), np.dtype(np.float64)) else part
        return out


def _int64_words(values) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype in (np.dtype(np.uint64), np.dtype(np.float64)):
        return values.view(np.int64)
    return values.astype(np.int64)


def checked_gradient(value, variable, backend, device, i: int) -> tuple:
    """``(array, dtype)``: gradient ``i`` of an optimizer step (an array, host or device,
    or a variable) checked against ``variable`` (its shape; floats; the device) and made a
    contiguous float array on the variable's device."""
    protocols = isinstance(value, ArrayProtocols)
    if not (protocols or backend.owns(value) or isinstance(value, np.ndarray) or is_device_array(value)):
        value = np.asarray(value)
    if not protocols and getattr(value.dtype, "kind", None) in ("U", "S", "O"):  # (text, objects; torch: no kind)
        raise ArgumentTypeError(f"gradient {i} (for {variable.path!r}) holds {value.dtype} elements; expected "
                                f"floats.")
    if tuple(value.shape) != variable.shape:
        raise ValueError(f"gradient {i} has shape {tuple(value.shape)}; expected {variable.shape}, the shape of "
                         f"{variable.path!r}.")
    if protocols:
        storage, dtype, value_backend, value_device = value.stored
        if storage is None:
            live_storage(value)
        if value_backend is not backend or value_device != device:
            raise ValueError(f"gradient {i} (variable {value.path!r}) is on {value_device}; expected {device}.")
        if not is_float(dtype):
            raise ArgumentTypeError(f"gradient {i} (variable {value.path!r}) is {dtype}; expected floats.")
        return storage, dtype
    array = value if backend.owns(value) and backend.device_of(value) == device else backend.asarray(value, device)
    if not array.dtype.isnative:  # (the kernels read native words)
        array = array.astype(array.dtype.newbyteorder("="))
    dtype = float_name(array.dtype)
    if dtype is None:
        raise ArgumentTypeError(f"gradient {i} (for {variable.path!r}) holds {array.dtype} elements; expected floats.")
    if not backend.owns(array):  # (host data for a GPU store: the kernels read device memory)
        array = backend.from_host(np.asarray(array, order="C"), device)
    if not (array.flags.c_contiguous and backend.aligned(array)):
        array = backend.copy(array)
    return array, dtype


def copy_aliased_gradients(operands, grads, written, backend) -> list:
    """``operands`` (``((array, dtype), variable)`` for each of ``grads``) with each
    gradient given as a variable that the step writes (in ``written()``: its variables
    and their slots) other than its own variable replaced by a copy: the kernel would
    read it while other blocks (or, on the CPU, earlier chunks) write it."""
    if not any(isinstance(g, ArrayProtocols) for g in grads):
        return operands
    ids = {id(w) for w in written()}
    return [((backend.copy(a), d), v) if id(g) in ids and g is not v else ((a, d), v)
            for ((a, d), v), g in zip(operands, grads, strict=True)]
