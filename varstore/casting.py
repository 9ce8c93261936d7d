"""Converting storage arrays between dtypes, on any backend: one table for whole-array
casts and for the conversions the strided and indexed kernels do as they copy.

Every dtype falls in one conversion class (:func:`conversion_class`): bool, int (every
integer but uint64), uint64, f32, f64, small (float16, bfloat16, float8: a format of
the dtype registry). :data:`CONVERSIONS` maps (source class, destination class) to

- the whole-array kernel (``kernels.cast``), or "native" where the array module's own
  cast is ours too (as NumPy: integers wrap, ints to floats round to nearest);
- the route of ``kernels.cast.convert_word``, the same conversion for one element.

What each kernel gives: float -> int truncates toward zero, NaN -> 0, and saturates at
the integer's range (NumPy leaves that undefined); float32 <-> float64 keep a NaN's sign
and payload as a CPU does (a GPU's own conversion drops them); into a small float,
rounding is to nearest even, once (float64 and integers are not rounded through
float32 first); small floats decode exactly; small -> bool is ``magnitude != 0``.
"""

from __future__ import annotations

import functools

import numpy as np

from . import backends, kernels
from .dtypes import WORD_DTYPES, record, storage_dtype

CLASSES = ("bool", "int", "uint64", "f32", "f64", "small")
_NUMBERS = ("bool", "int", "uint64")  # read as values by the kernels (NUM routes)

# (kernel, how it reads the source, how it writes the destination): "words" are the
# unsigned words of the array's width (float32 as its bits), "values" the array as it is.
_ENCODE_F32 = ("encode_f32", "words", "words")
_ENCODE_F64 = ("encode_f64", "values", "words")  # (int64 and uint64 sources: encode_int64, see _plan)
_CONVERT = ("convert", "words", "words")
_NATIVE = ("native", None, None)


def _table() -> dict:
    table = {}
    for src in CLASSES:
        number = src in _NUMBERS
        table[src, "small"] = ((("transcode", "words", "words"), "SMALL_TO_SMALL") if src == "small" else
                               (_ENCODE_F32, "F32_TO_SMALL") if src == "f32" else
                               (_ENCODE_F64, "NUM_TO_SMALL" if src == "f64" else "INT_TO_SMALL"))
        table[src, "f32"] = ((("decode", "words", "words"), "SMALL_TO_F32") if src == "small" else
                             (("narrow_f64", "values", "words"), "F64_TO_F32") if src == "f64" else
                             (_NATIVE, "NUM_TO_F32"))
        table[src, "f64"] = ((("decode_f64", "words", "values"), "SMALL_TO_F64") if src == "small" else
                             (("widen_f32", "words", "values"), "F32_TO_F64") if src == "f32" else
                             (_NATIVE, "NUM_TO_F64"))
        for dst, route in (("int", "INT"), ("uint64", "UINT64")):
            kernel = ("float_to_int", "values", "values") if dst == "int" else ("float_to_uint64", "values", "values")
            table[src, dst] = ((_NATIVE, "NUM_TO_INT") if number else
                               (_CONVERT, f"SMALL_TO_{route}") if src == "small" else
                               (kernel, f"{src.upper()}_TO_{route}"))
        table[src, "bool"] = ((_CONVERT, "SMALL_TO_BOOL") if src == "small" else
                              (_NATIVE, "F32_TO_BOOL") if src == "f32" else (_NATIVE, "NUM_TO_BOOL"))
    table["f32", "f32"] = table["f64", "f64"] = (_NATIVE, "SAME")  # one dtype each: a copy
    return table


#: (source class, destination class) -> ((kernel, source view, destination view), route).
#: A pair of the same dtype is a plain copy (route SAME) whatever its class says.
CONVERSIONS = _table()


@functools.cache
def conversion_class(dtype: str) -> str:
    r = record(dtype)
    if r.format is not None:
        return "small"
    if r.kind == "float":
        return "f32" if r.bits == 32 else "f64"
    if r.kind == "bool":
        return "bool"
    return "uint64" if dtype == "uint64" else "int"


def _route(src_dtype: str, dst_dtype: str) -> str:
    if src_dtype == dst_dtype:
        return "SAME"
    return CONVERSIONS[conversion_class(src_dtype), conversion_class(dst_dtype)][1]


_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_UNSIGNED_DTYPES = {size: np.dtype(t) for size, t in _UNSIGNED.items()}


def source_words(array, dtype: str, dst_dtype: str):
    """``array`` flat, as :func:`element_conversion`'s route to ``dst_dtype`` reads it:
    the destination's words for the same dtype, else float32 as its uint32 bits, float16
    as uint16 words and anything else as it is."""
    if dtype == dst_dtype:
        return destination_words(array)
    flat = array.reshape(-1)
    if dtype == "float32":
        return flat.view(np.uint32)
    return flat.view(np.uint16) if dtype == "float16" else flat


def destination_words(array):
    """``array`` flat, as the unsigned words of its width: what converting kernels store,
    and what copies move (numba has no float16 arrays). The array itself where it is
    that already (storage of uint words: a fifth of the time of making the views)."""
    flat = array if array.ndim == 1 else array.reshape(-1)
    word = _UNSIGNED_DTYPES[flat.dtype.itemsize]
    return flat if flat.dtype is word else flat.view(word)


def _any_format():
    return record("bfloat16").format.kernel_args


def _format_of(dtype: str) -> tuple:
    """The kernels' format argument of ``dtype`` (any format for a dtype that has none),
    as plain ints: the CPU launch unboxes them faster than NumPy scalars."""
    r = record(dtype)
    return tuple(int(v) for v in (r.format.kernel_args if r.format is not None else _any_format()))


@functools.cache
def element_conversion(src_dtype: str, dst_dtype: str) -> tuple:
    """``(route, src_fmt, dst_fmt, lo, hi, mask)``: the ``conversion`` argument of a
    converting kernel (``kernels.cast.convert_word``) that converts ``src_dtype``
    elements, read through :func:`source_words`, into ``dst_dtype`` words
    (:func:`destination_words`)."""
    K = kernels.cast
    lo, hi = record(dst_dtype).bounds or (0, 0)
    if dst_dtype == "uint64":
        lo, hi = 0, 0  # (uint64 has a route of its own; its bounds do not fit an int64)
    mask = np.uint64((1 << (8 * storage_dtype(dst_dtype).itemsize)) - 1)
    return (getattr(K, _route(src_dtype, dst_dtype)), _format_of(src_dtype), _format_of(dst_dtype), lo, hi, mask)


def needs_kernel(src_dtype: str, dst_dtype: str) -> bool:
    """False where the array module's own cast is ours too (see :data:`CONVERSIONS`)."""
    if src_dtype == dst_dtype:
        return False
    return CONVERSIONS[conversion_class(src_dtype), conversion_class(dst_dtype)][0][0] != "native"


def _word_view(dtype: str, how: str):
    """The dtype a kernel reads (or writes) an array of ``dtype`` as: None for "values"
    (the array as it is), else the unsigned words of its width (float32 as its bits)."""
    return None if how == "values" else np.dtype(_UNSIGNED[storage_dtype(dtype).itemsize])


@functools.cache
def _plan(src_dtype: str, dst_dtype: str) -> tuple:
    """``(kernel, or None for the array module's cast; source view; destination view;
    scalar arguments)`` of the whole-array cast from ``src_dtype`` to ``dst_dtype``."""
    (name, src_how, dst_how), _ = CONVERSIONS[conversion_class(src_dtype), conversion_class(dst_dtype)]
    if name == "encode_f64" and src_dtype in ("int64", "uint64"):
        name = "encode_int64"  # (float64 would round these past 2**53: rounded twice)
    if name == "native":
        return None, None, None, {}
    K = kernels.cast

    scalars = {}
    if name in ("encode_f32", "encode_f64", "encode_int64"):
        scalars = {"fmt": _format_of(dst_dtype)}
    elif name in ("decode", "decode_f64"):
        scalars = {"fmt": _format_of(src_dtype)}
    elif name == "transcode":
        scalars = {"src_fmt": _format_of(src_dtype), "dst_fmt": _format_of(dst_dtype)}
    elif name == "float_to_int":
        lo, hi = record(dst_dtype).bounds
        scalars = {"lo": lo, "hi": hi}
    elif name == "convert":
        scalars = {"conversion": element_conversion(src_dtype, dst_dtype)}
    return (getattr(K, name), _word_view(src_dtype, src_how), _word_view(dst_dtype, dst_how),
            scalars)


def region_plan(src_dtype: str, dst_dtype: str) -> tuple:
    """``(kernel, source view, destination view, scalar arguments)`` of a strided write
    converting ``src_dtype`` elements into ``dst_dtype`` storage: the region form of the
    pair's whole-array cast kernel (``kernels.strided.REGION_CASTS``), reading and
    writing the views :func:`flat_view` makes; kernel None where the pair has no such
    kernel (the array module's own cast, or ``convert``): ``copy_region_converting``
    with :func:`element_conversion` then does it."""
    kernel, src_view, dst_view, scalars = _plan(src_dtype, dst_dtype)
    region = None if kernel is None else kernels.strided.REGION_CASTS.get(kernel.name)
    return region, src_view, dst_view, scalars


def flat_view(array, view):
    """``array`` flat, seen as ``view`` (a dtype of the same width; None: as it is)."""
    flat = array if array.ndim == 1 else array.reshape(-1)
    return flat if view is None or flat.dtype == view else flat.view(view)


def cast_into(backend, src, src_dtype: str, dst, dst_dtype: str) -> None:
    """Write ``src`` converted to ``dst_dtype`` into ``dst``, in place.

    Both are C-contiguous storage arrays of ``backend`` with the same number of elements.
    """
    if src_dtype == dst_dtype:
        backend.copyto(dst, src.reshape(dst.shape))
        return
    kernel, src_view, dst_view, scalars = _plan(src_dtype, dst_dtype)
    if kernel is None:
        with backend.on_device(backend.device_of(dst)):
            backend.xp.copyto(dst, src.reshape(dst.shape), casting="unsafe")
        return
    flat_src = src.ravel()  # (views: storage arrays are C-contiguous)
    flat_dst = dst.ravel()
    if src_view is not None and flat_src.dtype != src_view:
        flat_src = flat_src.view(src_view)
    if dst_view is not None and flat_dst.dtype != dst_view:
        flat_dst = flat_dst.view(dst_view)
    backend.launch(kernel, flat_dst.size, src=flat_src, dst=flat_dst, **scalars)


def cast(backend, src, src_dtype: str, dst_dtype: str, device: str):
    """A new storage array holding ``src`` converted to ``dst_dtype``."""
    out = backend.empty(src.shape, storage_dtype(dst_dtype), device)
    cast_into(backend, src, src_dtype, out, dst_dtype)
    return out


def prepared_cast(backend, src, src_dtype: str, dst_dtype: str, device: str):
    """A function of no arguments returning a new array (as ``backend.present`` shows
    it) holding ``src``, as it is at the call, converted to ``dst_dtype``.

    What :func:`cast` works out per call (the plan, the views, the argument checks) is
    done once, here: a call allocates the output and launches. ``src`` must stay the
    storage array it is (same object, same shape), as a variable's storage does.
    """
    kernel, src_view, dst_view, scalars = _plan(src_dtype, dst_dtype)
    shape, n = src.shape, src.size
    storage = storage_dtype(dst_dtype)
    if src_dtype == dst_dtype or kernel is None or n == 0:
        # (the same dtype is a copy, bits kept: the plan's kernel is for other dtypes)
        allocate = backend.allocator(shape, storage, device)
        present = backend.presenter(dst_dtype)

        def convert():
            out = allocate()
            cast_into(backend, src, src_dtype, out, dst_dtype)
            return present(out)

        return convert
    flat_src = src.reshape(-1)
    if src_view is not None and flat_src.dtype != src_view:
        flat_src = flat_src.view(src_view)
    allocate = backend.allocator((n,), storage, device)
    word = storage if dst_view is None else np.dtype(dst_view)  # the kernel's view of the output
    sample = allocate()
    run = backend.bound_launch(kernel, n, {"src": flat_src, "dst": sample if word == storage else sample.view(word),
                                           **scalars}, "dst")
    present = backend.presenter(dst_dtype)
    if word == storage and len(shape) == 1:
        def convert():
            out = allocate()
            run(out)
            return present(out)
    elif word == storage:
        def convert():
            out = allocate()
            run(out)
            return present(out.reshape(shape))
    else:  # (the kernel writes the output's words through a view: float16/float32 bits, ints, bools)
        def convert():
            out = allocate()
            run(out.view(word))
            return present(out.reshape(shape))

    return convert


def readable(backend, storage, dtype: str):
    """``storage`` as real numbers to compute with: as ``backend.present`` shows it where
    the array module computes with ``dtype``, else a float32 copy (bfloat16 and float8
    on CuPy)."""
    if dtype in WORD_DTYPES and not backend.computes_small_floats:
        return cast(backend, storage, dtype, "float32", backend.device_of(storage))
    return backend.present(storage, dtype)


def cast_on_host(host, src_dtype: str, dst_dtype: str) -> np.ndarray:
    """A host array (storage form) holding the host array ``host`` converted, computed
    with the CPU kernels whatever the default backend is."""
    return cast(backends.get("numpy"), np.asarray(host, order="C"), src_dtype, dst_dtype, "cpu")


def cast_scalar_on_host(scalar, src_dtype: str, dst_dtype: str) -> np.ndarray:
    """:func:`cast_on_host` of a 0-d host array, remembered by its bits and dtypes: a
    training loop writes the same few scalars again and again, and each cast is a launch
    of the CPU loop (2-5 µs). The result is shared: callers read it, or copy it."""
    key = (scalar.tobytes(), src_dtype, dst_dtype)  # (bits: -0.0 and 0.0 differ, each NaN payload too)
    hit = _scalar_casts.get(key)
    if hit is None:
        hit = cast_on_host(scalar, src_dtype, dst_dtype)
        if len(_scalar_casts) >= _MAX_SCALAR_CASTS:
            _scalar_casts.clear()
        _scalar_casts[key] = hit
    return hit


_scalar_casts: dict = {}  # (bytes, source dtype, destination dtype) -> the 0-d result
_MAX_SCALAR_CASTS = 1024


def accumulate_into(backend, dst, src, dtype: str, sign: int) -> None:
    """``dst += sign * src`` in place; ``src`` has ``dst``'s dtype and its shape or one element.

    Small floats are computed in float32 and rounded once, by our kernel; other dtypes
    use the array module's in-place add/subtract (integers wrap, as NumPy's). The kernel's
    launch is bound once per key, and a bound call does not check the arrays again: so
    both are checked here to be C-contiguous (storage, and operands from
    ``values.as_storage_array``) and of one word size.
    """
    if record(dtype).format is not None:
        n = dst.size
        if src.size != n and src.size != 1:
            raise ValueError(f"accumulate_into: the operand has {src.size} elements; expected {n} (the "
                             f"destination's) or 1.")
        if not (dst.flags.c_contiguous and src.flags.c_contiguous):
            raise ValueError(f"accumulate_into: the destination and the operand must be C-contiguous; their "
                             f"strides are {dst.strides} and {src.strides}.")
        if src.dtype.itemsize != dst.dtype.itemsize:
            raise TypeError(f"accumulate_into: the operand's words ({src.dtype}) are not the destination's "
                            f"({dst.dtype}); cast it to {dtype!r} first.")
        dst_words, src_words = destination_words(dst), destination_words(src)
        key = (backend, backend.device_of(dst), dtype, n, sign, src.size)  # (a bound launch keeps to its device)
        run = _accumulates.get(key)
        if run is None:
            run = _prepared_accumulate(backend, dtype, n, sign, dst_words, src_words)
            if len(_accumulates) >= _MAX_PREPARED_ACCUMULATES:
                _accumulates.clear()
            _accumulates[key] = run
        run(dst_words, src_words)
        return
    backend.add_into(dst, src.reshape(()) if src.size == 1 and dst.size != 1 else src.reshape(dst.shape), sign)


# (backend, device, dtype, elements, sign, operand elements) -> run(dst words, src words): the
# launch of accumulate_into bound once (its checks and argument binding took 4 µs of a
# 9 µs `v.assign_add(x)` on 2,048 bfloat16 elements). Bounded: cleared when full.
_accumulates: dict = {}
_MAX_PREPARED_ACCUMULATES = 1024


def _prepared_accumulate(backend, dtype: str, n: int, sign: int, dst_words, src_words):
    """``run(dst_words, src_words)``: ``dst += sign * src`` for ``n`` words of ``dtype``,
    the operand of ``n`` words (``cast.accumulate``, wide on a GPU) or one
    (``cast.accumulate_broadcast``, step 0); checked here on these samples."""
    fmt = record(dtype).format.kernel_args
    if src_words.size == n:
        args = {"dst": dst_words, "src": src_words, "sign": sign, "fmt": fmt}
        return backend.bound_launch(kernels.cast.accumulate, n, args, ("dst", "src"))
    args = {"dst": dst_words, "src": src_words, "src_step": 0, "sign": sign, "fmt": fmt}
    return backend.bound_launch(kernels.cast.accumulate_broadcast, n, args, ("dst", "src"))
