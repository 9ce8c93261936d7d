"""Timing: CUDA events on the op's stream on a GPU, ``perf_counter`` on the CPU.

Every variant of a case (ours, the baselines, the ceiling) is timed in alternation, so
that drift in clocks or in the machine's load hits them alike. The number of repeats
adapts to the call's time so that a run over sizes from 4 KiB to 1 GiB ends: at most
``max_repeats``, at least ``min_repeats``, and otherwise as many as fit in ``budget_s``
per variant.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time

from varstore.memory import parse_memory_limit


class HostClock:
    """Wall time of a call, after waiting for the device (a no-op on the CPU)."""

    name = "perf_counter"

    def __init__(self, synchronize):
        self._synchronize = synchronize

    def time(self, fn) -> tuple[float, float]:
        """(seconds of the op, host seconds until the call returned)."""
        self._synchronize()
        start = time.perf_counter()
        fn()
        returned = time.perf_counter()
        self._synchronize()
        return time.perf_counter() - start, returned - start


class CudaEventClock:
    """CUDA events recorded on CuPy's current stream, the one our kernels launch on."""

    name = "cuda events"

    def __init__(self, cupy):
        self._cupy = cupy
        self._start = cupy.cuda.Event()
        self._stop = cupy.cuda.Event()

    def time(self, fn) -> tuple[float, float]:
        # Work queued before the call must not delay the start event.
        self._cupy.cuda.get_current_stream().synchronize()
        self._start.record()
        start = time.perf_counter()
        fn()
        returned = time.perf_counter()
        self._stop.record()
        self._stop.synchronize()
        return self._cupy.cuda.get_elapsed_time(self._start, self._stop) / 1e3, returned - start


@dataclasses.dataclass(frozen=True)
class Plan:
    """How many times to call: warm-ups, and the bounds of the timed repeats."""

    warmup: int = 3
    min_repeats: int = 5
    max_repeats: int = 20
    budget_s: float = 2.0


FULL = Plan()
QUICK = Plan(warmup=1, min_repeats=3, max_repeats=7, budget_s=0.15)


@dataclasses.dataclass
class Timing:
    median_s: float
    min_s: float
    host_median_s: float
    repeats: int
    cold_s: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def time_variants(clock, fns: dict, plan: Plan) -> dict[str, Timing]:
    """Median times of each function in ``fns``, called in alternation.

    The first call of each is reported apart as ``cold_s`` (compilation, first touch).
    The second, untimed, sizes the warm-ups and repeats: the first may be mostly compiling.
    """
    cold = {name: clock.time(fn)[0] for name, fn in fns.items()}
    warm = {name: clock.time(fn)[0] for name, fn in fns.items()}
    slowest = max(warm.values(), default=0.0)
    # A call that takes a large part of the budget is already warm after its first runs.
    for _ in range(plan.warmup - 2 if slowest < plan.budget_s / 4 else 0):
        for fn in fns.values():
            clock.time(fn)
    per_round = sum(min(t, plan.budget_s) for t in warm.values()) or 1e-9
    repeats = int(min(plan.max_repeats, max(plan.min_repeats, plan.budget_s * len(fns) / per_round)))
    device = {name: [] for name in fns}
    host = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            seconds, host_seconds = clock.time(fn)
            device[name].append(seconds)
            host[name].append(host_seconds)
    return {
        name: Timing(
            median_s=statistics.median(device[name]),
            min_s=min(device[name]),
            host_median_s=statistics.median(host[name]),
            repeats=repeats,
            cold_s=cold[name],
        )
        for name in fns
    }


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"4KiB,1MiB"`` -> byte counts: powers of two from 4 KiB, as the ops' shapes need.

    Raises:
        ValueError: a size that is not such a power of two.
    """
    sizes = []
    for item in text.replace(" ", "").split(","):
        try:
            value = parse_memory_limit(item)
        except (ValueError, TypeError):
            value = None
        if value is None or value < 4096 or value & (value - 1) or math.log2(value) > 40:
            raise ValueError(
                f"Invalid value for argument `--sizes`. Expected comma-separated powers of two from "
                f"4KiB to 1TiB, such as '4KiB,1MiB,64MiB'. Received: {item!r}"
            )
        sizes.append(value)
    return tuple(sorted(set(sizes)))
