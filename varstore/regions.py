"""Reading and writing a strided region of a variable's storage (the strided kernel)."""

from __future__ import annotations

from .indexing import Region, broadcast_strides, c_strides


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
                   value.reshape(-1), 0, src_strides, shape)


def read_region(backend, storage, region: Region):
    """A new C-contiguous array holding ``storage[region]``."""
    out = backend.empty(region.shape, storage.dtype, backend.device_of(storage))
    if region.size == 0:
        return out
    from .kernels.strided import copy_region

    shape, dst_strides, src_strides = _axes(region.shape, c_strides(region.shape), region.strides)
    backend.launch(copy_region, region.size, out.reshape(-1), 0, dst_strides, storage.reshape(-1),
                   region.offset, src_strides, shape)
    return out
