"""Turning an index key into the region of storage it selects, on the host, without
touching storage.

A *basic* key (ints, slices with any start/stop/step, ``...``, ``None``) selects a strided
region of a C-contiguous array: an element offset, a shape and per-axis strides (in
elements, negative for reversed slices, 0 for the size-1 axes ``None`` adds). Strided
kernels write or read exactly that region. Anything else (integer arrays, boolean masks,
lists) is *advanced*: NumPy's rules, validated here, applied by the array module.
"""

from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Region:
    """``storage.reshape(-1)[offset + sum(i[d] * strides[d])]`` for ``i`` in ``ndindex(shape)``."""

    offset: int
    shape: tuple
    strides: tuple

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def c_strides(shape: tuple) -> tuple:
    """Element strides of a C-contiguous array of ``shape``."""
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def _is_basic_item(item) -> bool:
    if item is None or item is Ellipsis or isinstance(item, slice):
        return True
    if isinstance(item, (bool, np.bool_)):
        return False  # a boolean scalar is a mask, as in NumPy
    try:
        operator.index(item)
        return True
    except TypeError:
        return False


def basic_region(shape: tuple, key) -> Region | None:
    """The region a basic ``key`` selects in a C-contiguous array of ``shape``, or None when
    the key is advanced. Raises IndexError as NumPy does (out of range, too many indices)."""
    items = key if isinstance(key, tuple) else (key,)
    if not all(_is_basic_item(item) for item in items):
        return None
    if sum(item is Ellipsis for item in items) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    consumed = sum(item is not None and item is not Ellipsis for item in items)
    if consumed > len(shape):
        raise IndexError(
            f"too many indices for array: array is {len(shape)}-dimensional, but {consumed} were indexed"
        )
    if Ellipsis not in items:
        items = items + (Ellipsis,)
    expanded = []
    for item in items:
        if item is Ellipsis:
            expanded.extend([slice(None)] * (len(shape) - consumed))
        else:
            expanded.append(item)
    base = c_strides(shape)
    offset, out_shape, out_strides, axis = 0, [], [], 0
    for item in expanded:
        if item is None:
            out_shape.append(1)
            out_strides.append(0)
            continue
        n, stride = shape[axis], base[axis]
        if isinstance(item, slice):
            start, stop, step = item.indices(n)
            length = len(range(start, stop, step))
            offset += start * stride if length else 0
            out_shape.append(length)
            out_strides.append(step * stride)
        else:
            index = operator.index(item)
            if not -n <= index < n:
                raise IndexError(f"index {index} is out of bounds for axis {axis} with size {n}")
            offset += (index + n if index < 0 else index) * stride
        axis += 1
    return Region(offset, tuple(out_shape), tuple(out_strides))


_REGIONS: dict = {}  # (shape, key signature) -> Region
_REGIONS_MAX = 4096  # distinct keys kept; the cache is emptied when full
#: (shape, key, region) of the last lookup of a cacheable key: the same key object again
#: (a constant key in a loop; ``v[1, 2]``, a tuple of ints, is one constant) skips its
#: signature and the table.
_LAST_REGION: tuple = (None, None, None)


def key_signature(key):
    """A hashable stand-in for a basic ``key`` whose items are exactly ints, slices of
    ints/None, ``...`` and ``None`` (slices are not hashable before Python 3.12), or None
    for any other key. Exact types only: ``True`` and ``1.0`` equal ``1`` but index
    differently (a mask; an IndexError)."""
    items = key if type(key) is tuple else (key,)
    signature = []
    for item in items:
        kind = type(item)
        if kind is int or item is None or item is Ellipsis:
            signature.append(item)
        elif kind is slice:
            start, stop, step = item.start, item.stop, item.step
            if (
                (start is None or type(start) is int)
                and (stop is None or type(stop) is int)
                and (step is None or type(step) is int)
            ):
                signature.append((start, stop, step))
            else:
                return None
        else:
            return None
    return tuple(signature)


_BASIC_ITEMS = frozenset({int, slice, type(None), type(Ellipsis)})


def is_basic_key(key) -> bool:
    """Whether ``key`` is an int, a slice, ``...`` or ``None``, or a tuple of them (exact
    types, as :func:`key_signature`: ``True`` is a mask). A slice's bounds are not looked
    at: what NumPy and CuPy refuse there, :func:`basic_region` refuses too."""
    if type(key) is tuple:
        for item in key:
            if type(item) not in _BASIC_ITEMS:
                return False
        return True
    return type(key) in _BASIC_ITEMS


def has_ellipsis(key) -> bool:
    """Whether ``key`` is ``...`` or a tuple holding it (NumPy then returns a 0-d array
    for one element, not a scalar)."""
    return key is Ellipsis or (type(key) is tuple and any(item is Ellipsis for item in key))


def cached_basic_region(shape: tuple, key) -> Region | None:
    """:func:`basic_region`, remembered for hashable keys (ints, slices, ``...``, ``None``
    and tuples of those) per shape: a key parsed once is a dict lookup afterwards. Errors
    are never cached (each call raises as :func:`basic_region` does)."""
    global _LAST_REGION
    last_shape, last_key, last_region = _LAST_REGION
    if key is last_key and shape == last_shape:  # (a key with a signature is immutable)
        return last_region
    signature = key_signature(key)
    if signature is None:
        return basic_region(shape, key)
    cache_key = (shape, signature)
    region = _REGIONS.get(cache_key)
    if region is None:
        region = basic_region(shape, key)
        if len(_REGIONS) >= _REGIONS_MAX:
            _REGIONS.clear()
        _REGIONS[cache_key] = region
    _LAST_REGION = (shape, key, region)
    return region


def selection_shape(shape: tuple, key) -> tuple:
    """The shape ``array[key]`` has, for any key, checked as NumPy checks it (IndexError),
    on a zero-size stand-in: nothing the size of the array is allocated."""
    return np.broadcast_to(np.empty((), np.bool_), shape)[key].shape


def broadcast_strides(value_shape: tuple, region_shape: tuple) -> tuple:
    """Element strides that read a C-contiguous value of ``value_shape`` broadcast to
    ``region_shape`` (0 on broadcast axes); leading size-1 axes beyond the region's are
    dropped, as NumPy's setitem does. Raises ValueError naming both shapes.

    Remembered per pair of shapes (NumPy's shape machinery costs about 5 µs a call, paid
    twice by every slice-assign); a refused pair raises each time."""
    if not value_shape:  # a scalar: the common case
        return (0,) * len(region_shape)
    return _broadcast_strides(tuple(value_shape), tuple(region_shape))


@functools.lru_cache(maxsize=1024)
def _broadcast_strides(value_shape: tuple, region_shape: tuple) -> tuple:
    if value_shape == region_shape:
        return c_strides(value_shape)
    given, lead_ones = tuple(value_shape), 0
    while len(given) - lead_ones > len(region_shape) and given[lead_ones] == 1:
        lead_ones += 1  # as NumPy's setitem: size-1 axes before the region's own are dropped
    value_shape = given[lead_ones:]
    try:
        if np.broadcast_shapes(value_shape, region_shape) != tuple(region_shape):
            raise ValueError
    except ValueError:
        raise ValueError(
            f"A value of shape {given} cannot be broadcast to the selected region "
            f"of shape {tuple(region_shape)}."
        ) from None
    own = c_strides(value_shape)
    lead = len(region_shape) - len(value_shape)
    return tuple(
        0 if d < lead or value_shape[d - lead] == 1 else own[d - lead] for d in range(len(region_shape))
    )


def host_key(backend, key):
    """``key`` with any arrays of ``backend`` in it as host arrays (keys are parsed there)."""
    if isinstance(key, tuple):
        return tuple(backend.host_view(k) if backend.owns(k) else k for k in key)
    return backend.host_view(key) if backend.owns(key) else key


def flat_indices(shape: tuple, key) -> np.ndarray:
    """The flat (C-order) storage index of every element ``array[key]`` selects, in the
    selection's order and shape, for any key (integer arrays, boolean masks, mixes).

    Built from one broadcast ``arange`` view per axis, indexed with the key: NumPy applies
    its own rules (and raises its IndexError), and nothing the size of the array is made,
    only arrays the size of the selection.
    """
    out = None
    for axis, stride in enumerate(c_strides(shape)):
        along = np.arange(shape[axis], dtype=np.int64).reshape([-1 if d == axis else 1 for d in range(len(shape))])
        part = np.broadcast_to(along, shape)[key] * stride
        out = part if out is None else out + part
    if out is None:  # a 0-d array: the only element, once per selected copy
        return np.zeros(np.broadcast_to(np.empty((), np.bool_), shape)[key].shape, np.int64)
    return np.ascontiguousarray(out)

