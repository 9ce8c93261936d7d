"""Tier a: key parsing against NumPy's own indexing (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from varstore.indexing import basic_region, broadcast_strides, selection_shape


def region_view(base: np.ndarray, region):
    """The view of ``base`` a Region describes (as_strided on the flat array)."""
    flat = base.reshape(-1)
    itemsize = flat.itemsize
    start = flat[region.offset:] if region.size else flat[:0]
    return np.lib.stride_tricks.as_strided(start, region.shape, tuple(s * itemsize for s in region.strides))


@settings(max_examples=400, deadline=None)
@given(data=st.data(), shape=hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=6))
def test_basic_region_matches_numpy(data, shape):
    key = data.draw(hnp.basic_indices(shape, min_dims=0, allow_newaxis=True, allow_ellipsis=True))
    base = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    region = basic_region(shape, key)
    expected = base[key]
    assert region is not None and region.shape == expected.shape
    if region.size:
        np.testing.assert_array_equal(region_view(base, region), expected)
    assert selection_shape(shape, key) == expected.shape


@pytest.mark.parametrize("key", [(0, 5), 3, (slice(None), -3), (0, 0, 0)])
def test_out_of_range_and_too_many(key):
    with pytest.raises(IndexError):
        np.zeros((3, 2))[key]
    with pytest.raises(IndexError):
        basic_region((3, 2), key)


@pytest.mark.parametrize("key", [[0, 1], np.array([1]), (slice(None), [0]), np.array([True, False, True]), True])
def test_advanced_keys_are_not_basic(key):
    assert basic_region((3, 2), key) is None
    assert selection_shape((3, 2), key) == np.zeros((3, 2))[key].shape


def test_broadcast_strides():
    assert broadcast_strides((), (2, 3)) == (0, 0)
    assert broadcast_strides((3,), (2, 3)) == (0, 1)
    assert broadcast_strides((2, 1), (2, 3)) == (1, 0)
    with pytest.raises(ValueError, match=r"\(2,\).*\(2, 3\)"):
        broadcast_strides((2,), (2, 3))
    # NumPy's setitem drops leading size-1 axes beyond the region's
    assert broadcast_strides((1, 3), (3,)) == (1,) and broadcast_strides((1, 1, 2, 1), (2, 3)) == (1, 0)
    assert broadcast_strides((1, 1), ()) == ()
    with pytest.raises(ValueError, match=r"\(2, 3\) cannot .* \(3,\)"):
        broadcast_strides((2, 3), (3,))


@settings(max_examples=200, deadline=None)
@given(data=st.data(), shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
def test_flat_indices_match_numpy(data, shape):
    from varstore.indexing import flat_indices

    key = data.draw(hnp.basic_indices(shape, min_dims=0, allow_newaxis=True, allow_ellipsis=True)
                    | hnp.integer_array_indices(shape) if shape and 0 not in shape else
                    hnp.basic_indices(shape, min_dims=0, allow_newaxis=True, allow_ellipsis=True))
    base = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    np.testing.assert_array_equal(flat_indices(shape, key), base[key])


def test_flat_indices_masks_and_mixes():
    from varstore.indexing import flat_indices

    base = np.arange(24).reshape(2, 3, 4)
    for key in [base % 3 == 0, (slice(None), [2, 0, 2]), ([1, 0], slice(None), [3, -1]), (..., np.array([[0], [3]])),
                (np.array([True, False]), 1), ()]:
        np.testing.assert_array_equal(flat_indices(base.shape, key), base[key])
    with pytest.raises(IndexError):
        flat_indices((2, 3), ([0, 2], 0))
