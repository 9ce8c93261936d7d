"""dtype names, their storage, and the default float dtype.

dtypes are strings, as in Keras. bfloat16 and float8 have no CuPy dtype (and numba
rejects ``ml_dtypes`` arrays), so on both backends they are stored as raw words:
uint16 for bfloat16, uint8 for the float8 formats. Our cast kernels convert them.
"""

from __future__ import annotations

import numpy as np

DTYPES = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "float8_e4m3fn",
    "float8_e5m2",
)
FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64", "float8_e4m3fn", "float8_e5m2"})
INT_DTYPES = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"})
# Formats our cast kernels convert (NumPy's float16 casts are slow and CuPy's drop NaN
# payloads, so float16 goes through the kernels too, for speed and for equal bits).
SMALL_FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"})
# dtypes stored as raw integer words.
WORD_DTYPES = {"bfloat16": "uint16", "float8_e4m3fn": "uint8", "float8_e5m2": "uint8"}

FLOATX_DTYPES = ("bfloat16", "float16", "float32", "float64")
_PYTHON_TYPES = {bool: "bool", int: "int32", float: "float32"}

_floatx = "float32"


def floatx() -> str:
    """The default float dtype: ``"float32"`` unless :func:`set_floatx` changed it."""
    return _floatx


def set_floatx(value) -> None:
    """Set the default float dtype (one of bfloat16, float16, float32, float64)."""
    global _floatx
    if not isinstance(value, str) or value not in FLOATX_DTYPES:
        raise ValueError(
            f"Invalid value for argument `value` of set_floatx. Expected one of "
            f"{list(FLOATX_DTYPES)}. Received: value={value!r}"
        )
    _floatx = value


def _name_of(dtype) -> str | None:
    if isinstance(dtype, str):
        return dtype
    if isinstance(dtype, type) and dtype in _PYTHON_TYPES:
        return _PYTHON_TYPES[dtype]
    if isinstance(dtype, np.dtype):
        return dtype.name
    if isinstance(dtype, type) and issubclass(dtype, np.generic):  # np.float32, ml_dtypes types
        try:
            return np.dtype(dtype).name
        except TypeError:  # abstract types: np.floating, np.number...
            return None
    if isinstance(dtype, type) and isinstance(getattr(dtype, "dtype", None), np.dtype):
        return dtype.dtype.name  # jax.numpy scalar types
    text = str(dtype)
    if text.startswith("torch."):
        return text[len("torch.") :]
    return None


def standardize_dtype(dtype) -> str:
    """Return the dtype name for ``dtype``.

    Accepts the names in :data:`DTYPES`, NumPy dtypes and scalar types, ``ml_dtypes``
    types, torch and JAX dtypes, and Python ``bool`` (-> "bool"), ``int`` (-> "int32")
    and ``float`` (-> "float32"). ``None`` gives :func:`floatx`.

    >>> standardize_dtype(np.float64)
    'float64'
    """
    if dtype is None:
        return _floatx
    name = _name_of(dtype)
    if name not in DTYPES:
        raise ValueError(
            f"Invalid dtype: {dtype!r}. Expected one of {list(DTYPES)}, a NumPy or ml_dtypes "
            f"dtype, or Python bool/int/float."
        )
    return name


def storage_dtype(name: str) -> np.dtype:
    """The NumPy dtype of the array that stores a ``name`` variable."""
    dtype = _STORAGE.get(name)
    if dtype is None:
        dtype = _STORAGE[name] = np.dtype(WORD_DTYPES.get(name, name))
    return dtype


_STORAGE: dict = {}


def host_dtype(name: str) -> np.dtype:
    """The NumPy dtype users get on the host (``ml_dtypes`` types for bfloat16/float8)."""
    if name in WORD_DTYPES:
        import ml_dtypes  # imported on first use: keeps `import varstore` fast

        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name)


def itemsize(name: str) -> int:
    return storage_dtype(name).itemsize


def is_float(name: str) -> bool:
    return name in FLOAT_DTYPES


def is_integer(name: str) -> bool:
    return name in INT_DTYPES


def infer_python_dtype(kind: str) -> str:
    """dtype of a Python scalar or nested list, from its NumPy kind: as Keras does,
    floats give ``floatx()``, ints ``int32``, bools ``bool``."""
    if kind == "b":
        return "bool"
    if kind in "iu":
        return "int32"
    if kind == "f":
        return _floatx
    raise ValueError(f"Cannot infer a dtype for values of NumPy kind {kind!r}")
