"""Reading and writing words through raw addresses, for the generated CUDA loops and the
multi-tensor element functions (element functions, so that the simulator runs them as
compiled CPU code with its host addresses)."""

from __future__ import annotations

from numba import int64, uint64

from ._targets import element
from .intrinsics import load_at, store_at


@element
def load_word(address, index, like):
    """Element ``index`` of the array at byte ``address`` (of ``like``'s type)."""
    return load_at(uint64(address), int64(index), like)


@element
def store_word(address, index, value, like):
    """Write ``value`` as element ``index`` of the array at ``address`` (``like``'s type)."""
    store_at(uint64(address), int64(index), value, like)


@element
def vector_split(start, stop, v, arrays):
    """``(head, groups)`` of the wide path over indices ``start .. stop``: the first
    ``head`` indices take the scalar step, then ``groups`` groups of ``v`` indices the wide
    one, where every array is aligned; the rest the scalar step again.

    ``arrays`` holds ``(address, bytes per index, alignment)`` per array (powers of two).
    Where the arrays are not aligned at the same index, or the range holds no whole
    group, the head is the whole range.
    """
    n = int64(stop) - int64(start)
    address, size, align = arrays[0]
    mask = int64(align) - int64(1)
    gap = (int64(align) - (int64(address) + int64(start) * int64(size)) & mask) & mask
    head = gap // int64(size)
    if head * int64(size) != gap or n - head < int64(v):
        return n, int64(0)
    for address, size, align in arrays:
        if (int64(address) + (int64(start) + head) * int64(size)) & (int64(align) - int64(1)) != 0:
            return n, int64(0)
    return head, (n - head) // int64(v)
