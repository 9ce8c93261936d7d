"""Tier a/b: the checkpoint reader against the safetensors package's reader. Files the
package accepts load (when varstore can hold their tensors), with the right values; the
header parser takes time linear in the header's size on pathological headers that the
old pre-scan (a rescanning regular expression) took hours over. (The files both reject
are the corrupt-file corpus of test_checkpoint.py.)"""

from __future__ import annotations

import io
import json
import random
import time

import numpy as np
import pytest

import varstore as vs
from helpers import to_host
from varstore import checkpoint_format

DEVICE = {"numpy": "cpu", "cuda": "cuda:0"}
DATA = np.arange(6, dtype=np.float32).tobytes()  # a = [0, 1], b = [[2, 3], [4, 5]]
A = '"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}'
B = '"b": {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24]}'
GOOD = "{" + A + ", " + B + "}"


def raw_file(path, text: str | bytes, data: bytes = DATA) -> None:
    text = text.encode("utf-8") if isinstance(text, str) else text
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)


def package_reads(file) -> list:
    from safetensors import safe_open

    with safe_open(str(file), framework="numpy") as f:
        return sorted(f.keys())


def _deep(depth: int) -> str:
    return '{"k": ' * depth + "1" + "}" * depth


#: Files the package accepts that the previous reader refused: (header text, data, the
#: tensors besides a and b). Each loads a = [0, 1], b = [[2, 3], [4, 5]].
ACCEPTED = {
    "leading whitespace": (" \n\t\r" + GOOD, DATA, []),
    "trailing whitespace that is not all spaces": (GOOD + "\n\t\r ", DATA, []),
    "a header length not a multiple of 8": (GOOD.replace(" ", "") + " ", DATA, []),
    "fields besides dtype, shape and data_offsets": (
        "{" + A + ', "b": {"x": {"y": [1, -0, 1.5e300, 99999999999999999999, true, null, "s"]}, "__metadata__": 1, '
        '"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24], "x": 2}}', DATA, []),
    "127 deep in an extra field": ("{" + A + ', "b": {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24], '
                                   '"x": ' + _deep(125) + "}}", DATA, []),
    "a tensor as a list of dtype, shape and offsets": ("{" + A + ', "b": ["F32", [2, 2], [8, 24]]}', DATA, []),
    "a tensor named twice (the last counts)": (
        "{" + A + ', "b": {"dtype": "C64", "shape": [9], "data_offsets": [100, 172]}, ' + B + "}", DATA, []),
    "a metadata key twice": ('{"__metadata__": {"k": "1", "k": "2"}, ' + GOOD[1:], DATA, []),
    "null metadata": ('{"__metadata__": null, ' + GOOD[1:], DATA, []),
    "escaped names and fields": (
        '{"\\u0061": {"dt\\u0079pe": "F\\u0033\\u0032", "shape": [2], "data_offsets": [0, 8]}, "__metad\\u0061ta__": '
        '{"varstore:\\u0062": "{\\"dtype\\": \\"float32\\"}"}, ' + B + "}", DATA, []),
    "tensors listed out of order": ("{" + B + ", " + A + "}", DATA, []),
    "empty tensors first, between and last": (
        '{"z2": {"dtype": "F32", "shape": [0], "data_offsets": [24, 24]}, ' + A + ", " + B
        + ', "z0": {"dtype": "U8", "shape": [0, 18446744073709551615], "data_offsets": [0, 0]}, '
        '"z1": {"dtype": "F64", "shape": [3, 0], "data_offsets": [8, 8]}}', DATA, ["z0", "z1", "z2"]),
    "offsets not aligned to the item size": (
        '{"c": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, '
        + A.replace("[0, 8]", "[1, 9]") + ", " + B.replace("[8, 24]", "[9, 25]") + "}", b"\x07" + DATA, ["c"]),
    "names outside the BMP, escaped and raw": (
        '{"\\ud83d\\ude00": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}, '
        '"\U0001f601": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}, ' + GOOD[1:], DATA,
        ["\U0001f600", "\U0001f601"]),
    "numbers at a float's limits in an extra field": (
        "{" + A + ', "b": {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24], '
        '"x": [1.7976931348623157e308, 1e-400, 0e999999, 1' + "0" * 308 + ", -1" + "0" * 308 + "]}}", DATA, []),
}


@pytest.mark.parametrize("variant", list(ACCEPTED))
def test_files_the_package_accepts_load(backend, tmp_path, variant):
    text, data, others = ACCEPTED[variant]
    file = tmp_path / "f.safetensors"
    raw_file(file, text, data)
    assert package_reads(file) == sorted(["a", "b", *others])
    store = vs.VariableStore(device=DEVICE[backend])
    a = store.variable([7.0, 7.0], name="a")
    b = store.variable([[7.0, 7.0], [7.0, 7.0]], name="b")
    assert store.load(file, strict=False) == sorted(others)
    np.testing.assert_array_equal(to_host(a.value), [0.0, 1.0])
    np.testing.assert_array_equal(to_host(b.value), [[2.0, 3.0], [4.0, 5.0]])


def test_a_saved_store_loads_after_the_package_rewrites_its_header(tmp_path):
    """The package's own writer orders and spaces the header its way: we load its files."""
    from safetensors.numpy import save_file

    save_file({"b": np.arange(2, 6, dtype=np.float32).reshape(2, 2), "a": np.arange(2, dtype=np.float32)},
              str(tmp_path / "p.safetensors"), metadata={"format": "np"})
    store = vs.VariableStore(device="cpu")
    a = store.variable([7.0, 7.0], name="a")
    b = store.variable([[7.0, 7.0], [7.0, 7.0]], name="b")
    assert store.load(tmp_path / "p.safetensors") == []
    np.testing.assert_array_equal(a.numpy(), [0.0, 1.0])
    np.testing.assert_array_equal(b.numpy(), [[2.0, 3.0], [4.0, 5.0]])


# ------------------------------------------------------------------ linear time
def _read(text: bytes, data: bytes = b"") -> tuple:
    """(seconds, the error or None) of read_header on a file of this header and data."""
    blob = len(text).to_bytes(8, "little") + text + data
    start = time.perf_counter()
    try:
        checkpoint_format.read_header(io.BytesIO(blob), len(blob), "f")
        error = None
    except ValueError as caught:
        error = str(caught)
    return time.perf_counter() - start, error


#: Headers of n bytes that the old pre-scan took time quadratic in n over (an unclosed
#: string of escaped quotes: 4 s for 20 KB, 16 s for 40 KB, so about 11 hours for 2 MB).
PATHOLOGICAL = {
    "an unclosed string of escaped quotes": lambda n: b'{"' + b'\\"' * (n // 2),
    "a run of backslashes": lambda n: b'{"' + b"\\" * n,
    "escaped backslashes and quotes": lambda n: b'{"a": "' + b'\\\\\\"' * (n // 4),
    "a million open lists per MB": lambda n: b'{"a": ' + b"[" * n,
    "127-deep lists, many of them": lambda n: b'{"a": {"x": [' + b",".join(
        [b"[" * 124 + b"]" * 124] * (n // 249)) + b"]}}",
}


@pytest.mark.parametrize("kind", list(PATHOLOGICAL))
def test_pathological_headers_are_rejected_in_linear_time(kind):
    seconds, error = _read(PATHOLOGICAL[kind](8_000_000))
    assert error is not None and "is not a valid safetensors file" in error
    assert seconds < 10, f"{kind}: {seconds:.1f} s for an 8 MB header"


def test_a_header_of_many_tiny_tensors_is_accepted_in_linear_time():
    """About 120,000 one-byte tensors in 8 MB of header: accepted in about a second (a
    100 MB header of 1.5 million takes about 15 s and 1.7 GB)."""
    parts, offset, size = [], 0, 0
    while size < 8_000_000:
        parts.append(f'"t{offset}":{{"dtype":"U8","shape":[1],"data_offsets":[{offset},{offset + 1}]}}')
        size += len(parts[-1]) + 1
        offset += 1
    text = ("{" + ",".join(parts) + "}").encode()
    seconds, error = _read(text, bytes(offset))
    assert error is None
    assert seconds < 30, f"{seconds:.1f} s for {offset} tensors"
    seconds, error = _read(text, bytes(offset + 1))  # one byte no tensor covers
    assert error is not None and "every byte after the header must belong to a tensor" in error
    assert seconds < 30


# ------------------------------------------------------------------ the pre-scan
def _reference_nesting(raw: bytes) -> int:
    deepest = depth = 0
    in_string = escaped = False
    for byte in raw.decode("latin-1"):
        if in_string:
            if escaped:
                escaped = False
            elif byte == "\\":
                escaped = True
            elif byte == '"':
                in_string = False
        elif byte == '"':
            in_string = True
        elif byte in "{[":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in "}]":
            depth -= 1
    return deepest


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1 << 18])
def test_the_nesting_scan_matches_a_byte_by_byte_one_across_chunk_edges(monkeypatch, chunk):
    """Strings, escapes and runs of backslashes that straddle chunk edges: the depth is
    the one a byte-at-a-time scanner finds."""
    monkeypatch.setattr(checkpoint_format, "_CHUNK_BYTES", chunk)
    rng = random.Random(chunk)
    pieces = ["\\\\", '\\"', '\\\\\\"', "\\\\" * 2, "x", "[", "{", "]", "}", "\\u0022"]  # (valid escapes only)
    for _ in range(2000):
        parts = []
        for _ in range(rng.randrange(40)):
            if rng.random() < 0.3:
                parts.append('"' + "".join(rng.choice(pieces) for _ in range(rng.randrange(6))) + '"')
            else:
                parts.append(rng.choice(["[", "]", "{", "}", ",", "1"]))
        raw = "".join(parts).encode()
        assert checkpoint_format._deepest_nesting(raw) == _reference_nesting(raw), raw
    assert checkpoint_format._deepest_nesting(b'["\\\\"]' * 3 + b"[[[") == 3
    assert checkpoint_format._deepest_nesting(b'["\\"]' + b"[[[") == 1  # the string never closes


def test_json_numbers_are_read_as_the_package_reads_them():
    """-0 and integers past 64 bits are floats (so never valid offsets or shapes); numbers
    past a float's range are errors."""
    assert checkpoint_format._json_int("-0") == 0.0 and str(checkpoint_format._json_int("-0")) == "-0.0"
    assert checkpoint_format._json_int("18446744073709551615") == 2**64 - 1
    assert isinstance(checkpoint_format._json_int("1" + "0" * 25), float)
    for text in ("1" + "0" * 309, "-1" + "0" * 309, "9" * 5000):
        with pytest.raises(ValueError, match="outside a 64-bit float's range"):
            checkpoint_format._json_int(text)
    with pytest.raises(ValueError, match="outside a 64-bit float's range"):
        checkpoint_format._json_float("1.8e308")
    assert checkpoint_format._json_float("1e-400") == 0.0
    assert json.loads("[-0]", parse_int=checkpoint_format._json_int) == [-0.0]
