"""Tier a: the worker threads that run parts of a CPU launch: every range runs once,
errors reach the caller, the threads sleep and wake, and a forked child gets its own."""

from __future__ import annotations

import gc
import multiprocessing
import sys
import threading
import time

import numpy as np
import pytest

from varstore.backends import cpu_threads
from varstore.backends.cpu_threads import CpuThreads


def _recording_loop(seen, lock):
    def loop(start, stop, out, value):
        with lock:
            seen.append((start, stop, threading.current_thread().name))
        out[start:stop] = value

    return loop


@pytest.mark.parametrize("spin_us", [0, 1000])
def test_every_range_runs_once_on_its_own_thread(spin_us):
    """With spinning and without (``VARSTORE_SPIN_US=0``: every hand-off through the
    semaphores), each range runs once, the first in the caller, each other on its
    worker; many launches in a row keep working."""
    threads = CpuThreads(3, spin_us)
    out = np.zeros(400, np.int64)
    for value in range(1, 60):
        seen, lock = [], threading.Lock()
        ranges = [(0, 100), (100, 200), (200, 300), (300, 400)][: 1 + value % 4]
        threads.run(_recording_loop(seen, lock), ranges, (out, value))
        assert sorted(s[:2] for s in seen) == ranges
        names = {start: name for start, _, name in seen}
        assert names[0] == threading.current_thread().name
        assert len(set(names.values())) == len(ranges)  # every range on a thread of its own
        stop = ranges[-1][1]
        assert (out[:stop] == value).all()
    assert (threads._shared.spins == 0) == (spin_us == 0)


def test_a_caller_that_saw_its_range_done_is_not_woken_for_the_next_one_early():
    """The caller says it will sleep for range A, then sees A done and goes on; the
    worker, which saw the caller's word, is slow to come to the wake-up. By then the
    caller sleeps waiting for range B: the late wake-up must not end B's launch."""
    threads = CpuThreads(1, 0)  # (no spinning: every wait goes to sleep)
    threads.run(lambda start, stop: None, [(0, 1), (1, 2)], ())
    shared = threads._shared
    store, finish = shared.store, shared.finish

    def slow_store(flags, row, word, value):  # the caller: time for the worker to finish A
        store(flags, row, word, value)
        if word == shared.s.CALLER_WAITS:
            time.sleep(0.02)

    def slow_finish(flags, row, ticket, spins):  # the worker: slow to wake the caller
        result = finish(flags, row, ticket, spins)
        if result == -1:
            time.sleep(0.05)
        return result

    shared.store, shared.finish = slow_store, slow_finish
    finished = []

    def second(start, stop):
        if start == 1:
            time.sleep(0.01)
            finished.append(start)

    for _ in range(3):
        finished.clear()
        threads.run(lambda start, stop: None, [(0, 1), (1, 2)], ())
        threads.run(second, [(0, 1), (1, 2)], ())
        assert finished == [1]  # (not returned before the worker's range ran)


class _InterruptedOnce:
    """A semaphore whose first blocking ``acquire`` raises KeyboardInterrupt (a Ctrl-C
    there): at once, or once ``ready()`` (then the wake-up it should have taken is left
    counted)."""

    def __init__(self, semaphore, ready=None):
        self.semaphore, self.ready, self.raised = semaphore, ready, False

    def acquire(self, blocking=True, timeout=None):
        if blocking and not self.raised:
            self.raised = True
            while self.ready is not None and not self.ready():
                time.sleep(0.001)
            raise KeyboardInterrupt
        return self.semaphore.acquire(blocking, timeout)

    def release(self):
        self.semaphore.release()


@pytest.mark.parametrize("late", [False, True], ids=["before-the-worker-is-done", "after-it-is-done"])
def test_a_ctrl_c_while_the_caller_sleeps_is_raised_after_every_range_ran(late):
    threads = CpuThreads(1, 0)
    threads.run(lambda start, stop: None, [(0, 1), (1, 2)], ())
    shared = threads._shared
    semaphore = shared.wake_caller[0]
    shared.wake_caller[0] = _InterruptedOnce(semaphore, (lambda: shared.read(0, shared.s.DONE) ==
                                                         shared.read(0, shared.s.POSTED)) if late else None)
    finished = []

    def slow(start, stop):
        if start == 1:
            time.sleep(0.02)
            finished.append(start)

    with pytest.raises(KeyboardInterrupt):
        threads.run(slow, [(0, 1), (1, 2)], ())
    assert finished == [1]  # (the launch did not end while the worker wrote)
    for _ in range(3):  # and later launches wait for their own ranges
        finished.clear()
        threads.run(slow, [(0, 1), (1, 2)], ())
        assert finished == [1]


def test_a_post_interrupted_before_it_wakes_the_worker_does_not_hang():
    """A Ctrl-C between posting to a sleeping worker and waking it: the caller's wait
    wakes the worker."""
    threads = CpuThreads(1, 0)
    threads.run(lambda start, stop: None, [(0, 1), (1, 2)], ())
    shared = threads._shared
    for _ in range(300):  # (the worker goes to sleep: no spinning)
        if shared.worker_asleep[0]:
            break
        time.sleep(0.01)
    assert shared.worker_asleep[0]
    wake = shared._wake_worker
    calls = []

    def interrupted(row):
        if not calls:
            calls.append(row)
            raise KeyboardInterrupt
        wake(row)

    shared._wake_worker = interrupted
    done, raised = [], []

    def launch():
        try:
            threads.run(lambda start, stop: done.append(start), [(0, 1), (1, 2)], ())
        except KeyboardInterrupt as error:
            raised.append(error)

    caller = threading.Thread(target=launch)  # (so that a hang fails the test instead of stopping it)
    caller.start()
    caller.join(30)
    assert not caller.is_alive(), "the launch hangs: the worker was never woken"
    assert raised and done == [1] and calls == [0]  # (the caller's own range was not reached: the worker's ran)
    done.clear()
    threads.run(lambda start, stop: done.append(start), [(0, 1), (1, 2)], ())
    assert sorted(done) == [0, 1]


def test_an_error_in_a_worker_reaches_the_caller_after_every_range_ran():
    threads = CpuThreads(2)
    done = []

    def loop(start, stop, bad):
        done.append(start)
        if start == bad:
            raise FloatingPointError(f"range at {start}")

    with pytest.raises(FloatingPointError, match="range at 20"):
        threads.run(loop, [(0, 10), (10, 20), (20, 30)], (20,))
    assert sorted(done) == [0, 10, 20]
    done.clear()
    threads.run(loop, [(0, 10), (10, 20), (20, 30)], (-1,))  # (the error was not kept)
    assert sorted(done) == [0, 10, 20]
    done.clear()
    with pytest.raises(FloatingPointError, match="range at 0"):  # the caller's own range
        threads.run(loop, [(0, 10), (10, 20)], (0,))
    assert sorted(done) == [0, 10]


def test_a_launch_that_finds_the_workers_busy_runs_in_its_own_thread():
    threads = CpuThreads(1)
    release, started, seen = threading.Event(), threading.Event(), []

    def slow(start, stop):
        seen.append((start, threading.current_thread().name))
        if start == 0:
            started.set()
            assert release.wait(30)

    first = threading.Thread(target=threads.run, args=(slow, [(0, 1), (1, 2)], ()))
    first.start()
    assert started.wait(30)
    out = []
    threads.run(lambda start, stop: out.append((start, threading.current_thread().name)), [(5, 6), (6, 7)], ())
    assert out == [(5, threading.current_thread().name), (6, threading.current_thread().name)]
    release.set()
    first.join(30)
    assert sorted(s for s, _ in seen) == [0, 1]


def test_dropped_threads_stop():
    threads = CpuThreads(2)
    threads.run(lambda start, stop: None, [(0, 1), (1, 2), (2, 3)], ())
    workers = threads.threads
    assert len(workers) == 2 and all(t.is_alive() for t in workers)
    del threads
    gc.collect()
    for t in workers:
        t.join(30)
    assert not any(t.is_alive() for t in workers)


def _child_launch(queue):
    from varstore import backends

    backend = backends.get("numpy")
    seen, lock = [], threading.Lock()
    out = np.zeros(20, np.int64)
    backend._thread_pool().run(_recording_loop(seen, lock), [(0, 10), (10, 20)], (out, 7))
    queue.put((int(out.sum()), len({name for *_, name in seen})))


def test_a_forked_child_leaves_the_parents_shared_state_alone():
    """In a child, the parent's workers' state (whose lock a parent thread may have held
    at the fork) is dropped, and its stop is never run."""
    threads = CpuThreads(1)
    threads.run(lambda start, stop: None, [(0, 1), (1, 2)], ())
    parents_stop, parents = threads._stop, threads._shared
    threads._forget_threads()  # (what the fork handler does in the child)
    parents.stop()  # (here, in one process, the "parent's" threads are real: end them)
    assert not parents_stop.alive and threads._shared is None and threads.threads == []
    out = np.zeros(2, np.int64)
    threads.run(lambda start, stop, o: o.__setitem__(slice(start, stop), 5), [(0, 1), (1, 2)], (out,))
    assert out.tolist() == [5, 5] and threads._stop.alive


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method: Linux only")
def test_a_forked_child_starts_its_own_workers(monkeypatch):
    """The parent's workers are not in a forked child: its launches start new ones
    instead of waiting for threads that do not exist."""
    monkeypatch.setenv("VARSTORE_NUM_THREADS", "2")
    from varstore import backends

    backend = backends.get("numpy")
    monkeypatch.setattr(backend, "_workers", 2)
    monkeypatch.setattr(backend, "_pool", None)
    out = np.zeros(4, np.int64)
    backend._thread_pool().run(lambda start, stop, o: o.__setitem__(slice(start, stop), 1), [(0, 2), (2, 4)], (out,))
    assert out.sum() == 4  # (the parent's workers are running)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_launch, args=(queue,))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child's launch hung")
    assert child.exitcode == 0 and queue.get(timeout=5) == (140, 2)


def test_the_spin_calibration_is_a_rate():
    rate = cpu_threads._spins_per_microsecond()
    assert 0.01 < rate < 10_000  # (pauses of 0.1 ns to 100 µs: anything outside is a broken timer)


def test_the_workers_keep_no_array_of_a_finished_launch():
    import weakref

    threads = CpuThreads(2)
    data = np.zeros(1000)
    ref = weakref.ref(data)
    threads.run(lambda start, stop, a: a[start:stop].fill(1), [(0, 300), (300, 600), (600, 1000)], (data,))
    assert data.sum() == 1000
    del data
    gc.collect()
    assert ref() is None


def test_more_threads_than_cores_sleep_at_once_unless_told(monkeypatch):
    from varstore.backends.numpy import NumpyBackend
    from varstore.kernels.launch import usable_cores

    monkeypatch.delenv("VARSTORE_SPIN_US", raising=False)
    monkeypatch.setenv("VARSTORE_NUM_THREADS", str(usable_cores()))
    assert NumpyBackend()._spin_us == cpu_threads.SPIN_US_DEFAULT
    monkeypatch.setenv("VARSTORE_NUM_THREADS", str(usable_cores() + 1))
    assert NumpyBackend()._spin_us == 0
    monkeypatch.setenv("VARSTORE_SPIN_US", "250")
    assert NumpyBackend()._spin_us == 250
