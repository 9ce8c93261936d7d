"""Reading and writing a strided region of a variable's storage (the strided kernel)."""

from __future__ import annotations


from .casting import cast_into, cast_on_host
from .dtypes import storage_dtype
from .indexing import Region, broadcast_strides, c_strides

# A source of another dtype that fills the whole region is converted in pieces of at most
# this many elements, so no temporary the size of the region is made.
STAGING_ELEMENTS = 1 << 20


def _axes(region_shape: tuple, *strides: tuple):
    """The kernel wants at least one axis: a 0-d region is one element of a 1-d one."""
    if region_shape:
        return (region_shape, *strides)
    return ((1,), *[(0,) for _ in strides])


def write_region(backend, storage, region: Region, value) -> None:
    """``storage[region] = value`` in place: ``value`` is an array of ``backend`` with the
    storage's dtype and a shape that broadcasts to the region (checked by the caller)."""
    if region.size == 0:
        return
    from .kernels.strided import copy_region

    shape, dst_strides, src_strides = _axes(region.shape, region.strides, broadcast_strides(value.shape, region.shape))
    backend.launch(copy_region, region.size, storage.reshape(-1), region.offset, dst_strides,
                   value.reshape(-1), 0, src_strides, shape, 0, region.size)


def write_region_converting(backend, storage, dtype: str, region: Region, array, array_dtype: str, device: str) -> None:
    """``storage[region] = array`` for an ``array`` (storage form, on the host or the
    device) of another dtype and the region's full shape: converted STAGING_ELEMENTS at a
    time (whole rows) into a staging buffer that the strided kernel scatters from."""
    from .kernels.strided import copy_region

    shape, dst_strides = _axes(region.shape, region.strides)
    inner = shape[-1]
    step = max(inner, STAGING_ELEMENTS // inner * inner)
    staging = backend.empty((min(step, region.size),), storage_dtype(dtype), device)
    flat = array.reshape(-1)
    for start in range(0, region.size, step):
        count = min(step, region.size - start)
        piece, out = flat[start : start + count], staging[:count]
        if backend.owns(piece):
            cast_into(backend, piece, array_dtype, out, dtype)
        else:
            backend.copy_from_host(out, cast_on_host(piece, array_dtype, dtype))
        # Staging element k holds region element start + k: strides are the region's own
        # C strides, read from offset -start.
        backend.launch(copy_region, count, storage.reshape(-1), region.offset, dst_strides, staging, -start,
                       c_strides(shape), shape, start, count)


def read_region(backend, storage, region: Region):
    """A new C-contiguous array holding ``storage[region]``."""
    out = backend.empty(region.shape, storage.dtype, backend.device_of(storage))
    if region.size == 0:
        return out
    from .kernels.strided import copy_region

    shape, dst_strides, src_strides = _axes(region.shape, c_strides(region.shape), region.strides)
    backend.launch(copy_region, region.size, out.reshape(-1), 0, dst_strides, storage.reshape(-1),
                   region.offset, src_strides, shape, 0, region.size)
    return out


def write_indexed(backend, storage, index, value) -> None:
    """``storage.flat[index] = value`` (``index`` from :func:`indexing.flat_indices`, on the
    host; ``value`` an array of ``backend`` in the storage dtype, broadcasting to
    ``index.shape``). Where an index repeats, the last write wins on the CPU; on a GPU one
    of the writes wins, unspecified which."""
    if index.size == 0:
        return
    from .kernels.strided import scatter_indexed

    shape, src_strides = _axes(index.shape, broadcast_strides(value.shape, index.shape))
    device_index = backend.from_host(index.reshape(-1), backend.device_of(storage))
    backend.launch(scatter_indexed, index.size, storage.reshape(-1), device_index, value.reshape(-1), src_strides, shape)


def read_indexed(backend, storage, index):
    """A new array of ``index.shape`` holding ``storage.flat[index]``."""
    out = backend.empty(index.shape, storage.dtype, backend.device_of(storage))
    if index.size:
        from .kernels.strided import gather_indexed

        device_index = backend.from_host(index.reshape(-1), backend.device_of(storage))
        backend.launch(gather_indexed, index.size, out.reshape(-1), device_index, storage.reshape(-1))
    return out

