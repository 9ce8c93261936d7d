"""Tier b: checkpoints (store.save / store.load) on every backend: round trips, the
safetensors package reading our files, atomic saves under injected failures and SIGKILL,
what save writes to (symlinks, FIFOs, leftovers of killed saves), and corrupt files that
must raise ValueError and change nothing (and that the safetensors package rejects too).
Every file a test here saves or loads without an error is read by the package as well."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc

import numpy as np
import pytest

import varstore as vs
from helpers import to_host
from varstore import checkpoint, checkpoint_format
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
            v.stored.backend.copy_from_host(v.stored.storage, random_words(dtype, shape, rng))
    return store


def package_reads(file) -> list:
    """The tensor names the safetensors package's own reader finds in ``file`` (it checks
    the whole header, as ``safetensors.numpy.load_file`` does, without loading tensors
    NumPy has no dtype for); raises whatever it raises."""
    from safetensors import safe_open

    with safe_open(str(file), framework="numpy") as f:
        return sorted(f.keys())


@pytest.fixture(autouse=True)
def package_accepts_what_we_accept(monkeypatch):
    """Wherever a test here saves or loads a file without an error, the package reads it
    too, finding the same tensors as our reader."""
    pytest.importorskip("safetensors")
    real_save, real_load = checkpoint.save, checkpoint.load

    def ours(file) -> list:
        with open(file, "rb") as f:
            return sorted(checkpoint_format.read_header(f, os.fstat(f.fileno()).st_size, str(file))[0])

    def save(store, file, values=None):
        real_save(store, file, values)
        assert package_reads(file) == ours(file) == sorted(store)

    def load(store, file, strict=True):
        skipped = real_load(store, file, strict)
        assert package_reads(file) == ours(file)
        return skipped

    monkeypatch.setattr(checkpoint, "save", save)
    monkeypatch.setattr(checkpoint, "load", load)


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
    with pytest.raises(ValueError,
                       match=r"Only in the file: \['only_in_file'\]; only in the store: \['only_in_store'\]"):
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


def test_names_the_json_escapes_round_trip(backend, tmp_path):
    """Quotes, backslashes, control characters and characters outside the BMP in paths:
    the package reads the names back as they are, and so does load."""
    names = ['q"uote', "back\\slash", "new\nline", "nul\x00", "\x7f", "\u2028", "é", "\U0001f600", " "]
    store = vs.VariableStore(device=DEVICE[backend])
    for i, name in enumerate(names):
        store.variable([float(i)], name=name)
    store.save(tmp_path / "names.safetensors")
    assert package_reads(tmp_path / "names.safetensors") == sorted(names)
    other = empty_like(store)
    other.load(tmp_path / "names.safetensors")
    assert same_store(snapshot(other), snapshot(store))


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


def temporaries(folder) -> set:
    return {name for name in os.listdir(folder) if name.endswith(checkpoint.TEMP_SUFFIX)}


def test_save_refuses_a_path_no_reader_could_load(tmp_path):
    """A variable path with a lone surrogate (one that got past the check at creation)
    would be written as a \\ud800 escape, which safetensors readers reject: save refuses
    it before any file is touched."""
    store = vs.VariableStore(device="cpu")
    variable = store.variable([1.0], name="ok")
    file = tmp_path / "f.safetensors"
    store.save(file)
    old = file.read_bytes()
    store._variables["a\ud800b"] = store._variables.pop("ok")
    variable._path = "a\ud800b"
    with pytest.raises(ValueError, match=r"variable path 'a\\ud800b' has the lone surrogate '\\ud800' at index 1"):
        store.save(file)
    with pytest.raises(ValueError, match="lone surrogate"):
        store.save(tmp_path / "new.safetensors")
    assert file.read_bytes() == old and os.listdir(tmp_path) == ["f.safetensors"]
    store._variables["a\U0001f600b"] = store._variables.pop("a\ud800b")
    variable._path = "a\U0001f600b"  # a character outside the BMP is fine
    store.save(file)
    assert package_reads(file) == ["a\U0001f600b"]


@pytest.fixture
def no_temporary_opened(monkeypatch):
    """Fails a test that has save open a temporary file."""
    real_open = os.open
    opened = []

    def recording_open(path, *args, **kwargs):
        if os.fspath(path).endswith(checkpoint.TEMP_SUFFIX):
            opened.append(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", recording_open)
    yield opened
    assert opened == [], "save wrote a temporary before refusing the path"


def test_save_refuses_a_trailing_slash_or_missing_folder_before_any_temporary(tmp_path, no_temporary_opened):
    store = vs.VariableStore(device="cpu")
    store.variable([1.0], name="a")
    with pytest.raises(IsADirectoryError, match="ends with a path separator"):
        store.save(str(tmp_path / "f.safetensors") + os.sep)
    (tmp_path / "f.safetensors").write_bytes(b"old")
    with pytest.raises(IsADirectoryError, match="ends with a path separator"):
        store.save(str(tmp_path / "f.safetensors") + os.sep)
    for name in (".", ".."):
        with pytest.raises(IsADirectoryError, match="ends with a path separator, '.' or '..'"):
            store.save(os.path.join(tmp_path, "f.safetensors", name))
    with pytest.raises(FileNotFoundError, match="no_such_folder.*does not exist"):
        store.save(tmp_path / "no_such_folder" / "f.safetensors")
    assert os.listdir(tmp_path) == ["f.safetensors"] and (tmp_path / "f.safetensors").read_bytes() == b"old"


def test_save_refuses_a_fifo_or_socket_and_leaves_it(tmp_path, no_temporary_opened):
    store = vs.VariableStore(device="cpu")
    store.variable([1.0], name="a")
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"pipe\.safetensors' is a FIFO \(named pipe\); expected a regular file"):
        store.save(fifo)
    os.symlink("pipe.safetensors", tmp_path / "link.safetensors")
    with pytest.raises(ValueError, match=r"link\.safetensors' \(a symlink to '.*pipe\.safetensors'\) is a FIFO"):
        store.save(tmp_path / "link.safetensors")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert os.readlink(tmp_path / "link.safetensors") == "pipe.safetensors"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "sock.safetensors"))
        with pytest.raises(ValueError, match="is a socket"):
            store.save(tmp_path / "sock.safetensors")
        assert stat.S_ISSOCK(os.lstat(tmp_path / "sock.safetensors").st_mode)
    os.symlink("loop.safetensors", tmp_path / "loop.safetensors")
    with pytest.raises(ValueError, match="a symlink that leads back to itself"):
        store.save(tmp_path / "loop.safetensors")
    assert sorted(os.listdir(tmp_path)) == ["link.safetensors", "loop.safetensors", "pipe.safetensors",
                                            "sock.safetensors"]


def test_load_refuses_a_fifo_without_waiting_for_a_writer(tmp_path):
    store = vs.VariableStore(device="cpu")
    store.variable([1.0], name="a")
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    errors = []

    def load():
        try:
            store.load(fifo)
        except ValueError as error:
            errors.append(error)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # load opened the FIFO and waits for a writer: give it one
        with open(fifo, "wb"):
            pass
        thread.join(10)
        pytest.fail("load blocked on a FIFO")
    assert len(errors) == 1 and "is a FIFO (named pipe); expected a safetensors file" in str(errors[0])


def test_save_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path, monkeypatch):
    """The temporary is written in the target's folder and renamed onto the target's
    real path, through a chain of links, relative or absolute."""
    store = vs.VariableStore(device="cpu")
    store.variable([1.0, 2.0], name="a")
    (tmp_path / "real").mkdir()
    (tmp_path / "links").mkdir()
    target = tmp_path / "real" / "model.safetensors"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    os.symlink("../real/model.safetensors", tmp_path / "links" / "relative")
    os.symlink(tmp_path / "links" / "relative", tmp_path / "links" / "absolute")
    real_replace, renames = os.replace, []

    def recording_replace(src, dst):
        renames.append((os.fspath(src), os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    for link in ("relative", "absolute"):
        store["a"].assign([3.0, float(len(renames))])
        store.save(tmp_path / "links" / link)
        temp, destination = renames[-1]
        assert destination == os.path.realpath(target) and os.path.dirname(temp) == os.path.realpath(tmp_path / "real")
        assert os.readlink(tmp_path / "links" / "relative") == "../real/model.safetensors"
        assert os.readlink(tmp_path / "links" / "absolute") == str(tmp_path / "links" / "relative")
        assert os.stat(target).st_mode & 0o777 == 0o640
        other = empty_like(store)
        other.load(target)
        np.testing.assert_array_equal(other["a"].numpy(), [3.0, float(len(renames) - 1)])
    assert os.listdir(tmp_path / "real") == ["model.safetensors"]
    assert sorted(os.listdir(tmp_path / "links")) == ["absolute", "relative"]


def test_save_through_a_dangling_symlink_creates_the_file_it_names(tmp_path):
    store = vs.VariableStore(device="cpu")
    store.variable([1.0], name="a")
    os.symlink("model.safetensors", tmp_path / "dangling")
    store.save(tmp_path / "dangling")
    assert os.readlink(tmp_path / "dangling") == "model.safetensors"
    assert sorted(os.listdir(tmp_path)) == ["dangling", "model.safetensors"]
    assert package_reads(tmp_path / "model.safetensors") == ["a"]


def test_save_through_a_symlink_into_a_missing_folder_fails_before_any_temporary(tmp_path, no_temporary_opened):
    store = vs.VariableStore(device="cpu")
    store.variable([1.0], name="a")
    os.symlink("nowhere/model.safetensors", tmp_path / "link")
    with pytest.raises(FileNotFoundError, match="nowhere' of .*link' does not exist"):
        store.save(tmp_path / "link")
    assert os.listdir(tmp_path) == ["link"] and os.readlink(tmp_path / "link") == "nowhere/model.safetensors"


def test_the_next_save_removes_temporaries_of_dead_processes_only(tmp_path):
    """Leftovers of killed saves to the same file name whose process is gone are removed;
    a live process's (this one's, or another user's) and other files are kept."""
    store = vs.VariableStore(device="cpu")
    store.variable([1.0], name="a")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead, alive = child.pid, os.getpid()
    names = {
        "dead": f".model.safetensors.{dead}.0123abcd{checkpoint.TEMP_SUFFIX}",
        "dead too": f".model.safetensors.{dead}.ffffffff{checkpoint.TEMP_SUFFIX}",
        "alive": f".model.safetensors.{alive}.0123abcd{checkpoint.TEMP_SUFFIX}",
        "pid 1": f".model.safetensors.1.0123abcd{checkpoint.TEMP_SUFFIX}",  # alive: ours or not (PermissionError)
        "another file's": f".other.safetensors.{dead}.0123abcd{checkpoint.TEMP_SUFFIX}",
        "not our pattern": f".model.safetensors.{dead}.0123ABCD{checkpoint.TEMP_SUFFIX}",
        "a longer name": f".model.safetensors.x.{dead}.0123abcd{checkpoint.TEMP_SUFFIX}",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"\0" * 64)
    os.mkdir(tmp_path / f".model.safetensors.{dead}.00000000{checkpoint.TEMP_SUFFIX}")  # not a file: kept
    store.save(tmp_path / "model.safetensors")
    kept = set(os.listdir(tmp_path))
    assert names["dead"] not in kept and names["dead too"] not in kept
    assert {names[k] for k in names if not k.startswith("dead")} <= kept
    assert f".model.safetensors.{dead}.00000000{checkpoint.TEMP_SUFFIX}" in kept
    assert "model.safetensors" in kept and len(kept) == len(names) - 2 + 2


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

def _text(text: str, data: bytes = None):
    """A variant given as the header's text (Python escapes stand for the bytes)."""
    return lambda p: write_raw(p, {}, GOOD_DATA if data is None else data, text=text.encode("utf-8"))


GOOD_TEXT = json.dumps(_good_header())
A_IS = '{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
B_IS = '"b": {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24]}'

#: Files that both the safetensors package and load reject.
CORRUPT = {
    "empty file": lambda p: p.write_bytes(b""),
    "truncated header length": lambda p: p.write_bytes(b"\x10\x00\x00"),
    "header length past the end": lambda p: write_raw(p, _good_header(), GOOD_DATA, length=10_000),
    "huge header length": lambda p: write_raw(p, _good_header(), GOOD_DATA, length=2**63 + 5),
    "header over 100 MB": lambda p: write_raw(p, _good_header(), GOOD_DATA, length=200_000_000),
    "truncated header": lambda p: p.write_bytes((500).to_bytes(8, "little") + json.dumps(_good_header()).encode()[:40]),
    "bad JSON": lambda p: write_raw(p, {}, GOOD_DATA, text=b'{"a": {"dtype": "F32", "shape": [2],'),
    "not UTF-8": lambda p: write_raw(p, {}, GOOD_DATA, text=b'{"\xff\xfe": 1}'),
    "UTF-8 of a surrogate": lambda p: write_raw(
        p, {}, GOOD_DATA, text=GOOD_TEXT.replace('"a"', '"\xed\xa0\x80"', 1).encode("latin-1")),
    "JSON array": lambda p: write_raw(p, {}, GOOD_DATA, text=b"[1, 2, 3]"),
    "empty header": _text(""),
    "header of spaces": _text("        "),
    "byte order mark": _text("\ufeff" + GOOD_TEXT),
    "garbage after the JSON": _text(GOOD_TEXT + " x"),
    "NUL padding": _text(GOOD_TEXT + "\0\0\0"),
    "a second JSON value": _text(GOOD_TEXT + " {}"),
    "millions of lists": lambda p: write_raw(p, {}, GOOD_DATA, text=b'{"a": [' + b"[]," * 300_000 + b"[]]}"),
    "a 5000-digit offset": lambda p: write_raw(p, {}, GOOD_DATA, text=b'{"a": {"dtype": "F32", "shape": [2], '
                                               b'"data_offsets": [0, ' + b"9" * 5000 + b"]}}"),
    "NaN in the header": lambda p: write_raw(p, {}, GOOD_DATA, text=b'{"a": {"dtype": "F32", "shape": [NaN], '
                                             b'"data_offsets": [0, 8]}}'),
    "deeply nested JSON": lambda p: write_raw(p, {}, GOOD_DATA,
                                              text=b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"),
    "128 deep in an extra field": _text(A_IS + '"b": {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24], '
                                       '"x": ' + "[" * 126 + "]" * 126 + "}}"),
    "NaN in an extra field": _text(A_IS + B_IS[:-1] + ', "x": NaN}}'),
    "1e400 in an extra field": _text(A_IS + B_IS[:-1] + ', "x": 1e400}}'),
    "a 310-digit integer in an extra field": _text(A_IS + B_IS[:-1] + ', "x": 1' + "0" * 309 + "}}"),
    "duplicate __metadata__": _text('{"__metadata__": {}, "__metadata__": {}, ' + GOOD_TEXT[1:]),
    "duplicate field": _text(A_IS + B_IS[:-1] + ', "dtype": "F32"}}'),
    "a tensor named twice, the first invalid": _text(
        A_IS + '"b": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}, ' + B_IS + "}"),
    "tensor as a list of two": _text(A_IS + '"b": ["F32", [2, 2]]}'),
    "tensor as a string": _text(A_IS + '"b": "F32"}'),
    "lone high surrogate in a name": _text(GOOD_TEXT.replace('"a"', '"\\ud800"', 1)),
    "lone low surrogate in a name": _text(GOOD_TEXT.replace('"a"', '"\\udc00"', 1)),
    "two high surrogates in a name": _text(GOOD_TEXT.replace('"a"', '"\\ud83d\\ud83d\\ude00"', 1)),
    "lone surrogate in the metadata": lambda p: write_raw(
        p, _with(lambda h: h.update(__metadata__={"k": "\ud800"})), GOOD_DATA),
    "lone surrogate in an extra field": _text(A_IS + B_IS[:-1] + ', "x": ["\\udbff"]}}'),
    "control character in a name": _text(GOOD_TEXT.replace('"a"', '"a\tb"', 1)),
    "invalid escape": _text(GOOD_TEXT.replace('"a"', '"\\x41"', 1)),
    "offsets past the end": lambda p: write_raw(p, _with(lambda h: h["b"].update(data_offsets=[8, 24])),
                                                GOOD_DATA[:16]),
    "truncated data": lambda p: write_raw(p, _good_header(), GOOD_DATA[:-3]),
    "a byte after the last tensor": lambda p: write_raw(p, _good_header(), GOOD_DATA + b"\0"),
    "a gap between tensors": lambda p: write_raw(p, _with(lambda h: h["b"].update(data_offsets=[12, 28])),
                                                 GOOD_DATA + bytes(4)),
    "a gap before the first tensor": lambda p: write_raw(
        p, _with(lambda h: (h["a"].update(data_offsets=[4, 12]), h["b"].update(data_offsets=[12, 28]))),
        bytes(4) + GOOD_DATA),
    "an empty tensor past the end": lambda p: write_raw(
        p, _with(lambda h: h.update(z={"dtype": "F32", "shape": [0], "data_offsets": [40, 40]})), GOOD_DATA),
    "overlapping ranges": lambda p: write_raw(p, _with(lambda h: h["a"].update(data_offsets=[4, 12])), GOOD_DATA),
    "unknown dtype": lambda p: write_raw(p, _with(lambda h: h["a"].update(dtype="F128")), GOOD_DATA),
    "lowercase dtype": lambda p: write_raw(p, _with(lambda h: h["a"].update(dtype="f32")), GOOD_DATA),
    "size does not match shape": lambda p: write_raw(p, _with(lambda h: h["b"].update(shape=[2, 3])), GOOD_DATA),
    "negative dimension": lambda p: write_raw(p, _with(lambda h: h["b"].update(shape=[-2, -2])), GOOD_DATA),
    "non-integer dimension": lambda p: write_raw(p, _with(lambda h: h["b"].update(shape=[2.0, True])), GOOD_DATA),
    "-0 as a dimension": _text(A_IS + B_IS + ', "z": {"dtype": "F32", "shape": [-0], "data_offsets": [24, 24]}}'),
    "-0 as an offset": _text(GOOD_TEXT.replace("[0, 8]", "[-0, 8]")),
    "a leading zero": _text(GOOD_TEXT.replace("[8, 24]", "[08, 24]")),
    "1.0 as an offset": _text(GOOD_TEXT.replace("[0, 8]", "[0, 8.0]")),
    "an exponent as an offset": _text(GOOD_TEXT.replace("[0, 8]", "[0, 8e0]")),
    "an offset past 64 bits": _text(GOOD_TEXT.replace("[8, 24]", "[8, 18446744073709551640]")),
    "three offsets": _text(GOOD_TEXT.replace("[8, 24]", "[8, 24, 24]")),
    "offsets as an object": _text(GOOD_TEXT.replace("[8, 24]", '{"0": 8, "1": 24}')),
    "reversed offsets": lambda p: write_raw(p, _with(lambda h: h["a"].update(data_offsets=[8, 0])), GOOD_DATA),
    "missing field": lambda p: write_raw(p, _with(lambda h: h["a"].pop("shape")), GOOD_DATA),
    "metadata not strings": lambda p: write_raw(p, _with(lambda h: h.update(__metadata__={"x": 1})), GOOD_DATA),
    "metadata a list": lambda p: write_raw(p, _with(lambda h: h.update(__metadata__=[])), GOOD_DATA),
    "metadata a string": lambda p: write_raw(p, _with(lambda h: h.update(__metadata__="x")), GOOD_DATA),
    "huge shape product": lambda p: write_raw(p, _with(lambda h: h["b"].update(shape=[2**40, 2**40])), GOOD_DATA),
    "a product past 64 bits, then a zero": lambda p: write_raw(
        p, _with(lambda h: h.update(z={"dtype": "U8", "shape": [2**32, 2**32, 0], "data_offsets": [24, 24]})),
        GOOD_DATA),
    # Headers that took the old pre-scan (a regular expression that rescans) quadratic time.
    "unclosed string of escaped quotes": _text('{"' + '\\"' * 1_000_000),
    "a run of backslashes": _text('{"' + "\\" * 2_000_000),
    "a million open lists": _text('{"a": ' + "[" * 1_000_000),
    "escaped backslashes and quotes": _text('{"a": "' + '\\\\\\"' * 500_000),
}

#: Files the package reads but varstore cannot hold (or that contradict varstore's own
#: metadata): load rejects them too.
NOT_FOR_VARSTORE = {
    "nested metadata value": lambda p: write_raw(
        p, _with(lambda h: h.update(__metadata__={"varstore:a": "[" * 5000 + "]" * 5000})), GOOD_DATA),
    "metadata dtype contradicts code": lambda p: write_raw(
        p, _with(lambda h: h.update(__metadata__={"varstore:a": '{"dtype": "int8"}'})), GOOD_DATA),
    "a dtype varstore has not": lambda p: write_raw(
        p, _with(lambda h: h["b"].update(dtype="C64", shape=[2])), GOOD_DATA),
    "65 dimensions": lambda p: write_raw(p, _with(lambda h: h["b"].update(shape=[2, 2] + [1] * 63)), GOOD_DATA),
}


@pytest.mark.parametrize("variant", list(CORRUPT) + list(NOT_FOR_VARSTORE))
def test_corrupt_files_raise_value_error_and_change_nothing(backend, tmp_path, variant):
    store = vs.VariableStore(device=DEVICE[backend])
    store.variable([7.0, 8.0], name="a")
    store.variable([[1.0, 2.0], [3.0, 4.0]], name="b")
    before = snapshot(store)
    path = tmp_path / "bad.safetensors"
    (CORRUPT.get(variant) or NOT_FOR_VARSTORE[variant])(path)
    if variant in CORRUPT:
        from safetensors import SafetensorError

        with pytest.raises(SafetensorError):
            package_reads(path)
    else:
        assert package_reads(path) == ["a", "b"]
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"bad\.safetensors"):
            store.load(path)
        with pytest.raises(ValueError):
            store.load(path, strict=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Bounded by the bytes the file has, never by what it claims. The JSON parser builds
    # one Python object per value: an empty list, 3 bytes of text, takes about 64.
    assert peak < (4 << 20) + 24 * path.stat().st_size, f"{variant}: {peak} bytes allocated while rejecting the file"
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
    backend_object = store["b"].stored.backend
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
    save: they leave its temporary behind, which the next process's first save removes.)"""
    file = tmp_path / "ckpt.safetensors"
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    rng = np.random.default_rng(0)
    reader = vs.VariableStore(device=DEVICE[backend])
    variables = [reader.variable("zeros", shape=(256, 1024), name=f"v{i}") for i in range(8)]
    last, start, left, landed = -1, 0, set(), 0
    for _ in range(20):
        child = subprocess.Popen([sys.executable, str(script), str(file), DEVICE[backend], str(start)],
                                 stdout=subprocess.PIPE, text=True)
        first = child.stdout.readline()  # one whole save first, then kill at a random moment
        assert first.strip(), "the saver printed nothing"
        assert not left & temporaries(tmp_path), "a killed save's temporary outlived the next save"
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
        left = temporaries(tmp_path)
        assert all(name.startswith(".ckpt.safetensors.") for name in left)
        landed += bool(left)
    assert landed, "no kill landed inside a save: the test checked nothing"


# ------------------------------------------------------------------ no pickle
def test_no_pickle_anywhere():
    import varstore.kernels

    sources = [path for module in (vs, varstore.kernels)
               for path in pathlib.Path(module.__file__).resolve().parent.rglob("*.py")]
    assert len(sources) > 20
    offending = [str(p) for p in sources if "pickle" in p.read_text().replace("No pickle", "").replace("no pickle", "")]
    assert offending == []


def test_a_file_this_user_may_not_write_is_refused(tmp_path, monkeypatch):
    """A read-only file: the rename would replace it (only the folder must be writable),
    so save refuses it first, as ``open(path, "w")`` would (``os.access``; root may write
    any file, so the check is made to say no here)."""
    import os

    store = vs.VariableStore(device="cpu")
    store.variable(np.ones(3, np.float32), name="a")
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"keep me")
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(path) else real(p, mode, **kw))
    with pytest.raises(PermissionError, match="may not write"):
        store.save(path)
    assert path.read_bytes() == b"keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
