"""What every op module shares: the :class:`Case` an op builds, the :class:`Op` entry of
the list, and the helpers that shape, rotate, sample and check the data.

Each op builds a :class:`Case` for a size (the bytes of the op's float32 data): the
functions to time (ours first, then the baselines), the bytes one call must move, which
ceiling it is held against, and a check of ours' result that raises :class:`CheckFailed`
(a fast but wrong kernel fails the run).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

ELEMENT = 4  # every op's size is the bytes of its float32 data
MAX_ROTATION = 64


class CheckFailed(AssertionError):
    """Ours gave a wrong result inside the benchmark."""


@dataclasses.dataclass
class Case:
    fns: dict  # label -> zero-argument function; "ours" first
    bytes_moved: int | None
    check: Callable[[], None]
    ceiling: str | None = None  # "copy", "fill" or "h2d": held against that op moving the same bytes
    keep: list = dataclasses.field(default_factory=list)  # objects that must live while timing
    # Figures measured once after the timing (a dict for the row's JSON), or None.
    extra: Callable[[], dict] | None = None


@dataclasses.dataclass(frozen=True)
class Op:
    name: str
    summary: str
    build: Callable
    metric: str = "GB/s"  # what the plot shows: "GB/s" or "us" per call
    max_bytes: int | None = None  # larger sizes are skipped, with this reason
    skip_reason: str = ""


SMALL_ONLY = 4 * 2**20


# ---------------------------------------------------------------- helpers


def square_shape(n: int) -> tuple[int, int]:
    """A 2-D shape of ``n`` elements (n a power of two): rows <= cols, both powers of two."""
    rows = 2 ** (int(math.log2(n)) // 2)
    return rows, n // rows


def rotation(ctx, bytes_per_copy: int) -> int:
    """How many copies of the buffers to cycle through so that they outgrow the cache
    (no more than half the calls a measurement makes: each copy is used warm)."""
    wanted = -(-ctx.native.rotation_bytes // max(bytes_per_copy, 1))
    return max(1, min(MAX_ROTATION, ctx.max_copies, wanted))


def cycle(fns: list) -> Callable:
    """One function calling each of ``fns`` in turn."""
    if len(fns) == 1:
        return fns[0]
    state = {"i": 0}

    def call():
        i = state["i"]
        state["i"] = (i + 1) % len(fns)
        return fns[i]()

    return call


def host_normal(n: int, seed: int, scale: float = 1.0, edges: bool = False) -> np.ndarray:
    """float32 normal data; with ``edges``, its first elements are the cases casts get wrong
    (NaN, inf, overflow, subnormals, ties). Past 2**20 elements the draws repeat: a GiB of
    fresh normals would cost seconds per case, and only the bytes' count matters here."""
    base = np.random.default_rng(seed).standard_normal(min(n, 2**20), dtype=np.float32) * np.float32(scale)
    data = np.empty(n, np.float32)
    whole = n - n % base.size
    data[:whole].reshape(-1, base.size)[...] = base
    data[whole:] = base[: n - whole]
    if not edges:
        return data
    edges = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-45, 65504.0, 65520.0,
                      448.0, 464.0, 57344.0, 61440.0, 3.4e38, 1.0 + 2**-8, 1.0 + 3 * 2**-8,
                      2**-14, 2**-24, 2**-9, 2**-10], dtype=np.float32)
    m = min(n, edges.size)
    data[:m] = edges[:m]
    return data


def sample(ctx, array, m: int = 2**18) -> np.ndarray:
    """About ``m`` elements spread evenly over ``array``, on the host."""
    flat = array.reshape(-1)
    stride = max(1, flat.size // m)
    return ctx.native.to_host(flat[::stride])


def sample_indices(n: int, m: int = 2**16) -> np.ndarray:
    """The first 4096 indices and ``m`` more spread over ``n``."""
    spread = np.linspace(0, n - 1, num=min(n, m), dtype=np.int64)
    return np.unique(np.concatenate([np.arange(min(n, 4096)), spread]))


def works(fn) -> bool:
    """Whether one call of a baseline succeeds: a library that lacks an operation for a
    dtype (PyTorch's on some devices) loses that baseline, not the op's row."""
    try:
        fn()
    except Exception:  # noqa: BLE001 - any failure means "no such baseline here"
        return False
    return True


def require(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def bits(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    return array.view(f"u{array.dtype.itemsize}")


def storage_of(variable):
    # The benchmark times the in-place paths the public calls use.
    return variable.stored.storage
