"""The wide path of the CUDA elementwise loop: each thread takes ``v`` consecutive
indices, and each array moves up to 16 bytes per load or store
(``intrinsics.load_vector``/``store_vector``), between a scalar head and tail
(``access.vector_split``) where the ends are not aligned.

An array read with a step (a broadcast operand) takes part only where its step is 0: it
is then read once, before the loop (``source.hoisted``), and the others go wide.

Region kernels with the option ``wide`` have the same path for a region of one axis
(after ``varstore.region_axes.merge_axes``) that both arrays walk with stride 1: ``v[a:b] =
x``, ``v[0, :] = row``, a read of a range of rows. Those with the option ``rows``
(``strided.copy_rows``, ``strided.fill_rows``, which the host picks for such regions) have
it for regions of several axes whose last one every array walks with stride 1
(``v[:, 8:520] = b``), row by row, a warp per row: kept apart from the general region
kernels, whose strided loops need few registers. The CUDA loops check the strides at
run time.
"""

from __future__ import annotations

from .source import ITEMSIZE, REGION_SCALARS, Source, element_scalars, grid_stride, hoisted, indent, loop_arrays

#: The CUDA elementwise loop moves up to this many bytes per load or store (one
#: ``ld.global.v4.u32``), and at most this many accesses per array and thread.
VECTOR_BYTES = 16
MAX_VECTOR_ACCESSES = 8


def vector_width(kernel, spec) -> int:
    """Loop indices per thread on the CUDA elementwise loop's wide path (1: no wide path).

    Enough indices that the narrowest array moves :data:`VECTOR_BYTES` per access, but no
    array more than :data:`MAX_VECTOR_ACCESSES` accesses. Stepped arrays count for
    nothing: the wide path runs where their steps are 0, and reads each once.
    A kernel with a width of 1 still takes the wide path where an array has several
    words per index (the random fills: four words per Philox group, one 16-byte store).
    A region kernel has one (for its contiguous regions) where it has the option ``wide``
    and ``spec`` one axis.
    """
    if kernel.template != "elementwise" and not has_wide_rows(kernel, spec):
        return 1
    src = Source(kernel, spec, "cuda")
    sizes = [src.index_bytes(a) for a in loop_arrays(kernel) if not a.step]
    if any(size & (size - 1) for size in sizes):  # (the alignment arithmetic needs powers of two)
        raise ValueError(f"Kernel {kernel.name!r}: bytes per index {sizes} must be powers of two.")
    width = max(1, VECTOR_BYTES // min(sizes))
    while width > 1 and max(sizes) * width > VECTOR_BYTES * MAX_VECTOR_ACCESSES:
        width //= 2
    return width


def has_wide_rows(kernel, spec) -> bool:
    """Whether ``kernel`` is a region kernel whose CUDA loop for ``spec`` has a wide path:
    option ``wide`` for one axis (a contiguous region), option ``rows`` for several (rows
    whose last axis is contiguous)."""
    if kernel.template != "region":
        return False
    return bool(kernel.options.get("wide")) if spec.axes == 1 else bool(kernel.options.get("rows"))


def is_wide(kernel, spec) -> bool:
    """Whether the CUDA elementwise (or region: :func:`has_wide_rows`) loop has a wide
    path: some array moves more than one word per thread and index group."""
    if kernel.template != "elementwise" and not has_wide_rows(kernel, spec):
        return False
    v = vector_width(kernel, spec)
    return any(v * a.width > 1 for a in loop_arrays(kernel) if not a.step)


def vector_pieces(src: Source, array, v: int) -> list[tuple[int, int]]:
    """``[(first word, words), ...]``: the vector accesses of ``array`` for ``v`` indices."""
    words = v * array.width
    per_access = min(words, VECTOR_BYTES // ITEMSIZE[src.words[array.name]])
    return [(first, per_access) for first in range(0, words, per_access)]


def vector_step(src: Source, v: int, consumed: frozenset = frozenset(), offset: str = "") -> list[str]:
    """The body of the wide step ``vstep``: indices ``_k .. _k + v - 1``, each array
    loaded and stored by vectors (the loop checked their alignment); a stepped array's
    element is the hoisted local the step takes. ``consumed``: scalars the template
    uses itself, not passed to the element function (a region's axes and offsets);
    ``offset``: each array's index starts at the scalar named ``offset`` with the
    array's name in place of ``{}`` (a region's ``dst_offset``, ``src_offset``)."""
    kernel = src.kernel
    index = kernel.options.get("index")
    used = {a.step for a in kernel.arrays if a.step} | ({index} if index else set()) | set(consumed)
    lines = []
    loaded = {}
    for a in loop_arrays(kernel):
        if a.step:
            loaded[a.name] = [hoisted(a)] * v
            continue
        lines.append(f"_z_{a.name} = {src.words[a.name]}(0)")
        if a.role in ("in", "inout"):
            names = []
            for first, count in vector_pieces(src, a, v):
                part = [f"_{a.name}{first + c}" for c in range(count)]
                like = ", ".join([f"_z_{a.name}"] * count)
                at = f"{offset.format(a.name)} + " if offset else ""
                lines.append(f"{', '.join(part)}, = load_vector({a.name}, int64({at}{a.width} * _k + {first}), "
                             f"({like},))")
                names += part
            loaded[a.name] = names
    out = next(a for a in loop_arrays(kernel) if a.role in ("out", "inout"))
    results = []
    for e in range(v):
        values = [f"{index} + _k + {e}"] if index else []
        values += [loaded[a.name][e] for a in loop_arrays(kernel) if a.role in ("in", "inout")]
        call = f"called_f({', '.join(values + element_scalars(kernel, used))})"
        if out.width == 1:
            results.append(call)
        else:
            lines.append(f"_r{e} = {call}")
            results += [f"_r{e}[{k}]" for k in range(out.width)]
    at = f"{offset.format(out.name)} + " if offset else ""
    for first, count in vector_pieces(src, out, v):
        like = ", ".join([f"_z_{out.name}"] * count)
        lines.append(f"store_vector({out.name}, int64({at}{out.width} * _k + {first}), "
                     f"({', '.join(results[first:first + count])},), ({like},))")
    return lines


def split_checks(src: Source, v: int, prefix: str = "") -> str:
    """``vector_split``'s ``arrays`` argument: ``(address, bytes per index, alignment)``
    per array that goes wide, the address in the local ``prefix + name``. The head is the
    first index at which the first array is aligned: the one of the largest alignment in
    elements (the narrowest) comes first, so that arrays of different widths at the same
    element offset find a common index (a byte array and a float32 one from element 3:
    index 13)."""
    arrays = sorted((a for a in loop_arrays(src.kernel) if not a.step),
                    key=lambda a: -min(VECTOR_BYTES, v * src.index_bytes(a)) // src.index_bytes(a))
    return ", ".join(f"({prefix}{a.name}, {src.index_bytes(a)}, {min(VECTOR_BYTES, v * src.index_bytes(a))})"
                     for a in arrays)


def vector_loop(src: Source, v: int, names: list[str], scalar_step: str, prefix: str = "") -> list[str]:
    """The grid-stride loops of the wide path: a scalar head up to the first index where
    every array is aligned, whole groups of ``v`` indices (``vstep``), a scalar tail
    (``scalar_step``). Where the arrays are not aligned alike (or the range is short),
    every index takes the scalar step. ``names``: the steps' arguments after the index;
    the alignment is checked on each array's address in the local ``prefix + name``."""
    checks = split_checks(src, v, prefix)
    call = ", ".join(names)
    return [
        f"_head, _groups = vector_split(start, stop, {v}, ({checks},))",
        "_first = start + _head",
        *grid_stride("_q", "cuda.grid(1)", "_groups", "cuda.gridsize(1)", [f"vstep(_first + _q * {v}, {call})"]),
        f"_tail = _first + _groups * {v}",
        *grid_stride("_t", "cuda.grid(1)", "_head + (stop - _tail)", "cuda.gridsize(1)",
                     ["_k = start + _t if _t < _head else _tail + (_t - _head)", f"{scalar_step}(_k, {call})"]),
    ]


# ------------------------------------------------------------------ region kernels
def contiguous_region_steps(src: Source, v: int, params: str) -> str:
    """The steps of a region kernel's wide path (option ``wide``, one axis): ``rstep``
    (one index) and ``vstep`` (``v`` indices) of the region as two flat ranges from
    ``dst_offset`` and ``src_offset``. (An address computed from a parameter by integer
    arithmetic would lose NVVM's knowledge that it is global memory: ``ld.v4``, not
    ``ld.global.v4``; the offsets go into the index instead.)"""
    if "src" in src.kernel.array_names:  # (a fill has none)
        extra = ", ".join(["_x"] + element_scalars(src.kernel, REGION_SCALARS))
        one = src.type_values() + ["_x = " + src.load("src", "src_offset + _k"),
                                   src.store("dst", "dst_offset + _k", f"f({extra})")]
    else:
        one = [src.store("dst", "dst_offset + _k", f"f({', '.join(element_scalars(src.kernel, REGION_SCALARS))})")]
    wide = vector_step(src, v, frozenset(REGION_SCALARS), offset="{}_offset")
    return "".join(f"@element\ndef {name}({params}):\n" + "\n".join(indent(body, 1)) + "\n\n\n"
                   for name, body in (("rstep", one), ("vstep", wide)))


def contiguous_region_loop(src: Source, v: int, names: list[str], general: list[str]) -> list[str]:
    """The region loop of a kernel with the wide path: where both arrays walk the region
    (one axis) with stride 1, the elementwise wide path from the arrays' offsets (a head
    and tail by ``rstep``, groups of ``v`` by ``vstep``; the split checks the alignment
    of the addresses at the offsets); else ``general``."""
    sizes = {a.name: src.index_bytes(a) for a in loop_arrays(src.kernel)}
    return [f"if {' and '.join(f'{a}_strides_0 == 1' for a in sizes)}:",
            *[f"    _{a} = uint64(uint64({a}) + uint64({a}_offset) * uint64({size}))" for a, size in sizes.items()],
            *indent(vector_loop(src, v, names, "rstep", prefix="_"), 1),
            "else:", *indent(general, 1)]


#: Lanes per row segment in the CUDA loop of regions with contiguous rows: a warp (the
#: launch's blocks are whole warps: 256 threads, the simulator's 32); and the 16-byte
#: groups each lane takes per segment.
ROW_LANES = 32
ROW_GROUPS = 4


def contiguous_rows_loop(src: Source, v: int, names: list[str], general: list[str]) -> list[str]:
    """The region loop (two or more axes) of a kernel with the option ``rows``: where every
    array walks the last axis with stride 1, the arrays have fewer than 2**31 elements
    (``narrow``: a row's offsets in 32-bit arithmetic), each row has a group per lane
    (shorter ones would leave lanes idle) and the launch covers the whole region, the
    rows are cut into segments of ``ROW_LANES * ROW_GROUPS`` groups (a power of two per
    row: empty ones end at once), and each warp takes whole segments: the row's offsets
    unravelled over the other axes (magic numbers), ``vector_split`` on the row's
    addresses, its lanes the segment's 16-byte groups, the first segment also the row's
    scalar head and tail; where the arrays are aligned differently in a row, the
    segment's elements one by one. A few long rows keep every warp busy as many short
    ones do. Else ``general``. No division: a warp is ``grid >> 5``, a segment's row
    ``unit >> log2(segments per row)``."""
    last = src.axes - 1
    sizes = {a.name: src.index_bytes(a) for a in loop_arrays(src.kernel)}
    rows = " * ".join(f"shape_{d}" for d in range(last))
    into = "_a, _b" if "src" in sizes else "_a, _"
    strides = "dst_strides, src_strides" if "src" in sizes else "dst_strides, dst_strides"
    at = {"dst_offset": "_rd", "src_offset": "_rs"}
    call = ", ".join(at.get(name, name) for name in names)
    groups = ROW_LANES * ROW_GROUPS  # (per segment)
    per_unit = [
        "_r = _u >> _seg",
        "_s = _u & _mask",
        f"{into} = region_offsets_narrow(_r, shape, magic, shift, {strides}, {last})",
        "_rd = dst_offset + _a",
        *(["_rs = src_offset + _b"] if "src" in sizes else []),
        *[f"_{a} = uint64(uint64({a}) + uint64({at[a + '_offset']}) * uint64({size}))" for a, size in sizes.items()],
        f"_head, _groups = vector_split(0, _L, {v}, ({split_checks(src, v, '_')},))",
        "if _groups > 0:",
        f"    _q = _s * {groups} + _lane",
        f"    _q_stop = min(_s * {groups} + {groups}, _groups)",
        "    while _q < _q_stop:", f"        vstep(_head + _q * {v}, {call})", f"        _q += {ROW_LANES}",
        "    if _s == 0:",
        f"        _tail = _head + _groups * {v}",
        "        _t = _lane", "        while _t < _head + (_L - _tail):",
        "            _k = _t if _t < _head else _tail + (_t - _head)",
        f"            rstep(_k, {call})", f"            _t += {ROW_LANES}",
        "else:",
        f"    _k = _s * {groups * v} + _lane",
        f"    _k_stop = min(_s * {groups * v} + {groups * v}, _L)",
        "    while _k < _k_stop:", f"        rstep(_k, {call})", f"        _k += {ROW_LANES}",
        "_u += _warps",
    ]
    unit = " and ".join(f"{a}_strides_{last} == 1" for a in sizes)
    shift = ROW_LANES.bit_length() - 1
    return [f"_L = shape_{last}", f"_rows = {rows}",
            f"if narrow != 0 and {unit} and _L >= {ROW_LANES * v} and start == 0 and stop == _rows * _L:",
            f"    _u = int64(cuda.grid(1)) >> {shift}",
            f"    _lane = int64(cuda.threadIdx.x) & {ROW_LANES - 1}",
            f"    _warps = int64(cuda.gridsize(1)) >> {shift}",
            "    _seg = int64(0)",
            f"    while int64({groups * v}) << _seg < _L:",
            "        _seg += 1",
            "    _mask = (int64(1) << _seg) - 1",
            "    _units = _rows << _seg",
            "    while _u < _units:", *indent(per_unit, 2),
            "else:", *indent(general, 1)]
