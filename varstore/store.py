"""VariableStore: named variables on one device.

This is the registry the Variable needs (unique names, paths, a default store, a
``Mapping[str, Variable]`` in creation order). Memory limits, name scopes, state and
checkpoints build on it.
"""

from __future__ import annotations

import collections.abc
import threading

from . import backends


class VariableStore(collections.abc.Mapping):
    """Variables by path, in creation order, all on one device by default.

    Args:
        device: a name from ``vs.devices()`` (or ``"cpu"``); None: the default device.

    >>> store = VariableStore(device="cpu")
    >>> w = store.variable([1.0, 2.0], name="w")
    >>> list(store)
    ['w']
    """

    __hash__ = object.__hash__  # identity, not Mapping's value equality
    __eq__ = object.__eq__

    def __init__(self, device=None):
        self._backend, self._device = backends.for_device(device)
        self._variables: dict = {}
        self._auto_counts: dict[str, int] = {}
        self._lock = threading.RLock()

    @property
    def device(self) -> str:
        return self._device

    @property
    def backend(self) -> str:
        return self._backend.name

    def variable(self, initializer, shape=None, dtype=None, name=None, **kwargs):
        """Create a variable in this store (``vs.Variable(..., store=self)``)."""
        from .variable import Variable

        return Variable(initializer, shape=shape, dtype=dtype, name=name, store=self, **kwargs)

    def delete(self, path: str) -> None:
        """Release the variable at ``path``: its memory goes back to the pool."""
        self[path].release()

    @property
    def variables(self) -> list:
        with self._lock:
            return list(self._variables.values())

    @property
    def trainable_variables(self) -> list:
        return [v for v in self.variables if v.trainable]

    @property
    def non_trainable_variables(self) -> list:
        return [v for v in self.variables if not v.trainable]

    # Mapping[str, Variable]
    def __getitem__(self, path: str):
        try:
            return self._variables[path]
        except KeyError:
            raise KeyError(f"No variable at path {path!r} in this store ({len(self)} variables).") from None

    def __iter__(self):
        return iter(list(self._variables))

    def __len__(self) -> int:
        return len(self._variables)

    def __contains__(self, path) -> bool:
        return path in self._variables

    def __repr__(self) -> str:
        return f"<VariableStore device={self._device}, variables={len(self)}>"

    # Used by Variable
    def _resolve_device(self, device):
        if device is None:
            return self._backend, self._device
        return backends.for_device(device)

    def _check_free(self, path: str | None) -> None:
        if path is not None and path in self._variables:
            raise ValueError(
                f"A variable with path {path!r} already exists in this store. "
                f"Choose another name, or delete the existing variable first."
            )

    def _register(self, variable, name: str | None) -> str:
        """Give ``variable`` a path (a unique automatic name when ``name`` is None)."""
        with self._lock:
            if name is None:
                base = "variable"
                count = self._auto_counts.get(base, 0)
                path = base if count == 0 else f"{base}_{count}"
                while path in self._variables:
                    count += 1
                    path = f"{base}_{count}"
                self._auto_counts[base] = count + 1
            else:
                path = name
                self._check_free(path)
            self._variables[path] = variable
            return path

    def _unregister(self, path: str) -> None:
        with self._lock:
            self._variables.pop(path, None)


_default_store: VariableStore | None = None
_default_lock = threading.Lock()


def default_store() -> VariableStore:
    """The store variables join when no ``store`` is given (created on first use)."""
    global _default_store
    if _default_store is None:
        with _default_lock:
            if _default_store is None:
                _default_store = VariableStore()
    return _default_store
