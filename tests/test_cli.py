"""The command line: ``varstore info``, ``varstore demo`` and ``varstore bench``.

The subprocess tests run ``python -m varstore`` (and the ``varstore`` console script where
it is installed) as a user would; the bench's own logic (op selection, sizes, checks that
catch a wrong kernel) is also tested in-process on every backend.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import varstore as vs
from varstore import cli, demo
from varstore.bench import measure, ops, report, suite


def run_cli(*args, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    return subprocess.run([sys.executable, "-m", "varstore", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def device_of(backend: str) -> str:
    return "cpu" if backend == "numpy" else "cuda:0"


# ------------------------------------------------------------------ info


def test_info_names_backend_versions_and_devices():
    out = run_cli("info")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert f"varstore {vs.__version__}" in text
    assert re.search(r"^backend: (numpy|cuda)$", text, re.M)
    for package in ("numpy", "numba", "numba-cuda", "ml_dtypes", "cupy", "nvidia-ml-py"):
        assert re.search(rf"^  {package}: \S", text, re.M), f"no version line for {package}:\n{text}"
    assert re.search(r"^  cpu: numpy backend, always available, \d+ cores", text, re.M)
    # Either the GPU lines or the reason there are none.
    assert re.search(r"^  cuda:0: .*compute capability \d+\.\d+.*GiB total.*GiB free", text, re.M) or \
        "cuda backend: unavailable (" in text


def test_console_script_is_the_same_command():
    script = shutil.which("varstore") or os.path.join(os.path.dirname(sys.executable), "varstore")
    if not os.path.exists(script):
        pytest.skip("the varstore console script is not installed next to this Python")
    out = subprocess.run([script, "info"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == run_cli("info").stdout.splitlines()[0]


def test_version_and_every_option_has_help():
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"varstore {vs.__version__}"
    for command in ("bench", "demo"):
        text = run_cli(command, "--help").stdout
        options = re.findall(r"^  (--[\w-]+)", text, re.M)
        assert options, text
        for option in options:  # argparse puts the help on the option's line or the next one
            block = text[text.index("  " + option):].split("\n  --")[0]
            assert len(block.split()) > 2, f"{command} {option} has no help text"


def test_no_command_prints_usage_and_fails():
    out = run_cli()
    assert out.returncode == 2
    assert "info" in out.stderr and "bench" in out.stderr and "demo" in out.stderr


# ------------------------------------------------------------------ demo


def test_demo_loss_falls_tenfold_and_the_checkpoint_reloads(tmp_path):
    checkpoint = tmp_path / "mlp.safetensors"
    out = run_cli("demo", "--checkpoint", str(checkpoint))
    assert out.returncode == 0, out.stdout + out.stderr
    fell = re.search(r"loss fell from ([\d.]+) to ([\d.]+) \(([\d.]+)x\)", out.stdout)
    assert fell, out.stdout
    first, final = float(fell.group(1)), float(fell.group(2))
    assert first / final >= 10, out.stdout
    losses = [float(x) for x in re.findall(r"step +\d+ +loss ([\d.]+)", out.stdout)]
    assert len(losses) >= 5 and losses[-1] < losses[0]
    assert "(the same)" in out.stdout
    # the MLP (9,488 bytes), Adam's two slots per variable, its iteration (8) and learning rate (4)
    assert "store.memory_info():" in out.stdout and re.search(r"variable_bytes +28476 bytes", out.stdout)
    assert checkpoint.stat().st_size > 28476  # kept where the user asked


def test_demo_in_process_on_every_backend(backend):
    lines = []
    result = demo.run(device=device_of(backend), steps=40, out=lines.append)
    assert result["loss_ratio"] > 2
    assert result["reloaded_loss"] == result["final_loss"]
    assert result["memory_info"]["variables"] == 4 + 2 + 2 * 4  # (the MLP, Adam's iteration, rate and slots)
    assert any(line.startswith("loss fell from") for line in lines)


@pytest.mark.parametrize("steps", [0, -3, 2.5, True, "10"])
def test_demo_rejects_bad_steps(steps):
    with pytest.raises(ValueError, match=r"Invalid value for argument `steps`.*Received: steps="):
        demo.run(device="cpu", steps=steps, out=lambda line: None)


def test_demo_bad_device_is_a_clear_error():
    out = run_cli("demo", "--device", "tpu:0")
    assert out.returncode == 2
    assert "varstore demo: Invalid device: 'tpu:0'" in out.stderr


# ------------------------------------------------------------------ bench: pieces


def test_ops_select_names_and_groups():
    assert [op.name for op in ops.select(["fill"])] == ["fill"]
    casts = ops.select(["cast"])
    assert len(casts) == 9 and all(op.name.startswith("cast/") for op in casts)
    assert len(ops.select(["init"])) == 15  # every Keras initializer
    # the suite's order, not the order asked for
    assert [op.name for op in ops.select(["create", "fill"])] == ["fill", "create"]
    assert ops.select([]) == ops.OPS
    with pytest.raises(ValueError, match=r"`--ops`.*Received: 'cats'"):
        ops.select(["cats"])


def test_parse_sizes():
    assert suite.parse_sizes("1MiB,4KiB, 1MiB") == (4096, 2**20)
    assert suite.parse_sizes("1GiB") == (2**30,)
    for bad in ("3KiB", "2KiB", "lots", "0", "-4KiB", "1.5MiB"):
        with pytest.raises(ValueError, match=r"`--sizes`.*Received"):
            suite.parse_sizes(bad)


def test_square_shape_and_rotation():
    assert ops.square_shape(1024) == (32, 32)
    assert ops.square_shape(2048) == (32, 64)
    assert ops.square_shape(2**28) == (16384, 16384)

    class Native:
        rotation_bytes = 64 * 2**20

    class Ctx:
        native = Native()
        max_copies = 1000

    assert ops.rotation(Ctx, 2**30) == 1
    assert ops.rotation(Ctx, 16 * 2**20) == 4
    assert ops.rotation(Ctx, 4096) == ops.MAX_ROTATION
    Ctx.max_copies = 9  # never more copies than calls
    assert ops.rotation(Ctx, 4096) == 9


def test_time_variants_alternates_and_bounds_repeats():
    calls = []

    class Clock:
        def time(self, fn):
            fn()
            return 0.001, 0.0005

    plan = measure.Plan(warmup=3, min_repeats=5, max_repeats=9, budget_s=1.0)
    timings = measure.time_variants(Clock(), {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, plan)
    assert timings["a"].repeats == 9  # 1 ms calls: the budget allows more, max_repeats caps
    assert calls == ["a", "b"] * (1 + 1 + 1 + 9)  # cold, the sizing call, warm-ups, repeats: in alternation
    assert timings["b"].median_s == 0.001 and timings["b"].host_median_s == 0.0005


def test_expected_distribution_matches_keras_formulas():
    mean, std, lo, hi = ops.expected_distribution("glorot_uniform", (100, 300))
    assert std == pytest.approx(np.sqrt(1 / 200)) and hi == pytest.approx(np.sqrt(6 / 400))
    mean, std, lo, hi = ops.expected_distribution("he_normal", (100, 300))
    assert std == pytest.approx(np.sqrt(2 / 100)) and hi == pytest.approx(2 * np.sqrt(2 / 100) / 0.87962566103423978)


# ------------------------------------------------------------------ bench: runs


def test_every_op_runs_and_passes_its_check_at_the_smallest_size(backend):
    doc = suite.run(ops.OPS, (4096,), quick=True, device=device_of(backend), use_torch=False, use_keras=False,
                    stream=io.StringIO())
    assert doc["failures"] == []
    assert len(doc["rows"]) == len(ops.OPS)
    for row in doc["rows"]:
        assert row["check"] == "ok", row
        ours = row["variants"]["ours"]
        assert ours["median_s"] > 0 and ours["repeats"] >= measure.QUICK.min_repeats
        # Every op has a baseline, but CuPy has no bfloat16/float8 casts and no bfloat16
        # arrays to write into (PyTorch is left out here).
        no_cupy_cast = (backend == "cuda" and row["op"].startswith("cast/")
                        and "float16" not in row["op"].replace("bfloat16", "") and "float64" not in row["op"])
        no_cupy_bfloat16 = backend == "cuda" and row["op"] == "slice/strided_float64->bfloat16"
        assert len(row["variants"]) >= 2 or no_cupy_cast or no_cupy_bfloat16, f"{row['op']} has no baseline"
        if row["ceiling"]:
            assert row["ceiling"]["GBps"] > 0 and row["fraction_of_ceiling"] > 0
    assert "fill" in report.table(doc)
    # a checkpoint's host memory: measured once, in the JSON, and far below the data's size
    for row in doc["rows"]:
        if row["op"].startswith("checkpoint/"):
            assert row["extra"]["tracemalloc_peak_bytes"] < 64 * 2**10 + 1024, row["extra"]


def test_the_list_keeps_its_names_and_order():
    """New ops join the list; the names that results files and scripts use stay, in order."""
    names = [op.name for op in ops.OPS]
    casts = [f"cast/{s}->{d}" for s, d in ops.CASTS if "float64" not in (s, d)]
    earlier = (["fill"] + [f"init/{name}" for name in ops.INITIALIZERS] + casts
               + ["assign/host", "assign/device", "slice/strided", "slice/row", "create", "calls/row", "calls/fill",
                  "calls/astype", "calls/assign_add", "calls/create", "checkpoint/save", "checkpoint/load"])
    assert [name for name in names if name in earlier] == earlier
    assert len(set(names)) == len(names)


def test_no_bench_module_over_500_lines():
    folder = os.path.dirname(ops.__file__)
    for name in os.listdir(folder):
        if name.endswith(".py"):
            with open(os.path.join(folder, name)) as f:
                assert sum(1 for _ in f) <= 500, name


def test_an_unpack_that_adds_nothing_fails_the_benchmark(monkeypatch):
    from varstore.distributed import buckets

    monkeypatch.setattr(buckets, "unpack", lambda *args, **kwargs: None)
    doc = suite.run(ops.select(["sync/unpack_float32"]), (4096,), quick=True, device="cpu", use_torch=False,
                    use_keras=False, stream=io.StringIO())
    assert len(doc["failures"]) == 1 and "expected" in doc["failures"][0] and "unpacks" in doc["failures"][0]


def test_a_wrong_kernel_fails_the_benchmark(monkeypatch, backend):
    original = vs.Variable.astype

    def off_by_one_bit(self, dtype):
        result = original(self, dtype)
        words = result.view(f"u{result.dtype.itemsize}")
        words[5] ^= 1
        return result

    monkeypatch.setattr(vs.Variable, "astype", off_by_one_bit)
    doc = suite.run(ops.select(["cast/float32->bfloat16"]), (4096,), quick=True, device=device_of(backend),
                    use_torch=False, use_keras=False, stream=io.StringIO())
    assert len(doc["failures"]) == 1
    assert "astype float32 -> bfloat16: 1 of" in doc["failures"][0]
    assert "FAILED" in report.table(doc)


def test_a_wrong_fill_fails_the_benchmark_through_the_cli(monkeypatch, capsys):
    monkeypatch.setattr(vs.Variable, "assign", lambda self, value: self)  # writes nothing
    code = cli.main(["bench", "--ops", "fill", "--sizes", "4KiB", "--quick", "--device", "cpu", "--no-torch",
                     "--no-keras"])
    assert code == 1
    out = capsys.readouterr().out
    assert "FAILED fill 4 KiB: FAILED: v.assign(1.5) left" in out
    # (the fill op has no Keras baseline: only what the run left out is named)
    assert out.rstrip().splitlines()[-1] == "1 of 1 checks FAILED; baselines left out: PyTorch (--no-torch)"


def test_bench_quick_cli_writes_json_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    out_json, out_png = tmp_path / "out.json", tmp_path / "out.png"
    out = run_cli("bench", "--quick", "--ops", "fill", "cast/float32->bfloat16", "slice/row", "--sizes", "4KiB,64KiB",
                  "--no-keras", "--json", str(out_json), "--plot", str(out_png))
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out_json.read_text())
    assert [(r["op"], r["size_bytes"]) for r in doc["rows"]] == [
        (op, size) for op in ("fill", "cast/float32->bfloat16", "slice/row") for size in (4096, 65536)]
    assert doc["failures"] == [] and all(r["check"] == "ok" for r in doc["rows"])
    meta = doc["meta"]
    assert meta["quick"] is True and meta["versions"]["numpy"] == np.__version__
    for key in ("date", "device_name", "backend", "clock", "ceiling_copy", "plan", "commit"):
        assert key in meta
    cast = [r for r in doc["rows"] if r["op"] == "cast/float32->bfloat16"][0]
    assert cast["bytes_moved"] == 1024 * (4 + 2) and cast["ceiling"]["kind"] == "copy"
    for row in doc["rows"]:  # each ceiling moves the bytes its op moves, not the size's
        if row["ceiling"]:
            assert row["ceiling"]["bytes_moved"] == row["bytes_moved"], row["op"]
    assert set(cast["speedup_vs"]) >= ({"ml_dtypes"} if meta["backend"] == "numpy" else set())
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out_png.stat().st_size > 20_000
    # the table and the progress lines
    assert "cast/float32->bfloat16" in out.stdout and "of copy" in out.stdout
    assert "[6/6]" in out.stderr
    assert re.search(r"^all 6 checks passed(; baselines left out: .+)?$", out.stdout, re.M)


def test_bench_argument_errors_name_what_was_given():
    out = run_cli("bench", "--ops", "bogus")
    assert out.returncode == 2 and "Received: 'bogus'" in out.stderr
    out = run_cli("bench", "--sizes", "5KiB")
    assert out.returncode == 2 and "Received: '5KiB'" in out.stderr
    out = run_cli("bench", "--list", "--ops", "cast")
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 9


def test_repeats_are_sized_from_the_second_call_not_the_compiling_first():
    """A first call that compiles for seconds does not make the measurement take only the
    minimum of repeats: the second (untimed) call sizes them."""
    class Clock:
        def __init__(self):
            self.seen = set()

        def time(self, fn):
            first = fn not in self.seen
            self.seen.add(fn)
            return (5.0 if first else 0.001), 0.0

    plan = measure.Plan(warmup=3, min_repeats=5, max_repeats=9, budget_s=1.0)
    timings = measure.time_variants(Clock(), {"a": lambda: None, "b": lambda: None}, plan)
    assert timings["a"].repeats == 9 and timings["a"].cold_s == 5.0 and timings["a"].median_s == 0.001


def test_a_check_that_raises_keeps_the_rows_timings_and_a_stopped_run_keeps_its_rows(tmp_path):
    """A check that raises (not a failed comparison: say CuPy refusing a conversion) fails
    its row with the timings kept; ``--json`` is rewritten after every row, so a run
    stopped part-way (a time limit's SIGTERM) leaves the rows done."""
    broken = ops.Op("broken", "a check that raises", lambda ctx, nbytes: ops.Case(
        {"ours": lambda: None}, nbytes, lambda: (_ for _ in ()).throw(TypeError("no implicit conversion"))))
    doc = suite.run([broken], (4096,), quick=True, device="cpu", use_torch=False, use_keras=False,
                    stream=io.StringIO())
    (row,) = doc["rows"]
    assert "the check raised TypeError: no implicit conversion" in row["check"] and row["variants"]["ours"]["repeats"]
    written = tmp_path / "partial.json"
    stopping = ops.Op("stopping", "stops the run", lambda ctx, nbytes: (_ for _ in ()).throw(SystemExit(143)))
    with pytest.raises(SystemExit):
        suite.run([broken, stopping], (4096,), quick=True, device="cpu", use_torch=False, use_keras=False,
                  stream=io.StringIO(), on_row=lambda doc: cli._write_json(doc, str(written)))
    saved = json.loads(written.read_text())
    assert [r["op"] for r in saved["rows"]] == ["broken"] and not (tmp_path / "partial.json.partial").exists()
