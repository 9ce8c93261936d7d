"""Tier a: the one-memo IR copy of numba's ``inline="always"`` (``kernels._inlining``) is
in place with the pinned numba and numba-cuda, and inlined functions still compute the
same."""

from __future__ import annotations

import numba
import pytest

from varstore.kernels import _inlining


def test_the_rewrite_applies_to_the_pinned_numba():
    assert _inlining.install()
    pytest.importorskip("numba.cuda.core.inline_closurecall")  # (numba-cuda: the test extra)
    assert _inlining.install(cuda=True)


def _branchy(x):
    if x > 3:
        y = x * 2
    else:
        y = x - 1
    for i in range(3):
        y += i * x
    return y


_branchy_inlined = numba.njit(inline="always")(_branchy)


@numba.njit
def _twice(x):
    return _branchy_inlined(x) + _branchy_inlined(x + 1)


def test_inlined_callees_of_many_blocks_compute_the_same():
    assert _inlining.install()
    for x in (-2, 3, 4, 10):
        assert _twice(x) == _branchy(x) + _branchy(x + 1)
