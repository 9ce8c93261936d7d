"""The dtype registry: one :class:`DType` record per dtype; every dtype table derives from it.

dtypes are strings, as in Keras. bfloat16 and float8 have no CuPy dtype (and numba
rejects ``ml_dtypes`` arrays), so on both backends they are stored as raw words:
uint16 for bfloat16, uint8 for the float8 formats. Our cast kernels convert them.

**Adding a dtype** is one line in :data:`REGISTRY` (below, via ``_dtype(...)``): its name,
kind, bits, safetensors code and staging dtype, and for a format NumPy lacks, its storage
word and (for a small float the kernels convert) its :class:`SmallFloatFormat`. Everything
else follows: :data:`DTYPES`, the kind sets, :data:`WORD_DTYPES`, storage and host dtypes,
checkpoint codes, sync staging. A new small float also needs its encode/decode support
in ``varstore/kernels/cast.py`` if its layout differs from those the kernels handle.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

KINDS = ("bool", "int", "uint", "float")


class SmallFloatFormat(NamedTuple):
    """A small float format as the cast kernels take it (words are of the format's width).

    The records are NamedTuples: immutable, and far cheaper than dataclasses to define at
    import time."""

    mantissa_bits: int
    exponent_bits: int
    exponent_bias: int
    max_finite: int  # word of the largest finite magnitude
    overflow: int  # word of a result too large: inf, or NaN for a format without inf
    nan: int  # the NaN word, that a kept payload (at least 1) is OR-ed into
    keep_payload_encode: bool  # keep a NaN's payload when encoding
    keep_payload_decode: bool  # keep a NaN's payload when decoding

    @property
    def kernel_args(self) -> tuple:
        """The 8 fields as ``np.uint32``, in order: the tuple the cast kernels take (made
        once per format: eight NumPy scalars took 3 µs, on every accumulate's path)."""
        args = _KERNEL_ARGS.get(self)
        if args is None:
            args = _KERNEL_ARGS[self] = tuple(np.uint32(field) for field in self)
        return args


_KERNEL_ARGS: dict = {}  # SmallFloatFormat -> its kernel_args (NumPy scalars: immutable, shared)


class DType(NamedTuple):
    """One dtype and everything varstore needs to know about it (immutable)."""

    name: str
    kind: str  # one of KINDS
    bits: int
    storage: np.dtype  # dtype of the storage array (raw words where NumPy lacks the dtype)
    word: np.dtype  # unsigned dtype of the storage width: what copies move
    safetensors: str  # the safetensors dtype code of this dtype
    staging: str  # dtype a replicated store reduces this dtype's updates in
    format: SmallFloatFormat | None  # for the small floats the cast kernels convert
    bounds: tuple | None  # (min, max) of an integer dtype

    @property
    def host(self) -> np.dtype:
        """The NumPy dtype users get on the host (``ml_dtypes`` imported on first use)."""
        return host_dtype(self.name)

    @property
    def is_word(self) -> bool:
        """Stored as raw integer words (NumPy has no such dtype)."""
        return self.storage.name != self.name


def _dtype(name, kind, bits, safetensors, staging, storage=None, format=None) -> DType:
    if kind not in KINDS:
        raise ValueError(f"dtype {name!r}: kind {kind!r}; expected one of {list(KINDS)}")
    storage = np.dtype(storage or name)
    if storage.itemsize * 8 != bits:
        raise ValueError(f"dtype {name!r}: {bits} bits but storage {storage.name} has {storage.itemsize * 8}")
    bounds = None
    if kind == "int":
        bounds = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    elif kind == "uint":
        bounds = (0, (1 << bits) - 1)
    word = np.dtype(f"uint{bits}")
    return DType(name, kind, bits, storage, word, safetensors, staging, format, bounds)


# The order is that of DTYPES (and of error messages listing them).
REGISTRY: dict[str, DType] = {r.name: r for r in (
    _dtype("bool", "bool", 8, "BOOL", "uint8"),
    _dtype("int8", "int", 8, "I8", "int32"),
    _dtype("int16", "int", 16, "I16", "int32"),
    _dtype("int32", "int", 32, "I32", "int32"),
    _dtype("int64", "int", 64, "I64", "int64"),
    _dtype("uint8", "uint", 8, "U8", "int32"),
    _dtype("uint16", "uint", 16, "U16", "int32"),
    _dtype("uint32", "uint", 32, "U32", "uint32"),
    _dtype("uint64", "uint", 64, "U64", "uint64"),
    _dtype("float16", "float", 16, "F16", "float32",
           format=SmallFloatFormat(10, 5, 15, 0x7BFF, 0x7C00, 0x7C00, True, True)),
    _dtype("bfloat16", "float", 16, "BF16", "float32", storage="uint16",
           format=SmallFloatFormat(7, 8, 127, 0x7F7F, 0x7F80, 0x7FC0, False, True)),
    _dtype("float32", "float", 32, "F32", "float32"),
    _dtype("float64", "float", 64, "F64", "float64"),
    _dtype("float8_e4m3fn", "float", 8, "F8_E4M3", "float32", storage="uint8",
           format=SmallFloatFormat(3, 4, 7, 0x7E, 0x7F, 0x7F, False, False)),
    _dtype("float8_e5m2", "float", 8, "F8_E5M2", "float32", storage="uint8",
           format=SmallFloatFormat(2, 5, 15, 0x7B, 0x7C, 0x7E, False, False)),
)}

# ------------------------------------------------------------- derived tables
DTYPES = tuple(REGISTRY)
FLOAT_DTYPES = frozenset(n for n, r in REGISTRY.items() if r.kind == "float")
INT_DTYPES = frozenset(n for n, r in REGISTRY.items() if r.kind in ("int", "uint"))
# Formats our cast kernels convert (NumPy's float16 casts are slow and CuPy's drop NaN
# payloads, so float16 goes through the kernels too, for speed and for equal bits).
SMALL_FLOAT_DTYPES = frozenset(n for n, r in REGISTRY.items() if r.format is not None)
# dtypes stored as raw integer words: name -> the storage dtype's name.
WORD_DTYPES = {n: r.storage.name for n, r in REGISTRY.items() if r.is_word}
# The float dtypes that may be the default (Keras's floatx): those of at least 16 bits.
FLOATX_DTYPES = tuple(sorted(n for n, r in REGISTRY.items() if r.kind == "float" and r.bits >= 16))

_STORAGE = {n: r.storage for n, r in REGISTRY.items()}
_HOST = {n: r.storage for n, r in REGISTRY.items() if not r.is_word}  # word dtypes: filled on first use
_PYTHON_TYPES = {bool: "bool", int: "int32", float: "float32"}

_floatx = "float32"


def record(name: str) -> DType:
    """The :class:`DType` record of the dtype named ``name`` (a name in :data:`DTYPES`)."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown dtype name: {name!r}. Expected one of {list(DTYPES)}.") from None


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
    if name not in REGISTRY:
        raise ValueError(
            f"Invalid dtype: {dtype!r}. Expected one of {list(DTYPES)}, a NumPy or ml_dtypes "
            f"dtype, or Python bool/int/float."
        )
    return name


def storage_dtype(name: str) -> np.dtype:
    """The NumPy dtype of the array that stores a ``name`` variable."""
    try:
        return _STORAGE[name]
    except (KeyError, TypeError):
        return record(name).storage  # raises the ValueError naming `name`


def host_dtype(name: str) -> np.dtype:
    """The NumPy dtype users get on the host (``ml_dtypes`` types for bfloat16/float8)."""
    try:
        return _HOST[name]
    except (KeyError, TypeError):
        pass
    record(name)  # raises the ValueError naming `name`
    import ml_dtypes  # imported on first use: keeps `import varstore` fast

    dtype = _HOST[name] = np.dtype(getattr(ml_dtypes, name))
    return dtype


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
    raise ValueError(f"Cannot infer a dtype for values of NumPy kind {kind!r}; expected 'b', 'i', 'u' or 'f'")
