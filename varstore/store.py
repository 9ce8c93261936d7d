"""VariableStore: named variables on one device, with their own memory pool.

A ``Mapping[str, Variable]`` in creation order; unique paths (name scopes applied);
memory from the store's pool, capped by ``memory_limit`` (:mod:`varstore.memory`);
``state``/``load_state``/``stateless_call`` for functional code.
"""

from __future__ import annotations

import collections.abc
import threading
import weakref

from . import backends, checkpoint, initializers, scopes
from .attributes import AGGREGATIONS, SYNCHRONIZATIONS
from .dtypes import floatx, standardize_dtype, storage_dtype
from .errors import ArgumentTypeError
from .initializers import is_initializer
from .memory import StoreMemory, parse_memory_limit
from .validation import check_choice, check_utf8, standardize_shape
from .values import as_storage_array, default_dtype, state_array, write


class VariableStore(collections.abc.Mapping):
    """Variables by path, in creation order, all on one device by default.

    Args:
        device: a name from ``vs.devices()`` (or ``"cpu"``); None: the default device.
        memory_limit: None, bytes (int), or a string such as ``"512MiB"``/``"8GiB"``/
            ``"1.5GB"``: the most the store's variables may hold. An allocation past it (or
            past the device's free memory) raises ``vs.OutOfMemoryError``.

    >>> store = VariableStore(device="cpu")
    >>> w = store.variable([1.0, 2.0], name="w")
    >>> list(store)
    ['w']
    """

    __hash__ = object.__hash__  # identity, not Mapping's value equality
    __eq__ = object.__eq__

    def __init__(self, device=None, memory_limit=None):
        limit = parse_memory_limit(memory_limit)
        self._backend, self._device = backends.for_device(device)
        self._memory = StoreMemory(self._backend, limit)
        self._variables: dict = {}
        self._claimed: dict = {}  # paths of variables being created -> (base, next count) or None
        self._auto_counts: dict[str, int] = {}
        self._lock = threading.RLock()
        self._releases = 0

    @property
    def device(self) -> str:
        return self._device

    #: Where an optimizer keeps its step count and learning rate: the host, whose reads at each
    #: step need no GPU synchronization (a replicated store: its device, where sync() packs them).
    counter_device = "cpu"

    def queue_gradients(self, apply, pairs) -> bool:
        """Where a store defers optimizer steps (a replicated store inside a replica step),
        queue ``pairs`` of (variable, gradient) for ``apply(gradients, variables)`` and
        return True; a plain store returns False: the caller applies them now."""
        return False

    def check_write(self, variable, method: str) -> None:
        """Raise the error ``method`` (``assign_add``, ``scale``...) would raise on ``variable``
        under this store's rules, before a call that writes several variables writes any (none here)."""

    def check_load(self, what: str) -> None:
        """Raise where ``load_state``/``load`` may not write the stored values now: inside a
        StatelessScope (which keeps the storage as it is) or a replica step (which queues writes)."""
        if scopes.ACTIVE and scopes.stateless_scope() is not None:
            raise RuntimeError(f"{what} inside a StatelessScope would write the variables' storage, which the "
                               f"scope keeps untouched: call it outside the scope, or give the values as the "
                               f"scope's state.")
        if self._stepping():
            raise RuntimeError(f"{what} inside replica_step() would write each replica's variables at once, "
                               f"outside the step's queued updates: call it outside the step.")

    def _stepping(self) -> bool:
        return False  # (a ReplicatedStore: inside replica_step())

    @property
    def releases(self) -> int:
        """How many variables the store has released (multi-tensor updates compare it)."""
        return self._releases

    def locked(self):
        """The store's lock, as a context manager (re-entrant): while it is held no
        variable joins or leaves the store (checkpoints hold it while they move bytes)."""
        return self._lock

    @property
    def backend(self) -> str:
        return self._backend.name

    def variable(self, initializer, shape=None, dtype=None, name=None, **kwargs):
        """Create a variable in this store (``vs.Variable(..., store=self)``)."""
        return _Variable(initializer, shape, dtype, name=name, store=self, **kwargs)

    def create_storage(self, adopt, initializer, shape, dtype, name, device, aggregation: str, synchronization: str,
                       options: dict, path: str | None = None) -> None:
        """The creation protocol that ``Variable.__init__`` runs (create variables with
        :meth:`variable` or ``vs.Variable``): claim the path (``path`` as given, or the
        name scopes' prefix + ``name``), check the attributes against the store, allocate
        from the store's memory, write the initial value, then call ``adopt(path, storage,
        dtype, backend, device, writes)``, which returns the variable, and register it. On any error the
        path and the memory are given back: the store is as it was."""
        backend, device = self._resolve_device(device)
        unknown = sorted(set(options) - backend.variable_kwargs) if options else None
        if unknown:
            raise TypeError(
                f"Variable() got unexpected keyword arguments {unknown} for the {backend.name} "
                f"backend (it accepts {sorted(backend.variable_kwargs) or 'none'})."
            )
        path = self._claim(name, path)  # (before anything is allocated)
        storage = None
        try:
            if is_initializer(initializer):
                init = initializers.get(initializer)
                if shape is None:
                    raise ValueError(
                        f"When `initializer` is a name or a callable, `shape` is required. "
                        f"Received: initializer={initializer!r}, shape=None"
                    )
                shape = standardize_shape(shape)
                dtype = standardize_dtype(dtype)
                self._admit(path, dtype, aggregation, synchronization, device)
                storage = self._memory.allocate(backend, shape, storage_dtype(dtype), device, path)
                initializers.fill_storage(init, backend, device, storage, shape, dtype)
            else:
                array, array_dtype = as_storage_array(initializer, backend, device,
                                                      None if dtype is None else standardize_dtype(dtype))
                if shape is not None and standardize_shape(shape) != array.shape:
                    raise ValueError(
                        f"Initial value shape {array.shape} does not match the `shape` argument "
                        f"{standardize_shape(shape)}."
                    )
                dtype = default_dtype(initializer, array_dtype, array) if dtype is None else standardize_dtype(dtype)
                self._admit(path, dtype, aggregation, synchronization, device)
                storage = self._memory.allocate(backend, array.shape, storage_dtype(dtype), device, path)
                write(backend, storage, dtype, array, array_dtype)
            variable = adopt(path, storage, dtype, backend, device, self._write_routing(synchronization))
            self._register(path, variable, storage.nbytes, backend)
        except BaseException:
            if storage is not None:
                self._memory.release(storage.nbytes, backend)
                storage = None  # (the traceback keeps this frame: let the pool have it back)
            self._unclaim(path)
            raise

    def get_or_create(self, path: str, initializer, shape, dtype=None, **kwargs):
        """The variable at ``path`` when its shape and dtype are those asked for, else a
        new one there (the path taken as given: ``"a/b"`` is allowed, no name scope).
        ValueError where a variable exists at ``path`` with another shape or dtype."""
        if not isinstance(path, str) or not path or path.startswith("/") or path.endswith("/") or "//" in path:
            raise (ValueError if isinstance(path, str) else ArgumentTypeError)(
                f"Invalid path {path!r}: expected a non-empty string of '/'-separated names.")
        check_utf8("path", path)
        if "name" in kwargs:  # (the path names the variable)
            raise ArgumentTypeError(f"get_or_create: the path {path!r} names the variable; `name` is not one of "
                                    f"its arguments (received name={kwargs['name']!r}).")
        existing = self._variables.get(path)
        if existing is None:
            try:
                return _Variable(initializer, shape=shape, dtype=dtype, store=self, _verbatim_path=path, **kwargs)
            except ValueError:
                existing = self._variables.get(path)  # another thread made it first: compare
                if existing is None:
                    raise
        _check_arguments(initializer, kwargs, existing.stored.backend)  # (as creation would; the variable is returned)
        if "device" in kwargs and self._resolve_device(kwargs["device"])[1] != existing.device:
            raise ValueError(f"A variable exists at path {path!r} on {existing.device}; get_or_create asked for "
                             f"device={kwargs['device']!r}.")
        array_shape, default = _default_shape_and_dtype(initializer, existing)
        want_shape = standardize_shape(shape) if shape is not None else array_shape
        want_dtype = standardize_dtype(dtype) if dtype is not None else default
        if existing.shape != want_shape or existing.stored.dtype != want_dtype:
            raise ValueError(
                f"A variable exists at path {path!r} with shape {existing.shape} and dtype {existing.stored.dtype}; "
                f"get_or_create asked for shape {want_shape} and dtype {want_dtype}."
            )
        return existing

    def delete(self, path: str) -> None:
        """Release the variable at ``path``: its memory goes back to the store's pool."""
        self[path].release()

    def name_scope(self, name: str):
        """``with store.name_scope("dense"):`` nests the paths of new variables (the same
        thread-local stack as ``vs.name_scope``)."""
        return scopes.name_scope(name)

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        """``{path: array}``: a copy of every variable's stored value, in creation order
        (arrays as ``Variable.value`` gives them). One snapshot: variables created or
        deleted by other threads meanwhile are either wholly in it or wholly out."""
        out = {}
        with self._lock:  # (release and creation take it too)
            for variable in self._variables.values():
                storage, dtype, backend, _ = variable.stored
                out[variable.path] = backend.present(backend.copy(storage), dtype)
        return out

    def load_state(self, mapping) -> None:
        """Write ``{path: value}`` into the variables it names (others keep their value).

        Every entry is checked (a known path, the variable's exact shape, a supported
        dtype) and converted before any is written: a bad mapping changes nothing, and no
        variable is deleted by another thread between the checks and the writes.
        """
        self.check_load("load_state")
        with self._lock:
            arrays = self._state_arrays(mapping, "load_state")
            for variable, array in arrays:
                storage, _, backend, _ = variable.stored
                backend.copyto(storage, array)

    def stateless_call(self, fn, state, *args, **kwargs):
        """``(result, new_state)``: ``fn(*args, **kwargs)`` run inside a StatelessScope
        holding ``state`` (``{path: value}``, checked as in :meth:`load_state`). The
        variables' storage is untouched; ``new_state`` has every path of ``state`` and of
        the store's variables that ``fn`` wrote, with their values at the end."""
        with self._lock:
            arrays = self._state_arrays(state, "stateless_call")
        with scopes.StatelessScope() as scope:
            for variable, array in arrays:
                scope.record(variable, array)
            result = fn(*args, **kwargs)
        new_state = {}
        for variable, array in scope.written():
            if variable.store is self:
                _, dtype, backend, _ = variable.stored
                new_state[variable.path] = backend.present(array, dtype)
        return result, new_state

    def _state_arrays(self, mapping, what: str) -> list:
        """``[(variable, new storage array)]`` for ``mapping``, all checked (call with the
        lock held, so that the variables stay in the store)."""
        if not isinstance(mapping, collections.abc.Mapping):
            raise TypeError(f"{what} expects a mapping {{path: value}}; received {type(mapping).__name__}.")
        variables = {path: self._variables.get(path) for path in mapping}
        unknown = [path for path, variable in variables.items() if variable is None]
        if unknown:
            raise ValueError(
                f"{what}: no variable at paths {unknown} in this store (it has {len(self)} variables"
                f"{', e.g. ' + repr(next(iter(self._variables))) if self._variables else ''})."
            )
        return [(variables[path], state_array(variables[path], value, what)) for path, value in mapping.items()]

    # ------------------------------------------------------------- checkpoints
    def save(self, file) -> None:
        """Write every variable to the ``.safetensors`` file ``file``, atomically: a crash
        at any moment leaves the old file or the new one, whole. Attributes go in the
        header's ``__metadata__``; float8 is stored as uint8 there with its dtype recorded.
        See :mod:`varstore.checkpoint`."""
        checkpoint.save(self, file)

    def load(self, file, strict: bool = True) -> list:
        """Load the values in the ``.safetensors`` file ``file`` into the variables with
        the same paths (attributes are not changed).

        The whole header, and the names, shapes and dtypes against the store, are checked
        before any variable is written: a corrupt or truncated file, or one that does not
        fit, raises ValueError and changes nothing. ``strict=True``: the file's paths must
        be the store's. ``strict=False``: the paths both have are loaded and the others
        returned (sorted); a shape or dtype that differs still raises.
        """
        return checkpoint.load(self, file, strict)

    # ------------------------------------------------------------------ memory
    @property
    def memory_limit(self) -> int | None:
        return self._memory.limit_bytes

    def memory_info(self) -> dict:
        """Bytes held and available: ``backend, device, variables, variable_bytes,
        pool_used_bytes, pool_total_bytes, limit_bytes, device_total_bytes,
        device_free_bytes`` (the device's from NVML on cuda, from the OS on numpy; None
        where unknown)."""
        with self._lock:
            count = len(self._variables)
        return self._memory.info(self._device, count)

    def free_cached(self) -> None:
        """Hand the pool's unused cached blocks back to the device (cuda; a no-op on numpy)."""
        self._memory.free_cached(self._device)

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

    def items(self) -> list:
        """``[(path, variable)]``, one snapshot (another thread may create or delete
        variables meanwhile: ``dict(store.items())`` is consistent, ``dict(store)`` may not be)."""
        with self._lock:
            return list(self._variables.items())

    def values(self) -> list:
        """The variables, one snapshot (see :meth:`items`)."""
        with self._lock:
            return list(self._variables.values())

    def __len__(self) -> int:
        return len(self._variables)

    def __contains__(self, path) -> bool:
        return path in self._variables

    def __repr__(self) -> str:
        limit = "" if self._memory.limit_bytes is None else f", memory_limit={self._memory.limit_bytes}"
        return f"<VariableStore device={self._device}, variables={len(self)}{limit}>"

    # Used by Variable
    def _resolve_device(self, device):
        if device is None:
            return self._backend, self._device
        return backends.for_device(device)

    def _write_routing(self, synchronization: str):
        """The write strategy of a new variable: None for ``variable.LOCAL_WRITES``
        (written in place, here), or an object with the same ``shortcuts``, ``assign``,
        ``accumulate`` and ``setitem`` (a replicated store's synced variables)."""
        return None

    def _admit(self, path: str, dtype: str, aggregation: str, synchronization: str, device: str) -> None:
        """Raise if a variable with these attributes may not join this store (called
        before its memory is allocated). Every combination may join a plain store."""

    def _taken(self, path: str) -> bool:
        return path in self._variables or path in self._claimed

    def _claim(self, name: str | None, verbatim_path: str | None = None) -> str:
        """Reserve the path of a variable being created: the name scopes' prefix + name,
        or a unique automatic one ("variable", "variable_1", ...) when ``name`` is None."""
        with self._lock:
            if verbatim_path is not None:
                path = verbatim_path
            elif name is None:
                base = scopes.path_prefix() + "variable"
                count = self._auto_counts.get(base, 0)
                path = base if count == 0 else f"{base}_{count}"
                while self._taken(path):
                    count += 1
                    path = f"{base}_{count}"
                self._claimed[path] = (base, count + 1)  # the count moves on at _register
                return path
            else:
                path = scopes.path_prefix() + name
            if self._taken(path):
                raise ValueError(
                    f"A variable with path {path!r} already exists in this store. "
                    f"Choose another name, or delete the existing variable first."
                )
            self._claimed[path] = None
            return path

    def _unclaim(self, path: str) -> None:
        """A creation failed: the path is free again (an automatic one is reused, even
        where later automatic names were registered meanwhile)."""
        with self._lock:
            auto = self._claimed.pop(path, None)  # (None, or (base, next count))
            if auto is not None and self._auto_counts.get(auto[0], 0) >= auto[1]:
                self._auto_counts[auto[0]] = auto[1] - 1  # (the next claim walks past the taken paths)

    def _register(self, path: str, variable, nbytes: int, backend) -> None:
        with self._lock:
            auto = self._claimed.pop(path, None)
            if auto is not None:
                base, next_count = auto
                self._auto_counts[base] = max(self._auto_counts.get(base, 0), next_count)
            self._variables[path] = variable

    def release_storage(self, variable, detach) -> None:
        """The release protocol that ``Variable.release`` runs: ``detach()`` drops the
        variable's storage and returns ``(storage, backend)``, or None when it was released
        before; the path leaves the store and the bytes are counted back, once, whichever
        threads release it."""
        with self._lock:
            detached = detach()
            if detached is None:
                return
            if self._variables.get(variable.path) is variable:
                del self._variables[variable.path]
            self._releases += 1
            self._forget(variable)
        storage, backend = detached
        self._memory.release(storage.nbytes, backend)

    def _forget(self, variable) -> None:
        """A hook: ``variable`` is being released (called with the lock held)."""


_Variable = None  # the Variable class (set by variable_class_is)


def variable_class_is(cls) -> None:
    """Name the class :meth:`VariableStore.variable` and ``get_or_create`` build:
    ``varstore.variable`` calls this when it is imported (it imports this module, whose
    stores it joins, so this module cannot import it)."""
    global _Variable
    _Variable = cls


def _check_arguments(initializer, kwargs: dict, backend) -> None:
    """The checks creation makes of ``get_or_create``'s initializer name and keyword
    arguments, for a path whose variable (on ``backend``) exists."""
    if isinstance(initializer, str):
        initializers.get(initializer)  # (ValueError naming an unknown initializer)
    known = {"trainable", "autocast", "aggregation", "synchronization", "device", *backend.variable_kwargs}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"get_or_create() got unexpected keyword arguments {unknown}.")
    for argument, allowed in (("aggregation", AGGREGATIONS), ("synchronization", SYNCHRONIZATIONS)):
        if argument in kwargs:
            check_choice(argument, kwargs[argument], allowed)


def _default_shape_and_dtype(initializer, existing) -> tuple:
    """``(shape, dtype)`` that ``Variable(initializer, ...)`` would get with ``shape=None``
    and ``dtype=None``: an array's own (shape None for a name or callable: any fits)."""
    if is_initializer(initializer):
        return existing.shape, floatx()
    array, array_dtype = as_storage_array(initializer, existing.stored.backend, existing.device)
    return array.shape, default_dtype(initializer, array_dtype, array)


class _DefaultStore(VariableStore):
    """The default store holds its variables weakly, as Keras keeps no registry of
    variables: one that nothing else references is freed, its bytes are counted back and
    its path is free again. An explicit ``release``/``delete`` works as in any store."""

    def __init__(self):
        super().__init__()
        self._variables = weakref.WeakValueDictionary()  # (insertion-ordered, as a dict)
        # path -> the weakref.finalize that counts a collected variable's bytes back. An
        # entry outlives its variable until the path is reused or the next purge.
        self._finalizers: dict = {}

    def _register(self, path: str, variable, nbytes: int, backend) -> None:
        # The finalizer takes only the memory's lock (re-entrant): the collector may run it
        # on any thread, inside an allocation that holds that lock, or while another thread
        # holds the store's lock.
        finalizer = weakref.finalize(variable, self._memory.release, nbytes, backend)
        finalizer.atexit = False
        try:
            with self._lock:
                if len(self._finalizers) > 2 * len(self._variables) + 64:
                    self._finalizers = {p: f for p, f in self._finalizers.items() if f.alive}
                self._finalizers[path] = finalizer
                super()._register(path, variable, nbytes, backend)
        except BaseException:  # (create_storage gives the bytes back: the finalizer must not too)
            finalizer.detach()
            if self._finalizers.get(path) is finalizer:
                del self._finalizers[path]
            raise

    def _forget(self, variable) -> None:
        # (the variable is alive here, so its finalizer is the path's entry)
        finalizer = self._finalizers.pop(variable.path, None)
        if finalizer is not None:
            finalizer.detach()  # its bytes are counted back once, by release_storage


_default_store: VariableStore | None = None
_default_lock = threading.Lock()


def default_store() -> VariableStore:
    """The store variables join when no ``store`` is given (created on first use). It
    holds them weakly: a variable that nothing references any more is freed and its
    path is free again (a ``VariableStore`` you create owns its variables until
    ``delete``)."""
    global _default_store
    if _default_store is None:
        with _default_lock:
            if _default_store is None:
                _default_store = _DefaultStore()
    return _default_store
