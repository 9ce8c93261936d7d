"""Reading and writing a strided region of a variable's storage (the strided kernel)."""

from __future__ import annotations

import functools

from . import kernels
from .casting import destination_words, element_conversion, flat_view, region_plan, source_words
from .indexing import Region, broadcast_strides, c_strides
from .region_axes import contiguous_rows, region_arguments


def _axes(region_shape: tuple, *strides: tuple):
    """The kernel wants at least one axis: a 0-d region is one element of a 1-d one."""
    if region_shape:
        return (region_shape, *strides)
    return ((1,), *[(0,) for _ in strides])


def _narrow(a, b) -> int:
    """1 when both arrays have fewer than 2**31 elements: the region kernels then unravel
    region indices in 32-bit arithmetic."""
    return int(a.size < 2**31 and b.size < 2**31)


def write_region(backend, storage, dtype: str, region: Region, value, value_dtype: str) -> None:
    """``storage[region] = value`` in place: ``value`` is an array of ``backend`` in storage
    form with a shape that broadcasts to the region (checked by the caller). A value of
    another dtype is converted inside the strided kernel: no temporary is made."""
    if region.size:
        kernel, dst, words, axes, extra = _region_write(storage, dtype, region, value, value_dtype)
        backend.launch(kernel, region.size, dst=dst, src=words(value), dst_offset=region.offset, src_offset=0, **axes,
                       **extra)


def region_writer(backend, storage, dtype: str, region: Region, value, value_dtype: str):
    """``write(v)``: :func:`write_region` of ``storage[region] = v`` for values ``v`` of
    ``value``'s dtype, shape and layout (C-contiguous arrays of ``backend``), with the
    launch bound once (``Backend.bound_launch``): the region's axes, words and
    conversion are worked out here, not per call."""
    if region.size == 0:
        return _nothing
    kernel, dst, words, axes, extra = _region_write(storage, dtype, region, value, value_dtype)
    src = words(value)  # (the value flat, seen as the kernel's words: ``flat`` below does the same)
    args = dict(dst=dst, src=src, dst_offset=region.offset, src_offset=0, **axes, **extra)
    own_words = value.ndim == 1 and value.dtype == src.dtype
    return backend.bound_launch(kernel, region.size, args, "src", flat=not own_words)


def _region_write(storage, dtype: str, region: Region, value, value_dtype: str):
    """``(kernel, dst, words, axes, extra)`` of ``storage[region] = value``: ``dst`` is
    the storage as the kernel writes it, ``words(value)`` the ``src`` argument (the
    value as the kernel reads it), ``axes`` the region's axis scalars, ``extra`` the
    conversion's scalars. A conversion goes through the region form of its pair's cast
    kernel where there is one (``casting.region_plan``), else element by element by
    route (``copy_region_converting``)."""
    axes = region_arguments(region.shape, region.strides, broadcast_strides(value.shape, region.shape),
                            _narrow(storage, value))
    if value_dtype == dtype:
        rows = contiguous_rows(axes, storage.dtype.itemsize)
        return (kernels.strided.copy_rows if rows else kernels.strided.copy_region), destination_words(storage), \
            destination_words, axes, _NO_EXTRA
    kernel, src_view, dst_view, scalars = region_plan(value_dtype, dtype)
    if kernel is not None:
        return kernel, flat_view(storage, dst_view), functools.partial(flat_view, view=src_view), axes, scalars
    return (kernels.strided.copy_region_converting, destination_words(storage),
            functools.partial(source_words, dtype=value_dtype, dst_dtype=dtype), axes,
            {"conversion": element_conversion(value_dtype, dtype)})


_NO_EXTRA: dict = {}


def _nothing(value) -> None:
    return None


def read_region(backend, storage, region: Region):
    """A new C-contiguous array holding ``storage[region]`` (allocated as ``backend``'s
    repeated results are: see ``Backend.allocator``)."""
    out = backend.allocator(region.shape, storage.dtype, backend.device_of(storage))()
    if region.size:
        kernel, args = _region_read(storage, region, out)
        backend.launch(kernel, region.size, **args)
    return out


def region_reader(backend, storage, region: Region):
    """``read()``: :func:`read_region` of ``storage[region]`` (a new array per call), with
    the launch bound once (``Backend.bound_launch``): the region's axes and words are
    worked out here, not per call."""
    allocate = backend.allocator(region.shape, storage.dtype, backend.device_of(storage))
    if region.size == 0:
        return allocate
    kernel, args = _region_read(storage, region, allocate())
    run = backend.bound_launch(kernel, region.size, args, "dst", flat=True)

    def read():
        out = allocate()
        run(out)
        return out

    return read


def _region_read(storage, region: Region, out) -> tuple:
    """``(kernel, arguments)`` of the copy ``out[...] = storage[region]`` (``out``
    C-contiguous, of the region's shape and the storage's dtype)."""
    axes = region_arguments(region.shape, c_strides(region.shape), region.strides, _narrow(storage, out))
    copy = kernels.strided.copy_rows if contiguous_rows(axes, storage.dtype.itemsize) else kernels.strided.copy_region
    return copy, dict(dst=destination_words(out), src=destination_words(storage), dst_offset=0,
                      src_offset=region.offset, **axes)


def write_indexed(backend, storage, dtype: str, index, value, value_dtype: str) -> None:
    """``storage.flat[index] = value`` (``index`` from :func:`indexing.flat_indices`, on the
    host; ``value`` an array of ``backend`` in storage form, of any dtype (converted in
    the kernel), broadcasting to ``index.shape``). Where an index repeats, the last write
    wins on the CPU; on a GPU one of the writes wins, unspecified which."""
    if index.size == 0:
        return
    shape, src_strides = _axes(index.shape, broadcast_strides(value.shape, index.shape))
    axes = region_arguments(shape, src_strides, src_strides, _narrow(index, value))  # (dst: indexed in int64)
    device_index = backend.from_host(index.reshape(-1), backend.device_of(storage))
    backend.launch(kernels.strided.scatter_indexed, index.size, dst=destination_words(storage), index=device_index,
                   src=source_words(value, value_dtype, dtype), src_strides=axes["src_strides"], shape=axes["shape"],
                   magic=axes["magic"], shift=axes["shift"], narrow=axes["narrow"],
                   conversion=element_conversion(value_dtype, dtype))


def read_indexed(backend, storage, index):
    """A new array of ``index.shape`` holding ``storage.flat[index]``."""
    out = backend.empty(index.shape, storage.dtype, backend.device_of(storage))
    if index.size:
        device_index = backend.from_host(index.reshape(-1), backend.device_of(storage))
        backend.launch(kernels.strided.gather_indexed, index.size, dst=destination_words(out), index=device_index,
                       src=destination_words(storage))
    return out

