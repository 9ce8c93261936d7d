"""Checkpoints: a store's variables in one ``.safetensors`` file.

The file is the safetensors format, which the ``safetensors`` package reads (NumPy,
PyTorch, JAX): 8 bytes of little-endian header length N, N bytes of JSON header
(``{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}``, padded with
spaces to a multiple of 8), then the tensors' bytes. varstore writes:

- one tensor per variable, named by its path, with its stored value (not a scope's);
- bfloat16 as ``BF16``; float8 as ``U8`` (the package cannot load float8 back), with the
  true dtype in the metadata;
- ``__metadata__``: ``"format": "varstore"`` and, per variable, ``"varstore:<path>"``:
  a JSON object of strings (dtype, trainable, autocast, aggregation, synchronization).

**Saving is atomic**: a temporary file in the target's folder is written, flushed and
fsynced, then ``os.replace``-d over the target, and the folder is fsynced. A crash at any
moment leaves the old file or the new one, whole (a killed process can leave its
temporary, ``.<name>.<pid>.<random>.varstore-tmp``, behind). Each variable's bytes stream
to the file through the backend (from device memory: through two pinned buffers).

**Loading checks everything first**: the header's size, JSON, dtypes, shapes and offsets
(inside the file, sizes matching, no overlaps), then names, shapes and dtypes against the
store. Any problem is a ``ValueError`` and no variable changes. Only then are the tensors
streamed into the variables' existing storage. (An I/O error *while* streaming, such as
the file being truncated by another process after the checks, can leave the variables
loaded before it changed; it is raised.) No pickle is used anywhere.

A save holds the store's lock (no variable is created or deleted meanwhile) but does not
stop other threads' writes to the variables: save when no other thread writes.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import reprlib
import secrets

import numpy as np

from .dtypes import storage_dtype

#: The largest header we read: the safetensors package's own limit.
MAX_HEADER_BYTES = 100_000_000
METADATA_KEY = "__metadata__"
VARIABLE_PREFIX = "varstore:"
TEMP_SUFFIX = ".varstore-tmp"

#: Our dtype -> the safetensors dtype code we write.
CODE_OF = {
    "bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "uint16": "U16", "int32": "I32",
    "uint32": "U32", "int64": "I64", "uint64": "U64", "float16": "F16", "bfloat16": "BF16",
    "float32": "F32", "float64": "F64", "float8_e4m3fn": "U8", "float8_e5m2": "U8",
}
#: A safetensors dtype code -> our dtype, for every code we can load (float8 codes too,
#: as other writers use them).
DTYPE_OF = {code: dtype for dtype, code in CODE_OF.items() if not dtype.startswith("float8")}
DTYPE_OF.update({"F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"})
#: Dtypes recorded in the metadata that the U8 code may carry.
U8_CARRIES = ("uint8", "float8_e4m3fn", "float8_e5m2")


# ------------------------------------------------------------------------ save
def save(store, file, values=None) -> None:
    """Write every variable of ``store`` to ``file`` (see the module docstring).
    ``values``: ``{path: storage array}`` written instead of those variables' own
    storage (a replicated store's aggregated on_read values)."""
    values = values or {}
    path = _fspath(file, "save")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"save: the folder {directory!r} of {path!r} does not exist.")
    if os.path.isdir(path):
        raise IsADirectoryError(f"save: {path!r} is a folder; expected a file path.")
    with store._lock:
        variables = list(store.variables)
        if METADATA_KEY in store._variables:
            raise ValueError(f"save: a variable's path is {METADATA_KEY!r}, the name the safetensors format "
                             "reserves for the header's metadata; rename it to save this store.")
        # Largest items first: with the header padded to 8 bytes, every tensor starts at a
        # multiple of its item size (readers that map the file need no copy).
        order = sorted(variables, key=lambda v: -np.dtype(storage_dtype(v._dtype)).itemsize)
        header, metadata, offset = {}, {"format": "varstore"}, 0
        for variable in order:
            nbytes = variable._live_storage().nbytes
            header[variable.path] = {
                "dtype": CODE_OF[variable._dtype],
                "shape": list(variable.shape),
                "data_offsets": [offset, offset + nbytes],
            }
            metadata[VARIABLE_PREFIX + variable.path] = json.dumps({
                "dtype": variable._dtype,
                "trainable": str(variable.trainable).lower(),
                "autocast": str(variable.autocast).lower(),
                "aggregation": variable.aggregation,
                "synchronization": variable.synchronization,
            })
            offset += nbytes
        header = {METADATA_KEY: metadata, **header}
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        text += b" " * (-len(text) % 8)
        if len(text) > MAX_HEADER_BYTES:
            raise ValueError(f"save: the header would be {len(text)} bytes, over the {MAX_HEADER_BYTES} that "
                             "safetensors readers accept (too many variables or too long paths for one file).")

        base = os.path.basename(path)[:120]  # (the temporary's name must fit the folder's limit too)
        temp = os.path.join(directory, f".{base}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            with os.fdopen(fd, "wb", buffering=0) as f:
                _keep_mode(f.fileno(), path)
                _reserve(f.fileno(), 8 + len(text) + offset)
                write = _writer(f)
                write(memoryview(len(text).to_bytes(8, "little")))
                write(memoryview(text))
                for variable in order:
                    variable._backend.write_bytes(values.get(variable.path, variable._live_storage()), write)
                os.fsync(f.fileno())
            os.replace(temp, path)
        except BaseException:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise
        _fsync_folder(directory)


def _keep_mode(fd: int, path: str) -> None:
    """A file saved over an existing one keeps its permissions."""
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        return
    if hasattr(os, "fchmod"):
        os.fchmod(fd, mode)


def _reserve(fd: int, size: int) -> None:
    """Allocate the file's blocks in one go where the OS can (fewer extents, and a full
    disk fails here, before any byte is written)."""
    if size and hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            # EOPNOTSUPP/EINVAL: a file system without fallocate; the writes allocate


def _writer(f):
    def write(view: memoryview) -> None:
        view = view.cast("B")
        while view.nbytes:
            written = f.write(view)
            view = view[written:]

    return write


def _fsync_folder(directory: str) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------ load
class _Entry:
    __slots__ = ("name", "dtype", "shape", "begin", "end")

    def __init__(self, name, dtype, shape, begin, end):
        self.name, self.dtype, self.shape, self.begin, self.end = name, dtype, shape, begin, end


def load(store, file, strict: bool = True) -> list:
    """Load ``file``'s tensors into the variables of ``store`` with the same paths.

    Returns the skipped paths (sorted: in the file but not the store, or the other way
    round): always ``[]`` with ``strict=True``, where any such path is a ValueError.
    """
    if not isinstance(strict, bool):
        raise TypeError(f"load: strict must be True or False; received {strict!r}.")
    path = _fspath(file, "load")
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        entries, data_start = read_header(f, size, path)
        with store._lock:
            plan, skipped = _match(store, entries, strict, path)
            for variable, entry in sorted(plan, key=lambda pair: pair[1].begin):
                f.seek(data_start + entry.begin)
                variable._backend.read_bytes(variable._live_storage(), _reader(f, path, entry.name))
    return skipped


def read_header(f, size: int, path: str = "<file>") -> tuple:
    """``({name: _Entry}, data_start)`` from an open binary file of ``size`` bytes, every
    field checked; a ValueError naming the file and the problem otherwise."""

    def bad(problem: str):
        return ValueError(f"{path!r} is not a valid safetensors file: {problem}.")

    if size < 8:
        raise bad(f"it has {size} bytes, fewer than the 8 of the header length")
    f.seek(0)
    length = int.from_bytes(_read_exactly(f, 8, path, "the header length"), "little")
    if length > MAX_HEADER_BYTES:
        raise bad(f"the header length is {length} bytes, over the limit of {MAX_HEADER_BYTES}")
    if length > size - 8:
        raise bad(f"the header length is {length} bytes but only {size - 8} bytes follow it")
    raw = _read_exactly(f, length, path, "the header")
    header = _parse_json(raw, HEADER_LAYOUT, "the header", bad)
    if not isinstance(header, dict):
        raise bad(f"the header is a JSON {type(header).__name__}, expected an object")
    metadata = header.pop(METADATA_KEY, {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise bad("__metadata__ must map strings to strings")
    data_size = size - 8 - length
    entries = {}
    for name, info in header.items():
        entries[name] = _entry(name, info, metadata, data_size, bad)
    previous = None
    for entry in sorted(entries.values(), key=lambda e: (e.begin, e.end)):
        if previous is not None and entry.begin < previous.end and entry.end > entry.begin:
            raise bad(f"tensors {previous.name!r} [{previous.begin}, {previous.end}) and "
                      f"{entry.name!r} [{entry.begin}, {entry.end}) overlap")
        if entry.end > entry.begin:
            previous = entry
    return entries, 8 + length


def _entry(name, info, metadata, data_size, bad) -> _Entry:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise bad(f"tensor {name!r} must be an object with dtype, shape and data_offsets; got {reprlib.repr(info)}")
    code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(code, str) or code not in DTYPE_OF:
        raise bad(f"tensor {name!r} has dtype {reprlib.repr(code)}; expected one of {sorted(DTYPE_OF)}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape) or len(shape) > 64:
        raise bad(f"tensor {name!r} has shape {reprlib.repr(shape)}; expected a list of at most 64 non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise bad(f"tensor {name!r} has data_offsets {reprlib.repr(offsets)}; expected [begin, end] with 0 <= begin <= end")
    begin, end = offsets
    if end > data_size:
        raise bad(f"tensor {name!r} ends at byte {end} of the data, past its end ({data_size} bytes)")
    dtype = DTYPE_OF[code]
    recorded = metadata.get(VARIABLE_PREFIX + name)
    if recorded is not None:
        fields = _parse_json(recorded.encode("utf-8", "surrogatepass"), METADATA_LAYOUT, f"the metadata of {name!r}", bad)
        recorded_dtype = fields.get("dtype") if isinstance(fields, dict) else None
        if not isinstance(recorded_dtype, str):
            raise bad(f"the metadata of {name!r} is not a JSON object with a dtype: {recorded[:200]!r}")
        if recorded_dtype != dtype and not (code == "U8" and recorded_dtype in U8_CARRIES):
            raise bad(f"tensor {name!r} is stored as {code} but its metadata says dtype {recorded_dtype!r}")
        dtype = recorded_dtype
    expected = math.prod(shape) * np.dtype(storage_dtype(dtype)).itemsize
    if end - begin != expected:
        raise bad(f"tensor {name!r} of shape {tuple(shape)} and dtype {dtype} needs {expected} bytes; "
                  f"its data_offsets give {end - begin}")
    return _Entry(name, dtype, tuple(shape), begin, end)


def _match(store, entries: dict, strict: bool, path: str) -> tuple:
    """``([(variable, entry)], skipped)``; a ValueError when names (strict), shapes or
    dtypes do not fit."""
    only_file = sorted(set(entries) - set(store._variables))
    only_store = sorted(set(store._variables) - set(entries))
    if strict and (only_file or only_store):
        raise ValueError(
            f"load({path!r}): the file's variables and the store's differ (nothing was loaded). "
            f"Only in the file: {only_file[:10]}{' ...' if len(only_file) > 10 else ''}; "
            f"only in the store: {only_store[:10]}{' ...' if len(only_store) > 10 else ''}. "
            "Pass strict=False to load the paths both have."
        )
    plan, problems = [], []
    for name in store._variables:
        if name not in entries:
            continue
        variable, entry = store._variables[name], entries[name]
        if tuple(variable.shape) != entry.shape or variable._dtype != entry.dtype:
            problems.append(f"{name!r}: file {entry.dtype}{list(entry.shape)}, store "
                            f"{variable._dtype}{list(variable.shape)}")
        plan.append((variable, entry))
    if problems:
        raise ValueError(f"load({path!r}): shapes or dtypes differ (nothing was loaded): " + "; ".join(problems[:10]))
    return plan, sorted(only_file + only_store)


def _reader(f, path: str, name: str):
    def readinto(view: memoryview) -> None:
        view = view.cast("B")
        while view.nbytes:
            got = f.readinto(view)
            if not got:
                raise ValueError(f"{path!r} ended while reading tensor {name!r} (was it changed during the load?).")
            view = view[got:]

    return readinto


def _read_exactly(f, n: int, path: str, what: str) -> bytes:
    data = bytearray(n)
    view, filled = memoryview(data), 0
    while filled < n:
        got = f.readinto(view[filled:])
        if not got:
            raise ValueError(f"{path!r} is not a valid safetensors file: it ended inside {what}.")
        filled += got
    return bytes(data)


# Where a header may open containers: objects at depth 1 (the header) and 2 (a tensor, the
# metadata), lists at depth 3 (shape, data_offsets). The metadata's per-variable value is
# one flat object. Checked on the raw text before json builds anything, so a corrupt
# header cannot make the parser nest deeply or build millions of lists.
HEADER_LAYOUT = {ord("{"): 2, ord("["): 3}
METADATA_LAYOUT = {ord("{"): 1, ord("["): 0}
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _parse_json(raw: bytes, layout: dict, what: str, bad):
    """``json.loads`` of ``raw`` after a check of where containers open (``layout``: the
    deepest level each kind may open at, with lists allowed only at that level), with
    integers of at most 20 digits (a u64) and no NaN/Infinity; ValueError otherwise."""
    skeleton = np.frombuffer(_STRING.sub(b'""', raw), np.uint8)
    opens = np.isin(skeleton, (ord("{"), ord("[")))
    depth = np.cumsum(opens.astype(np.int32) - np.isin(skeleton, (ord("}"), ord("]"))), dtype=np.int32)
    for bracket, deepest in layout.items():
        at = depth[skeleton == bracket]
        allowed = (at == deepest) if bracket == ord("[") else (at <= deepest)
        if at.size and not allowed.all():
            raise bad(f"{what} nests JSON {'lists' if bracket == ord('[') else 'objects'} where a "
                      "safetensors header has none")
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates,
                          parse_int=_small_int, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise bad(f"{what} is not JSON ({type(error).__name__}: {str(error)[:200]})") from None


def _small_int(text: str) -> int:
    if len(text.lstrip("-")) > 20:
        raise ValueError(f"an integer of {len(text)} digits")
    return int(text)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a valid header value")


def _no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the key {key!r} appears twice")
        seen[key] = value
    return seen


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fspath(file, what: str) -> str:
    try:
        path = os.fspath(file)
    except TypeError:
        raise TypeError(f"{what}: expected a file path (str or os.PathLike); received {type(file).__name__}.") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return path
