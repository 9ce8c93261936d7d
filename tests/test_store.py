"""Tier b: VariableStore (mapping, names, name scopes, memory, state) on every backend."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

import varstore as vs
from helpers import to_host
from varstore.memory import parse_memory_limit

MEMORY_KEYS = {
    "backend", "device", "variables", "variable_bytes", "pool_used_bytes", "pool_total_bytes",
    "limit_bytes", "device_total_bytes", "device_free_bytes",
}  # fmt: skip


def make_store(backend, **kwargs):
    return vs.VariableStore(device="cpu" if backend == "numpy" else "cuda:0", **kwargs)


# ------------------------------------------------------------------ mapping and names
def test_mapping_in_creation_order(store):
    a = store.variable([1.0], name="a")
    b = store.variable(np.zeros(2, np.int32), name="b", trainable=False)
    c = store.variable("ones", shape=(2, 2))
    assert list(store) == ["a", "b", "variable"] and len(store) == 3
    assert store["b"] is b and "a" in store and "zz" not in store
    assert store.variables == [a, b, c]
    assert store.trainable_variables == [a, c] and store.non_trainable_variables == [b]
    with pytest.raises(KeyError, match="'zz'"):
        store["zz"]
    with pytest.raises(ValueError, match="already exists"):
        store.variable([2.0], name="a")
    assert store["a"] is a


def test_automatic_names_are_unique_per_store(backend):
    s1, s2 = make_store(backend), make_store(backend)
    assert [s1.variable(0.0).path for _ in range(3)] == ["variable", "variable_1", "variable_2"]
    assert s2.variable(0.0).path == "variable"
    s1.variable(0.0, name="variable_4")
    assert s1.variable(0.0).path == "variable_3" and s1.variable(0.0).path == "variable_5"


def test_name_scopes_nest_paths(store):
    with vs.name_scope("block"):
        with store.name_scope("dense"):
            k = store.variable("zeros", shape=(2,), name="kernel")
            auto = store.variable(1.0)
        b = store.variable("zeros", shape=(2,), name="bias")
    top = store.variable(1.0, name="kernel")
    assert k.path == "block/dense/kernel" and k.name == "kernel"
    assert auto.path == "block/dense/variable" and auto.name == "variable"
    assert b.path == "block/bias" and top.path == "kernel"
    assert list(store) == ["block/dense/kernel", "block/dense/variable", "block/bias", "kernel"]
    for bad in ["", "a/b", 3, None]:
        with pytest.raises(ValueError, match="name_scope"):
            vs.name_scope(bad)


def test_name_scopes_are_per_thread(store):
    seen = {}
    inside, done = threading.Event(), threading.Event()

    def other():
        inside.wait()
        seen["path"] = store.variable(1.0, name="t").path
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with vs.name_scope("mine"):
        inside.set()
        done.wait()
    thread.join()
    assert seen["path"] == "t"


def test_get_or_create(store):
    v = store.get_or_create("enc/w", "ones", (2, 3))
    assert v.path == "enc/w" and v.name == "w" and v.dtype == vs.floatx()
    assert store.get_or_create("enc/w", "zeros", (2, 3)) is v
    assert store.get_or_create("enc/w", "zeros", (2, 3), dtype="float32") is v
    with pytest.raises(ValueError, match=r"shape \(2, 3\) and dtype float32.*shape \(3, 2\)"):
        store.get_or_create("enc/w", "zeros", (3, 2))
    with pytest.raises(ValueError, match="dtype float16"):
        store.get_or_create("enc/w", "zeros", (2, 3), dtype="float16")
    i = store.get_or_create("i", np.arange(3), None)
    assert store.get_or_create("i", np.arange(3), None) is i  # dtype None: the array's int64
    with pytest.raises(ValueError, match=r"shape \(3,\) and dtype int64.*shape \(5,\)"):
        store.get_or_create("i", np.arange(5), None)
    with pytest.raises(ValueError, match="Invalid path"):
        store.get_or_create("a//b", "zeros", (1,))
    assert to_host(v.value).tolist() == [[1.0] * 3] * 2


def test_delete_frees_the_path_and_the_bytes(store):
    v = store.variable("zeros", shape=(1000,), name="w")
    assert store.memory_info()["variable_bytes"] == 4000
    store.delete("w")
    assert "w" not in store and store.memory_info()["variable_bytes"] == 0
    with pytest.raises(RuntimeError, match="released"):
        v.numpy()
    assert store.variable("zeros", shape=(3,), name="w").shape == (3,)
    with pytest.raises(KeyError):
        store.delete("nope")


# ------------------------------------------------------------------ memory
@pytest.mark.parametrize(
    "text, expected",
    [(1024, 1024), ("512MiB", 512 * 2**20), ("8GiB", 8 * 2**30), ("1.5GB", 1_500_000_000), ("2kb", 2000),
     ("3 mib", 3 * 2**20), ("100", 100), (" 1TiB ", 2**40), (None, None), (np.int64(7), 7)],
)
def test_memory_limit_strings(text, expected):
    assert parse_memory_limit(text) == expected


@pytest.mark.parametrize("bad", ["12 parsecs", "GB", "-1GB", 0, -5, True, 1.5, "1e9", "0.1"])
def test_bad_memory_limit_is_named(backend, bad):
    with pytest.raises(ValueError, match=r"memory_limit.*" + repr(bad).replace(".", r"\.")[:6]):
        make_store(backend, memory_limit=bad)


def test_memory_info_keys_and_numbers(store):
    store.variable("zeros", shape=(10, 10), name="a")
    store.variable("zeros", shape=(3,), dtype="bfloat16", name="b")
    info = store.memory_info()
    assert set(info) == MEMORY_KEYS
    assert info["variables"] == 2 and info["variable_bytes"] == 406 and info["limit_bytes"] is None
    assert info["backend"] == store.backend and info["device"] == store.device
    assert info["pool_used_bytes"] >= 406 and info["pool_total_bytes"] >= info["pool_used_bytes"]
    for key in ("device_total_bytes", "device_free_bytes"):
        assert info[key] is None or (isinstance(info[key], int) and info[key] > 0)
    if store.backend == "numpy":
        assert info["pool_used_bytes"] == info["pool_total_bytes"] == 406
        assert info["device_total_bytes"] >= info["device_free_bytes"]


def test_out_of_memory_at_the_limit_leaves_the_store_usable(backend):
    store = make_store(backend, memory_limit="4KiB")
    store.variable("zeros", shape=(512,), name="a")  # 2 KiB
    before = store.memory_info()
    for name in ("big", None):
        with pytest.raises(vs.OutOfMemoryError) as info:
            store.variable("ones", shape=(1024,), name=name)  # 4 KiB more
        message = str(info.value)
        assert "4096 bytes asked" in message and "2048 bytes in use" in message and "4096 bytes" in message
        assert ("'big'" if name else "'variable'") in message
        assert isinstance(info.value, MemoryError) and info.value.requested_bytes == 4096
        assert info.value.in_use_bytes == 2048 and info.value.limit_bytes == 4096
    assert list(store) == ["a"] and store.memory_info()["variable_bytes"] == before["variable_bytes"]
    big = store.variable("ones", shape=(256,), name="big")  # the name was not taken
    assert store.variable(0.0).path == "variable"
    store.delete("a")
    # the freed bytes count again (2400 bytes: 2560 in the cuda pool's 512-byte blocks)
    store.variable("ones", shape=(600,), name="c")
    assert to_host(big.value).sum() == 256


@pytest.mark.parametrize("elements", [2**50, 2**62, "twice what the OS has available"])
def test_out_of_memory_past_what_the_host_has(elements):
    store = vs.VariableStore(device="cpu")
    if isinstance(elements, str):
        elements = 2 * store.memory_info()["device_free_bytes"]  # (Linux would overcommit it)
    with pytest.raises(vs.OutOfMemoryError, match="'huge'.*not enough free memory"):
        store.variable("zeros", shape=(elements,), dtype="uint8", name="huge")
    assert len(store) == 0 and store.memory_info()["variable_bytes"] == 0
    assert store.variable("zeros", shape=(2,), name="huge").shape == (2,)


def test_releasing_from_many_threads_counts_the_bytes_back_once(store):
    for _ in range(20):
        v = store.variable("zeros", shape=(1000,))
        threads = [threading.Thread(target=v.release) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert store.memory_info()["variable_bytes"] == 0 and len(store) == 0


def test_a_failing_initializer_gives_back_the_path_and_bytes(store):
    def broken(shape, dtype):
        raise RuntimeError("initializer failed")

    with pytest.raises(RuntimeError, match="initializer failed"):
        store.variable(broken, shape=(100,), name="w")
    assert "w" not in store and store.memory_info()["variable_bytes"] == 0
    assert store.variable("zeros", shape=(1,), name="w").path == "w"


def test_free_cached(store):
    v = store.variable("zeros", shape=(1 << 16,))
    v.release()
    store.free_cached()
    info = store.memory_info()
    assert info["variable_bytes"] == 0 and info["pool_used_bytes"] == 0
    if store.backend == "cuda":
        assert info["pool_total_bytes"] == 0


# ------------------------------------------------------------------ threads
def errors_of_threads(work, count: int = 8) -> list:
    """Run ``work(k)`` for k in range(count) on as many threads; the exceptions they raised
    (a thread's exception would otherwise be only a pytest warning)."""
    errors = []

    def run(k):
        try:
            work(k)
        except BaseException as exc:  # noqa: BLE001 (returned to the test)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_threads_create_8000_variables_with_unique_names(backend):
    store = make_store(backend)

    def work(t):
        for i in range(500):
            store.variable(0.0)  # automatic names race for the same base
            store.variable(float(i), name=f"t{t}_{i}")

    assert errors_of_threads(work) == []
    assert len(store) == 8000 and len(set(store)) == 8000
    assert {f"variable_{i}" if i else "variable" for i in range(4000)} <= set(store)
    assert store.memory_info()["variable_bytes"] == 8000 * 4


def test_a_failed_creations_automatic_name_is_reused_after_other_threads_names(backend):
    """A creation that fails after its automatic name was taken gives the name back, also
    when another thread registered the next automatic name meanwhile."""
    store = make_store(backend)
    inside, go_on = threading.Event(), threading.Event()

    def failing(shape, dtype=None):
        inside.set()
        go_on.wait(10)
        raise RuntimeError("initializer failed")

    def create():
        with pytest.raises(RuntimeError, match="initializer failed"):
            store.variable(failing, shape=(2,))

    thread = threading.Thread(target=create)
    thread.start()
    assert inside.wait(10)
    other = store.variable(0.0)  # (while "variable" is taken by the failing creation)
    go_on.set()
    thread.join()
    assert other.path == "variable_1" and list(store) == ["variable_1"]
    assert [store.variable(0.0).path for _ in range(3)] == ["variable", "variable_2", "variable_3"]


def test_threads_assign_different_variables(store):
    variables = [store.variable("zeros", shape=(64,)) for _ in range(8)]

    def work(k):
        for i in range(300):
            variables[k].assign(np.full(64, i + k, np.float32))
            variables[k][k] = -1.0

    errors = errors_of_threads(work)
    assert not errors, errors
    for k, v in enumerate(variables):
        expected = np.full(64, 299 + k, np.float32)
        expected[k] = -1
        np.testing.assert_array_equal(v.numpy(), expected)


# ------------------------------------------------------------------ state
def test_state_and_load_state(store):
    a = store.variable(np.arange(4, dtype=np.float32), name="a")
    b = store.variable(np.ones((2, 2)), dtype="bfloat16", name="b")
    s = store.variable(3, name="s")
    snapshot = store.state()
    assert list(snapshot) == ["a", "b", "s"]
    a.assign(np.zeros(4))
    assert to_host(snapshot["a"]).tolist() == [0, 1, 2, 3]  # a copy, not a view
    store.load_state(snapshot)
    assert a.numpy().tolist() == [0, 1, 2, 3]
    store.load_state({"b": np.full((2, 2), 2.5), "s": 7})  # partial; a 0-d variable takes a scalar
    assert b.numpy().astype(np.float32).tolist() == [[2.5, 2.5]] * 2 and int(s.numpy()) == 7
    assert a.numpy().tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "bad, message",
    [({"a": np.zeros(4), "zz": 1.0}, r"no variable at paths \['zz'\]"),
     ({"a": np.zeros(4), "b": np.zeros(3)}, r"'b' has shape \(3,\); expected .* \(2, 2\)"),
     ({"a": np.zeros(4), "b": 1.0}, r"'b' has shape \(\)"),
     ({"a": np.zeros(4), "b": np.array(["x"] * 4).reshape(2, 2)}, "Unsupported value")],
)
def test_a_bad_state_changes_nothing(store, bad, message):
    a = store.variable(np.arange(4, dtype=np.float32), name="a")
    store.variable(np.ones((2, 2)), name="b")
    before = {k: to_host(v).copy() for k, v in store.state().items()}
    with pytest.raises(ValueError, match=message):
        store.load_state(bad)
    with pytest.raises(ValueError, match=message):
        store.stateless_call(lambda: None, bad)
    after = store.state()
    for k in before:
        np.testing.assert_array_equal(to_host(after[k]), before[k])
    assert a.numpy().tolist() == [0, 1, 2, 3]
    with pytest.raises(TypeError, match="mapping"):
        store.load_state([("a", np.zeros(4))])


def test_state_load_state_and_stateless_call_are_snapshots_while_threads_delete(store):
    """Four threads create and delete 64 KiB variables while the main thread reads and
    writes whole-store state: every call sees each variable wholly or not at all."""
    keep = store.variable(np.zeros(16384, np.float32), name="keep")
    stop, churned, errors = threading.Event(), [0] * 4, []

    def churn(k):
        try:
            while not stop.is_set():
                path = f"churn{k}_{churned[k] % 100}"
                if path in store:
                    store.delete(path)
                else:
                    store.variable(np.full(16384, k, np.float32), name=path)
                churned[k] += 1
        except BaseException as exc:  # noqa: BLE001 (asserted below)
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(100):
            state = store.state()
            for path, value in state.items():
                expected = 0 if path == "keep" else int(path[5])
                assert to_host(value)[0] == expected and to_host(value)[-1] == expected, path
            store.load_state({"keep": np.full(16384, 0, np.float32)})
            _, new_state = store.stateless_call(lambda: keep.assign_add(1.0), {"keep": np.zeros(16384)})
            assert to_host(new_state["keep"])[0] == 1
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors and min(churned) > 0, (errors, churned)
    assert float(keep.numpy()[0]) == 0


def test_the_default_store_frees_variables_nobody_references():
    import gc
    import weakref

    store = vs.default_store()
    before = store.memory_info()["variable_bytes"], len(store)
    for _ in range(10_000):
        vs.Variable(np.zeros(1000, np.float32))
    assert (store.memory_info()["variable_bytes"], len(store)) == before
    v = vs.Variable(np.zeros(1000, np.float32), name="weakly_held")
    storage = weakref.ref(v.stored.storage)
    gc.collect()
    assert store["weakly_held"] is v and store.memory_info()["variable_bytes"] == before[0] + 4000
    del v
    assert storage() is None and "weakly_held" not in store  # the memory is gone, the path free
    assert (store.memory_info()["variable_bytes"], len(store)) == before
    w = vs.Variable(1.0, name="weakly_held")  # the path is free again
    w.release()  # an explicit release counts the bytes back once, not again when w goes
    del w
    gc.collect()
    assert (store.memory_info()["variable_bytes"], len(store)) == before


def test_a_variable_collected_inside_an_allocation_does_not_deadlock_a_release():
    """The collector can free a default-store variable (held by a reference cycle) on a
    thread that holds the store memory's lock, while another thread releases a variable:
    the finalizer must not wait for a lock the releasing thread holds."""
    import gc
    import time

    store = vs.default_store()
    before = store.memory_info()["variable_bytes"]
    victim = vs.Variable(np.zeros(4, np.float32))
    cycle = [victim]
    cycle.append(cycle)
    holder = [cycle]
    del victim, cycle
    other = vs.Variable(np.zeros(4, np.float32))
    releaser = threading.Thread(target=other.release, daemon=True)
    done = threading.Event()

    def collect_inside_an_allocation():
        with store._memory._lock:  # as StoreMemory.allocate holds it
            releaser.start()
            time.sleep(0.2)  # the releaser now waits for the memory's lock
            holder.clear()
            gc.collect()
        done.set()

    collector = threading.Thread(target=collect_inside_an_allocation, daemon=True)
    collector.start()
    collector.join(10)
    releaser.join(10)
    assert done.is_set() and not releaser.is_alive(), "deadlock"
    del other
    assert store.memory_info()["variable_bytes"] == before


def test_a_store_you_create_keeps_its_variables(backend):
    store = vs.VariableStore(device="cpu" if backend == "numpy" else "cuda:0")
    for i in range(3):
        vs.Variable(np.full(4, i, np.float32), store=store)
    assert len(store) == 3 and store.memory_info()["variable_bytes"] == 48
    assert to_host(store["variable_2"].value).tolist() == [2, 2, 2, 2]


def test_stateless_call(store):
    w = store.variable(np.ones(3, np.float32), name="w")
    step = store.variable(0, name="step")
    other = store.variable(np.zeros(2, np.float32), name="other")

    def sgd(grad):
        w.assign_sub(0.5 * grad)
        step.assign_add(1)
        return float(to_host(w.value).sum())

    result, new_state = store.stateless_call(sgd, {"w": np.full(3, 2.0)}, np.ones(3, np.float32))
    assert result == 4.5
    assert set(new_state) == {"w", "step"}  # step: written, not given
    assert to_host(new_state["w"]).tolist() == [1.5] * 3 and int(to_host(new_state["step"])) == 1
    assert w.numpy().tolist() == [1.0] * 3 and int(step.numpy()) == 0  # storage untouched
    assert other.numpy().tolist() == [0.0, 0.0]
    _, again = store.stateless_call(lambda: None, new_state)
    assert to_host(again["w"]).tolist() == [1.5] * 3
    # A variable used as a value reads what its `value` reads: the scope's.
    def copy_w():
        other.assign(w[:2])

    _, copied = store.stateless_call(copy_w, {"w": np.full(3, 7.0)})
    assert to_host(copied["other"]).tolist() == [7.0, 7.0]


# ------------------------------------------------------------------ GPU only
@pytest.mark.gpu
def test_pool_accounting_against_the_device():
    """The store's pool, the device's free memory and CuPy's global pool: variable bytes
    come from the store's pool only; free_cached() gives them back to the device. The
    device's free memory is shared with the other test processes: its checks compare
    readings taken around one step, and a reading another process disturbed is retaken
    (up to 3 tries)."""
    import cupy

    cupy.zeros(1)  # (this process's CUDA context first: NVML's free memory counts it)
    GiB = 4 * (256 << 20)
    for _ in range(3):
        store = vs.VariableStore(device="cuda:0")
        global_used = cupy.get_default_memory_pool().used_bytes()
        free_before = store.memory_info()["device_free_bytes"]
        big = [store.variable("zeros", shape=(64 << 20,), dtype="float32") for _ in range(4)]  # 1 GiB
        info = store.memory_info()
        assert info["variable_bytes"] == GiB and info["pool_used_bytes"] == GiB
        assert cupy.get_default_memory_pool().used_bytes() == global_used
        taken = free_before - info["device_free_bytes"]
        for v in big:
            v.release()
        del big
        assert store.memory_info()["pool_used_bytes"] == 0
        assert store.memory_info()["pool_total_bytes"] >= GiB  # cached, not yet returned
        free_cached = store.memory_info()["device_free_bytes"]
        store.free_cached()
        after = store.memory_info()
        assert after["pool_total_bytes"] == 0
        given_back = after["device_free_bytes"] - free_cached
        if taken >= GiB * 0.95 and given_back >= GiB * 0.95:
            return
    pytest.fail(f"the device's free memory did not follow the pool in 3 tries: the last took {taken} bytes "
                f"and gave back {given_back} (1 GiB each expected)")


@pytest.mark.gpu
def test_out_of_memory_past_the_device_free_memory():
    store = vs.VariableStore(device="cuda:0")
    free = store.memory_info()["device_free_bytes"]
    with pytest.raises(vs.OutOfMemoryError, match="'too_big'.*not enough free memory"):
        store.variable("zeros", shape=(free // 4 + (1 << 30),), dtype="float32", name="too_big")
    assert len(store) == 0 and store.memory_info()["variable_bytes"] == 0
    assert store.variable("ones", shape=(4,), name="too_big").numpy().tolist() == [1.0] * 4


def test_a_failed_registration_in_the_default_store_counts_the_bytes_back_once(monkeypatch):
    import gc

    import varstore.store as store_module

    store = vs.default_store()
    before = store.memory_info()["variable_bytes"]
    register = store_module.VariableStore._register

    def fail_once(self, *args):
        monkeypatch.setattr(store_module.VariableStore, "_register", register)
        raise KeyboardInterrupt

    monkeypatch.setattr(store_module.VariableStore, "_register", fail_once)
    with pytest.raises(KeyboardInterrupt):
        vs.Variable(np.zeros(1024, np.float32))
    gc.collect()  # (a finalizer left behind would count the bytes back a second time here)
    kept = vs.Variable(np.zeros(1024, np.float32))
    assert store.memory_info()["variable_bytes"] == before + 4096
    del kept


def test_items_and_values_are_one_snapshot_while_another_thread_deletes():
    store = vs.VariableStore(device="cpu")
    for i in range(50):  # (a longer walk over the paths: a wider window for a delete)
        store.variable(np.zeros(1, np.float32), name=f"kept{i}")
    stop = threading.Event()

    def churn():
        i = 0
        while not stop.is_set():
            store.variable(np.zeros(2, np.float32), name=f"t{i % 20}")
            store.delete(f"t{i % 20}")
            i += 1

    thread = threading.Thread(target=churn)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # (threads take turns often: the delete lands inside a walk)
    thread.start()
    try:
        for _ in range(3000):
            snapshot = dict(store.items())
            assert all(store_path == v.path for store_path, v in snapshot.items()) and len(store.values()) <= 51
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)


def test_get_or_create_checks_its_arguments_when_the_path_exists():
    store = vs.VariableStore(device="cpu")
    v = store.get_or_create("k", "zeros", (2,))
    with pytest.raises(ValueError, match="Unknown initializer: 'no_such_init'"):
        store.get_or_create("k", "no_such_init", (2,))
    with pytest.raises(ValueError, match="aggregation"):
        store.get_or_create("k", "zeros", (2,), aggregation="bogus")
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['colour'\]"):
        store.get_or_create("k", "zeros", (2,), colour=1)
    for path in ("k", "new"):
        with pytest.raises(vs.ArgumentTypeError, match="`name` is not one of its arguments"):
            store.get_or_create(path, "zeros", (2,), name="zz")
    assert store.get_or_create("k", "zeros", (2,), aggregation="sum", trainable=False, device="cpu") is v
    assert sorted(store) == ["k"]
