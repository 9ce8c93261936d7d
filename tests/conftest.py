"""Shared fixtures.

Tiers: a: pure logic; b: one test body on every available backend
(``backend`` / ``store`` fixtures); c: kernels against exact references on every target
(``target`` fixture: the CPU loop, and the CUDA loop on a GPU or, in the second pytest
process with ``NUMBA_ENABLE_CUDASIM=1``, in the simulator).
"""

from __future__ import annotations

import os

import pytest

from helpers import SIMULATOR

# Tests that compare with Keras run it on its numpy backend (it has no other dependency).
os.environ.setdefault("KERAS_BACKEND", "numpy")
from helpers import cuda_reason as _cuda_reason


def pytest_collection_modifyitems(config, items):
    gpu_reason = None if SIMULATOR else _cuda_reason()
    for item in items:
        if item.get_closest_marker("gpu") is not None and (gpu_reason is not None or SIMULATOR):
            item.add_marker(pytest.mark.skip(reason=f"needs a real CUDA device: {gpu_reason or 'simulator process'}"))


# ------------------------------------------------------------------- tier b
BACKEND_PARAMS = [
    "numpy",
    pytest.param("cuda", marks=pytest.mark.gpu),
]


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request):
    """Name of a backend to run the test on."""
    return request.param


@pytest.fixture
def store(backend):
    import varstore as vs

    return vs.VariableStore(device="cpu" if backend == "numpy" else "cuda:0")


# ------------------------------------------------------------------- tier c
def _gpu_present() -> bool:
    if SIMULATOR:
        return False
    return _cuda_reason() is None


TARGET_PARAMS = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            not (SIMULATOR or _gpu_present()),
            reason="CUDA loops run in the simulator process (NUMBA_ENABLE_CUDASIM=1) or on a GPU",
        ),
    ),
]


@pytest.fixture(params=TARGET_PARAMS)
def target(request):
    """"cpu" (the numba CPU loop) or "cuda" (the CUDA loop: simulator or GPU)."""
    return request.param


@pytest.fixture
def sm90_without_a_gpu(monkeypatch):
    """numba-cuda compiles overloads (e.g. scalar ``.view``) for the *current* device's
    compute capability; with no GPU there is none, so stand in an sm_90 one."""
    import numba.cuda.dispatcher as dispatcher

    class _Sm90:
        compute_capability = (9, 0)

    monkeypatch.setattr(dispatcher, "get_current_device", lambda: _Sm90())
