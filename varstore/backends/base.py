"""The backend interface: the one place where NumPy and CuPy storage differ.

Public code validates and raises; backend methods act and trust their inputs. Arrays a
backend makes and takes are *storage* arrays: C-contiguous, of the storage dtype
(raw words for bfloat16/float8).
"""

from __future__ import annotations

import abc
import contextlib
import functools

import numpy as np

_NOWHERE = contextlib.nullcontext()  # (reusable: it holds no state)


class Backend(abc.ABC):
    #: "numpy" or "cuda".
    name: str
    #: The array module (numpy or cupy) used for native operations.
    xp: object
    #: Keyword arguments ``Variable(...)`` accepts for this backend.
    variable_kwargs: frozenset = frozenset()

    @abc.abstractmethod
    def devices(self) -> list[str]:
        """Names of this backend's devices."""

    @abc.abstractmethod
    def empty(self, shape: tuple, dtype: np.dtype, device: str, pool=None):
        """An uninitialized storage array on ``device``, from ``pool`` (one of
        :meth:`new_pool`'s) or, for temporaries, from the backend's own."""

    # Memory (see varstore.memory): a store's pool and what the device has.
    #: Exceptions an allocation raises when the device has no memory for it.
    out_of_memory_errors: tuple = (MemoryError,)

    def new_pool(self):
        """A memory pool for one store's variables (None: the host heap)."""
        return None

    def charged_bytes(self, nbytes: int) -> int:
        """What an allocation of ``nbytes`` adds to its pool's used bytes."""
        return nbytes

    def pool_bytes(self, pool, devices: tuple) -> tuple:
        """``(used, total)`` bytes of ``pool`` on ``devices`` (those it allocated on);
        ``(None, None)`` when the backend has no pools (the store counts its variables'
        bytes instead)."""
        return None, None

    def free_cached(self, pool, devices: tuple) -> None:
        """Hand ``pool``'s unused cached blocks on ``devices`` (and those of our
        temporaries there) back."""
        return None  # (by default there is nothing to do)

    @abc.abstractmethod
    def device_memory(self, device: str) -> tuple:
        """``(total, free)`` bytes of ``device``; None for what cannot be known."""

    @abc.abstractmethod
    def owns(self, array) -> bool:
        """True when ``array`` is this backend's array type (else it is a host array)."""

    @abc.abstractmethod
    def asarray(self, obj, device: str):
        """``obj`` as this backend's array on ``device``, without a copy where possible.

        ``obj`` is anything array-like: NumPy/CuPy arrays, ``__array__``,
        ``__cuda_array_interface__`` or ``__dlpack__`` objects, lists, scalars.
        """

    @abc.abstractmethod
    def to_host(self, array) -> np.ndarray:
        """A host NumPy copy of ``array``."""

    @abc.abstractmethod
    def host_view(self, array) -> np.ndarray:
        """``array`` as a NumPy array: itself on the host, else a host copy."""

    def scalar_on_host(self, array):
        """The 0-d array ``array`` of this backend as a host array where reading it waits
        for nothing (on the host: itself); None on a GPU, where the read would wait for
        the device's queued work: the caller then uses it on the device."""
        return self.host_view(array)

    @abc.abstractmethod
    def from_host(self, host: np.ndarray, device: str):
        """A host array as this backend's array on ``device`` (a copy on GPUs)."""

    @abc.abstractmethod
    def copy_from_host(self, dst, host: np.ndarray) -> None:
        """Copy a host array of ``dst``'s shape and dtype straight into ``dst``."""

    @abc.abstractmethod
    def launch(self, kernel, n: int, *args) -> None:
        """Run ``kernel`` (a ``varstore.kernels`` Kernel) over ``n`` elements."""

    def fill(self, storage, word) -> None:
        """Set every element of the C-contiguous ``storage`` to ``word``: a NumPy scalar
        of its dtype, or a Python scalar that NumPy converts to it as we do (see
        ``values.SCALAR_FILLS``)."""
        with self.on_device(self.device_of(storage)):
            storage.fill(word)

    def allocator(self, shape: tuple, dtype: np.dtype, device: str):
        """A function of no arguments returning a new :meth:`empty` array of ``shape``
        and ``dtype`` on ``device`` (for callers that allocate the same array often)."""
        return functools.partial(self.empty, shape, dtype, device)

    def presenter(self, dtype: str):
        """The function ``storage -> self.present(storage, dtype)``."""
        return functools.partial(self.present, dtype=dtype)

    def bound_launch(self, kernel, n: int, args: dict, given, flat: bool = False):
        """A function ``run(*values)`` that runs ``kernel`` over ``n`` elements with
        ``args``, except the arguments named in ``given`` (a name or a tuple of names),
        which each call gives, in that order.

        The arguments are checked once, here (``args`` holds samples of the given ones:
        arrays of the same dtype and size, scalars of the same type). With ``flat``, a
        given array may be any C-contiguous array of its sample's size and itemsize (a
        value as its caller holds it): the run takes its flat words itself (a view of
        the sample's dtype, or just its address where that is all a launch reads).
        Backends that can skip the per-call binding override this; the default launches
        as :meth:`launch` does.
        """
        names = given_names(kernel, given)
        kernel.bind(args, n)
        fixed = {k: v for k, v in args.items() if k not in names}

        def run(*values):
            self.launch(kernel, n, **fixed, **dict(zip(names, values, strict=True)))

        return taking_flat(run, args, names) if flat else run

    @abc.abstractmethod
    def present(self, storage, dtype: str):
        """The storage array as users see it through ``Variable.value``."""

    #: Whether the array module computes with bfloat16 and float8 numbers (NumPy does,
    #: through ml_dtypes; CuPy does not: reads of those dtypes are cast to float32, see
    #: ``casting.readable``).
    computes_small_floats = True

    @abc.abstractmethod
    def device_of(self, array) -> str:
        """The device name ``array`` lives on."""

    # Checkpoints (see varstore.checkpoint): raw bytes in, raw bytes out, in bounded pieces.
    @abc.abstractmethod
    def write_bytes(self, storage, write) -> None:
        """Hand the raw bytes of ``storage`` (C order) to ``write(memoryview)``, in order,
        without a host copy of the whole array."""

    @abc.abstractmethod
    def read_bytes(self, storage, readinto) -> None:
        """Fill the raw bytes of ``storage`` from ``readinto(memoryview)``, which fills the
        whole view it is given or raises; no host copy of the whole array."""

    @abc.abstractmethod
    def address(self, array) -> int:
        """The byte address of ``array``'s first element (what multi-tensor kernels' tables
        hold)."""

    def addresses(self, arrays) -> list:
        """:meth:`address` of each of ``arrays`` (a sync's operands: one call for all)."""
        return [self.address(array) for array in arrays]

    def aligned(self, array) -> bool:
        """True when every element of ``array`` (of this backend) starts at a multiple of
        its itemsize, as the kernels' loads and stores need (CuPy's arrays have no
        ``flags.aligned``)."""
        return array.flags.aligned

    def copy(self, array):
        """A C-contiguous copy of ``array`` (of this backend), on the device that holds it."""
        return array.copy()

    @abc.abstractmethod
    def copyto(self, dst, src) -> None:
        """``dst[...] = src`` for arrays of this backend of the same shape and dtype, with
        NumPy's result when ``src`` overlaps ``dst`` (the same-dtype ``assign``), run on
        ``dst``'s device."""

    def add_same(self, storage, value, dtype, shape: tuple, sign: int) -> bool:
        """``storage += value`` (``sign`` 1; -1: ``-=``) by the array module's ufunc, with
        NumPy's result, when ``value`` is an array of this backend whose dtype is the
        object ``dtype`` and whose shape is ``shape``, on ``storage``'s device
        (``storage`` not None); False, nothing done, otherwise (``assign_add``'s shortcut,
        in one call). Here a value that shares memory with ``storage`` is refused too;
        NumPy's override needs no such check."""
        if (storage is None or not self.owns(value) or value.dtype is not dtype or value.shape != shape
                or self.device_of(value) != self.device_of(storage) or self.shares_memory(storage, value)):
            return False
        self.add_into(storage, value, sign)
        return True

    def apart_contiguous(self, storage, value) -> bool:
        """True when ``value`` is a plain (not a subclass) C-contiguous array of this
        backend on ``storage``'s device that shares none of its memory: what a prepared
        write takes as it is. One call for the checks a repeated write makes."""
        return (type(value) is self.xp.ndarray and value.flags.c_contiguous
                and self.device_of(value) == self.device_of(storage) and not self.shares_memory(storage, value))

    def setitem(self, storage, key, value) -> None:
        """``storage[key] = value`` by the array module (a basic key; a scalar of the
        storage's dtype, or one it converts to our bits), on ``storage``'s device."""
        with self.on_device(self.device_of(storage)):
            storage[key] = value

    def on_device(self, device: str):
        """A context in which the array module's own operations (ufuncs, ``astype``,
        ``fill``, ``linalg``) run on ``device``; CuPy runs them on the current device,
        whichever device holds their arrays. On the host it does nothing."""
        return _NOWHERE

    def add_into(self, dst, operand, sign: int) -> None:
        """``dst += operand`` (``sign`` 1) or ``dst -= operand`` (-1) by the array
        module's own ufunc, on ``dst``'s device; ``operand`` is of ``dst``'s dtype and
        broadcasts to its shape."""
        with self.on_device(self.device_of(dst)):
            (self.xp.add if sign > 0 else self.xp.subtract)(dst, operand, out=dst)

    @abc.abstractmethod
    def shares_memory(self, array, other) -> bool:
        """True when ``other`` (any array) reads memory that writing ``array`` changes: a
        write from ``other`` into ``array`` must then go through a copy of ``other``.
        Cheap when the two are apart (their address ranges are compared first); exact
        where the ranges meet, and True when the exact answer would cost too much."""

    def cuda_array_interface(self, storage) -> dict:
        raise AttributeError(f"{self.name} arrays live on the host and have no __cuda_array_interface__")

    def synchronize(self, device: str) -> None:
        """Wait for the work queued on ``device`` (its current stream, on a GPU)."""
        return None  # (by default there is nothing to do)

    def stream_key(self, device: str):
        """What names the queue the next launch on ``device`` goes to (CuPy's current
        stream on a GPU; None on the host): arrays kept between launches for their
        kernels to read were allocated in that stream's order, and are not reused from
        another."""
        return None


#: How much work NumPy's exact overlap solver may spend before we assume an overlap (a
#: copy is always correct; only its cost is at stake).
EXACT_OVERLAP_WORK = 1 << 16


def layouts_share_memory(a: tuple, b: tuple) -> bool:
    """Whether two strided layouts ``(address, shape, byte strides, itemsize)`` touch a
    common byte: NumPy's exact solver, run on array headers that point at the addresses
    (never dereferenced, so device addresses work too)."""
    try:
        return bool(np.shares_memory(_header(*a), _header(*b), max_work=EXACT_OVERLAP_WORK))
    except np.exceptions.TooHardError:
        return True


class _Layout:
    __slots__ = ("__array_interface__",)

    def __init__(self, address, shape, strides, itemsize):
        self.__array_interface__ = {"data": (address, True), "shape": tuple(shape), "strides": tuple(strides),
                                    "typestr": f"|V{itemsize}", "version": 3}


def _header(address, shape, strides, itemsize) -> np.ndarray:
    return np.asarray(_Layout(address, shape, strides, itemsize))


def byte_bounds(address: int, shape: tuple, strides: tuple, itemsize: int) -> tuple:
    """``[low, high)``: the bytes a strided layout can touch (empty for no elements)."""
    low = high = address
    for n, stride in zip(shape, strides, strict=True):
        if n == 0:
            return address, address
        if stride > 0:
            high += (n - 1) * stride
        else:
            low += (n - 1) * stride
    return low, high + itemsize


_DLPACK_CUDA_DEVICES = (2, 13)  # kDLCUDA, kDLCUDAManaged


def given_names(kernel, given) -> tuple:
    """``given`` (an argument name, or several) of :meth:`Backend.bound_launch` as a
    tuple; TypeError for a name that is not one of ``kernel``'s arguments."""
    names = (given,) if isinstance(given, str) else tuple(given)
    unknown = sorted(set(names) - set(kernel.argument_names))
    if unknown:
        raise TypeError(f"bound_launch: {unknown} are not arguments of kernel {kernel.name!r} (it takes "
                        f"{list(kernel.argument_names)}).")
    return names


def taking_flat(run, args: dict, names: tuple):
    """``run`` (a bound launch given ``names``) taking each given array as any
    C-contiguous array of its sample's size and itemsize: it passes on the array's flat
    view of the sample's dtype (see ``Backend.bound_launch``'s ``flat``)."""
    words = [getattr(args[name], "dtype", None) for name in names]  # (None: a scalar)
    if words == [words[0]] and words[0] is not None:
        word = words[0]
        return lambda value: run(value.ravel().view(word))
    return lambda *values: run(*[v if w is None else v.ravel().view(w) for v, w in zip(values, words, strict=True)])


def is_device_array(obj) -> bool:
    """True for GPU arrays: CuPy, torch.cuda, Numba, JAX on GPU... (not NumPy, lists)."""
    if isinstance(obj, np.ndarray):
        return False
    try:
        if hasattr(obj, "__cuda_array_interface__"):
            return True
    except Exception:  # (torch: RuntimeError for a CUDA tensor that requires grad; its conversion says why)
        return True
    device = getattr(obj, "__dlpack_device__", None)
    if device is None:
        return False
    try:
        return device()[0] in _DLPACK_CUDA_DEVICES
    except Exception:
        return False

