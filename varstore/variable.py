"""The Variable: a named container of tensor state, as ``keras.Variable``, whose
storage lives on the store's device."""

from __future__ import annotations

import numpy as np

from . import scopes, values
from . import store as _store
from .array_protocols import ArrayProtocols
from .attributes import AGGREGATIONS, SYNCHRONIZATIONS, VariableAttributes
from .casting import accumulate_into, cast, cast_scalar_on_host, prepared_cast, readable
from .dtypes import SMALL_FLOAT_DTYPES, WORD_DTYPES, host_dtype, is_float, standardize_dtype
from .indexing import broadcast_strides, cached_basic_region, flat_indices, has_ellipsis, host_key, is_basic_key
from .prepared_reads import PreparedReads
from .prepared_writes import PreparedWrites
from .regions import read_indexed, read_region, write_indexed, write_region
from .stored import StorageRecord, Stored
from .validation import check_choice, check_name
from .values import NATIVE_ADD, SCALAR_FILLS, as_operand, as_region_source, as_storage_array, plain_scalar, write

_PREPARED_CASTS = 8  # astype keeps at most this many prepared casts per variable


class Variable(VariableAttributes, ArrayProtocols):
    """A named container of tensor state, stored on a device.

    Args:
        initializer: an array-like (NumPy/CuPy array, nested lists, scalar, anything with
            ``__array__``, ``__cuda_array_interface__`` or ``__dlpack__``), an initializer
            name (``"zeros"``), an initializer object, or a callable ``f(shape, dtype)``.
        shape: required with a callable or name initializer; must match an array's shape.
        dtype: default: the array's own dtype; ``floatx()`` for Python floats and
            callables, ``int32`` for Python ints, ``bool`` for bools.
        trainable, autocast: bools.
        aggregation: one of None, "none", "mean", "sum", "only_first_replica".
        synchronization: one of None, "none", "on_read", "on_write", "auto".
        name: None for an automatic unique name; a string without "/".
        device: None (the store's device) or a device name.
        store: the VariableStore to join (default: ``vs.default_store()``).

    >>> import numpy as np
    >>> import varstore as vs
    >>> v = vs.Variable(np.ones((3, 3)), name="v", store=vs.VariableStore(device="cpu"))
    >>> value = v.value.copy(); value[0, :] = 99
    >>> v.assign(value).numpy()[0]
    array([99., 99., 99.])
    """

    __slots__ = (
        "_stored",  # StorageRecord(storage, dtype, backend, device)
        "_shape",
        "_store",
        "_path",
        "_name",
        "_trainable",
        "_autocast",
        "_aggregation",
        "_synchronization",
        "_fast_dtype", "_scalar_fill", "_add_dtype", "_kernel_add",  # the shortcuts' (see _adopt)
        "_prepared",  # PreparedWrites, or None where writes go through another strategy
        "_reads",  # PreparedReads
        "_casts",
        "_writes",
        "_overwrite_with_gradient",
        "_regularizer",
        "_constraint",
        "__weakref__",
        "__dict__",  # as Keras: code may tag a variable with attributes of its own
    )
    __hash__ = object.__hash__  # __eq__ is elementwise, as in Keras; identity hashes

    def __init__(
        self,
        initializer,
        shape=None,
        dtype=None,
        trainable=True,
        autocast=True,
        aggregation="none",
        synchronization="auto",
        name=None,
        *,
        device=None,
        store=None,
        **kwargs,
    ):
        name = check_name(name)
        trainable = bool(trainable)  # as Keras: any truth value
        autocast = bool(autocast)
        aggregation = check_choice("aggregation", aggregation, AGGREGATIONS)
        synchronization = check_choice("synchronization", synchronization, SYNCHRONIZATIONS)
        store = _store.default_store() if store is None else store
        verbatim_path = kwargs.pop("_verbatim_path", None) if kwargs else None  # get_or_create's path
        self._trainable = trainable
        self._autocast = autocast
        self._aggregation = aggregation
        self._synchronization = synchronization
        self._casts = None  # astype's prepared casts: dtype argument -> (storage, function)
        self._overwrite_with_gradient = False
        self._regularizer = None
        self._constraint = None
        self._store = store
        store.create_storage(self._adopt, initializer, shape, dtype, name, device, aggregation, synchronization,
                             kwargs, verbatim_path)

    def _adopt(self, path: str, storage, dtype: str, backend, device: str, writes) -> Variable:
        """Take the storage the store made (``store.create_storage`` calls this once).
        ``writes``: the strategy that applies this variable's writes (see
        :class:`LocalWrites`), or None for :data:`LOCAL_WRITES`."""
        self._stored = StorageRecord(storage, dtype, backend, device)
        self._shape = tuple(storage.shape)
        self._path = path
        self._name = path.rsplit("/", 1)[-1]
        self._writes = LOCAL_WRITES if writes is None else writes
        # The shortcuts of assign, assign_add/assign_sub and var[k] = scalar: writes that
        # apply here and now, so only under the local strategy (see LocalWrites.shortcuts).
        shortcuts = self._writes.shortcuts
        self._fast_dtype = None if dtype in WORD_DTYPES else storage.dtype
        self._scalar_fill = SCALAR_FILLS.get(dtype) if shortcuts else None  # see plain_scalar
        self._add_dtype = storage.dtype if shortcuts and dtype in NATIVE_ADD else None
        self._kernel_add = shortcuts and dtype in SMALL_FLOAT_DTYPES  # (see values.add_own_words)
        self._prepared = PreparedWrites() if shortcuts else None
        self._reads = PreparedReads()
        return self

    # ------------------------------------------------------------------ storage
    @property
    def stored(self) -> Stored:
        """What the variable stores, for code that moves storage (checkpoints, stores,
        replicas): ``(storage, dtype, backend, device)`` of the record it holds, with the
        storage array as it is (bfloat16/float8 as raw words on CuPy; None once
        released), the variable's own dtype (not an AutocastScope's), its backend and
        device. Scopes do not change it."""
        return self._stored.as_tuple()

    @property
    def released(self) -> bool:
        """Whether :meth:`release` has given the memory back."""
        return self._stored.storage is None

    @property
    def value(self):
        """The backing array: NumPy on "numpy" (bfloat16/float8 as ``ml_dtypes`` views),
        CuPy on "cuda" (bfloat16/float8 as their raw uint16/uint8 words). Inside a
        StatelessScope that maps or wrote this variable, the scope's value; inside an
        AutocastScope, a copy cast to the scope's dtype (float variables, autocast=True)."""
        return self._stored.backend.present(*self._read())

    # ------------------------------------------------------------------- reading
    def read_stored(self) -> tuple:
        """``(array, dtype, backend)``: what :attr:`value` reads, in storage form
        (bfloat16/float8 as raw words on CuPy), its dtype and its backend: a
        StatelessScope's value where one maps or wrote this variable, cast by an
        AutocastScope where one applies. RuntimeError once released."""
        array, dtype = self._read()
        return array, dtype, self._stored.backend

    def _read(self):
        """``(storage-form array, dtype)`` of what reads see: the storage, or a
        StatelessScope's value, cast by an AutocastScope where one applies."""
        record = self._stored
        storage, dtype = record.storage, record.dtype
        if storage is None:
            self._raise_released()
        if not scopes.ACTIVE:
            return storage, dtype
        scope = scopes.stateless_scope()
        if scope is not None:
            mapped = scope.stored_value(self)
            if mapped is not None:
                storage = mapped
        target = scopes.autocast_dtype() if self._autocast else None
        if target is not None and target != dtype and is_float(dtype):
            return cast(record.backend, storage, dtype, target, record.device), target
        return storage, dtype

    def numpy(self) -> np.ndarray:
        """A host NumPy copy (bfloat16/float8 as ``ml_dtypes`` arrays) of what ``value``
        reads."""
        array, dtype = self._read()
        host = self._stored.backend.to_host(array)
        return host.view(host_dtype(dtype)) if dtype in WORD_DTYPES else host

    def astype(self, dtype):
        """A copy converted to ``dtype`` by our cast kernels, on the variable's device."""
        casts = self._casts
        stored = self._stored
        if casts is not None and not scopes.ACTIVE:
            try:
                storage, convert = casts[dtype]
            except (KeyError, TypeError):  # (TypeError: an unhashable dtype argument)
                pass
            else:
                if storage is stored.storage:
                    return convert()
        dtype_given, dtype = dtype, standardize_dtype(dtype)
        array, backend, device = stored.storage, stored.backend, stored.device
        if array is not None and not scopes.ACTIVE:
            # The cast of this storage to this dtype, prepared once (see prepared_cast).
            convert = prepared_cast(backend, array, stored.dtype, dtype, device)
            # Kept by the argument as given, except None (floatx, which set_floatx changes).
            if dtype_given is not None and getattr(dtype_given, "__hash__", None) is not None:
                if casts is None:
                    casts = {}
                if len(casts) < _PREPARED_CASTS:
                    casts[dtype_given] = (array, convert)
                if self._stored.storage is array:  # (not if the variable was released meanwhile)
                    self._casts = casts
            return convert()
        array, array_dtype = self._read()
        out = cast(backend, array, array_dtype, dtype, device)
        return backend.present(out, dtype)

    def _numbers(self):
        """The value as real numbers to compute with (float32 for bfloat16/float8 on cuda)."""
        return readable(self._stored.backend, *self._read())

    def __getitem__(self, key):
        """A copy of the selected elements, as real numbers; one element (every axis
        indexed, no ``...``) as a scalar, as NumPy and Keras give it (CuPy, which has no
        scalars: a 0-d array).

        Basic keys (ints, slices, ``...``, ``None``) are gathered by our strided kernel,
        integer-array and boolean keys (NumPy's rules) by our indexed one.
        """
        array, dtype = self._read()
        record = self._stored
        backend = record.backend
        region = cached_basic_region(self._shape, key)
        if region is None:
            index = flat_indices(self._shape, host_key(backend, key))  # NumPy's rules and IndexError
            out = read_indexed(backend, array, index)
        else:  # (the storage, not a scope's value: a read prepared for the storage)
            out = self._reads.read(record, region) if array is record.storage else read_region(backend, array, region)
        out = readable(backend, out, dtype)
        return out if out.ndim or has_ellipsis(key) else out[()]  # (NumPy: `...` keeps a 0-d array)

    # ------------------------------------------------------------------- writing
    # Each write goes to the variable's write strategy (``_writes``: LOCAL_WRITES, or a
    # replicated store's), after the shortcuts that only the local strategy enables.
    def assign(self, value):
        """Write ``value`` (same shape, or a scalar / 0-d array that fills) in place.

        The value is cast to the variable's dtype; the old value is kept on any error.
        Returns the variable. (In a ReplicatedStore, the store's synchronization rules
        apply: see :class:`varstore.ReplicatedStore`.)
        """
        limits = self._scalar_fill
        if limits is not None and not scopes.ACTIVE and plain_scalar(limits, value):
            record = self._stored
            if record.storage is not None:  # (a released variable raises below)
                record.backend.fill(record.storage, value)  # NumPy's conversion: our bits (see SCALAR_FILLS)
                return self
        return self._writes.assign(self, value)

    def _assign_here(self, value):
        record = self._stored
        storage, backend = record.storage, record.backend
        if storage is None:
            self._raise_released()
        fast = self._fast_dtype
        if not scopes.ACTIVE and fast is not None and backend.owns(value) and value.dtype == fast and \
                value.shape == self._shape:
            backend.copyto(storage, value)
            return self
        array, array_dtype = as_storage_array(value, backend, record.device, record.dtype)
        if array.ndim != 0 and array.shape != self._shape:
            raise ValueError(self._shape_error(array.shape, "assign"))
        target, scope = self._write_target(overwrite=True)
        write(backend, target, record.dtype, self._unaliased(target, array), array_dtype)
        if scope is not None:
            scope.record(self, target)
        return self

    def assign_add(self, value):
        """``self += value`` in place (value cast to the variable's dtype first)."""
        add_dtype = self._add_dtype
        if add_dtype is not None and not scopes.ACTIVE:
            # the same dtype and shape: the array module's add (`is`: the canonical dtype object; any other
            # equal dtype takes the general path, with the same result)
            record = self._stored
            if record.backend.add_same(record.storage, value, add_dtype, self._shape, 1):
                return self
            if record.storage is not None and plain_scalar(self._scalar_fill, value):  # (converted as assign does)
                record.backend.add_into(record.storage, value, 1)
                return self
        elif self._kernel_add and not scopes.ACTIVE and values.add_own_words(self._stored, self._shape, value, 1):
            return self
        return self._writes.accumulate(self, value, 1, "assign_add")

    def assign_sub(self, value):
        """``self -= value`` in place (value cast to the variable's dtype first)."""
        add_dtype = self._add_dtype
        if add_dtype is not None and not scopes.ACTIVE:  # (as assign_add)
            record = self._stored
            if record.backend.add_same(record.storage, value, add_dtype, self._shape, -1):
                return self
            if record.storage is not None and plain_scalar(self._scalar_fill, value):
                record.backend.add_into(record.storage, value, -1)
                return self
        elif self._kernel_add and not scopes.ACTIVE and values.add_own_words(self._stored, self._shape, value, -1):
            return self
        return self._writes.accumulate(self, value, -1, "assign_sub")

    def _operand(self, value, method: str, private: bool = False):
        """``value`` checked (this shape, or one element) and cast to this dtype, as an
        array of the backend (for assign_add/assign_sub; and for assign where ``method``
        is "assign"). ``private``: never the caller's own memory (a copy where it would
        be), for an update applied later."""
        self._live_storage()
        record = self._stored
        dtype, backend, device = record.dtype, record.backend, record.device
        if dtype == "bool" and method != "assign":
            raise TypeError(f"{method} is not defined for the bool variable {self._path!r}; use assign.")
        array, array_dtype = as_storage_array(value, backend, device, dtype)
        if array.ndim != 0 and array.shape != self._shape:
            raise ValueError(self._shape_error(array.shape, method))
        operand = as_operand(backend, array, array_dtype, dtype, device)
        return backend.copy(operand) if private and operand is array else operand

    def _accumulate_here(self, operand, sign: int):
        target, scope = self._write_target()
        record = self._stored
        accumulate_into(record.backend, target, self._unaliased(target, operand), record.dtype, sign)
        if scope is not None:
            scope.record(self, target)
        return self

    def __setitem__(self, key, value):
        """``var[key] = value`` in place. Basic keys (ints, slices with any step, ``...``,
        ``None``) write just the selected region with our strided kernel; the value is a
        scalar or broadcasts to the region, and only its own bytes travel to the device
        (in its own dtype: the kernel converts each element as it writes it).
        Integer-array and boolean keys (NumPy's rules) scatter through our indexed kernel:
        where an index repeats, the last write wins on the CPU, one unspecified write on a
        GPU. Every check runs before anything is written."""
        limits = self._scalar_fill
        if limits is not None and not scopes.ACTIVE and plain_scalar(limits, value):
            storage = self._stored.storage
            if storage is not None and is_basic_key(key):
                # A basic key selects the same elements in the array module as in the
                # strided kernel (which refuses what it refuses, before writing); the
                # scalar converts as in assign.
                try:
                    self._stored.backend.setitem(storage, key, value)
                except (IndexError, TypeError, ValueError):
                    cached_basic_region(self._shape, key)  # (our error where our parse refuses it too)
                    raise
                return
        prepared = self._prepared
        if prepared is not None and not scopes.ACTIVE and prepared.write(self._stored, key, value):
            return
        self._writes.setitem(self, key, value)

    def _setitem_here(self, key, value):
        self._live_storage()
        record = self._stored
        dtype, backend, device = record.dtype, record.backend, record.device
        region = cached_basic_region(self._shape, key)  # IndexError before anything is written
        array, array_dtype = as_storage_array(value, backend, device, dtype)
        if region is not None:
            broadcast_strides(array.shape, region.shape)  # ValueError naming both shapes
        else:
            index = flat_indices(self._shape, host_key(backend, key))  # NumPy's rules and IndexError
            broadcast_strides(array.shape, index.shape)  # ValueError naming both shapes
        if region is not None and array.ndim == 0 and type(array) is np.ndarray:  # (a host scalar: its word, cast
            word = array if array_dtype == dtype else cast_scalar_on_host(array, array_dtype, dtype)  # once, is
            target, scope = self._write_target()  # written as it is by the backend: NumPy's setitem, a GPU's
            backend.setitem(target, key, word[()])  # region fill with the word a parameter, not copied first)
        else:
            operand, operand_dtype = as_region_source(backend, array, array_dtype, dtype, device)
            target, scope = self._write_target()
            operand = self._unaliased(target, operand)
            if region is None:
                write_indexed(backend, target, dtype, index, operand, operand_dtype)
            elif operand is value and scope is None and self._prepared is not None:  # (the value as given)
                self._prepared.write_new(record, key, region, value, operand_dtype)  # (kept for the next)
            else:
                write_region(backend, target, dtype, region, operand, operand_dtype)
        if scope is not None:
            scope.record(self, target)

    def _write_target(self, overwrite: bool = False):
        """``(array, scope)``: where a write goes. The storage itself (scope None), or
        inside a StatelessScope a new array holding the current value (uninitialized when
        the write ``overwrite``s all of it) that the caller records in the scope."""
        storage = self._live_storage()
        scope = scopes.stateless_scope() if scopes.ACTIVE else None
        if scope is None:
            return storage, None
        backend = self._stored.backend
        target = backend.empty(self._shape, storage.dtype, self._stored.device)
        if not overwrite:
            current = scope.stored_value(self)
            backend.copyto(target, storage if current is None else current)
        return target, scope

    def _unaliased(self, target, source):
        """``source``, or a copy of it where it shares memory with ``target``: our kernels
        read the source while they write, so a source that is a view of the storage
        (``v[1:] = np.asarray(v)[:-1]``) is copied first, which gives NumPy's result."""
        return self._stored.backend.copy(source) if self._stored.backend.shares_memory(target, source) else source

    # ------------------------------------------------------------------ lifetime
    def release(self) -> None:
        """Return the memory to the store's pool and remove the path from the store.
        Using the variable afterwards raises RuntimeError. Releasing twice is a no-op."""
        self._store.release_storage(self, self._detach)

    def _detach(self):
        """Drop the storage (and the prepared casts that hold it); return ``(storage,
        backend)``, or None if it was dropped before (the store calls this under its lock)."""
        record = self._stored
        if record.storage is None:
            return None
        # (drop what holds the storage)
        self._stored, self._casts, self._prepared, self._reads = record.released(), None, None, PreparedReads()
        return record.storage, record.backend

    def _live_storage(self):
        storage = self._stored.storage
        if storage is None:
            self._raise_released()
        return storage

    def _raise_released(self):
        raise RuntimeError(
            f"Variable {self._path!r} was released: its memory went back to the pool. "
            f"Create a new variable instead."
        )

    def _shape_error(self, shape, method: str) -> str:
        return (
            f"{method}: the value's shape {tuple(shape)} does not match the shape {self._shape} of "
            f"variable {self._path!r}. Expected the same shape, or a scalar."
        )


_store.variable_class_is(Variable)


# ------------------------------------------------------------ write strategies
# A variable's writes go to its strategy (Variable._writes). LOCAL_WRITES applies them
# here and now; a replicated store gives its synced variables a strategy of its own
# (with the same three methods and ``shortcuts = False``), which queues them in a replica
# step or, once it has decided to write now, applies them through the functions below.
class LocalWrites:
    """The write strategy of every variable of a plain store (and of a replicated
    store's unsynced ones): each write applies to the variable's own storage, now."""

    __slots__ = ()

    # Whether Variable's shortcuts (a scalar fill, the array module's add for a value of
    # the variable's dtype and shape) may bypass the strategy: they write here and now.
    shortcuts = True

    # (Variable's own methods, called without a layer between: these are per-call paths.)
    assign = staticmethod(Variable._assign_here)  # (variable, value) -> variable
    setitem = staticmethod(Variable._setitem_here)  # (variable, key, value) -> None

    @staticmethod
    def accumulate(variable: Variable, value, sign: int, method: str) -> Variable:
        return variable._accumulate_here(variable._operand(value, method), sign)


LOCAL_WRITES = LocalWrites()


def is_routed(variable: Variable) -> bool:
    """True where a strategy other than :data:`LOCAL_WRITES` takes the variable's writes
    (a replicated store's synced variables)."""
    return variable._writes is not LOCAL_WRITES


def live_storage(variable: Variable):
    """The variable's storage array; RuntimeError, saying so, once it is released."""
    return variable._live_storage()


def write_operand(variable: Variable, value, method: str, private: bool = False):
    """``value`` checked against ``variable`` and cast to its dtype, as an array of its
    backend (``private``: never the caller's memory, for an update applied later)."""
    return variable._operand(value, method, private)


def assign_in_place(variable: Variable, value) -> Variable:
    """``variable.assign(value)`` applied here, whatever strategy takes its writes."""
    return variable._assign_here(value)


def accumulate_in_place(variable: Variable, operand, sign: int) -> Variable:
    """``variable += sign * operand`` (from :func:`write_operand`) applied here."""
    return variable._accumulate_here(operand, sign)


def setitem_in_place(variable: Variable, key, value) -> None:
    """``variable[key] = value`` applied here."""
    variable._setitem_here(key, value)
