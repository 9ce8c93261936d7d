"""Scopes: name scopes, autocast and stateless (functional) execution.

Each kind keeps a thread-local stack, so scopes entered in one thread never leak into
another. ``ACTIVE`` counts the scopes entered in any thread: while it is 0, variables
skip every lookup here (the common case costs one global read).
"""

from __future__ import annotations

import threading

from .array_protocols import ArrayProtocols
from .dtypes import is_float, standardize_dtype
from .errors import ArgumentTypeError
from .validation import check_utf8
from .values import state_array

_local = threading.local()
_active_lock = threading.Lock()
ACTIVE = 0  # scopes of any kind currently entered, in any thread


def _stack(kind: str) -> list:
    stack = getattr(_local, kind, None)
    if stack is None:
        stack = []
        setattr(_local, kind, stack)
    return stack


class _Scope:
    _kind = ""

    def __enter__(self):
        global ACTIVE
        _stack(self._kind).append(self)
        with _active_lock:
            ACTIVE += 1
        return self

    def __exit__(self, *exc_info):
        global ACTIVE
        stack = _stack(self._kind)
        if not stack or stack[-1] is not self:
            raise RuntimeError(f"{type(self).__name__} exited out of order (scopes must nest).")
        stack.pop()
        with _active_lock:
            ACTIVE -= 1
        return False


# ------------------------------------------------------------------ name scopes
class name_scope(_Scope):
    """``with vs.name_scope("dense"):`` variables created inside get paths ``"dense/<name>"``.

    Scopes nest (``"block/dense/kernel"``). ``vs.name_scope`` and ``store.name_scope``
    share one thread-local stack; the variable's ``name`` stays the bare name.
    """

    _kind = "names"

    def __init__(self, name):
        if not isinstance(name, str) or not name or "/" in name:
            raise (ValueError if isinstance(name, str) else ArgumentTypeError)(
                f"Invalid value for argument `name` of name_scope. Expected a non-empty string "
                f"without '/'. Received: name={name!r}"
            )
        check_utf8("name", name)
        self.name = name


def path_prefix() -> str:
    """``"outer/inner/"`` for the name scopes entered in this thread ("" for none)."""
    if not ACTIVE:
        return ""
    names = _stack("names")
    return "".join(scope.name + "/" for scope in names)


# ------------------------------------------------------------------ autocast
class AutocastScope(_Scope):
    """Inside it, float variables with ``autocast=True`` read as ``dtype`` (cast by our
    kernels) and report it as their ``dtype``; writes keep the variable's own dtype.
    ``dtype=None`` turns casting off (for code inside an outer scope)."""

    _kind = "autocast"

    def __init__(self, dtype):
        if dtype is not None:
            dtype = standardize_dtype(dtype)
            if not is_float(dtype):
                raise ValueError(
                    f"`AutocastScope` can only be used with a floating-point target dtype, such as "
                    f"'float16' or 'bfloat16'. Received: dtype={dtype}"
                )
        self.dtype = dtype


def autocast_dtype() -> str | None:
    """The innermost AutocastScope's dtype in this thread, or None."""
    if not ACTIVE:
        return None
    stack = _stack("autocast")
    return stack[-1].dtype if stack else None


# ------------------------------------------------------------------ stateless
class StatelessScope(_Scope):
    """Functional execution: reads of a mapped variable return the mapped value, and
    ``assign``/``assign_add``/``assign_sub``/slice-assign record the new value here
    instead of writing the variable's storage.

    Args:
        state_mapping: ``{variable: value}`` or an iterable of ``(variable, value)``
            pairs. Each value is cast to its variable's dtype and must have its shape.

    Nested scopes see the values of the scopes around them (Keras hides them); writes
    go to the innermost scope.
    """

    _kind = "stateless"

    def __init__(self, state_mapping=None):
        self._values: dict = {}  # id(variable) -> (variable, storage array)
        pairs = state_mapping.items() if hasattr(state_mapping, "items") else (state_mapping or ())
        if not hasattr(pairs, "__iter__") or isinstance(pairs, (str, bytes)):
            raise ArgumentTypeError(f"StatelessScope: `state_mapping` must be a dict of {{variable: value}} or "
                                    f"(variable, value) pairs; received {type(state_mapping).__name__}.")
        for pair in pairs:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise ArgumentTypeError(f"StatelessScope: `state_mapping` must be a dict of {{variable: value}} or "
                                        f"(variable, value) pairs; it holds {pair!r:.80}.")
            variable, value = pair
            if not isinstance(variable, ArrayProtocols):  # (Variable's base: variable.py imports this module)
                raise ValueError(
                    f"Invalid reference variable in StatelessScope: every key of `state_mapping` "
                    f"must be a Variable. Received instead: {variable!r}"
                )
            self._values[id(variable)] = (variable, state_array(variable, value, "StatelessScope"))

    def get_current_value(self, variable):
        """The value this scope (or one around it) holds for ``variable``, as
        ``variable.value`` would give it; None when no scope maps or wrote it."""
        array = self.stored_value(variable)
        return None if array is None else variable.stored.backend.present(array, variable.stored.dtype)

    def stored_value(self, variable):
        """The storage-form array this scope (or one around it) holds for ``variable``,
        or None."""
        entry = self._values.get(id(variable))
        if entry is not None:
            return entry[1]
        stack = _stack("stateless")
        if self in stack:
            for outer in reversed(stack[: stack.index(self)]):
                entry = outer._values.get(id(variable))
                if entry is not None:
                    return entry[1]
        return None

    def record(self, variable, array) -> None:
        """Hold ``array`` (storage form, the variable's dtype and shape) as ``variable``'s value."""
        self._values[id(variable)] = (variable, array)

    def written(self) -> list:
        """``(variable, storage array)`` for everything this scope holds."""
        return list(self._values.values())


def stateless_scope() -> StatelessScope | None:
    """The innermost StatelessScope of this thread, or None."""
    if not ACTIVE:
        return None
    stack = _stack("stateless")
    return stack[-1] if stack else None
