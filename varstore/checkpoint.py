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

A path that UTF-8 cannot encode (a lone surrogate such as ``"\\ud800"``) is refused
before anything is written: no safetensors reader could load its tensor.

**Saving is atomic**: a temporary file in the target's folder is written, flushed and
fsynced, then ``os.replace``-d over the target, and the folder is fsynced. A crash at any
moment leaves the old file or the new one, whole. Each variable's bytes stream to the
file through the backend (from device memory: through two pinned buffers).

What ``save(path)`` writes to, checked before anything is written:

- a path ending with a separator (or ``.``, ``..``), a missing folder, a folder, or an
  existing path that is not a regular file (a FIFO, a device, a socket) is refused;
- a symlink is followed, through every link, to the file it points to: that file is
  replaced atomically (the temporary is written in *its* folder and renamed onto its
  real path) and the link stays a link. A symlink to a FIFO or a device is refused as
  above; a dangling symlink creates the file it names when that file's folder exists
  (as ``open(path, "w")`` would), and is refused otherwise.

A killed save leaves its temporary behind (``.<name>.<pid>.<random>.varstore-tmp``, full
size: its blocks are allocated up front). The next save to a file of that name (after
symlinks) in that folder removes such leftovers whose process no longer exists (POSIX only;
the process id is checked with ``os.kill(pid, 0)``, so a temporary of a process in
another PID namespace or on another host sharing the folder looks dead: do not save to
one file from several of those at once).

**Loading checks everything first**, with the rules of the ``safetensors`` package's
reader (0.8), so that a file loads here exactly when that reader accepts it and varstore
can hold its tensors (dtypes it has, at most 64 dimensions, its own metadata consistent):
the header's size and UTF-8, its JSON (nesting at most 127 deep, no NaN, no lone
surrogate escapes, numbers within a float's range, shapes and offsets unsigned 64-bit
integers; a tensor named twice or a metadata key given twice: the last one counts, as in
the package; fields other than dtype, shape and data_offsets are ignored), and the
tensors' byte ranges, which must cover the data section back to back from its first byte
to the end of the file (no gaps, overlaps or trailing bytes), each as long as its shape
and dtype need. Then names, shapes and dtypes are checked against the store. Any problem
is a ``ValueError`` and no variable changes (a path that is not a regular file, such as a
FIFO, is refused before it is opened). The header is parsed in time and memory linear in
its size (at most 100 MB), whatever its bytes (the tensors' ranges are then sorted). Only
then are the tensors streamed into the variables' existing storage. (An I/O error *while*
streaming, such as the file being truncated by another process after the checks, can leave
the variables loaded before it changed; it is raised.) No pickle is used anywhere.

A save holds the store's lock (no variable is created or deleted meanwhile) but does not
stop other threads' writes to the variables: save when no other thread writes.
"""

from __future__ import annotations

import errno
import itertools
import json
import math
import operator
import os
import re
import reprlib
import secrets
import stat

import numpy as np

from .dtypes import REGISTRY, storage_dtype

#: The largest header we read: the safetensors package's own limit.
MAX_HEADER_BYTES = 100_000_000
#: The deepest the header's JSON may nest (the header object is level 1): the limit of
#: serde_json, the package's parser, counted as the package applies it.
MAX_NESTING = 127
METADATA_KEY = "__metadata__"
VARIABLE_PREFIX = "varstore:"
TEMP_SUFFIX = ".varstore-tmp"
U64_MAX = 2**64 - 1

#: Dtypes written with the code of their storage words (U8), their own dtype in the
#: metadata: the safetensors package cannot load its float8 codes back.
WRITTEN_AS_WORDS = ("float8_e4m3fn", "float8_e5m2")
#: Our dtype -> the safetensors dtype code we write.
CODE_OF = {name: REGISTRY[r.storage.name].safetensors if name in WRITTEN_AS_WORDS else r.safetensors
           for name, r in REGISTRY.items()}
#: A safetensors dtype code -> our dtype, for every code we can load (float8 codes too,
#: as other writers use them).
DTYPE_OF = {r.safetensors: name for name, r in REGISTRY.items()}
#: Bytes per element of each code we can load.
ITEMSIZE_OF = {code: REGISTRY[dtype].storage.itemsize for code, dtype in DTYPE_OF.items()}
#: Every code the safetensors package (0.8) parses. A tensor named twice is parsed twice
#: and the last one kept, so an earlier one may use a code we cannot load.
PACKAGE_CODES = frozenset({
    "BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ",
    "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64",
})
#: Dtypes recorded in the metadata that the U8 code may carry.
U8_CARRIES = tuple(name for name, code in CODE_OF.items() if code == "U8")
INFO_FIELDS = ("dtype", "shape", "data_offsets")


# ------------------------------------------------------------------------ save
def save(store, file, values=None) -> None:
    """Write every variable of ``store`` to ``file`` (see the module docstring).
    ``values``: ``{path: storage array}`` written instead of those variables' own
    storage (a replicated store's aggregated on_read values)."""
    values = values or {}
    path = _fspath(file, "save")
    target = _save_target(path)
    directory = os.path.dirname(target)
    with store.locked():
        variables = list(store.variables)
        if METADATA_KEY in store:
            raise ValueError(f"save: a variable's path is {METADATA_KEY!r}, the name the safetensors format "
                             "reserves for the header's metadata; rename it to save this store.")
        for variable in variables:
            _check_name(variable.path)
        # Largest items first: with the header padded to 8 bytes, every tensor starts at a
        # multiple of its item size (readers that map the file need no copy).
        order = sorted(variables, key=lambda v: -np.dtype(storage_dtype(v.stored.dtype)).itemsize)
        header, metadata, offset = {}, {"format": "varstore"}, 0
        for variable in order:
            nbytes = variable.stored.storage.nbytes
            header[variable.path] = {
                "dtype": CODE_OF[variable.stored.dtype],
                "shape": list(variable.shape),
                "data_offsets": [offset, offset + nbytes],
            }
            metadata[VARIABLE_PREFIX + variable.path] = json.dumps({
                "dtype": variable.stored.dtype,
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

        base = os.path.basename(target)[:120]  # (the temporary's name must fit the folder's limit too)
        _remove_stale_temporaries(directory, base)
        temp = os.path.join(directory, f".{base}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            with os.fdopen(fd, "wb", buffering=0) as f:
                _keep_mode(f.fileno(), target)
                _reserve(f.fileno(), 8 + len(text) + offset)
                write = _writer(f)
                write(memoryview(len(text).to_bytes(8, "little")))
                write(memoryview(text))
                for variable in order:
                    storage, _, backend, _ = variable.stored
                    backend.write_bytes(values.get(variable.path, storage), write)
                os.fsync(f.fileno())
            os.replace(temp, target)
        except BaseException:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise
        _fsync_folder(directory)


def _save_target(path: str) -> str:
    """The real path ``save`` replaces: ``path`` with every symlink followed. Raises, before
    anything is written, when that is no place for a regular file."""
    if path.endswith(os.sep) or (os.altsep and path.endswith(os.altsep)) or os.path.basename(path) in (".", ".."):
        raise IsADirectoryError(f"save: {path!r} ends with a path separator, '.' or '..', which name a folder; "
                                "expected a file path.")
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"save: the folder {directory!r} of {path!r} does not exist.")
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return target
    if stat.S_ISREG(mode):
        return target
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"save: {path!r} is a folder; expected a file path.")
    what = _kind_of_file(mode)
    via = f" (a symlink to {target!r})" if os.path.islink(path) else ""
    raise ValueError(f"save: {path!r}{via} is {what}; expected a regular file, a symlink to one, or a new "
                     "path (nothing was written).")


def _kind_of_file(mode: int) -> str:
    for test, what in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISLNK, "a symlink that leads back to itself")):
        if test(mode):
            return what
    return f"not a regular file (mode {mode:o})"


def _check_name(path: str) -> None:
    """The JSON header would hold a lone surrogate as a ``\\udXXX`` escape, which the
    safetensors reader (like any UTF-8 one) rejects: refuse the save instead."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"save: the variable path {path!r} has the lone surrogate {path[error.start]!r} at index "
            f"{error.start}, which UTF-8 cannot encode and safetensors readers reject; expected a path of "
            "Unicode characters (rename the variable to save this store; nothing was written)."
        ) from None


_TEMP_MIDDLE = re.compile(r"([1-9][0-9]{0,9})\.[0-9a-f]{8}")


def _remove_stale_temporaries(directory: str, base: str) -> None:
    """Delete the temporaries that killed saves to ``base`` left in ``directory``: names
    ``.<base>.<pid>.<8 hex digits>.varstore-tmp`` of regular files whose process is gone.
    A live process's temporary (this process's other threads' too) is kept."""
    if os.name != "posix":  # (elsewhere os.kill(pid, 0) is no liveness test)
        return
    prefix = f".{base}."
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(TEMP_SUFFIX)):
            continue
        match = _TEMP_MIDDLE.fullmatch(name[len(prefix):-len(TEMP_SUFFIX)])
        try:
            if match is None or not entry.is_file(follow_symlinks=False) or _process_exists(int(match.group(1))):
                continue
            os.unlink(entry.path)
        except OSError:  # gone already, or not ours to delete: the save goes on
            pass


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # PermissionError: another user's; otherwise unknown: keep
        return True
    return True


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
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"load: {path!r} is a folder; expected a safetensors file.")
    if not stat.S_ISREG(mode):  # (opening a FIFO would wait for a writer)
        raise ValueError(f"load: {path!r} is {_kind_of_file(mode)}; expected a safetensors file.")
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        entries, data_start = read_header(f, size, path)
        with store.locked():
            plan, skipped = _match(store, entries, strict, path)
            for variable, entry in sorted(plan, key=lambda pair: pair[1].begin):
                f.seek(data_start + entry.begin)
                storage, _, backend, _ = variable.stored
                backend.read_bytes(storage, _reader(f, path, entry.name))
    return skipped


def read_header(f, size: int, path: str = "<file>") -> tuple:
    """``({name: _Entry}, data_start)`` from an open binary file of ``size`` bytes, every
    rule of the safetensors package's reader checked; a ValueError naming the file and
    the rule otherwise."""

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
    return _read_entries(raw, size - 8 - length, bad), 8 + length


def _read_entries(raw: bytes, data_size: int, bad) -> dict:
    header = _parse_json(raw, "the header", bad)
    if type(header) is not tuple:
        raise bad(f"the header is {_json_kind(header)}; expected a JSON object")
    metadata, tensors = None, {}
    for key, value in header:
        if key == METADATA_KEY:
            if metadata is not None:
                raise bad(f"the header has the key {METADATA_KEY!r} twice")
            metadata = _metadata(value, bad)
        else:
            if key in tensors:  # a name given twice: the last one counts, as in the package, which
                _typed(key, tensors[key], bad)  # parses the earlier one all the same
            tensors[key] = value
    del header
    names = list(tensors)
    codes, shapes, offsets = _fields(tensors, bad)
    del tensors
    _check_layout(names, codes, shapes, offsets, data_size, bad)
    metadata = metadata or {}
    entries = {}
    for name, code, shape, (begin, end) in zip(names, codes, shapes, offsets, strict=True):
        entries[name] = _entry(name, code, shape, begin, end, metadata, bad)
    return entries


def _metadata(value, bad) -> dict:
    if value is None:
        return {}
    if type(value) is not tuple:
        raise bad(f"{METADATA_KEY} is {_json_kind(value)}; expected null or a JSON object of strings")
    for key, item in value:
        if type(item) is not str:
            raise bad(f"{METADATA_KEY}[{key!r}] is {_json_kind(item)}; expected a string")
    return dict(value)  # a key given twice: the last value, as in the package


def _fields(tensors: dict, bad) -> tuple:
    """``(codes, shapes, offsets)``, one of each per tensor, typed as the package requires
    (see ``_typed``). Checked for all tensors at once, with C-speed builtins: one
    header may describe millions of tensors."""
    codes, shapes, offsets = [], [], []
    for name, value in tensors.items():
        if (type(value) is tuple and len(value) == 3 and value[0][0] == "dtype" and value[1][0] == "shape"
                and value[2][0] == "data_offsets"):  # in the order the package and we write
            code, shape, pair = value[0][1], value[1][1], value[2][1]
        else:
            code, shape, pair = _typed(name, value, bad)
        codes.append(code)
        shapes.append(shape)
        offsets.append(pair)
    extents = list(itertools.chain.from_iterable(shapes)) if _types(shapes) <= {list} else None
    bounds = list(itertools.chain.from_iterable(offsets)) if _types(offsets) <= {list} else None
    if not (_types(codes) <= {str} and set(codes) <= PACKAGE_CODES and extents is not None and _u64s(extents)
            and bounds is not None and set(map(len, offsets)) <= {2} and _u64s(bounds)):
        for name, value in tensors.items():
            _typed(name, value, bad)
    return codes, shapes, offsets


def _typed(name: str, value, bad) -> tuple:
    """``(code, shape, [begin, end])`` of one tensor: an object with those three fields
    (others are ignored) or a list of the three; a ValueError naming what is wrong."""
    if type(value) is tuple:
        fields = {}
        for key, item in value:
            if key in INFO_FIELDS:
                if key in fields:
                    raise bad(f"tensor {name!r} has the field {key!r} twice")
                fields[key] = item
        missing = [key for key in INFO_FIELDS if key not in fields]
        if missing:
            raise bad(f"tensor {name!r} has no {missing[0]!r}; expected an object with dtype, shape and data_offsets")
        code, shape, offsets = (fields[key] for key in INFO_FIELDS)
    elif type(value) is list and len(value) == 3:
        code, shape, offsets = value
    else:
        raise bad(f"tensor {name!r} is {_json_kind(value)}; expected an object with dtype, shape and data_offsets")
    if type(code) is not str or code not in PACKAGE_CODES:
        raise bad(f"tensor {name!r} has dtype {_show(code)}; expected one of {sorted(PACKAGE_CODES)}")
    if type(shape) is not list or not _u64s(shape):
        raise bad(f"tensor {name!r} has shape {_show(shape)}; expected a list of unsigned 64-bit integers")
    if type(offsets) is not list or len(offsets) != 2 or not _u64s(offsets):
        raise bad(f"tensor {name!r} has data_offsets {_show(offsets)}; expected [begin, end], "
                  "two unsigned 64-bit integers")
    return code, shape, offsets


def _check_layout(names: list, codes: list, shapes: list, offsets: list, data_size: int, bad) -> None:
    """The package's rule: in order of their offsets, the tensors cover the data section
    back to back from byte 0 to the end of the file, each as long as its shape needs."""
    bounds = np.array(offsets, np.uint64).reshape(-1, 2)
    order = np.lexsort((bounds[:, 1], bounds[:, 0]))
    begins, ends = bounds[order, 0], bounds[order, 1]
    covered = np.zeros_like(ends)
    covered[1:] = ends[:-1]
    wrong = np.flatnonzero((begins != covered) | (ends < begins))
    if wrong.size:
        i = wrong[0]
        name, (begin, end), start = names[order[i]], offsets[order[i]], int(covered[i])
        where = ("ends before it begins" if end < begin else
                 "overlaps the tensor before it" if begin < start else "leaves a gap before it")
        raise bad(f"tensor {name!r} has data_offsets [{begin}, {end}], which {where}: the tensors must cover the "
                  f"data section back to back from byte 0, so this one must begin at byte {start}")
    if not set(codes) <= ITEMSIZE_OF.keys():
        i = next(i for i, code in enumerate(codes) if code not in ITEMSIZE_OF)
        raise bad(f"tensor {names[i]!r} has dtype {codes[i]!r}, which varstore cannot load; expected one of "
                  f"{sorted(ITEMSIZE_OF)}")
    # (Checked before any product: a shape of millions of extents would make a huge one.)
    if max(map(len, shapes), default=0) > 64:
        i = next(i for i, shape in enumerate(shapes) if len(shape) > 64)
        raise bad(f"tensor {names[i]!r} has {len(shapes[i])} dimensions; varstore holds at most 64")
    sizes = list(map(operator.mul, map(math.prod, shapes), map(ITEMSIZE_OF.__getitem__, codes)))
    if max(sizes, default=0) > U64_MAX or 0 in sizes:
        for name, code, shape in zip(names, codes, shapes, strict=True):
            # As the package multiplies, in order: a zero after an overflow does not save it.
            product = 1
            for extent in (*shape, ITEMSIZE_OF[code]):
                product *= extent
                if product > U64_MAX:
                    raise bad(f"tensor {name!r} of shape {reprlib.repr(shape)} and dtype {code} needs more than "
                              "2**64 bytes")
    wrong = np.flatnonzero(ends - begins != np.array(sizes, np.uint64)[order])
    if wrong.size:
        i = order[wrong[0]]
        raise bad(f"tensor {names[i]!r} of shape {reprlib.repr(shapes[i])} and dtype {codes[i]} needs {sizes[i]} "
                  f"bytes; its data_offsets give {offsets[i][1] - offsets[i][0]}")
    end = int(ends[-1]) if ends.size else 0
    if end != data_size:
        raise bad(f"the tensors cover {end} bytes of data but {data_size} follow the header; every byte after the "
                  "header must belong to a tensor")


def _entry(name, code, shape, begin, end, metadata, bad) -> _Entry:
    dtype = DTYPE_OF[code]
    recorded = metadata.get(VARIABLE_PREFIX + name)
    if recorded is not None:
        fields = _parse_json(recorded.encode("utf-8"), f"the metadata of {name!r}", bad, nesting=1)
        fields = dict(fields) if type(fields) is tuple and len(dict(fields)) == len(fields) else {}
        recorded_dtype = fields.get("dtype")
        if not isinstance(recorded_dtype, str):
            raise bad(f"the metadata of {name!r} is not a JSON object with one dtype: {recorded[:200]!r}")
        if recorded_dtype != dtype and not (code == "U8" and recorded_dtype in U8_CARRIES):
            raise bad(f"tensor {name!r} is stored as {code} but its metadata says dtype {recorded_dtype!r}")
        dtype = recorded_dtype
    return _Entry(name, dtype, tuple(shape), begin, end)


def _match(store, entries: dict, strict: bool, path: str) -> tuple:
    """``([(variable, entry)], skipped)``; a ValueError when names (strict), shapes or
    dtypes do not fit."""
    only_file = sorted(set(entries) - set(store))
    only_store = sorted(set(store) - set(entries))
    if strict and (only_file or only_store):
        raise ValueError(
            f"load({path!r}): the file's variables and the store's differ (nothing was loaded). "
            f"Only in the file: {only_file[:10]}{' ...' if len(only_file) > 10 else ''}; "
            f"only in the store: {only_store[:10]}{' ...' if len(only_store) > 10 else ''}. "
            "Pass strict=False to load the paths both have."
        )
    plan, problems = [], []
    for name in store:
        if name not in entries:
            continue
        variable, entry = store[name], entries[name]
        if tuple(variable.shape) != entry.shape or variable.stored.dtype != entry.dtype:
            problems.append(f"{name!r}: file {entry.dtype}{list(entry.shape)}, store "
                            f"{variable.stored.dtype}{list(variable.shape)}")
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


# ------------------------------------------------------------------------ JSON
def _parse_json(raw: bytes, what: str, bad, nesting: int = MAX_NESTING):
    """``raw`` parsed as the package's JSON parser (serde_json) would accept it: objects
    come back as tuples of ``(key, value)`` pairs in order (the caller decides what a key
    given twice means), arrays as lists. ValueError for invalid UTF-8, containers nested
    deeper than ``nesting``, NaN/Infinity, numbers outside a 64-bit float's range, lone
    surrogate escapes, or any JSON syntax error. Time and memory are linear in the size."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise bad(f"{what} is not UTF-8 (bytes {raw[error.start:error.start + 4]!r} at {error.start})") from None
    deepest = _deepest_nesting(raw) if raw.count(b"{") + raw.count(b"[") > nesting else 0
    if deepest > nesting:
        raise bad(f"{what} nests JSON containers {deepest} deep; the limit is {nesting}")
    try:
        value = json.loads(text, object_pairs_hook=tuple, parse_int=_json_int, parse_float=_json_float,
                           parse_constant=_no_constant)
    except (ValueError, RecursionError) as error:
        raise bad(f"{what} is not JSON ({type(error).__name__}: {str(error)[:200]})") from None
    if _SURROGATE_ESCAPE.search(raw) is not None:
        # Python's json pairs a high and a low surrogate escape into one character, as
        # serde_json does, and keeps any other as a lone surrogate, which serde_json rejects.
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as error:
            raise bad(f"{what} has a lone surrogate escape (\\u{ord(error.object[error.start]):04x}), which "
                      "is not a Unicode character") from None
    return value


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_CHUNK_BYTES = 1 << 18  # (a few MB of index arrays at most)
_BRACKET_STEP = np.zeros(256, np.int8)
_BRACKET_STEP[[ord("{"), ord("[")]] = 1
_BRACKET_STEP[[ord("}"), ord("]")]] = -1


def _deepest_nesting(raw: bytes) -> int:
    """How deep JSON containers nest in ``raw``, brackets inside strings not counted: one
    pass over the bytes, a chunk at a time with NumPy, carrying the string and escape
    state across chunks (linear in time, memory bounded by the chunk, for any bytes).
    Exact for valid JSON and for the prefix of invalid JSON that a parser reads before
    it fails, which is all that matters."""
    deepest = depth = 0
    inside = False  # a string is open at the start of the chunk
    run = 0  # backslashes that end the previous chunk
    for start in range(0, len(raw), _CHUNK_BYTES):
        chunk = np.frombuffer(raw, np.uint8, min(_CHUNK_BYTES, len(raw) - start), start)
        quotes = np.flatnonzero(chunk == 0x22)
        slashes = chunk == 0x5C
        if quotes.size and (run or slashes.any()):
            # Inside a string a backslash escapes the next byte, so a quote ends the string
            # when an even number of backslashes come before it (outside strings JSON has
            # no backslashes).
            others = np.flatnonzero(~slashes)  # the quotes are among them
            previous = np.searchsorted(others, quotes) - 1
            before = np.where(previous >= 0, others[np.maximum(previous, 0)], -1)
            backslashes = quotes - 1 - before + np.where(before < 0, run, 0)
            quotes = quotes[backslashes % 2 == 0]
        if slashes[-1]:
            tail = int(np.argmin(slashes[::-1]))
            run = run + chunk.size if tail == 0 else tail
        else:
            run = 0
        steps = _BRACKET_STEP[chunk]
        brackets = np.flatnonzero(steps)
        if quotes.size:
            brackets = brackets[(np.searchsorted(quotes, brackets) + inside) % 2 == 0]
        elif inside:
            brackets = brackets[:0]
        if brackets.size:
            levels = depth + np.cumsum(steps[brackets], dtype=np.int64)
            deepest, depth = max(deepest, int(levels.max())), int(levels[-1])
        inside ^= bool(quotes.size % 2)
    return deepest


def _json_int(text: str):
    # serde_json reads -0 and integers past 64 bits as floats: as floats here they fail
    # the checks for unsigned integers, and elsewhere only their range matters.
    if len(text) <= 20:
        return -0.0 if text == "-0" else int(text)
    digits = len(text.lstrip("-"))
    if digits > 309:  # (no leading zeros: at least 1e309, past a float's range)
        raise ValueError(f"an integer of {digits} digits is outside a 64-bit float's range")
    return _json_float(text)


def _json_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is outside a 64-bit float's range")
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not a valid JSON value")


def _json_kind(value) -> str:
    if type(value) is tuple:
        return "a JSON object"
    if type(value) is list:
        return f"a JSON list of {len(value)} items"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"JSON {str(value).lower()}"
    if isinstance(value, str):
        return f"the JSON string {reprlib.repr(value)}"
    return f"the JSON number {value!r}"


def _show(value) -> str:
    """A parsed JSON value as the file has it (objects are pair tuples here)."""
    if type(value) is tuple or (type(value) is list and any(type(item) is tuple for item in value)):
        return _json_kind(value)
    return reprlib.repr(value)


def _types(values: list) -> set:
    return set(map(type, values))


def _u64s(values: list) -> bool:
    """Every item an int (not a bool) from 0 to 2**64 - 1."""
    return _types(values) <= {int} and (not values or (min(values) >= 0 and max(values) <= U64_MAX))


def _fspath(file, what: str) -> str:
    try:
        path = os.fspath(file)
    except TypeError:
        raise TypeError(f"{what}: expected a file path (str or os.PathLike); received {type(file).__name__}.") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return path
