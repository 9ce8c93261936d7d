"""The safetensors format as varstore writes and reads it: the dtype codes, and the
header reader, which checks every rule of the ``safetensors`` package's reader (0.8)
before anything is loaded (see :mod:`varstore.checkpoint`): the header's size and UTF-8,
its JSON (parsed in time and memory linear in its size, nesting at most 127 deep), each
tensor's fields, and the byte ranges, which must cover the data section back to back."""

from __future__ import annotations

import itertools
import json
import math
import operator
import re
import reprlib

import numpy as np

from .dtypes import REGISTRY

#: The largest header we read: the safetensors package's own limit.
MAX_HEADER_BYTES = 100_000_000
#: The deepest the header's JSON may nest (the header object is level 1): the limit of
#: serde_json, the package's parser, counted as the package applies it.
MAX_NESTING = 127
METADATA_KEY = "__metadata__"
VARIABLE_PREFIX = "varstore:"
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

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_CHUNK_BYTES = 1 << 18  # (a few MB of index arrays at most)
_BRACKET_STEP = np.zeros(256, np.int8)
_BRACKET_STEP[[ord("{"), ord("[")]] = 1
_BRACKET_STEP[[ord("}"), ord("]")]] = -1


class _Entry:
    __slots__ = ("name", "dtype", "shape", "begin", "end")

    def __init__(self, name, dtype, shape, begin, end):
        self.name, self.dtype, self.shape, self.begin, self.end = name, dtype, shape, begin, end


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


def _read_exactly(f, n: int, path: str, what: str) -> bytes:
    data = bytearray(n)
    view, filled = memoryview(data), 0
    while filled < n:
        got = f.readinto(view[filled:])
        if not got:
            raise ValueError(f"{path!r} is not a valid safetensors file: it ended inside {what}.")
        filled += got
    return bytes(data)


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
