"""Seeds, and filling storage with random values, on any backend.

Element ``i`` of a fill is a pure function of (seed, distribution, i): see
``varstore.kernels.random_fill``. Unseeded initializers draw their seed at construction
from a source that :func:`set_seed` re-seeds.
"""

from __future__ import annotations

import functools
import random as _random
import threading

import numpy as np

from . import kernels
from .casting import destination_words
from .dtypes import record, storage_dtype
from .errors import ArgumentTypeError

_source = _random.Random()
_source_lock = threading.Lock()

DISTRIBUTIONS = ("uniform", "normal", "truncated_normal")
# Signed 64-bit: each seed is a distinct Philox key (its two's-complement bits).
_SEED_RANGE = (-(2**63), 2**63)


def set_seed(seed: int) -> None:
    """Re-seed the source that unseeded initializers draw their seeds from.

    >>> import varstore as vs
    >>> vs.set_seed(7); a = vs.initializers.RandomNormal()((3,))
    >>> vs.set_seed(7); b = vs.initializers.RandomNormal()((3,))   # the same values as a
    """
    seed = check_seed(seed)
    with _source_lock:
        _source.seed(seed & 0xFFFFFFFFFFFFFFFF)  # (Random.seed would map -n and n together)


def draw_seed() -> int:
    """A fresh seed from the source :func:`set_seed` controls."""
    with _source_lock:
        # randrange(1, 2**63)'s draw (the same seeds after set_seed), without its overhead
        r = _source.getrandbits(63)
        while r == 2**63 - 1:
            r = _source.getrandbits(63)
        return r + 1


def check_seed(seed) -> int:
    """``seed`` as an int, or a ValueError naming it (ints from -2**63 to 2**63 - 1)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ArgumentTypeError(f"Invalid value for argument `seed`. Expected an int or None. Received: seed={seed!r}")
    if not _SEED_RANGE[0] <= int(seed) < _SEED_RANGE[1]:
        raise ValueError(
            f"Invalid value for argument `seed`. Expected an int in [-2**63, 2**63). Received: seed={seed!r}"
        )
    return int(seed)


@functools.cache
def _fill_plan(dtype: str, distribution: str) -> tuple:
    """``(kernel, values per group, word view or None, seed_to_key, extra scalars)`` of a
    ``distribution`` fill of a ``dtype`` storage array."""
    R = kernels.random_fill
    seed_to_key = kernels.philox.seed_to_key
    dist = {"uniform": R.UNIFORM, "normal": R.NORMAL, "truncated_normal": R.TRUNCATED_NORMAL}[distribution]
    if dtype == "float64":
        return R.FILL_KERNELS[(dist, True)], R.F64_PER_GROUP, None, seed_to_key, {}
    # Drawn in float32; small floats rounded into their format in the same kernel.
    fmt = record(dtype).format
    view = np.dtype(np.uint32) if fmt is None else destination_words(np.empty(0, storage_dtype(dtype))).dtype
    fmt_args = (fmt or record("bfloat16").format).kernel_args
    extra = {"encode": int(fmt is not None), "fmt": tuple(int(v) for v in fmt_args)}
    return R.FILL_KERNELS[(dist, False)], R.WORDS_PER_GROUP, view, seed_to_key, extra


def fill_random(backend, storage, dtype: str, seed: int, distribution: str, a: float, b: float) -> None:
    """Fill ``storage`` (a float storage array of ``backend``) in place with ``a + b * X``.

    X is uniform on [0, 1), standard normal, or standard normal truncated to [-2, 2]
    (``distribution``). No temporary the size of ``storage`` is made.
    """
    kernel, group, view, seed_to_key, extra = _fill_plan(dtype, distribution)
    k0, k1 = seed_to_key(seed)
    out = storage.reshape(-1)  # (a view: storage is C-contiguous)
    if view is not None and out.dtype != view:
        out = out.view(view)
    a, b = float(a), float(b)  # (rounded to float32 by the launch for float32 and smaller)
    n = out.size
    key = (backend, backend.device_of(storage), dtype, distribution, n)  # (a bound launch keeps to its device)
    run = _bound_fills.get(key)
    if run is not None:
        run(out, k0, k1, a, b)
        return
    whole = n - n % group
    backend.launch(kernel, whole // group, dst=out if whole == n else out[:whole], first=0, k0=k0, k1=k1, a=a, b=b,
                   **extra)
    if whole < n:  # a ragged tail: draw its whole group into a scratch group
        scratch = backend.empty((group,), out.dtype, backend.device_of(storage))
        backend.launch(kernel, 1, dst=scratch, first=whole // group, k0=k0, k1=k1, a=a, b=b, **extra)
        backend.copyto(out[whole:], scratch[: n - whole])  # (on the storage's device: CuPy's own copy)
    elif n and key in _seen_fills:  # the second fill of this size: bind it for the next ones
        if len(_bound_fills) >= _BOUND_FILLS:
            _bound_fills.clear()
        _bound_fills[key] = backend.bound_launch(
            kernel, n // group, {"dst": out, "first": 0, "k0": k0, "k1": k1, "a": a, "b": b, **extra},
            ("dst", "k0", "k1", "a", "b"))
    elif n:
        if len(_seen_fills) >= _BOUND_FILLS:
            _seen_fills.clear()
        _seen_fills.add(key)


# Fills of one size repeat (a model's layers share shapes): from the second fill of a
# (backend, device, dtype, distribution, size), the launch is bound once and later fills pass only the
# output, the key and the scale (Backend.bound_launch). Bounded: cleared when full.
_BOUND_FILLS = 256
_bound_fills: dict = {}
_seen_fills: set = set()


def normal_matrix(backend, shape: tuple, dtype: str, seed: int, device: str):
    """A new ``shape`` array of standard normals (float32, or float64 for float64)."""
    work = "float64" if dtype == "float64" else "float32"
    out = backend.empty(shape, storage_dtype(work), device)
    fill_random(backend, out, work, seed, "normal", 0.0, 1.0)
    return out, work
