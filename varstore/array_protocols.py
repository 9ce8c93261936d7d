"""The array and number protocols of a Variable: NumPy, CUDA array interface and DLPack
export, conversions to Python numbers, and the operators (computed on the value as real
numbers, as Keras's variables compute them: results are arrays, not variables)."""

from __future__ import annotations

import operator

import numpy as np

from .dtypes import WORD_DTYPES, host_dtype


class ArrayProtocols:
    """Base of :class:`varstore.Variable` holding these protocols. They read the variable
    through its ``_read``, ``_live_storage``, ``_numbers`` and ``numpy`` methods and its
    ``_stored`` (a StorageRecord: storage, dtype, backend, device), ``_shape`` and ``_path`` fields."""

    __slots__ = ()

    # ------------------------------------------------------------------- interop
    def __array__(self, dtype=None, copy=None):
        storage, read_dtype = self._read()
        host = self._stored.backend.host_view(storage)
        fresh = host is not storage  # already a copy (from a GPU)
        if read_dtype in WORD_DTYPES:
            host = host.view(host_dtype(read_dtype))
        converts = dtype is not None and np.dtype(dtype) != host.dtype
        if copy is False and (fresh or converts):
            raise ValueError(
                f"A NumPy array of variable {self._path!r} ({self._stored.dtype} on {self._stored.device}) "
                f"needs a copy{' to convert it to ' + str(np.dtype(dtype)) if converts else ''}; copy=False was given."
            )
        if converts:
            return host.astype(dtype)
        return host.copy() if copy and not fresh else host

    @property
    def __cuda_array_interface__(self):
        storage = self._live_storage()
        if self._stored.dtype in WORD_DTYPES:
            raise AttributeError(
                f"{self._stored.dtype} has no __cuda_array_interface__ type; use var.value (raw words) "
                f"or var.astype('float32')"
            )
        return self._stored.backend.cuda_array_interface(storage)

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        """Zero-copy export of the *stored* array (as ``__cuda_array_interface__``): a
        scope's value is a separate array, read through ``value``/``np.asarray``."""
        storage = self._live_storage()
        if self._stored.dtype in WORD_DTYPES:
            raise BufferError(
                f"DLPack export of {self._stored.dtype} is not supported by NumPy/CuPy storage; use "
                f"var.astype('float32'), or var.value for the raw {storage.dtype} words."
            )
        options = {"stream": stream, "max_version": max_version, "dl_device": dl_device, "copy": copy}
        with self._stored.backend.on_device(self._stored.device):  # (CuPy orders it after that device's stream)
            return storage.__dlpack__(**{k: v for k, v in options.items() if v is not None})

    def __dlpack_device__(self):
        return self._live_storage().__dlpack_device__()

    # ----------------------------------------------------------------- operators
    def _numbers(self):
        """The value as real numbers to compute with (Variable supplies it)."""
        raise NotImplementedError

    def _operand_of(self, other):
        if isinstance(other, ArrayProtocols):
            return other._numbers()
        if isinstance(other, (bool, int, float, complex)):
            return other
        return self._stored.backend.xp.asarray(other)

    def __bool__(self):
        raise TypeError(f"A Variable cannot be used as a boolean (variable {self._path!r}).")

    def __len__(self):
        if not self._shape:
            raise TypeError(f"len() of a 0-d variable ({self._path!r})")
        return self._shape[0]

    def _scalar(self):
        if self._shape:
            raise TypeError(
                f"Only scalar arrays can be converted to Python scalars. Got: shape={self._shape} "
                f"(variable {self._path!r})"
            )
        return self.numpy()

    def __float__(self):
        return float(self._scalar())

    def __int__(self):
        return int(self._scalar())

    def __round__(self, ndigits=None):
        """An array of the value rounded to ``ndigits`` decimals (0 for None), as Keras."""
        return self._stored.backend.xp.round(self._numbers(), decimals=ndigits or 0)

    def __neg__(self):
        return -self._numbers()

    def __pos__(self):
        return +self._numbers()

    def __abs__(self):
        return abs(self._numbers())

    def __invert__(self):
        return ~self._numbers()

    def __repr__(self) -> str:
        """Keras's repr, of the stored value (inside scopes too)."""
        record = self._stored
        storage, dtype, backend = record.storage, record.dtype, record.backend
        value = ""
        if storage is not None:
            host = backend.to_host(storage)
            value = f", value={host.view(host_dtype(dtype)) if dtype in WORD_DTYPES else host}"
        return f"<Variable path={self._path}, shape={self._shape}, dtype={dtype}{value}>"


def _binary(op):
    def forward(self, other):
        return op(self._numbers(), self._operand_of(other))

    def reflected(self, other):
        return op(self._operand_of(other), self._numbers())

    return forward, reflected


for _name, _op in {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "truediv": operator.truediv,
    "floordiv": operator.floordiv,
    "mod": operator.mod,
    "pow": operator.pow,
    "matmul": operator.matmul,
}.items():
    _forward, _reflected = _binary(_op)
    setattr(ArrayProtocols, f"__{_name}__", _forward)
    setattr(ArrayProtocols, f"__r{_name}__", _reflected)


def _logical(function: str):
    def forward(self, other):
        return getattr(self._stored.backend.xp, function)(self._numbers(), self._operand_of(other))

    def reflected(self, other):
        return getattr(self._stored.backend.xp, function)(self._operand_of(other), self._numbers())

    return forward, reflected


# As Keras: `&`, `|` and `^` are logical (bool results), integer variables included.
for _name, _function in {"and": "logical_and", "or": "logical_or", "xor": "logical_xor"}.items():
    _forward, _reflected = _logical(_function)
    setattr(ArrayProtocols, f"__{_name}__", _forward)
    setattr(ArrayProtocols, f"__r{_name}__", _reflected)

for _name, _op in {
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "eq": operator.eq,
    "ne": operator.ne,
}.items():
    setattr(ArrayProtocols, f"__{_name}__", _binary(_op)[0])
