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
  existing path that is not a regular file (a FIFO, a device, a socket) is refused; so
  is a file this user may not write (``os.access``: read-only, as ``open(path, "w")``
  would refuse it; the rename itself only needs the folder to be writable);
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
import json
import os
import re
import secrets
import stat

import numpy as np

from .checkpoint_format import CODE_OF, MAX_HEADER_BYTES, METADATA_KEY, VARIABLE_PREFIX, read_header
from .dtypes import storage_dtype

TEMP_SUFFIX = ".varstore-tmp"  # the end of a save's temporary file's name


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
        if not os.access(target, os.W_OK):  # (the rename would replace it where open(path, "w") fails)
            raise PermissionError(errno.EACCES, f"save: {path!r} is a file this user may not write (read-only); "
                                  "nothing was written", path)
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


def load(store, file, strict: bool = True) -> list:
    """Load ``file``'s tensors into the variables of ``store`` with the same paths.

    Returns the skipped paths (sorted: in the file but not the store, or the other way
    round): always ``[]`` with ``strict=True``, where any such path is a ValueError.
    """
    if not isinstance(strict, bool):
        raise TypeError(f"load: strict must be True or False; received {strict!r}.")
    store.check_load("load")
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






def _fspath(file, what: str) -> str:
    try:
        path = os.fspath(file)
    except TypeError:
        raise TypeError(f"{what}: expected a file path (str or os.PathLike); received {type(file).__name__}.") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return path
