"""Tier b: checkpoints (store.save / store.load) on every backend: round trips, the
safetensors package reading our files, atomic saves under injected failures and SIGKILL,
and corrupt files that must raise ValueError and change nothing."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc

import numpy as np
import pytest
from helpers import to_host

import varstore as vs
from varstore import checkpoint
from varstore.dtypes import storage_dtype

DEVICE = {"numpy": "cpu", "cuda": "cuda:0"}
SHAPES = [(3, 5), (), (0, 4), (7,)]


def words_of(variable) -> np.ndarray:
    """The variable's stored bits, as bytes on the host."""
    return to_host(variable._live_storage()).reshape(-1).view(np.uint8).copy()


def snapshot(store) -> dict:
    return {path: words_of(store[path]) for path in store}


def same_store(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def random_words(dtype: str, shape: tuple, rng) -> np.ndarray:
    """Random stored words of ``dtype``, any bit pattern (NaNs with payloads included)."""
    store_dtype = np.dtype(storage_dtype(dtype))
    if store_dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    raw = rng.integers(0, 256, int(np.prod(shape)) * store_dtype.itemsize, dtype=np.uint8)
    return raw.view(store_dtype).reshape(shape)


def filled_store(backend: str, seed: int = 0) -> vs.VariableStore:
    """A store with one variable per dtype and shape, holding random bits."""
    rng = np.random.default_rng(seed)
    store = vs.VariableStore(device=DEVICE[backend])
    for dtype in vs.DTYPES:
        for i, shape in enumerate(SHAPES):
            v = store.variable("zeros", shape=shape, dtype=dtype, name=f"{dtype}_{i}")
            v._backend.copy_from_host(v._live_storage(), random_words(dtype, shape, rng))
    return store


def empty_like(store) -> vs.VariableStore:
    other = vs.VariableStore(device=store.device)
    for path in store:
        other.variable("zeros", shape=store[path].shape, dtype=store[path].dtype, name=path)
    return other


# ------------------------------------------------------------------ round trips
def test_every_dtype_round_trips_bit_exactly(backend, tmp_path):
    store = filled_store(backend)
    file = tmp_path / "model.safetensors"
    store.save(file)
    other = empty_like(store)
    assert other.load(file) == []
    assert same_store(snapshot(other), snapshot(store))
    assert os.listdir(tmp_path) == ["model.safetensors"]  # no temporary left


def test_a_store_round_trips_across_backends(tmp_path):
    """A file saved from one backend loads on the other (and on the CPU always)."""
    store = filled_store("numpy", seed=3)
    store.save(tmp_path / "a.safetensors")
    other = empty_like(store)
    other.load(str(tmp_path / "a.safetensors"))
    assert same_store(snapshot(other), snapshot(store))


def test_attributes_in_metadata_and_load_restores_values_only(backend, tmp_path):
    store = vs.VariableStore(device=DEVICE[backend])
    store.variable([1.0, 2.0], name="w", trainable=False, autocast=False, aggregation="mean",
                   synchronization="on_read")
    store.variable([3, 4], dtype="float8_e5m2", name="f8")
    file = tmp_path / "m.safetensors"
    store.save(file)
    from safetensors import safe_open

    with safe_open(str(file), framework="numpy") as f:
        metadata = f.metadata()
    assert metadata["format"] == "varstore"
    assert json.loads(metadata["varstore:w"]) == {
        "dtype": "float32", "trainable": "false", "autocast": "false", "aggregation": "mean",
        "synchronization": "on_read",
    }
    assert json.loads(metadata["varstore:f8"])["dtype"] == "float8_e5m2"

    other = vs.VariableStore(device=DEVICE[backend])
    w = other.variable([0.0, 0.0], name="w")  # trainable, autocast, aggregation none
    other.variable([0, 0], dtype="float8_e5m2", name="f8")
    other.load(file)
    np.testing.assert_array_equal(to_host(w.value), [1.0, 2.0])
    assert (w.trainable, w.autocast, w.aggregation) == (True, True, "none")
    np.testing.assert_array_equal(other["f8"].numpy().astype(np.float32), [3.0, 4.0])


def test_the_safetensors_package_reads_our_files(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    store = filled_store("numpy", seed=1)
    file = tmp_path / "m.safetensors"
    store.save(file)
    from safetensors import safe_open

    with safe_open(str(file), framework="numpy") as f:
        assert sorted(f.keys()) == sorted(store)
    numpy_dtypes = [path for path in store if store[path].dtype != "bfloat16"]
    no_bf16 = vs.VariableStore(device="cpu")
    for path in numpy_dtypes:
        no_bf16.variable(store[path].value, dtype=store[path].dtype, name=path)
    no_bf16.save(tmp_path / "n.safetensors")
    tensors = safetensors_numpy.load_file(str(tmp_path / "n.safetensors"))
    for path in numpy_dtypes:
        expected = store[path]._live_storage()  # float8: its uint8 words
        assert tensors[path].dtype == expected.dtype and tensors[path].shape == expected.shape
        assert np.array_equal(tensors[path].reshape(-1).view(np.uint8), expected.reshape(-1).view(np.uint8))


def test_bfloat16_reads_back_through_jax(tmp_path):
    pytest.importorskip("jax")
    safetensors_flax = pytest.importorskip("safetensors.flax")
    store = vs.VariableStore(device="cpu")
    store.variable([1.5, -2.25, np.inf, 3.0e38], dtype="bfloat16", name="b")
    store.save(tmp_path / "b.safetensors")
    loaded = safetensors_flax.load_file(str(tmp_path / "b.safetensors"))["b"]
    assert str(loaded.dtype) == "bfloat16"
    np.testing.assert_array_equal(np.asarray(loaded).view(np.uint16), store["b"]._live_storage())


def test_native_float8_codes_load(backend, tmp_path):
    """Files written by others may use the F8_E4M3 / F8_E5M2 codes: they load."""
    words = np.array([0x38, 0xB8, 0x7E, 0x00], np.uint8)  # 1.0, -1.0, nan, 0 in e4m3fn
    header = {"a": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]},
              "b": {"dtype": "F8_E5M2", "shape": [4], "data_offsets": [4, 8]}}
    write_raw(tmp_path / "f8.safetensors", header, words.tobytes() + words.tobytes())
    store = vs.VariableStore(device=DEVICE[backend])
    store.variable("zeros", shape=(4,), dtype="float8_e4m3fn", name="a")
    store.variable("zeros", shape=(4,), dtype="float8_e5m2", name="b")
    store.load(tmp_path / "f8.safetensors")
    assert np.array_equal(words_of(store["a"]), words) and np.array_equal(words_of(store["b"]), words)


def test_save_writes_stored_values_not_a_scope(tmp_path):
    store = vs.VariableStore(device="cpu")
    v = store.variable([1.0, 2.0], name="v")
    with vs.StatelessScope(state_mapping=[(v, np.array([9.0, 9.0], np.float32))]):
        store.save(tmp_path / "s.safetensors")
    other = empty_like(store)
    other.load(tmp_path / "s.safetensors")
    np.testing.assert_array_equal(other["v"].numpy(), [1.0, 2.0])


def test_large_variables_stream_in_pieces(backend, tmp_path, monkeypatch):
    """Variables many staging pieces long (and not a whole number of them) round trip."""
    if backend == "cuda":
        from varstore.backends import cuda as cuda_backend

        monkeypatch.setattr(cuda_backend, "STAGING_BYTES", 4096)
    store = vs.VariableStore(device=DEVICE[backend])
    if backend == "cuda":  # new 4 KiB staging buffers now, the usual ones after the test
        monkeypatch.setattr(store._backend, "_staging", None)
    rng = np.random.default_rng(2)
    big = store.variable(rng.standard_normal((300, 77)).astype(np.float32), name="big")
    store.save(tmp_path / "big.safetensors")
    other = empty_like(store)
    other.load(tmp_path / "big.safetensors")
    assert np.array_equal(words_of(other["big"]), words_of(big))


# ------------------------------------------------------------------ load checks
def test_load_needs_the_same_paths_unless_not_strict(backend, tmp_path):
    store = vs.VariableStore(device=DEVICE[backend])
    store.variable([1.0, 2.0], name="a")
    store.variable([3.0], name="only_in_file")
    store.save(tmp_path / "f.safetensors")
    other = vs.VariableStore(device=DEVICE[backend])
    a = other.variable([0.0, 0.0], name="a")
    other.variable([7.0], name="only_in_store")
    before = snapshot(other)
    with pytest.raises(ValueError, match=r"Only in the file: \['only_in_file'\]; only in the store: \['only_in_store'\]"):
        other.load(tmp_path / "f.safetensors")
    assert same_store(snapshot(other), before)
    assert other.load(tmp_path / "f.safetensors", strict=False) == ["only_in_file", "only_in_store"]
    np.testing.assert_array_equal(to_host(a.value), [1.0, 2.0])
    np.testing.assert_array_equal(to_host(other["only_in_store"].value), [7.0])


@pytest.mark.parametrize("strict", [True, False])
def test_a_shape_or_dtype_mismatch_raises_and_changes_nothing(backend, tmp_path, strict):
    store = vs.VariableStore(device=DEVICE[backend])
    store.variable([1.0, 2.0], name="a")
    store.variable([[1.0, 2.0]], name="b")
    store.save(tmp_path / "f.safetensors")
    for shape_b, dtype_b, expected in [((2, 1), "float32", r"'b': file float32\[1, 2\], store float32\[2, 1\]"),
                                       ((1, 2), "float16", r"'b': file float32\[1, 2\], store float16\[1, 2\]")]:
        other = vs.VariableStore(device=DEVICE[backend])
        other.variable([5.0, 6.0], name="a")
        other.variable("ones", shape=shape_b, dtype=dtype_b, name="b")
        before = snapshot(other)
        with pytest.raises(ValueError, match=expected):
            other.load(tmp_path / "f.safetensors", strict=strict)
        assert same_store(snapshot(other), before)  # 'a' fits, but was not written either


def test_save_refuses_what_no_reader_could_load(tmp_path, monkeypatch):
    """A variable named __metadata__, or a header past the readers' limit, is refused
    before the old file is touched."""
    store = vs.VariableStore(device="cpu")
    store.variable([1.0], name="a")
    file = tmp_path / "f.safetensors"
    store.save(file)
    old = file.read_bytes()
    bad = store.variable([2.0], name="__metadata__")
    with pytest.raises(ValueError, match="reserves for the header's metadata"):
        store.save(file)
    store.delete(bad.path)
    for i in range(40):
        store.variable([float(i)], name=f"v{i}")
    monkeypatch.setattr(checkpoint, "MAX_HEADER_BYTES", 2048)
    with pytest.raises(ValueError, match="over the 2048 that safetensors readers accept"):
        store.save(file)
    assert file.read_bytes() == old and os.listdir(tmp_path) == ["f.safetensors"]


def test_save_keeps_permissions_and_takes_long_names(tmp_path):
    store = vs.VariableStore(device="cpu")
    store.variable([1.0], name="a")
    file = tmp_path / "f.safetensors"
    store.save(file)
    os.chmod(file, 0o600)
    store.save(file)
    assert file.stat().st_mode & 0o777 == 0o600
    long_name = tmp_path / ("n" * 240 + ".safetensors")  # 252 characters: the folder's limit is 255
    store.save(long_name)
    assert long_name.exists()


def test_bad_arguments_say_what_was_expected(tmp_path):
    store = vs.VariableStore(device="cpu")
    store.variable([1.0], name="a")
    with pytest.raises(TypeError, match="expected a file path"):
        store.save(42)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        store.save(tmp_path / "no_such_folder" / "f.safetensors")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        store.save(tmp_path)
    with pytest.raises(FileNotFoundError):
        store.load(tmp_path / "missing.safetensors")
    store.save(tmp_path / "f.safetensors")
    with pytest.raises(TypeError, match="strict must be True or False"):
        store.load(tmp_path / "f.safetensors", strict="no")


# ------------------------------------------------------------------ corrupt files
def write_raw(path, header: dict, data: bytes, length: int | None = None, text: bytes | None = None) -> None:
    text = json.dumps(header).encode() if text is None else text
    length = len(text) if length is None else length
    pathlib.Path(path).write_bytes(length.to_bytes(8, "little") + text + data)


def _good_header():
    return {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24]}}


def _with(change):
    header = _good_header()
    change(header)
    return header


GOOD_DATA = np.arange(6, dtype=np.float32).tobytes()

CORRUPT = {
    "empty file": lambda p: p.write_bytes(b""),
    "truncated header length": lambda p: p.write_bytes(b"\x10\x00\x00"),
    "header length past the end": lambda p: write_raw(p, _good_header(), GOOD_DATA, length=10_000),
    "huge header length": lambda p: write_raw(p, _good_header(), GOOD_DATA, length=2**63 + 5),
    "header over 100 MB": lambda p: write_raw(p, _good_header(), GOOD_DATA, length=200_000_000),
    "truncated header": lambda p: p.write_bytes((500).to_bytes(8, "little") + json.dumps(_good_header()).encode()[:40]),
    "bad JSON": lambda p: write_raw(p, {}, GOOD_DATA, text=b'{"a": {"dtype": "F32", "shape": [2],'),
    "not UTF-8": lambda p: write_raw(p, {}, GOOD_DATA, text=b'{"\xff\xfe": 1}'),
    "JSON array": lambda p: write_raw(p, {}, GOOD_DATA, text=b"[1, 2, 3]"),
    "millions of lists": lambda p: write_raw(p, {}, GOOD_DATA, text=b'{"a": [' + b"[]," * 300_000 + b"[]]}"),
    "nested metadata value": lambda p: write_raw(
        p, _with(lambda h: h.update(__metadata__={"varstore:a": "[" * 5000 + "]" * 5000})), GOOD_DATA),
    "a 5000-digit offset": lambda p: write_raw(p, {}, GOOD_DATA, text=b'{"a": {"dtype": "F32", "shape": [2], '
                                               b'"data_offsets": [0, ' + b"9" * 5000 + b"]}}"),
    "NaN in the header": lambda p: write_raw(p, {}, GOOD_DATA, text=b'{"a": {"dtype": "F32", "shape": [NaN], '
                                             b'"data_offsets": [0, 8]}}'),
    "deeply nested JSON": lambda p: write_raw(p, {}, GOOD_DATA, text=b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"),
    "duplicate key": lambda p: write_raw(p, {}, GOOD_DATA, text=json.dumps(_good_header())[:-1].encode()
                                         + b', "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}'),
    "offsets past the end": lambda p: write_raw(p, _with(lambda h: h["b"].update(data_offsets=[8, 24])), GOOD_DATA[:16]),
    "truncated data": lambda p: write_raw(p, _good_header(), GOOD_DATA[:-3]),
    "overlapping ranges": lambda p: write_raw(p, _with(lambda h: h["a"].update(data_offsets=[4, 12])), GOOD_DATA),
    "unknown dtype": lambda p: write_raw(p, _with(lambda h: h["a"].update(dtype="F128")), GOOD_DATA),
    "size does not match shape": lambda p: write_raw(p, _with(lambda h: h["b"].update(shape=[2, 3])), GOOD_DATA),
    "negative dimension": lambda p: write_raw(p, _with(lambda h: h["b"].update(shape=[-2, -2])), GOOD_DATA),
    "non-integer dimension": lambda p: write_raw(p, _with(lambda h: h["b"].update(shape=[2.0, True])), GOOD_DATA),
    "reversed offsets": lambda p: write_raw(p, _with(lambda h: h["a"].update(data_offsets=[8, 0])), GOOD_DATA),
    "missing field": lambda p: write_raw(p, _with(lambda h: h["a"].pop("shape")), GOOD_DATA),
    "metadata not strings": lambda p: write_raw(p, _with(lambda h: h.update(__metadata__={"x": 1})), GOOD_DATA),
    "metadata dtype contradicts code": lambda p: write_raw(
        p, _with(lambda h: h.update(__metadata__={"varstore:a": '{"dtype": "int8"}'})), GOOD_DATA),
    "huge shape product": lambda p: write_raw(p, _with(lambda h: h["b"].update(shape=[2**40, 2**40])), GOOD_DATA),
}


@pytest.mark.parametrize("variant", list(CORRUPT))
def test_corrupt_files_raise_value_error_and_change_nothing(backend, tmp_path, variant):
    store = vs.VariableStore(device=DEVICE[backend])
    store.variable([7.0, 8.0], name="a")
    store.variable([[1.0, 2.0], [3.0, 4.0]], name="b")
    before = snapshot(store)
    path = tmp_path / "bad.safetensors"
    CORRUPT[variant](path)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"bad\.safetensors"):
            store.load(path)
        with pytest.raises(ValueError):
            store.load(path, strict=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Bounded by the bytes the file has (the header's text is scanned), never by what it claims.
    assert peak < (4 << 20) + 16 * path.stat().st_size, f"{variant}: {peak} bytes allocated while rejecting the file"
    assert same_store(snapshot(store), before)


def test_the_good_variant_of_the_corrupt_files_loads(backend, tmp_path):
    """The corrupt variants above differ from this file in one thing each."""
    store = vs.VariableStore(device=DEVICE[backend])
    store.variable([7.0, 8.0], name="a")
    store.variable([[1.0, 2.0], [3.0, 4.0]], name="b")
    write_raw(tmp_path / "good.safetensors", _good_header(), GOOD_DATA)
    assert store.load(tmp_path / "good.safetensors") == []
    np.testing.assert_array_equal(to_host(store["b"].value), [[2.0, 3.0], [4.0, 5.0]])


# ------------------------------------------------------------------ atomic saves
def _saved_twice(backend, tmp_path):
    store = vs.VariableStore(device=DEVICE[backend])
    store.variable(np.arange(1000, dtype=np.float32), name="a")
    store.variable(np.ones(500), dtype="bfloat16", name="b")
    file = tmp_path / "ckpt.safetensors"
    store.save(file)
    old = file.read_bytes()
    store["a"].assign(np.full(1000, -1.0, np.float32))
    return store, file, old


def test_a_failure_between_write_and_replace_keeps_the_old_file(backend, tmp_path, monkeypatch):
    store, file, old = _saved_twice(backend, tmp_path)

    def fail(src, dst):
        assert pathlib.Path(src).stat().st_size == len(old)  # the new file was written whole
        raise OSError("injected: the machine died before the rename")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="injected"):
        store.save(file)
    monkeypatch.undo()
    assert file.read_bytes() == old
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]
    other = empty_like(store)
    other.load(file)
    np.testing.assert_array_equal(to_host(other["a"].value), np.arange(1000))


def test_a_failure_while_writing_keeps_the_old_file(backend, tmp_path, monkeypatch):
    store, file, old = _saved_twice(backend, tmp_path)
    backend_object = store["b"]._backend
    real = backend_object.write_bytes
    calls = []

    def fail_second(storage, write):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("injected: disk full")
        real(storage, write)

    monkeypatch.setattr(backend_object, "write_bytes", fail_second)
    with pytest.raises(OSError, match="disk full"):
        store.save(file)
    monkeypatch.undo()
    assert file.read_bytes() == old and os.listdir(tmp_path) == ["ckpt.safetensors"]


SAVER = textwrap.dedent("""
    import sys
    import numpy as np
    import varstore as vs
    store = vs.VariableStore(device=sys.argv[2])
    variables = [store.variable("zeros", shape=(256, 1024), name=f"v{i}") for i in range(8)]  # 8 MiB
    i = int(sys.argv[3])
    while True:
        for v in variables:
            v.assign(np.full((256, 1024), i, np.float32))
        store.save(sys.argv[1])
        print(i, flush=True)
        i += 1
""")


def test_sigkill_mid_save_leaves_a_whole_file(backend, tmp_path):
    """A process saving in a loop is killed at random moments, 20 times: the file always
    loads, with every variable from the same save. (About half the kills land inside a
    save: they leave its temporary behind.)"""
    file = tmp_path / "ckpt.safetensors"
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    rng = np.random.default_rng(0)
    reader = vs.VariableStore(device=DEVICE[backend])
    variables = [reader.variable("zeros", shape=(256, 1024), name=f"v{i}") for i in range(8)]
    last, start = -1, 0
    for _ in range(20):
        child = subprocess.Popen([sys.executable, str(script), str(file), DEVICE[backend], str(start)],
                                 stdout=subprocess.PIPE, text=True)
        first = child.stdout.readline()  # one whole save first, then kill at a random moment
        assert first.strip(), "the saver printed nothing"
        time.sleep(rng.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        saved = [int(x) for x in (first + out).split()]
        reader.load(file)
        values = {float(to_host(v.value)[0, 0]) for v in variables}
        values |= {float(to_host(v.value)[-1, -1]) for v in variables}
        assert len(values) == 1, f"a mix of saves: {values}"
        value = int(values.pop())
        assert saved[-1] <= value <= saved[-1] + 1 and value > last  # the last save, or the one cut short
        last, start = value, saved[-1] + 2
    leftovers = [name for name in os.listdir(tmp_path) if name.endswith(checkpoint.TEMP_SUFFIX)]
    assert all(name.startswith(".ckpt.safetensors.") for name in leftovers)
    assert leftovers, "no kill landed inside a save: the test checked nothing"


# ------------------------------------------------------------------ no pickle
def test_no_pickle_anywhere():
    import varstore.kernels

    sources = [path for module in (vs, varstore.kernels)
               for path in pathlib.Path(module.__file__).resolve().parent.rglob("*.py")]
    assert len(sources) > 20
    offending = [str(p) for p in sources if "pickle" in p.read_text().replace("No pickle", "").replace("no pickle", "")]
    assert offending == []
