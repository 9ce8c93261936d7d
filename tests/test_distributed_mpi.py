"""Tier b: real multi-process runs under mpiexec (the self-test module), on the CPU."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest


def _mpiexec():
    beside = pathlib.Path(sys.executable).with_name("mpiexec")
    if beside.exists():
        return str(beside)
    return shutil.which("mpiexec")


MPIEXEC = _mpiexec()
try:
    import mpi4py  # noqa: F401

    MPI4PY = True
except ImportError:
    MPI4PY = False

pytestmark = pytest.mark.skipif(
    MPIEXEC is None or not MPI4PY,
    reason="needs mpiexec and mpi4py (pip install 'varstore[mpi]': mpi4py and the mpich wheel)",
)


def _launch(n, scenario, tmp_path, *extra, timeout=240):
    report = tmp_path / "report"
    report.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    command = [MPIEXEC, "-n", str(n), sys.executable, "-m", "varstore.distributed.selftest", scenario,
               "--backend", "mpi", "--dir", str(tmp_path), "--report", str(report), *extra]
    began = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    lines = {}
    for path in report.glob("rank*.json"):
        line = json.loads(path.read_text())
        lines[line["rank"]] = line
    return done, lines, time.monotonic() - began


@pytest.mark.parametrize("n", [2, 3])
def test_mpiexec_semantics(n, tmp_path):
    done, lines, _ = _launch(n, "semantics", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(lines) == list(range(n))
    for line in lines.values():
        assert line["ok"] and line["size"] == n and line["backend"] == "mpi"
        assert line["checks"] == ["broadcast", "sync:8buckets/8collectives", "read_aggregated", "check_replicas",
                                  "save_load"]
        assert line["collectives"] == lines[0]["collectives"]  # the same collectives on every rank
    assert (tmp_path / "selftest.safetensors").exists()


def test_mpiexec_plan_mismatch_raises_on_every_rank(tmp_path):
    done, lines, _ = _launch(2, "mismatch", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    for line in lines.values():
        assert line["ok"], line
        assert "sync plans differ" in line["error"] and "['a', 'b']" in line["error"]


@pytest.mark.parametrize("n", [2, 3])
def test_mpiexec_every_rank_raises_the_first_real_error_every_time(n, tmp_path):
    done, lines, seconds = _launch(n, "failures", tmp_path, "--timeout", "10", "--rounds", "20")
    # (The exit status is not asserted: the ranks that waited in an abandoned step
    # collective abort the job when they exit, by design.)
    assert sorted(lines) == list(range(n)), done.stdout + done.stderr
    for line in lines.values():
        assert line["wrong"] == [] and line["ok"], line
        assert line["right"] == {"plan": 20, "save": 20, "load": 20, "step": 20}
        assert line["slowest"] < 3  # the real error at once, far from the 10 s timeout
    assert seconds < 60


def test_mpiexec_an_uncaught_error_reaches_the_other_rank_at_once(tmp_path):
    done, lines, seconds = _launch(2, "crash", tmp_path, "--timeout", "60")
    assert done.returncode != 0
    assert "ValueError: bad batch on rank 1" in done.stderr  # the failing rank's own traceback
    assert lines[1]["error"] == "ValueError: bad batch on rank 1"
    assert lines[0]["ok"], lines[0]
    assert "cannot complete: rank 1 failed: ValueError: bad batch on rank 1" in lines[0]["error"]
    assert lines[0]["seconds"] < 5  # rank 1 raises 0.5 s into rank 0's wait; the timeout is 60 s
    assert seconds < 50


def test_mpiexec_a_rank_that_never_syncs_times_out(tmp_path):
    done, lines, seconds = _launch(2, "timeout", tmp_path, "--timeout", "2")
    assert lines[0]["ok"] and "did not complete within 2 s" in lines[0]["error"], lines
    assert lines[0]["seconds"] < 10
    assert seconds < 120


def test_mpiexec_a_rank_that_dies_ends_the_job(tmp_path):
    done, lines, seconds = _launch(2, "die", tmp_path, "--timeout", "5")
    assert done.returncode != 0
    assert 1 not in lines  # the dead rank wrote nothing
    assert not lines.get(0, {}).get("ok", False)  # rank 0 never returned from sync() with success
    assert seconds < 120


def test_sync_benchmark_under_mpiexec(tmp_path):
    out = tmp_path / "sync.json"
    command = [MPIEXEC, "-n", "2", sys.executable, "-m", "varstore.bench.sync", "--backend", "mpi", "--total-mb",
               "0.25", "--counts", "1,10", "--repeats", "2", "--json", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["variables"] for r in rows] == [1, 10]
    assert [r["fused"]["collectives"] for r in rows] == [1, 1]
    assert [r["unfused"]["collectives"] for r in rows] == [1, 10]
    assert all(r[k]["seconds"] > 0 for r in rows for k in ("raw", "fused", "unfused"))
    assert done.stdout.count("collectives") == 6
