"""The worker threads that run parts of a CPU launch.

A launch split over threads gives each worker one range and runs the first range in
the calling thread. Through ``concurrent.futures`` that hand-off (submit, then wait for
the result) took 25-77 µs on a 2-core VM: the worker sleeps on a lock, and waking it
goes through the OS, then through the GIL. Here a worker that has finished a range
stays awake for ``VARSTORE_SPIN_US`` microseconds (default 1000), waiting for the next
one in compiled code that holds no GIL (an acquire load in a loop with a pause hint),
then sleeps on a semaphore; the caller waits for the result the same way. A hand-off to
a waiting worker takes 3-4 µs, so shorter launches gain from a second thread. OpenMP
runtimes do the same (``GOMP_SPINCOUNT``, ``KMP_BLOCKTIME``).

One launch at a time uses the workers: a launch that finds them busy (another Python
thread's) runs in its own thread, unsplit.
"""

from __future__ import annotations

import functools
import os
import platform
import threading
import time
import weakref

import numpy as np

_LINE = 16  # int64 words per worker row: 128 bytes, so that no two workers share a line
_POSTED, _DONE = 0, 8  # words of a row: the last range handed to the worker, the last it finished
SPIN_US_DEFAULT = 1000


def spin_microseconds() -> int:
    """How long a worker (or a caller waiting for one) stays awake: ``VARSTORE_SPIN_US``
    (a non-negative integer; 0 sleeps at once), else 1000."""
    value = os.environ.get("VARSTORE_SPIN_US")
    if value is None or not value.strip():
        return SPIN_US_DEFAULT
    if not (value.strip().isascii() and value.strip().isdecimal()):
        raise ValueError(f"Invalid value for environment variable VARSTORE_SPIN_US. Expected a non-negative integer "
                         f"(microseconds a CPU worker thread waits awake for work). Received: "
                         f"VARSTORE_SPIN_US={value!r}")
    return int(value)


@functools.cache
def _spin_functions():
    """``(wait, publish)``, compiled without the GIL: ``wait(flags, row, word, old,
    spins)`` returns ``flags[row, word]`` once it differs from ``old``, or ``old`` after
    ``spins`` tries; ``publish(flags, row, word, value)`` stores with release order."""
    import numba
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    from ..kernels._targets import _numba_cache_dir

    def word_pointer(context, builder, signature, args):
        flags = context.make_array(signature.args[0])(context, builder, args[0])
        row, word = (context.cast(builder, args[i], signature.args[i], types.intp) for i in (1, 2))
        return builder.gep(flags.data, [builder.add(builder.mul(row, row.type(_LINE)), word)])

    @intrinsic
    def load_acquire(typingctx, flags, row, word):
        def codegen(context, builder, signature, args):
            return builder.load_atomic(word_pointer(context, builder, signature, args), "acquire", 8)

        return types.int64(flags, row, word), codegen

    @intrinsic
    def store_release(typingctx, flags, row, word, value):
        def codegen(context, builder, signature, args):
            item = context.cast(builder, args[3], signature.args[3], types.int64)
            builder.store_atomic(item, word_pointer(context, builder, signature, args), "release", 8)
            return context.get_dummy_value()

        return types.none(flags, row, word, value), codegen

    x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")

    @intrinsic
    def pause(typingctx):
        """The spin-loop hint (``pause`` on x86: it frees the core's resources for its
        sibling hyperthread and avoids a memory-order flush when the load changes)."""

        def codegen(context, builder, signature, args):
            if x86:
                fn = builder.module.declare_intrinsic("llvm.x86.sse2.pause", (), ir.FunctionType(ir.VoidType(), []))
                builder.call(fn, [])
            return context.get_dummy_value()

        return types.none(), codegen

    def wait(flags, row, word, old, spins):
        for _ in range(spins):
            value = load_acquire(flags, row, word)
            if value != old:
                return value
            pause()
        return load_acquire(flags, row, word)

    def publish(flags, row, word, value):
        store_release(flags, row, word, value)

    with _numba_cache_dir([numba.config]) as cacheable:
        jit = numba.njit(nogil=True, cache=cacheable)
        return jit(wait), jit(publish)


@functools.cache
def _spins_per_microsecond() -> float:
    """Tries of ``wait`` per microsecond on this machine (measured once: a pause takes
    10 to 150 cycles depending on the processor)."""
    wait, _ = _spin_functions()
    flags = np.zeros((1, _LINE), np.int64)
    wait(flags, 0, 0, 0, 10)  # (compiled or loaded before it is timed; the word stays 0)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        wait(flags, 0, 0, 0, 20_000)
        best = min(best, time.perf_counter() - start)
    return 20_000 / max(best * 1e6, 1e-3)


class _Shared:
    """What the caller and the workers share. Row ``r`` of ``flags`` is worker ``r``'s:
    the caller posts ticket ``t`` (with the job beside it), the worker runs the job and
    says ``t`` is done. The threads hold this, not the ``CpuThreads``, so that a dropped
    one is collected and its threads told to stop."""

    def __init__(self, workers: int, spins: int):
        self.wait, self.publish = _spin_functions()
        self.flags = np.zeros((workers, _LINE), np.int64)
        self.jobs: list = [None] * workers
        self.errors: list = [None] * workers
        self.spins = spins
        self.lock = threading.Lock()
        self.worker_asleep = [False] * workers
        self.caller_waits = [0] * workers  # the ticket a sleeping caller waits for (0: none)
        self.wake_worker = [threading.Semaphore(0) for _ in range(workers)]
        self.wake_caller = [threading.Semaphore(0) for _ in range(workers)]

    def post(self, row: int, job) -> int:
        """Hand ``job`` to worker ``row``; the number to wait for."""
        self.jobs[row] = job
        ticket = int(self.flags[row, _POSTED]) + 1
        self.publish(self.flags, row, _POSTED, ticket)
        with self.lock:
            if self.worker_asleep[row]:
                self.worker_asleep[row] = False
                self.wake_worker[row].release()
        return ticket

    def wait_done(self, row: int, ticket: int) -> None:
        if self.wait(self.flags, row, _DONE, ticket - 1, self.spins) == ticket:
            return
        with self.lock:
            if self.flags[row, _DONE] == ticket:
                return
            self.caller_waits[row] = ticket
        self.wake_caller[row].acquire()

    def serve(self, row: int) -> None:
        """A worker thread's life: wait for a job, run it, say it is done."""
        wait, publish, flags, seen = self.wait, self.publish, self.flags, 0
        while True:
            ticket = wait(flags, row, _POSTED, seen, self.spins)
            if ticket == seen:  # nothing came while awake: sleep until the caller posts
                with self.lock:
                    asleep = self.worker_asleep[row] = flags[row, _POSTED] == seen
                if asleep:
                    self.wake_worker[row].acquire()
                continue
            seen = ticket
            job, self.jobs[row] = self.jobs[row], None
            if job is None:  # (stop)
                return
            loop, start, stop, values = job
            try:
                loop(start, stop, *values)
            except BaseException as error:  # (handed to the caller, which raises it)
                self.errors[row] = error
            job = loop = values = None  # (the arrays are not kept alive while waiting)
            publish(flags, row, _DONE, ticket)
            with self.lock:  # (by ticket: the caller may be past this one, waiting for the next)
                if self.caller_waits[row] == ticket:
                    self.caller_waits[row] = 0
                    self.wake_caller[row].release()

    def stop(self) -> None:
        for row in range(len(self.jobs)):
            self.post(row, None)


class CpuThreads:
    """``workers`` threads that run ranges of CPU loops (the GIL released) beside the
    calling thread. Started on first use, and again in a forked child (which has none
    of its parent's threads)."""

    def __init__(self, workers: int, spin_us: int = SPIN_US_DEFAULT):
        self.workers = workers
        self.spin_us = spin_us
        self._shared = None
        self.threads: list[threading.Thread] = []
        self._busy = threading.Lock()
        _live.add(self)

    def _start(self) -> _Shared:
        spins = int(self.spin_us * _spins_per_microsecond()) if self.spin_us else 0
        shared = _Shared(self.workers, spins)
        self.threads = [threading.Thread(target=shared.serve, args=(row,), name=f"varstore-cpu-{row + 1}", daemon=True)
                        for row in range(self.workers)]
        for thread in self.threads:
            thread.start()
        weakref.finalize(self, shared.stop)
        self._shared = shared
        return shared

    def run(self, loop, ranges, values) -> None:
        """``loop(start, stop, *values)`` for every ``(start, stop)`` of ``ranges``: the
        first in this thread, the others on the workers (in this thread too when another
        launch has them); returns when all are done, raising the first error."""
        if len(ranges) - 1 > self.workers or not self._busy.acquire(blocking=False):
            for start, stop in ranges:
                loop(start, stop, *values)
            return
        try:
            shared = self._shared or self._start()
            tickets = [shared.post(row, (loop, start, stop, values)) for row, (start, stop) in enumerate(ranges[1:])]
            try:
                loop(*ranges[0], *values)
            finally:
                for row, ticket in enumerate(tickets):
                    shared.wait_done(row, ticket)
                errors = [shared.errors[row] for row in range(len(tickets))]
                shared.errors[:len(tickets)] = [None] * len(tickets)
            for error in errors:
                if error is not None:
                    raise error
        finally:
            self._busy.release()

    def _forget_threads(self) -> None:
        """In a forked child: the parent's threads are not there; start new ones on use."""
        self._shared = None
        self.threads = []
        self._busy = threading.Lock()


_live: weakref.WeakSet = weakref.WeakSet()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: [pool._forget_threads() for pool in list(_live)])
