"""The Keras attributes of a Variable: shape and dtype, the flags and callables that
training code reads (trainable, autocast, overwrite_with_gradient, regularizer,
constraint), the replica attributes (aggregation, synchronization), and where it lives
(name, path, device, store)."""

from __future__ import annotations

import math

from . import scopes
from .dtypes import is_float, storage_dtype
from .validation import check_callable_or_none

#: The Keras values of ``aggregation`` and ``synchronization``.
AGGREGATIONS = ("none", "mean", "sum", "only_first_replica")
SYNCHRONIZATIONS = ("none", "on_read", "on_write", "auto")


class VariableAttributes:
    """Base of :class:`varstore.Variable` holding these properties. They read the fields
    ``Variable.__init__`` and its store set: ``_stored`` (the record of storage, dtype,
    backend and device), ``_shape``, ``_trainable``, ``_autocast``,
    ``_overwrite_with_gradient``, ``_regularizer``, ``_constraint``, ``_aggregation``,
    ``_synchronization``, ``_name``, ``_path``, ``_store``."""

    __slots__ = ()

    @property
    def shape(self) -> tuple:
        return self._shape

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def size(self) -> int:
        return math.prod(self._shape)

    @property
    def nbytes(self) -> int:
        return self.size * storage_dtype(self._stored.dtype).itemsize

    @property
    def dtype(self) -> str:
        """The variable's dtype; inside an AutocastScope, the scope's dtype for a float
        variable with ``autocast=True`` (as Keras)."""
        if scopes.ACTIVE and self._autocast:
            target = scopes.autocast_dtype()
            if target is not None and is_float(self._stored.dtype):
                return target
        return self._stored.dtype

    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        self._trainable = bool(value)

    @property
    def autocast(self) -> bool:
        return self._autocast

    @property
    def overwrite_with_gradient(self) -> bool:
        """Whether an optimizer should write the gradient into this variable instead of
        applying an update (Keras's flag for float8 scaling state). A bool."""
        return self._overwrite_with_gradient

    @overwrite_with_gradient.setter
    def overwrite_with_gradient(self, value):
        if not isinstance(value, bool):  # (Keras checks this one strictly too)
            raise TypeError(
                f"Invalid value for attribute `overwrite_with_gradient`. Expected a bool. "
                f"Received: overwrite_with_gradient={value!r}"
            )
        self._overwrite_with_gradient = value

    @property
    def regularizer(self):
        """A callable ``f(value) -> loss`` (e.g. a Keras regularizer) kept with the
        variable for the training code that uses it, or None."""
        return self._regularizer

    @regularizer.setter
    def regularizer(self, value):
        self._regularizer = check_callable_or_none("regularizer", value)

    @property
    def constraint(self):
        """A callable ``f(value) -> value`` (e.g. a Keras constraint) kept with the
        variable for the training code that applies it after updates, or None."""
        return self._constraint

    @constraint.setter
    def constraint(self, value):
        self._constraint = check_callable_or_none("constraint", value)

    @property
    def aggregation(self) -> str:
        return self._aggregation

    @property
    def synchronization(self) -> str:
        return self._synchronization

    @property
    def name(self) -> str:
        return self._name

    @property
    def path(self) -> str:
        return self._path

    @property
    def device(self) -> str:
        return self._stored.device

    @property
    def store(self):
        return self._store
