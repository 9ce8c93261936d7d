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
