"""The worker threads that run parts of a CPU launch.

A launch split over threads gives each worker one range and runs the first range in
the calling thread. Through ``concurrent.futures`` that hand-off (submit, then wait for
the result) took 25-77 µs on a 2-core VM: the worker sleeps on a lock, and waking it
goes through the OS. Here a worker that has finished a range stays awake for
``VARSTORE_SPIN_US`` microseconds (default 1000), waiting for the next one in compiled
code that holds no GIL (a load in a loop with a pause hint), then sleeps on a
semaphore; the caller waits for the result the same way. OpenMP runtimes do the same
(``GOMP_SPINCOUNT``, ``KMP_BLOCKTIME``).

The GIL is the other half of the hand-off. A thread that asks for it while another
holds it sleeps in the OS, and waking it costs what waking a worker did. So every
signal a thread waits for is stored from compiled code that has released the GIL:
the caller hands a range over (``cpu_spin.hand_over``) and waits there until the worker
has taken its job and, a moment later, released the GIL again in its loop; the worker
says it is done (``cpu_spin.finish``) without the GIL and waits there for the next one.
A split launch of 2**17 elements of a cast took 34 µs, against 46 µs in one thread and
60-67 µs when the threads handed over through the GIL (2-core VM).

One launch at a time uses the workers: a launch that finds them busy (another Python
thread's) runs in its own thread, unsplit.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import weakref

import numpy as np

SPIN_US_DEFAULT = 1000
# After a worker has taken its job, the caller waits this long before it asks for the
# GIL back: the worker's call into its loop (numba's argument checks) holds the GIL for
# about 1-2 µs before the loop releases it.
_GRACE_US = 3
# How long the caller waits for an awake worker to take its job before going on.
_TAKE_US = 50


def spin_microseconds(default: int = SPIN_US_DEFAULT) -> int:
    """How long a worker (or a caller waiting for one) stays awake: ``VARSTORE_SPIN_US``
    (a non-negative integer; 0 sleeps at once), else ``default``."""
    value = os.environ.get("VARSTORE_SPIN_US")
    if value is None or not value.strip():
        return default
    if not (value.strip().isascii() and value.strip().isdecimal()):
        raise ValueError(f"Invalid value for environment variable VARSTORE_SPIN_US. Expected a non-negative integer "
                         f"(microseconds a CPU worker thread waits awake for work). Received: "
                         f"VARSTORE_SPIN_US={value!r}")
    return int(value)


def _spin():
    """The compiled half, ``cpu_spin`` (imported on first use: it compiles with numba)."""
    from . import cpu_spin

    return cpu_spin


@functools.cache
def _spins_per_microsecond() -> float:
    """Tries of ``wait`` per microsecond on this machine (measured once: a pause takes
    10 to 150 cycles depending on the processor)."""
    wait = _spin().wait
    flags = np.zeros((1, _spin().LINE), np.int64)
    wait(flags, 0, 0, 0, 10)  # (compiled or loaded before it is timed; the word stays 0)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        wait(flags, 0, 0, 0, 20_000)
        best = min(best, time.perf_counter() - start)
    return 20_000 / max(best * 1e6, 1e-3)


class _Shared:
    """What the caller and the workers share. Row ``r`` of ``flags`` is worker ``r``'s
    (``cpu_spin`` names its words): the caller puts the job in ``jobs[r]`` and posts a
    ticket, the worker takes it, runs the job and says the ticket is done. Tickets only
    grow, so a word holding an older one never matches. The threads hold this, not the
    ``CpuThreads``, so that a dropped one is collected and its threads told to stop."""

    def __init__(self, workers: int, spin_us: int):
        self.s = s = _spin()  # (the functions, and the words of a row)
        self.wait, self.store, self.hand_over, self.finish = s.wait, s.store, s.hand_over, s.finish
        rate = _spins_per_microsecond() if spin_us else 0.0
        self.spins = int(spin_us * rate)
        self.take, self.grace = int(min(spin_us, _TAKE_US) * rate), int(_GRACE_US * rate)
        self.flags = _aligned_rows(workers, s.LINE)
        self.jobs: list = [None] * workers
        self.errors: list = [None] * workers
        self.lock = threading.Lock()  # (for the sleeping side's flags; held briefly)
        self.worker_asleep = [False] * workers
        self.caller_waits = [0] * workers  # the ticket a sleeping caller waits for (0: none)
        self.wake_worker = [threading.Semaphore(0) for _ in range(workers)]
        self.wake_caller = [threading.Semaphore(0) for _ in range(workers)]

    def read(self, row: int, word: int) -> int:
        return self.wait(self.flags, row, word, 0, 0)  # (an atomic load, not NumPy's)

    def post(self, row: int, job) -> None:
        """Hand ``job`` to worker ``row``."""
        self.jobs[row] = job
        if self.hand_over(self.flags, row, self.read(row, self.s.POSTED) + 1, self.take, self.grace):
            with self.lock:
                self._wake_worker(row)

    def _wake_worker(self, row: int) -> None:
        """Wake worker ``row`` if it sleeps (with ``lock`` held)."""
        if self.worker_asleep[row]:
            self.wake_worker[row].release()
            self.worker_asleep[row] = False

    def wait_done(self, row: int) -> None:
        """Wait until worker ``row`` has done the last job posted to it."""
        ticket = self.read(row, self.s.POSTED)
        while self.wait(self.flags, row, self.s.DONE, ticket - 1, self.spins) != ticket:
            with self.lock:
                # (a post interrupted between its hand-over and its wake-up leaves the
                # worker asleep on a ticket it has not seen)
                self._wake_worker(row)
                self.caller_waits[row] = ticket
                self.store(self.flags, row, self.s.CALLER_WAITS, ticket)
                if self.read(row, self.s.DONE) == ticket:
                    self.caller_waits[row] = 0
                    return
            self.wake_caller[row].acquire()  # (then look again: it may be the wake-up of a wait an exception ended)

    def serve(self, row: int) -> None:
        """A worker thread's life: wait for a job, run it, say it is done."""
        s, flags, seen = self.s, self.flags, 0
        ticket = self.wait(flags, row, s.POSTED, seen, self.spins)
        while True:
            if ticket == seen:  # nothing came while awake: sleep until the caller posts
                with self.lock:
                    self.store(flags, row, s.ASLEEP, 1)
                    asleep = self.worker_asleep[row] = self.read(row, s.POSTED) == seen
                if asleep:
                    self.wake_worker[row].acquire()
                self.store(flags, row, s.ASLEEP, 0)
                ticket = self.wait(flags, row, s.POSTED, seen, self.spins)
                continue
            seen = ticket
            job, self.jobs[row] = self.jobs[row], None
            self.store(flags, row, s.STARTED, ticket)
            if job is None:  # (stop)
                return
            loop, start, stop, values = job
            try:
                loop(start, stop, *values)
            except BaseException as error:  # (handed to the caller, which raises it)
                self.errors[row] = error
            job = loop = values = None  # (the arrays are not kept alive while waiting)
            ticket = self.finish(flags, row, seen, self.spins)
            if ticket == -1:  # the caller sleeps: wake it (by ticket: it may be past this one)
                with self.lock:
                    if self.caller_waits[row] == seen:
                        self.caller_waits[row] = 0
                        self.wake_caller[row].release()
                ticket = self.wait(flags, row, s.POSTED, seen, self.spins)

    def stop(self) -> None:
        for row in range(len(self.jobs)):
            self.post(row, None)


def _aligned_rows(rows: int, line: int) -> np.ndarray:
    """A zeroed (rows, line) int64 array starting on a 128-byte boundary (NumPy aligns
    to 16 bytes), so that each row has its cache lines to itself."""
    buffer = np.zeros(rows * line + 16, np.int64)
    skip = (-buffer.ctypes.data % 128) // 8
    return buffer[skip:skip + rows * line].reshape(rows, line)


class CpuThreads:
    """``workers`` threads that run ranges of CPU loops (the GIL released) beside the
    calling thread. Started on first use, and again in a forked child (which has none
    of its parent's threads)."""

    def __init__(self, workers: int, spin_us: int = SPIN_US_DEFAULT):
        self.workers = workers
        self.spin_us = spin_us
        self._shared = self._stop = None
        self.threads: list[threading.Thread] = []
        self._busy = threading.Lock()
        _live.add(self)

    def _start(self) -> _Shared:
        shared = _Shared(self.workers, self.spin_us)
        self._stop = weakref.finalize(self, shared.stop)  # (before any thread runs)
        self._stop.atexit = False  # (at exit the daemon threads stop where they next need the GIL)
        self.threads = [threading.Thread(target=shared.serve, args=(row,), name=f"varstore-cpu-{row + 1}", daemon=True)
                        for row in range(self.workers)]
        for thread in self.threads:
            thread.start()
        self._shared = shared
        return shared

    def run(self, loop, ranges, values) -> None:
        """``loop(start, stop, *values)`` for every ``(start, stop)`` of ``ranges``: the
        first in this thread, the others on the workers (in this thread too when another
        launch has them); returns when all are done, raising the first error. An
        exception from a signal handler meanwhile (Ctrl-C) is raised once every range is
        done: no part of the launch goes on writing after it returns."""
        if len(ranges) - 1 > self.workers or not self._busy.acquire(blocking=False):
            for start, stop in ranges:
                loop(start, stop, *values)
            return
        used = len(ranges) - 1
        try:
            shared = self._shared or self._start()
            shared.errors[:used] = [None] * used  # (an interrupted launch may have left some)
            try:
                for row, (start, stop) in enumerate(ranges[1:]):
                    shared.post(row, (loop, start, stop, values))
                loop(*ranges[0], *values)
            finally:
                _wait_all(shared, used)
            errors, shared.errors[:used] = shared.errors[:used], [None] * used
            for error in errors:
                if error is not None:
                    raise error
        finally:
            self._busy.release()

    def _forget_threads(self) -> None:
        """In a forked child: the parent's threads are not there; start new ones on use
        (and never touch the parent's shared state: its lock may have been held)."""
        if self._stop is not None:
            self._stop.detach()
        self._shared = self._stop = None
        self.threads = []
        self._busy = threading.Lock()


def _wait_all(shared: _Shared, rows: int) -> None:
    """Wait for the first ``rows`` workers' last jobs, through any exception a signal
    handler raises meanwhile (Ctrl-C's KeyboardInterrupt, an alarm's timeout): the
    first is raised once all are done."""
    interrupted, row = None, 0
    while row < rows:
        try:
            shared.wait_done(row)
            row += 1
        except BaseException as error:  # (only a signal handler's: the waits raise nothing else)
            interrupted = interrupted or error
    if interrupted is not None:
        raise interrupted


_live: weakref.WeakSet = weakref.WeakSet()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: [pool._forget_threads() for pool in list(_live)])
