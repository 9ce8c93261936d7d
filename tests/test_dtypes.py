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
    "bad", ["float", "f4", "complex64", "string", np.complex128, complex, 3, True, object(), "int128", np.floating, np.generic]
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
