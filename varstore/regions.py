"""Reading and writing a strided region of a variable's storage (the strided kernel)."""

from __future__ import annotations

from .casting import destination_words, element_conversion, source_words
from .indexing import Region, broadcast_strides, c_strides


def _axes(region_shape: tuple, *strides: tuple):
    """The kernel wants at least one axis: a 0-d region is one element of a 1-d one."""
    if region_shape:
        return (region_shape, *strides)
    return ((1,), *[(0,) for _ in strides])


def _narrow(a, b) -> int:
    """1 when both arrays have fewer than 2**31 elements: a GPU then unravels region
    indices in 32-bit arithmetic."""
    return int(a.size < 2**31 and b.size < 2**31)


def write_region(backend, storage, dtype: str, region: Region, value, value_dtype: str) -> None:
    """``storage[region] = value`` in place: ``value`` is an array of ``backend`` in storage
    form with a shape that broadcasts to the region (checked by the caller). A value of
    another dtype is converted element by element inside the strided kernel: no
    temporary is made."""
    if region.size == 0:
        return
    from .kernels import strided as S

    shape, dst_strides, src_strides = _axes(region.shape, region.strides, broadcast_strides(value.shape, region.shape))
    narrow = _narrow(storage, value)
    if value_dtype == dtype:
        backend.launch(S.copy_region, region.size, dst=destination_words(storage), src=destination_words(value),
                       dst_offset=region.offset, dst_strides=dst_strides, src_offset=0, src_strides=src_strides,
                       shape=shape, narrow=narrow)
    else:
        backend.launch(S.copy_region_converting, region.size, dst=destination_words(storage),
                       src=source_words(value, value_dtype, dtype), dst_offset=region.offset, dst_strides=dst_strides,
                       src_offset=0, src_strides=src_strides, shape=shape, narrow=narrow,
                       conversion=element_conversion(value_dtype, dtype))


def read_region(backend, storage, region: Region):
    """A new C-contiguous array holding ``storage[region]``."""
    out = backend.empty(region.shape, storage.dtype, backend.device_of(storage))
    if region.size == 0:
        return out
    from .kernels.strided import copy_region

    shape, dst_strides, src_strides = _axes(region.shape, c_strides(region.shape), region.strides)
    backend.launch(copy_region, region.size, dst=destination_words(out), src=destination_words(storage), dst_offset=0,
                   dst_strides=dst_strides, src_offset=region.offset, src_strides=src_strides, shape=shape,
                   narrow=_narrow(storage, out))
    return out


def write_indexed(backend, storage, dtype: str, index, value, value_dtype: str) -> None:
    """``storage.flat[index] = value`` (``index`` from :func:`indexing.flat_indices`, on the
    host; ``value`` an array of ``backend`` in storage form, of any dtype (converted in
    the kernel), broadcasting to ``index.shape``). Where an index repeats, the last write
    wins on the CPU; on a GPU one of the writes wins, unspecified which."""
    if index.size == 0:
        return
    from .kernels.strided import scatter_indexed

    shape, src_strides = _axes(index.shape, broadcast_strides(value.shape, index.shape))
    device_index = backend.from_host(index.reshape(-1), backend.device_of(storage))
    backend.launch(scatter_indexed, index.size, dst=destination_words(storage), index=device_index,
                   src=source_words(value, value_dtype, dtype), src_strides=src_strides, shape=shape,
                   conversion=element_conversion(value_dtype, dtype))


def read_indexed(backend, storage, index):
    """A new array of ``index.shape`` holding ``storage.flat[index]``."""
    out = backend.empty(index.shape, storage.dtype, backend.device_of(storage))
    if index.size:
        from .kernels.strided import gather_indexed

        device_index = backend.from_host(index.reshape(-1), backend.device_of(storage))
        backend.launch(gather_indexed, index.size, dst=destination_words(out), index=device_index,
                       src=destination_words(storage))
    return out

