"""Loop templates: the source of a kernel's CPU loop and CUDA loop, generated from its
declaration (``kernels.declare``) and specialization.

Every loop runs over an index range ``start .. stop``. The CPU loop takes NumPy arrays
and indexes them; the CUDA loop takes each array as its raw device address (uint64) and
reads and writes words through ``kernels.access``; every other argument is a plain scalar
(tuples are passed field by field and rebuilt in the loop's prologue), so a launch is a
list of numbers. The CUDA loop calls a generated *step* function per index (one index's
loads, element call and stores), which the simulator runs as compiled CPU code; the
elementwise CUDA loop also has a wide path (``kernels.wide``), several indices per step.

Templates (the element function is ``f``; ``s...`` are the kernel's other scalars):

- elementwise: ``out[i] = f(in1[i * step1], ..., s...)``; an "inout" array is read and
  written; option ``index`` (a scalar name) passes ``index + i`` as f's first argument;
  an "out" array of ``width`` w takes f's w results at ``w * i .. w * i + w - 1``.
- region: ``dst[dst_offset + <j, dst_strides>] = f(src[src_offset + <j, src_strides>], s...)``
  for element j (C order) of a region of ``shape``, unravelled without a division (magic
  numbers; see ``_region_unravel``); the CPU loop walks whole rows. Option ``unroll``
  (for cheap element functions, copies): on the CPU, rows from a contiguous source take
  four elements at a time. Option ``stage`` (conversions): on the CPU, a row from a
  contiguous source into a strided destination is converted :data:`STAGE` elements at a
  time into a buffer, then stored. Option ``wide``: on CUDA, a region of one axis that
  both arrays walk with stride 1 takes the elementwise loop's wide path (``kernels.wide``);
  option ``rows``: on CUDA, a region of several axes whose last one every array walks
  with stride 1 goes by row segments, a warp per segment, its 16-byte groups wide. A
  kernel option ``cpu_loop_of`` names a kernel of the same arguments whose compiled CPU
  loop this one runs (the row kernels: no second compile of the same CPU loop).
- scatter: ``dst[index[j]] = f(src[<j, src_strides>], s...)``, in order on the CPU; ``j``
  unravelled as the region's (magic numbers).
- gather: ``dst[j] = f(src[index[j]], s...)``.
- chunks: multi-tensor: for chunk c (of tensor t = chunk_tensor[c]) and each staging
  element j of it, ``staging[j] = f(j, row..., types..., s...)`` ("out" staging) or
  ``f(j, staging[j], row..., types..., s...)`` ("in" staging), where ``row`` are the
  per-tensor table columns (option ``row``) at t and ``types`` a zero of each "type"
  array's word (the tensors' word types). A kernel whose first array is not named
  "staging" has none: ``f(j, row..., types..., s...)`` reaches every tensor through the
  row's addresses (the multi-tensor updates). Option ``fast = ((flag, g), ...)``: on the
  CPU, a chunk runs the first ``g`` whose scalar ``flag`` is nonzero instead of ``f``
  (chosen outside the element loop; a GPU keeps f: a branch uniform across threads costs
  little there).

Conversions reach f as their six fields, or with the kernel option ``tuples`` as one
tuple each (numba cannot inline a function of more than 30 parameters).
"""

from __future__ import annotations

from .source import ITEMSIZE, REGION_SCALARS, Source, element_scalars, grid_stride, hoisted, indent, loop_arrays
from .wide import (
    contiguous_region_loop,
    contiguous_region_steps,
    contiguous_rows_loop,
    is_wide,
    vector_loop,
    vector_step,
    vector_width,
)

FORMAT_FIELDS = 8
_PARAM_TYPES = {"u32": "uint32", "i64": "int64", "u64": "uint64", "f32": "float32", "f64": "float64"}


# ------------------------------------------------------------------ parameters
def scalar_params(scalar, axes: int) -> list[tuple[str, str]]:
    """``[(parameter, numba type name), ...]``: one scalar as the CUDA loop's flat parameters."""
    name, kind = scalar.name, scalar.kind
    if kind in _PARAM_TYPES:
        return [(name, _PARAM_TYPES[kind])]
    if kind == "format":
        return [(f"{name}_{k}", "uint32") for k in range(FORMAT_FIELDS)]
    if kind == "axes":
        return [(f"{name}_{k}", "int64") for k in range(axes)]
    return ([(f"{name}_route", "int64")] + [(f"{name}_sf{k}", "uint32") for k in range(FORMAT_FIELDS)]
            + [(f"{name}_df{k}", "uint32") for k in range(FORMAT_FIELDS)]
            + [(f"{name}_lo", "int64"), (f"{name}_hi", "int64"), (f"{name}_mask", "uint64")])


def _rebuild(scalar, axes: int) -> str | None:
    """The prologue line that rebuilds a tuple scalar from its flat parameters."""
    name, kind = scalar.name, scalar.kind
    if kind == "format":
        return f"{name} = ({', '.join(f'{name}_{k}' for k in range(FORMAT_FIELDS))},)"
    if kind == "axes":
        return f"{name} = ({', '.join(f'{name}_{k}' for k in range(axes))},)"
    if kind == "conversion":
        sf = ", ".join(f"{name}_sf{k}" for k in range(FORMAT_FIELDS))
        df = ", ".join(f"{name}_df{k}" for k in range(FORMAT_FIELDS))
        return f"{name} = ({name}_route, ({sf},), ({df},), {name}_lo, {name}_hi, {name}_mask)"
    return None


def cuda_params(kernel, spec) -> list[tuple[str, str]]:
    """The CUDA loop's parameters after start and stop, in order."""
    params = [(a.name, "uint64") for a in loop_arrays(kernel)]
    for s in kernel.scalars:
        params += scalar_params(s, spec.axes)
    return params


def _elementwise_body(src: Source, i: str, once: bool = False) -> list[str]:
    """One index's loads, call and stores; ``once``: the stepped arrays' steps are 0 and
    each one's element is in its local ``source.hoisted(array)``, read before the loop."""
    kernel = src.kernel
    index = kernel.options.get("index")
    used = {a.step for a in kernel.arrays if a.step} | ({index} if index else set())
    values = [f"{index} + {i}"] if index else []
    out = None
    for a in loop_arrays(kernel):
        if a.role in ("in", "inout") and a.step and once:
            values.append(hoisted(a))
        elif a.role in ("in", "inout"):
            at = f"{i} * {a.step}" if a.step else i
            values.append(src.load(a.name, at))
        if a.role in ("out", "inout"):
            out = a
    call = f"f({', '.join(values + element_scalars(kernel, used))})"
    if out.width == 1:
        return [src.store(out.name, i, call)]
    w = out.width
    lines = [f"_r = {call}"]
    lines += [src.store(out.name, f"{w} * {i} + {k}", f"_r[{k}]") for k in range(w)]
    return lines




def _region_unravel(j: str, axes: int, into: str = "_a, _b", strides: str = "dst_strides, src_strides") -> list[str]:
    """Lines setting ``_a, _b`` (or the names ``into``): the dst and src offsets (before
    ``dst_offset`` and ``src_offset``) of element ``j`` over the first ``axes`` axes of the
    region, without a division (``magic``/``shift``: the host's magic numbers, 32-bit
    ones when ``narrow``)."""
    args = f"{j}, shape, magic, shift, {strides}, {axes}"
    return ["if narrow != 0:", f"    {into} = region_offsets_narrow({args})",
            "else:", f"    {into} = region_offsets_wide({args})"]


def _has_source(kernel) -> bool:
    """Whether a region kernel reads a source array (a fill has none: f takes only its
    scalars)."""
    return "src" in kernel.array_names


def _region_step(src: Source, j: str) -> list[str]:
    if not _has_source(src.kernel):
        call = f"f({', '.join(element_scalars(src.kernel, REGION_SCALARS))})"
        return (_region_unravel(j, src.axes, into="_a, _", strides="dst_strides, dst_strides")
                + [src.store("dst", "dst_offset + _a", call)])
    extra = ", ".join(["_x"] + element_scalars(src.kernel, REGION_SCALARS))
    return _region_unravel(j, src.axes) + [
        "_x = " + src.load("src", "src_offset + _b"),
        src.store("dst", "dst_offset + _a", f"f({extra})"),
    ]


#: The CPU copy's four-at-a-time rows start by prefetching, for writing, this many
#: destination lines at the head of the next row; rows that span at most NEXT_ROW_BYTES
#: also prefetch the same place in the next row every eight elements.
NEXT_ROW_LINES = 16
NEXT_ROW_BYTES = 1 << 16
_LINE_BYTES = 64

#: The CPU loop of a region kernel with the option ``stage`` (the converting copies):
#: where the source is contiguous and the destination is not, a row converts up to this
#: many elements into a buffer (a plain loop, which LLVM vectorizes) and then stores
#: them with the destination's stride.
STAGE = 256


def _region_cpu_row(src: Source, last: int) -> list[str]:
    """The body of the CPU loop's row: ``_inner`` elements from ``_a`` (dst) and ``_b``
    (src), unsigned running indices stepping by ``_dst_step`` and ``_src_step`` (offsets
    inside a region are never negative; a negative step wraps modulo 2**64 to the same
    index). LLVM vectorizes the plain loop where both steps are 1 (it checks the steps
    at run time). With the kernel option ``unroll``, a row whose source is contiguous and
    whose destination is not takes four elements at a time, the four loads (consecutive
    addresses) before the four strided stores: the loop of ``v[::2, 1::3] = b`` on a
    (1024, 1024) float32 variable went from 112 to 81 µs (NumPy: 88 µs), warm cache.

    Those rows prefetch destination lines for writing. A strided store reads each line
    it touches, and the hardware prefetcher starts again at every row that begins a new
    page. Each row starts with the first :data:`NEXT_ROW_LINES` lines of the next row
    (none where the destination runs backwards); where a row spans at most
    :data:`NEXT_ROW_BYTES` (the lines then stay in cache until written), it also
    prefetches the same place in the next row every eight elements (the last row of a
    thread's range: its own lines, as the next row is another thread's). A head loop
    capped at the lines a row spans (a run-time trip count) made the loop 10-20% slower
    in cache. The loop used to prefetch every four elements (rows over 64 KiB: 64
    elements ahead), which cost 25-30% in cache and left it slower than NumPy out of
    cache at (512, 512).
    NumPy's time over the loop's (``bench/scripts/cpu_region_loop.py``, two runs, before
    the head lines stopped for rows that run backwards), out of cache / in cache
    ((4096, 4096) is 64 MiB: never in cache):

    ============  =====================  =====================
    shape         now                    every four
    ============  =====================  =====================
    (512, 512)    1.00 / 1.01-1.02       0.67-0.71 / 0.66-0.70
    (1024, 1024)  1.08-1.19 / 1.09-1.11  1.34-1.47 / 0.74-0.76
    (2048, 2048)  1.15-1.18 / 1.16-1.18  1.09-1.16 / 0.80-0.81
    (4096, 4096)  1.02-1.05 / 1.06-1.30  1.11-1.13 / 1.32-1.33
    (32, 65536)   1.35-1.39 / 1.15       1.05-1.23 / 0.72
    ============  =====================  =====================
    """
    scalars = element_scalars(src.kernel, REGION_SCALARS)
    if not _has_source(src.kernel):
        return ["for _i in range(_inner):", f"    dst[_a] = f({', '.join(scalars)})", "    _a += _dst_step"]
    call = lambda at: f"f({', '.join([f'src[{at}]'] + scalars)})"  # noqa: E731
    plain = ["for _i in range(_n):", f"    dst[_a] = {call('_b')}", "    _a += _dst_step", "    _b += _src_step"]
    if src.kernel.options.get("stage"):
        staged = [f"_m = min(_n, {STAGE})", "for _k in range(uint64(_m)):", f"    _stage[_k] = {call('_b + _k')}",
                  "for _k in range(uint64(_m)):", "    dst[_a] = _stage[_k]", "    _a += _dst_step",
                  "_b += uint64(_m)", "_n -= _m"]
        return ["_n = _inner", "if _src_step == 1 and _dst_step != 1:", "    while _n > 0:", *indent(staged, 2)] + plain
    if not src.kernel.options.get("unroll"):
        return ["_n = _inner"] + plain
    four = [f"_x{k} = {call(f'_b + uint64({k})' if k else '_b')}" for k in range(4)]
    four += [f"dst[_a + uint64({k}) * _dst_step] = _x{k}" if k else "dst[_a] = _x0" for k in range(4)]
    step = ["_a += uint64(4) * _dst_step", "_p += uint64(4) * _dst_step", "_b += uint64(4)", "_n -= 4"]
    line = _LINE_BYTES // ITEMSIZE[src.words["dst"]]
    head = [  # (the last row of a range prefetches its own lines: the next row is another thread's)
        "_p = _a",
        "if _r + 1 < _rows and _inner >= 4:",
        *indent(_region_unravel("_r + 1", last, into="_pa, _"), 1),
        "    _p = uint64(_pa + dst_offset)",
        "    if _forward:",
        f"        for _k in range({NEXT_ROW_LINES}):",
        f"            prefetch_for_write(dst, _p + uint64(_k * {line}))",
    ]
    every_eight = ["if _near and (_n & 4) == 0:", "    prefetch_for_write(dst, _p)"]
    return ["_n = _inner", "if _src_step == 1 and _dst_step != 1:", *indent(head, 1), "    while _n >= 4:",
            *indent(every_eight + four + step, 2)] + plain


def _region_cpu_loop(src: Source) -> list[str]:
    # Whole rows of the last axis (start and stop are multiples of its extent): one
    # unravel per row, then the row's stride loop.
    last = src.axes - 1
    span = f"uint64(_inner) * uint64(abs(dst_strides[{last}])) * uint64({ITEMSIZE[src.words['dst']]})"
    prefetch = [f"_near = {span} <= {NEXT_ROW_BYTES}", f"_forward = dst_strides[{last}] > 0"]
    fits = f"not region_fits(dst_offset, dst_strides, shape, {src.axes}, dst.size)"
    if not _has_source(src.kernel):  # (a fill: the destination's rows only)
        return [f"if {fits}:", "    raise IndexError('the region reaches outside its array')",
                f"_inner = shape[{last}]", f"_dst_step = uint64(dst_strides[{last}])",
                "for _r in range(start // _inner, stop // _inner):",
                *indent(_region_unravel("_r", last, into="_a, _", strides="dst_strides, dst_strides"), 1),
                "    _a = uint64(_a + dst_offset)", *indent(_region_cpu_row(src, last), 1)]
    return [
        # The CPU loops check their bounds once, up front (a GPU cannot raise: callers
        # compute regions inside their arrays, as indexing.py does).
        f"if {fits} or not region_fits(src_offset, src_strides, shape, {src.axes}, src.size):",
        "    raise IndexError('the region reaches outside its array')",
        f"_inner = shape[{last}]",
        f"_dst_step = uint64(dst_strides[{last}])",
        f"_src_step = uint64(src_strides[{last}])",
        *(prefetch if src.kernel.options.get("unroll") else []),
        *([f"_stage = np.empty({STAGE}, dst.dtype)"] if src.kernel.options.get("stage") else []),
        "_rows = stop // _inner",
        "for _r in range(start // _inner, _rows):",
        *indent(_region_unravel("_r", last), 1),
        "    _a = uint64(_a + dst_offset)",
        "    _b = uint64(_b + src_offset)",
        *indent(_region_cpu_row(src, last), 1),
    ]


_SCATTER_SCALARS = {"src_strides", "shape", "magic", "shift", "narrow"}


def _scatter_body(src: Source, j: str) -> list[str]:
    extra = ", ".join(["_x"] + element_scalars(src.kernel, _SCATTER_SCALARS))
    return [
        *_region_unravel(j, src.axes, into="_, _b", strides="src_strides, src_strides"),
        "_x = " + src.load("src", "uint64(_b)"),
        "_at = " + src.load("index", j),
        *_index_check(src, "dst"),
        src.store("dst", "uint64(_at)", f"f({extra})"),
    ]


def _gather_body(src: Source, j: str) -> list[str]:
    extra = ", ".join(["_x"] + element_scalars(src.kernel, set()))
    return ["_at = " + src.load("index", j)] + _index_check(src, "src") + [
        "_x = " + src.load("src", "uint64(_at)"), src.store("dst", j, f"f({extra})")]


def _index_check(src: Source, array: str) -> list[str]:
    """On the CPU, an index outside ``array`` raises (a GPU cannot raise)."""
    if src.cuda:
        return []
    return [f"if _at < 0 or _at >= {array}.size:", "    raise IndexError('an index reaches outside its array')"]


_TABLES = ("chunk_tensor", "chunk_first", "chunk_count")


def _staging(kernel):
    """The chunks kernel's staging array, or None for one that only reaches its tensors
    through the table's addresses (the element function loads and stores them)."""
    first = kernel.arrays[0]
    return first if first.name == "staging" else None


def _chunk_call(src: Source, fn: str, j: str) -> list[str]:
    kernel = src.kernel
    staging = _staging(kernel)
    row = list(kernel.options["row"])
    used = {flag for flag, _ in kernel.options.get("fast", ())}
    loaded = [src.load("staging", j)] if staging is not None and staging.role == "in" else []
    args = [j] + loaded + [f"_row_{c}" for c in row]
    args += [a.name for a in kernel.arrays if a.role == "type"]
    call = f"{fn}({', '.join(args + element_scalars(kernel, used))})"
    return [src.store("staging", j, call)] if staging is not None and staging.role == "out" else [call]


def _chunk_row(src: Source) -> list[str]:
    # The row in locals: stores through staging may alias the tables for all the
    # compiler knows, so it would reload them for every element.
    lines = ["_t = " + src.load("chunk_tensor", "_c"), "_first = " + src.load("chunk_first", "_c"),
             "_end = _first + " + src.load("chunk_count", "_c")]
    if not src.cuda:  # (a GPU cannot raise: the callers build the tables)
        outside = "_end > staging.size or " if _staging(src.kernel) is not None else ""
        lines += [f"if _first < 0 or {outside}_t < 0 or _t >= " + src.kernel.options["row"][0] + ".size:",
                  "    raise IndexError('a chunk reaches outside the staging buffer or the tensor table')"]
    lines += [f"_row_{c} = " + src.load(c, "_t") for c in src.kernel.options["row"]]
    return lines


def cpu_source(kernel, spec) -> str:
    """The CPU loop ``loop(start, stop, <arrays>, <scalars>)``."""
    src = Source(kernel, spec, "cpu")
    params = ", ".join(["start", "stop"] + [a.name for a in loop_arrays(kernel)] + list(kernel.scalar_names))
    body = src.type_values()
    if kernel.template == "elementwise":
        general = ["for _i in range(start, stop):"] + indent(_elementwise_body(src, "_i"), 1)
        stepped = [a for a in loop_arrays(kernel) if a.step]
        if stepped:  # all steps 0 (scalar operands): each read once, so that LLVM vectorizes the loop
            scalar = ["for _i in range(start, stop):"] + indent(_elementwise_body(src, "_i", once=True), 1)
            body += _when_steps_are_zero(src, stepped, scalar, general)
        else:
            body += general
    elif kernel.template == "region":
        body += _region_cpu_loop(src)
    elif kernel.template == "scatter":  # in order: where an index repeats, the last write wins
        body += [f"if not region_fits(0, src_strides, shape, {src.axes}, src.size):",
                 "    raise IndexError('the source region reaches outside its array')",
                 "for _j in range(start, stop):"] + indent(_scatter_body(src, "_j"), 1)
    elif kernel.template == "gather":
        body += ["for _j in range(start, stop):"] + indent(_gather_body(src, "_j"), 1)
    else:
        inner = []
        for k, (flag, _) in enumerate(kernel.options.get("fast", ())):
            inner += [f"{'elif' if k else 'if'} {flag} != 0:", "    for _j in range(_first, _end):"]
            inner += indent(_chunk_call(src, f"g{k}", "_j"), 2)
        general = ["for _j in range(_first, _end):"] + indent(_chunk_call(src, "f", "_j"), 1)
        inner = inner + ["else:"] + indent(general, 1) if inner else general
        body += ["for _c in range(start, stop):"] + indent(_chunk_row(src) + inner, 1)
    return f"def loop({params}):\n" + "\n".join(indent(body, 1)) + "\n"


def cuda_source(kernel, spec) -> str:
    """The CUDA step ``step(index, <arrays>, <scalars>)`` and grid-stride loop
    ``loop(start, stop, <flat parameters>)``."""
    src = Source(kernel, spec, "cuda")
    names = [a.name for a in loop_arrays(kernel)] + list(kernel.scalar_names)
    step_params = ", ".join(["_k"] + names)
    flat = ", ".join(["start", "stop"] + [p for p, _ in cuda_params(kernel, spec)])
    prologue = [line for line in (_rebuild(s, spec.axes) for s in kernel.scalars) if line]
    if kernel.template == "chunks":
        # A block takes whole chunks; its threads stride over the chunk's elements. The
        # row is read once per chunk, by a function of its own (the simulator runs the
        # loop in Python and only the element functions compiled).
        row = list(kernel.options["row"])
        tables = ", ".join(list(_TABLES) + row)
        row_values = ", ".join(["_first", "_end"] + [f"_row_{c}" for c in row])
        helper = (f"@element\ndef _row_of(_c, {tables}):\n"
                  + "\n".join(indent(_chunk_row(src) + [f"return {row_values}"], 1))
                  + "\n\n\n")
        step = src.type_values() + _chunk_call(src, "f", "_k")
        staged = ["staging"] if _staging(kernel) is not None else []
        step_params = ", ".join(["_k"] + staged + [f"_row_{c}" for c in row] + list(kernel.scalar_names))
        inner = grid_stride("_k", "_first + cuda.threadIdx.x", "_end", "cuda.blockDim.x", [f"step({step_params})"])
        loop = grid_stride("_c", "start + cuda.blockIdx.x", "stop", "cuda.gridDim.x",
                            [f"{row_values} = _row_of(_c, {tables})", *inner])
        return (helper + f"@element\ndef step({step_params}):\n" + "\n".join(indent(step, 1)) + "\n\n\n"
                f"def loop({flat}):\n" + "\n".join(indent(prologue + loop, 1)) + "\n")
    body = {"elementwise": _elementwise_body, "region": _region_step, "scatter": _scatter_body,
            "gather": _gather_body}[kernel.template]
    step = src.type_values() + body(src, "_k")
    functions = f"@element\ndef step({step_params}):\n" + "\n".join(indent(step, 1)) + "\n\n\n"
    general = grid_stride("_k", "start + cuda.grid(1)", "stop", "cuda.gridsize(1)", [f"step({step_params})"])
    stepped = [a for a in loop_arrays(kernel) if a.step] if kernel.template == "elementwise" else []
    # Where every step is 0, the steps below take each stepped array's element as an
    # argument, read once before the loop: ostep (one index) and vstep (the wide path).
    arguments = names + [hoisted(a) for a in stepped]  # (the hoisted elements last)
    once = ", ".join(["_k"] + arguments)
    scalar_step = "step"
    if stepped:
        scalar_step = "ostep"
        lines = src.type_values() + _elementwise_body(src, "_k", once=True)
        functions += f"@element\ndef ostep({once}):\n" + "\n".join(indent(lines, 1)) + "\n\n\n"
    if is_wide(kernel, spec) and kernel.template == "region":
        v = vector_width(kernel, spec)
        functions += contiguous_region_steps(src, v, once)
        loop = (contiguous_region_loop if spec.axes == 1 else contiguous_rows_loop)(src, v, names, general)
    elif is_wide(kernel, spec):
        v = vector_width(kernel, spec)
        functions += f"@element\ndef vstep({once}):\n" + "\n".join(indent(vector_step(src, v), 1)) + "\n\n\n"
        loop = vector_loop(src, v, arguments, scalar_step)
    else:
        loop = grid_stride("_k", "start + cuda.grid(1)", "stop", "cuda.gridsize(1)", [f"{scalar_step}({once})"])
    if stepped:
        loop = _when_steps_are_zero(src, stepped, loop, general)
    return functions + f"def loop({flat}):\n" + "\n".join(indent(prologue + loop, 1)) + "\n"


def _when_steps_are_zero(src: Source, stepped: list, zero_steps: list[str], general: list[str]) -> list[str]:
    """Loop lines: ``zero_steps`` (after the stepped arrays' elements are read into their
    hoisted locals) where the range is not empty and every step is 0, else ``general``."""
    zero = " and ".join(f"{a.step} == 0" for a in stepped)
    reads = [f"{hoisted(a)} = {src.load(a.name, '0')}" for a in stepped]
    return [f"if start < stop and {zero}:", *indent(reads + zero_steps, 1), "else:", *indent(general, 1)]
