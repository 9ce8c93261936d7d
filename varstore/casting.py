"""Converting storage arrays between dtypes, on any backend.

Which kernel does a conversion (written once here, run by every backend):

=======================  ==================================================
source -> destination    how
=======================  ==================================================
same dtype               copy
int/bool/float -> int    float sources: ``float_to_int`` (saturating, NaN -> 0);
                         others: the array module's own cast (as NumPy)
float32 <-> float64      ``widen_f32`` / ``narrow_f64`` (NaNs keep sign and payload
                         as on a CPU; a GPU's own conversion drops them)
int/bool -> float        the array module's own cast
float32 -> small float   ``encode_f32``
other -> small float     ``encode_f64`` (float64, ints, bool: rounded once)
small -> small float     ``transcode`` (exactly through float32)
small -> float32/64      ``decode`` / ``decode_f64`` (exact)
small -> int             ``decode`` to a float32 temporary, then ``float_to_int``
small -> bool            ``word & magnitude_mask != 0`` (NaN is True, -0 False)
=======================  ==================================================

"small float" is float16, bfloat16 or a float8 format.

The strided and indexed kernels convert one element at a time, with the same results
(:func:`element_conversion` picks the route of ``kernels.cast.convert_word``).
"""

from __future__ import annotations

import functools

import numpy as np

from .dtypes import SMALL_FLOAT_DTYPES, is_float, is_integer, storage_dtype

_INT_BOUNDS = {
    name: (int(np.iinfo(name).min), int(np.iinfo(name).max))
    for name in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32")
}


def _words(array, dtype: str):
    """The 1-D raw-word view the kernels take for a small-float storage array."""
    flat = array.reshape(-1)
    return flat.view(np.uint16) if dtype == "float16" else flat


_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


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
    and what copies move (numba has no float16 arrays)."""
    return array.reshape(-1).view(_UNSIGNED[array.dtype.itemsize])


def _kind(dtype: str) -> str:
    if dtype in SMALL_FLOAT_DTYPES:
        return "SMALL"
    return {"float32": "F32", "float64": "F64"}.get(dtype, "NUM")


@functools.cache
def element_conversion(src_dtype: str, dst_dtype: str) -> tuple:
    """``(route, src_fmt, dst_fmt, lo, hi, mask)``: the trailing arguments of a converting kernel
    (``kernels.cast.convert_word``) that converts ``src_dtype`` elements, read through
    :func:`source_words`, into ``dst_dtype`` words (:func:`destination_words`)."""
    from .kernels import cast as K

    src, dst = _kind(src_dtype), _kind(dst_dtype)
    if src_dtype == dst_dtype:
        route = "SAME"
    elif dst == "SMALL":
        route = "SMALL_TO_SMALL" if src == "SMALL" else ("F32_TO_SMALL" if src == "F32" else "NUM_TO_SMALL")
    elif dst_dtype in ("float32", "float64"):
        name = "F32" if dst_dtype == "float32" else "F64"
        route = f"{'NUM' if src == 'NUM' else src}_TO_{name}"
    elif dst_dtype == "bool":
        route = {"SMALL": "SMALL_TO_BOOL", "F32": "F32_TO_BOOL"}.get(src, "NUM_TO_BOOL")
    elif src == "NUM":
        route = "NUM_TO_INT"
    else:
        route = f"{src}_TO_{'UINT64' if dst_dtype == 'uint64' else 'INT'}"
    lo, hi = _INT_BOUNDS.get(dst_dtype, (0, 0))
    any_format = K.FORMATS["bfloat16"]
    mask = np.uint64((1 << (8 * np.dtype(storage_dtype(dst_dtype)).itemsize)) - 1)
    return (getattr(K, route), K.FORMATS.get(src_dtype, any_format), K.FORMATS.get(dst_dtype, any_format), lo, hi, mask)


def needs_kernel(src_dtype: str, dst_dtype: str) -> bool:
    """False where the array module's own cast is ours too (see the table above)."""
    if src_dtype == dst_dtype:
        return False
    if src_dtype in SMALL_FLOAT_DTYPES or dst_dtype in SMALL_FLOAT_DTYPES:
        return True
    if {src_dtype, dst_dtype} == {"float32", "float64"}:
        return True
    return is_float(src_dtype) and is_integer(dst_dtype)


def cast_into(backend, src, src_dtype: str, dst, dst_dtype: str) -> None:
    """Write ``src`` converted to ``dst_dtype`` into ``dst``, in place.

    Both are C-contiguous storage arrays of ``backend`` with the same number of elements.
    """
    xp = backend.xp
    n = dst.size
    if src_dtype == dst_dtype:
        xp.copyto(dst, src.reshape(dst.shape))
        return
    src_small = src_dtype in SMALL_FLOAT_DTYPES
    dst_small = dst_dtype in SMALL_FLOAT_DTYPES
    if not needs_kernel(src_dtype, dst_dtype):
        xp.copyto(dst, src.reshape(dst.shape), casting="unsafe")
        return
    from .kernels import cast as K

    if src_dtype == "float32" and dst_dtype == "float64":
        backend.launch(K.widen_f32, n, src.reshape(-1).view(np.uint32), dst.reshape(-1))
        return
    if src_dtype == "float64" and dst_dtype == "float32":
        backend.launch(K.narrow_f64, n, src.reshape(-1), dst.reshape(-1).view(np.uint32))
        return
    if not src_small and not dst_small:
        _float_to_int(backend, src.reshape(-1), dst.reshape(-1), dst_dtype)
        return

    if dst_small:
        fmt = K.FORMATS[dst_dtype]
        out = _words(dst, dst_dtype)
        if src_small:
            backend.launch(K.transcode, n, _words(src, src_dtype), out, K.FORMATS[src_dtype], fmt)
        elif src_dtype == "float32":
            backend.launch(K.encode_f32, n, src.reshape(-1).view(np.uint32), out, fmt)
        else:
            backend.launch(K.encode_f64, n, src.reshape(-1), out, fmt)
        return

    fmt = K.FORMATS[src_dtype]
    words = _words(src, src_dtype)
    if dst_dtype == "float32":
        backend.launch(K.decode, n, words, dst.reshape(-1).view(np.uint32), fmt)
    elif dst_dtype == "float64":
        backend.launch(K.decode_f64, n, words, dst.reshape(-1), fmt)
    elif dst_dtype == "bool":
        magnitude_mask = (1 << int(fmt[0] + fmt[1])) - 1
        xp.not_equal(words & words.dtype.type(magnitude_mask), 0, out=dst.reshape(-1))
    else:
        staging = backend.empty((n,), np.dtype(np.float32), backend.device_of(dst))
        backend.launch(K.decode, n, words, staging.view(np.uint32), fmt)
        _float_to_int(backend, staging, dst.reshape(-1), dst_dtype)


def _float_to_int(backend, src, dst, dst_dtype: str) -> None:
    from .kernels import cast as K

    if dst_dtype == "uint64":
        backend.launch(K.float_to_uint64, dst.size, src, dst)
    else:
        lo, hi = _INT_BOUNDS[dst_dtype]
        backend.launch(K.float_to_int, dst.size, src, dst, lo, hi)


def cast(backend, src, src_dtype: str, dst_dtype: str, device: str):
    """A new storage array holding ``src`` converted to ``dst_dtype``."""
    out = backend.empty(src.shape, storage_dtype(dst_dtype), device)
    cast_into(backend, src, src_dtype, out, dst_dtype)
    return out


def cast_on_host(host, src_dtype: str, dst_dtype: str) -> np.ndarray:
    """A host array (storage form) holding the host array ``host`` converted, computed
    with the CPU kernels whatever the default backend is."""
    from . import backends

    return cast(backends.get("numpy"), np.asarray(host, order="C"), src_dtype, dst_dtype, "cpu")


def accumulate_into(backend, dst, src, dtype: str, sign: int) -> None:
    """``dst += sign * src`` in place; ``src`` has ``dst``'s dtype and its shape or one element.

    Small floats are computed in float32 and rounded once, by our kernel; other dtypes
    use the array module's in-place add/subtract (integers wrap, as NumPy's).
    """
    if dtype in SMALL_FLOAT_DTYPES:
        from .kernels import cast as K

        backend.launch(K.accumulate, dst.size, _words(dst, dtype), _words(src, dtype), sign, K.FORMATS[dtype])
        return
    xp = backend.xp
    operand = src.reshape(()) if src.size == 1 and dst.size != 1 else src.reshape(dst.shape)
    (xp.add if sign > 0 else xp.subtract)(dst, operand, out=dst)
