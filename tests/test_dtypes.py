"""Tier a: dtype names, standardize_dtype, floatx, storage mapping."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import varstore as vs
from varstore import dtypes


@pytest.mark.parametrize("name", vs.DTYPES)
def test_every_name_round_trips(name):
    assert vs.standardize_dtype(name) == name
    assert vs.standardize_dtype(dtypes.host_dtype(name)) == name
    assert vs.standardize_dtype(dtypes.host_dtype(name).type) == name


@pytest.mark.parametrize(
    "given, expected",
    [
        (np.float32, "float32"),
        (np.dtype("float64"), "float64"),
        (np.bool_, "bool"),
        (np.dtype(np.uint16), "uint16"),
        (ml_dtypes.bfloat16, "bfloat16"),
        (np.dtype(ml_dtypes.float8_e4m3fn), "float8_e4m3fn"),
        (ml_dtypes.float8_e5m2, "float8_e5m2"),
        (bool, "bool"),
        (int, "int32"),
        (float, "float32"),
    ],
)
def test_accepted_inputs(given, expected):
    assert vs.standardize_dtype(given) == expected


def test_none_is_floatx():
    assert vs.standardize_dtype(None) == vs.floatx() == "float32"
    vs.set_floatx("float16")
    try:
        assert vs.standardize_dtype(None) == "float16"
    finally:
        vs.set_floatx("float32")


@pytest.mark.parametrize(
    "bad",
    ["float", "f4", "complex64", "string", np.complex128, complex, 3, True, object(), "int128", np.floating,
     np.generic],
)
def test_rejects_with_the_input_named(bad):
    with pytest.raises(ValueError, match="Invalid dtype") as info:
        vs.standardize_dtype(bad)
    assert repr(bad) in str(info.value) and "float32" in str(info.value)


@pytest.mark.parametrize("bad", ["float8_e4m3fn", "int32", "float", None, np.float32])
def test_set_floatx_rejects(bad):
    with pytest.raises(ValueError, match="set_floatx"):
        vs.set_floatx(bad)
    assert vs.floatx() == "float32"


def test_storage_mapping():
    assert dtypes.storage_dtype("bfloat16") == np.uint16
    assert dtypes.storage_dtype("float8_e4m3fn") == np.uint8
    assert dtypes.storage_dtype("float8_e5m2") == np.uint8
    assert dtypes.storage_dtype("float16") == np.float16
    assert dtypes.itemsize("bfloat16") == 2 and dtypes.itemsize("float64") == 8
    for name in vs.DTYPES:  # every dtype has a storage array dtype of its item size
        assert dtypes.storage_dtype(name).itemsize == dtypes.host_dtype(name).itemsize
        assert (name in dtypes.WORD_DTYPES) == (dtypes.storage_dtype(name) != dtypes.host_dtype(name))


# ------------------------------------------------------------------ the registry
from varstore import checkpoint_format  # noqa: E402
from varstore.distributed import buckets  # noqa: E402

RECORDS = list(dtypes.REGISTRY.values())


def test_registry_order_and_names():
    assert dtypes.DTYPES == tuple(dtypes.REGISTRY) == tuple(r.name for r in RECORDS)
    assert dtypes.DTYPES == (
        "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "float16", "bfloat16", "float32", "float64", "float8_e4m3fn", "float8_e5m2",
    )


@pytest.mark.parametrize("r", RECORDS, ids=lambda r: r.name)
def test_derived_tables_follow_the_record(r):
    assert dtypes.record(r.name) is r
    assert r.kind in dtypes.KINDS
    assert dtypes.is_float(r.name) == (r.name in dtypes.FLOAT_DTYPES) == (r.kind == "float")
    assert dtypes.is_integer(r.name) == (r.name in dtypes.INT_DTYPES) == (r.kind in ("int", "uint"))
    assert (r.name in dtypes.SMALL_FLOAT_DTYPES) == (r.format is not None)
    assert dtypes.storage_dtype(r.name) is r.storage
    assert dtypes.itemsize(r.name) == r.storage.itemsize == r.bits // 8
    assert r.word == np.dtype(f"uint{r.bits}") and r.word.itemsize == r.storage.itemsize
    assert dtypes.WORD_DTYPES.get(r.name, r.name) == r.storage.name
    assert r.host == dtypes.host_dtype(r.name) and r.host.itemsize == r.storage.itemsize
    assert r.host.name == r.name
    assert buckets.STAGING[r.name] == r.staging
    assert checkpoint_format.DTYPE_OF[r.safetensors] == r.name


def test_kind_sets_and_floatx():
    assert dtypes.FLOAT_DTYPES == {"float16", "bfloat16", "float32", "float64", "float8_e4m3fn", "float8_e5m2"}
    assert dtypes.INT_DTYPES == {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
    assert dtypes.SMALL_FLOAT_DTYPES == {"float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"}
    assert dtypes.WORD_DTYPES == {"bfloat16": "uint16", "float8_e4m3fn": "uint8", "float8_e5m2": "uint8"}
    assert dtypes.FLOATX_DTYPES == ("bfloat16", "float16", "float32", "float64")


@pytest.mark.parametrize("name", sorted(dtypes.SMALL_FLOAT_DTYPES))
def test_formats_equal_the_kernels(name):
    from varstore.kernels import cast

    args = dtypes.record(name).format.kernel_args
    assert len(args) == 8 and all(type(a) is np.uint32 for a in args)
    assert args == cast.FORMATS[name]
    assert set(cast.FORMATS) == dtypes.SMALL_FLOAT_DTYPES


@pytest.mark.parametrize("name", sorted(dtypes.SMALL_FLOAT_DTYPES))
def test_formats_agree_with_ml_dtypes(name):
    f, host = dtypes.record(name).format, np.dtype(dtypes.host_dtype(name))
    info = ml_dtypes.finfo(host) if name != "float16" else np.finfo(np.float16)
    assert f.mantissa_bits == info.nmant and f.exponent_bits + f.mantissa_bits + 1 == dtypes.record(name).bits
    assert np.array([f.max_finite], dtypes.record(name).word).view(host)[0] == info.max
    assert np.isnan(np.array([f.nan | 1], dtypes.record(name).word).view(host)[0])  # a payload is OR-ed in


@pytest.mark.parametrize("r", [r for r in RECORDS if r.kind in ("int", "uint")], ids=lambda r: r.name)
def test_bounds_equal_iinfo(r):
    info = np.iinfo(r.name)
    assert r.bounds == (int(info.min), int(info.max))
    assert all(type(b) is int for b in r.bounds)


def test_no_bounds_or_format_where_none_apply():
    for r in RECORDS:
        assert (r.bounds is None) == (r.kind not in ("int", "uint"))
        if r.format is not None:
            assert r.kind == "float" and r.bits <= 16


def test_safetensors_codes():
    assert checkpoint_format.CODE_OF == {
        "bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "uint16": "U16", "int32": "I32",
        "uint32": "U32", "int64": "I64", "uint64": "U64", "float16": "F16", "bfloat16": "BF16",
        "float32": "F32", "float64": "F64", "float8_e4m3fn": "U8", "float8_e5m2": "U8",
    }
    assert checkpoint_format.DTYPE_OF["F8_E4M3"] == "float8_e4m3fn"
    assert checkpoint_format.DTYPE_OF["F8_E5M2"] == "float8_e5m2"
    assert checkpoint_format.U8_CARRIES == ("uint8", "float8_e4m3fn", "float8_e5m2")
    for name, code in checkpoint_format.CODE_OF.items():  # what we write loads back (U8: with the metadata)
        assert checkpoint_format.DTYPE_OF[code] == name or (code == "U8" and name in checkpoint_format.U8_CARRIES)
    for code, name in checkpoint_format.DTYPE_OF.items():
        assert dtypes.record(name).safetensors == code
        assert checkpoint_format.ITEMSIZE_OF[code] == dtypes.itemsize(name)
    assert set(checkpoint_format.DTYPE_OF) <= checkpoint_format.PACKAGE_CODES
    assert len({r.safetensors for r in RECORDS}) == len(RECORDS)


def test_staging_table_unchanged():
    assert buckets.STAGING == {
        "float16": "float32", "bfloat16": "float32", "float8_e4m3fn": "float32", "float8_e5m2": "float32",
        "float32": "float32", "float64": "float64",
        "int8": "int32", "int16": "int32", "uint8": "int32", "uint16": "int32",
        "int32": "int32", "uint32": "uint32", "int64": "int64", "uint64": "uint64",
        "bool": "uint8",
    }


@pytest.mark.parametrize("bad", ["float", "f4", None, np.float32, [1]])
def test_unknown_names_are_refused_by_name(bad):
    for lookup in (dtypes.record, dtypes.storage_dtype, dtypes.host_dtype):
        with pytest.raises(ValueError, match="Unknown dtype name") as info:
            lookup(bad)
        assert repr(bad) in str(info.value) and "bfloat16" in str(info.value)


def test_records_are_immutable():
    with pytest.raises(AttributeError):
        dtypes.record("float32").staging = "float64"
    with pytest.raises(AttributeError):
        dtypes.record("float16").format.nan = 0
