"""Tier a/c: launch geometry, and CPU launches split across threads give the same bits."""

from __future__ import annotations

import numpy as np
import pytest

from varstore.backends.numpy import NumpyBackend
from varstore.kernels import cast as K
from varstore.kernels.launch import MIN_CPU_CHUNK, SIMULATOR_GEOMETRY, cpu_chunks, grid_for


@pytest.mark.parametrize("n", [0, 1, MIN_CPU_CHUNK, 2 * MIN_CPU_CHUNK - 1, 2 * MIN_CPU_CHUNK + 3, 10**7 + 1])
@pytest.mark.parametrize("workers", [1, 2, 3, 16])
def test_cpu_chunks_cover_the_range(n, workers):
    chunks = cpu_chunks(n, workers)
    assert chunks[0][0] == 0 and chunks[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    assert len(chunks) <= max(1, workers)
    assert all(start % 64 == 0 for start, _ in chunks)
    if len(chunks) > 1:
        assert all(stop - start >= MIN_CPU_CHUNK // 2 for start, stop in chunks[:-1])


def test_grid_geometry():
    assert grid_for(10, 132) == (1, 256)
    assert grid_for(10**9, 132) == (132 * 8, 256)
    assert grid_for(0, 132) == (1, 256)
    assert grid_for(10**9, 132, simulator=True) == SIMULATOR_GEOMETRY


@pytest.mark.parametrize("workers", [2, 3])
def test_threaded_launch_equals_serial(monkeypatch, workers):
    monkeypatch.setenv("VARSTORE_NUM_THREADS", str(workers))
    threaded = NumpyBackend()
    rng = np.random.default_rng(0)
    n = 3 * MIN_CPU_CHUNK + 5
    x = rng.standard_normal(n).astype(np.float32) * 1000
    serial_out = np.empty(n, np.uint16)
    K.encode_f32.cpu(x.view(np.uint32), serial_out, K.BFLOAT16)
    out = np.empty(n, np.uint16)
    threaded.launch(K.encode_f32, n, x.view(np.uint32), out, K.BFLOAT16)
    np.testing.assert_array_equal(out, serial_out)
    # A one-element operand is not split (it is a scalar for every chunk).
    acc = serial_out.copy()
    threaded.launch(K.accumulate, n, acc, np.array([0x3F80], np.uint16), 1, K.BFLOAT16)
    expected = serial_out.copy()
    K.accumulate.cpu(expected, np.array([0x3F80], np.uint16), 1, K.BFLOAT16)
    np.testing.assert_array_equal(acc, expected)
