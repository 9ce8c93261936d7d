"""A region's axes as the region kernels take them: merged where they can be, with the
magic numbers that unravel an element number without a division.

Pure arithmetic on shapes and strides (no arrays, no kernels): the strided writes and
reads (``varstore.regions``) and the cuda backend's region fills share it.
"""

from __future__ import annotations

import functools
import types


def merge_axes(shape: tuple, *strides: tuple) -> tuple:
    """``(shape, *strides)`` with the fewest axes that walk the same elements in the same
    order: axes of extent 1 are dropped, and adjacent axes ``i, i + 1`` merge into one
    of extent ``shape[i] * shape[i + 1]`` when, for every set of strides, ``stride[i] ==
    stride[i + 1] * shape[i + 1]`` (negative strides and broadcast 0 strides alike). A
    region of one element (0-d, or all extents 1) becomes one axis of extent 1, strides 0:
    the kernels want at least one axis. E.g. a whole (4096, 4096) array is one axis of
    16,777,216, stride 1."""
    merged = []  # [extent, stride per set], outermost first
    for extent, *steps in zip(shape, *strides, strict=True):
        if extent == 1:
            continue
        if merged and all(outer == inner * extent for outer, inner in zip(merged[-1][1:], steps, strict=True)):
            merged[-1] = [merged[-1][0] * extent, *steps]
        else:
            merged.append([extent, *steps])
    if not merged:
        return ((1,), *[(0,) for _ in strides])
    return tuple(tuple(column) for column in zip(*merged, strict=True))


def division_magic(d: int, bits: int) -> tuple[int, int]:
    """``(m, s)`` such that ``x // d == mulhi(2 * x, m) >> s`` for every ``0 <= x <
    2**(bits - 1)`` and ``1 <= d <= 2**(bits - 1)``, where ``mulhi(a, b) = (a * b) >>
    bits`` on ``bits``-bit words (``kernels.intrinsics.mulhi32``/``mulhi64``); ``m <
    2**bits`` and ``s < bits``.

    This is Granlund and Montgomery's division by invariant integers ("Division by
    invariant integers using multiplication", PLDI 1994, Theorem 4.2) with N = bits - 1:
    ``s = ceil(log2 d)`` and ``m = ceil(2**(N + s) / d)``. Then ``m * d = 2**(N + s) + e``
    with ``0 <= e < d <= 2**s``, so for ``x = q * d + r`` (``r < d``), ``x * m / 2**(N + s)
    = q + (r + x * e / 2**(N + s)) / d``, and ``x * e / 2**(N + s) < 2**N * 2**s / 2**(N +
    s) = 1``: the fraction stays below 1, and ``floor(x * m / 2**(N + s)) = q``. Doubling
    ``x`` makes the first shift a whole word, ``bits``, which the high half of the product
    gives for free; ``m <= 2**bits - 1`` (``2**N`` for powers of two, 1 included)."""
    s = (d - 1).bit_length()
    return -(-(1 << (bits - 1 + s)) // d), s


def _signed64(value: int) -> int:
    """A 64-bit word as the int64 it reads as (the kernels' "axes" scalars are int64)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def unravel_magic(shape: tuple, narrow: int) -> tuple[tuple, tuple]:
    """The region kernels' ``magic`` and ``shift`` scalars for ``shape``: per axis the
    :func:`division_magic` of its extent, 32-bit when ``narrow`` (every region index
    below 2**31), 64-bit otherwise; axis 0, never divided, gets zeros."""
    bits = 32 if narrow else 64
    pairs = [(0, 0)] + [division_magic(n, bits) for n in shape[1:]]
    return tuple(_signed64(m) for m, _ in pairs), tuple(s for _, s in pairs)


@functools.lru_cache(maxsize=4096)
def region_arguments(shape: tuple, dst_strides: tuple, src_strides: tuple, narrow: int):
    """The region kernels' axis scalars for a region of ``shape`` walked with ``dst_strides``
    and ``src_strides``: the axes merged (:func:`merge_axes`), their magic numbers
    (:func:`unravel_magic`) and ``narrow``. Read-only, remembered per region."""
    shape, dst_strides, src_strides = merge_axes(shape, dst_strides, src_strides)
    magic, shift = unravel_magic(shape, narrow)
    return types.MappingProxyType(dict(shape=shape, dst_strides=dst_strides, src_strides=src_strides, magic=magic,
                                       shift=shift, narrow=narrow))


@functools.lru_cache(maxsize=1024)
def fill_arguments(shape: tuple, strides: tuple, narrow: int):
    """The ``fill_region`` kernel's axis scalars for a region of ``shape`` walked with
    ``strides`` in its array: as :func:`region_arguments`, for one array. Read-only,
    remembered per region."""
    shape, strides = merge_axes(shape, strides)
    magic, shift = unravel_magic(shape, narrow)
    return types.MappingProxyType(dict(shape=shape, dst_strides=strides, magic=magic, shift=shift, narrow=narrow))


#: Rows shorter than this many bytes take the general region kernels: the row kernels
#: give each lane of a warp a 16-byte group (``kernels.wide.contiguous_rows_loop``),
#: and a shorter row would leave lanes idle.
MIN_ROW_BYTES = 512


def contiguous_rows(axes, itemsize: int) -> bool:
    """Whether a region's merged axes (:func:`region_arguments` or :func:`fill_arguments`)
    are rows that every array walks with stride 1, of at least :data:`MIN_ROW_BYTES`
    of ``itemsize``-byte words, over two or more axes: the row kernels' regions
    (``kernels.strided.copy_rows``, ``fill_rows``)."""
    shape = axes["shape"]
    return (len(shape) >= 2 and shape[-1] * itemsize >= MIN_ROW_BYTES and axes["dst_strides"][-1] == 1
            and axes.get("src_strides", (1,))[-1] == 1)
