"""Tier a: the one-memo IR copy of numba's ``inline="always"`` and the callee IR made once
per function (``kernels._inlining``) are in place with the pinned numba and numba-cuda,
and inlined functions still compute the same."""

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


def _leaf(x):
    return x * x - 7 if x > 0 else 3 - x


_leaf_inlined = numba.njit(inline="always")(_leaf)  # (inlined by this test only)


@numba.njit(inline="always")
def _nested(x):
    return _leaf_inlined(x) * 3 + _leaf_inlined(-x)


def _three_sites(x):
    return _nested(x) - _nested(x + 2) + _leaf_inlined(x * 5)


def _count_untyped_ir(monkeypatch) -> list:
    import numba.core.inline_closurecall as inlining

    made = []
    run = inlining.InlineWorker.run_untyped_passes
    monkeypatch.setattr(inlining.InlineWorker, "run_untyped_passes",
                        lambda self, func, enable_ssa=False: made.append(func.__name__) or run(self, func, enable_ssa))
    return made


def test_a_callee_is_made_once_and_every_call_site_computes_the_same(monkeypatch):
    assert _inlining.install()
    monkeypatch.setattr(_inlining, "MEMOISED_MODULES", _inlining.MEMOISED_MODULES + (__name__,))
    made = _count_untyped_ir(monkeypatch)
    first, second = numba.njit(_three_sites), numba.njit(lambda x: _nested(x) + _nested(x * 7))
    for x in (-3, 0, 4, 9):
        assert first(x) == _nested.py_func(x) - _nested.py_func(x + 2) + _leaf(x * 5)
        assert second(x) == _nested.py_func(x) + _nested.py_func(x * 7)
    # Five call sites of _nested and _leaf in two compiles (and two inside _nested): the
    # IR of each made once (or before, where this test runs again in one process).
    assert len(made) == len(set(made)) and set(made) <= {"_leaf", "_nested"}, made


def test_functions_of_other_modules_are_inlined_as_numba_does(monkeypatch):
    assert _inlining.install()
    made = _count_untyped_ir(monkeypatch)
    three = numba.njit(lambda x: _leaf_inlined(x) + _leaf_inlined(x + 1) * _leaf_inlined(x - 1))
    assert three(4) == _leaf(4) + _leaf(5) * _leaf(3)
    assert made.count("_leaf") == 3, made  # (their globals may change between compiles)
