"""Initializers, as in Keras 3.

Each instance is a callable ``init(shape, dtype=None)`` returning a new array on the
default device, and also fills a variable's storage in place with :meth:`Initializer.fill`
(no temporary the size of the variable).
"""

from __future__ import annotations

import numpy as np

from .dtypes import standardize_dtype, storage_dtype


def standardize_shape(shape) -> tuple:
    """``shape`` as a tuple of non-negative ints; a clear ValueError otherwise."""
    if shape is None or isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise ValueError(f"Invalid shape: {shape!r}. Expected a tuple or list of non-negative ints.")
    dims = tuple(shape)
    for d in dims:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) or d < 0:
            raise ValueError(
                f"Invalid shape: {shape!r}. Expected a tuple or list of non-negative ints; "
                f"dimension {d!r} is not one."
            )
    return tuple(int(d) for d in dims)


class Initializer:
    """Base class. Subclasses implement :meth:`fill` and :meth:`get_config`."""

    def __call__(self, shape, dtype=None):
        """A new array of ``shape`` and ``dtype`` (default ``floatx()``) on the default device."""
        from .store import default_store

        shape = standardize_shape(shape)
        dtype = standardize_dtype(dtype)
        store = default_store()
        backend, device = store._backend, store.device
        storage = backend.empty(shape, storage_dtype(dtype), device)
        self.fill(backend, storage, dtype)
        return backend.present(storage, dtype)

    def fill(self, backend, storage, dtype: str) -> None:
        """Write the initial values into ``storage`` (a storage array of ``backend``)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement fill()")

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Constant(Initializer):
    """Fills with a scalar ``value`` (cast to the variable's dtype).

    >>> Constant(3.0)((2,), "float32")
    array([3., 3.], dtype=float32)
    """

    def __init__(self, value=0.0):
        array = np.asarray(value)
        if array.ndim != 0 or array.dtype.kind not in "biuf":
            raise ValueError(f"Invalid value for argument `value` of Constant. Expected a real scalar. Received: value={value!r}")
        self.value = value

    def fill(self, backend, storage, dtype):
        from .casting import cast_on_host

        word = cast_on_host(np.asarray(self.value), np.asarray(self.value).dtype.name, dtype)
        storage.fill(word[()])

    def get_config(self):
        return {"value": self.value}


class Zeros(Constant):
    """Fills with 0."""

    def __init__(self):
        super().__init__(0)

    def get_config(self):
        return {}


class Ones(Constant):
    """Fills with 1."""

    def __init__(self):
        super().__init__(1)

    def get_config(self):
        return {}


zeros = Zeros
ones = Ones
constant = Constant

_REGISTRY = {
    cls.__name__: cls for cls in (Constant, Zeros, Ones)
}
_REGISTRY.update({"constant": Constant, "zeros": Zeros, "ones": Ones})


def get(identifier):
    """An initializer from a name, an instance, a class or a callable ``f(shape, dtype)``.

    Raises:
        ValueError: an unknown name (the message lists the known ones) or an object that
            is none of the above.
    """
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Initializer):
        return identifier()
    if isinstance(identifier, str):
        if identifier not in _REGISTRY:
            raise ValueError(
                f"Unknown initializer: {identifier!r}. Expected one of {sorted(_REGISTRY)}."
            )
        return _REGISTRY[identifier]()
    if callable(identifier):
        return identifier
    raise ValueError(
        f"Could not interpret initializer: {identifier!r}. Expected a name, an Initializer, "
        f"or a callable f(shape, dtype)."
    )
