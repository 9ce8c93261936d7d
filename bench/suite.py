"""The runner of ``varstore bench``: every op at every size, timed, checked and tabled."""

from __future__ import annotations

import dataclasses
import gc
import os
import shutil
import sys
import tempfile
import time
import warnings

import numpy as np

import varstore as vs
from varstore.backends import for_device

from . import natives, ops, report, torch_baselines
from .measure import FULL, QUICK, parse_sizes, time_variants  # noqa: F401 - parse_sizes: for the CLI

KIB, MIB, GIB = 2**10, 2**20, 2**30
FULL_SIZES = (4 * KIB, 64 * KIB, MIB, 16 * MIB, 256 * MIB, GIB)
QUICK_SIZES = (4 * KIB, 256 * KIB, 4 * MIB, 64 * MIB)
KERAS_MAX_BYTES = MIB  # Keras is a per-call-overhead baseline
GC_BYTES = 16 * MIB  # below this a full collection after each case costs more than it frees


class Context:
    """What the ops need: the device, its native library, PyTorch and Keras when present."""

    def __init__(self, device=None, use_torch=True, use_keras=True, plan=FULL):
        self.backend, self.device = for_device(device)
        self.max_copies = max(1, (1 + plan.warmup + plan.max_repeats) // 2)
        self.native = natives.NATIVES[self.backend.name](self.device)
        self.torch = torch_baselines.load(self.backend.name, self.device) if use_torch else None
        #: Baselines this run leaves out, and why (the closing summary says so).
        self.left_out = {}
        if not use_torch:
            self.left_out["PyTorch"] = "--no-torch"
        elif self.torch is None:
            self.left_out["PyTorch"] = f"PyTorch is not installed or cannot use {self.device}"
        self._use_keras = use_keras
        self._keras = None
        self.tmpdir = tempfile.mkdtemp(prefix="varstore-bench-")

    def new_store(self):
        return vs.VariableStore(device=self.device)

    def keras_for(self, nbytes: int, limit: int = KERAS_MAX_BYTES):
        """Keras (numpy backend) for per-call baselines at sizes up to ``limit``, or None."""
        if nbytes > limit:
            return None
        if not self._use_keras:
            self.left_out["Keras"] = "--no-keras"
            return None
        if self._keras is None:
            self._keras = _import_keras_numpy() or False
            if not self._keras:
                self.left_out["Keras"] = "Keras is not installed, or not importable with KERAS_BACKEND=numpy"
        return self._keras or None

    def close(self) -> None:
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def _import_keras_numpy():
    if os.environ.setdefault("KERAS_BACKEND", "numpy") != "numpy":
        return None  # another backend was asked for; its per-call cost is not comparable
    try:
        import keras
    except Exception:  # not installed, or its backend's dependencies are missing
        return None
    return keras


#: The most bytes a ceiling moves (see ceiling_fns).
CEILING_MOST_BYTES = 2 << 30


def ceiling_fns(ctx, kind: str, moved: int) -> tuple[dict, int]:
    """The ceiling of ``kind`` moving the bytes the op moves, ``moved`` (rotated like the
    ops), and the bytes it moves: a fill writes them, a copy reads and writes half each.

    The ceiling moves the op's bytes, not the size's: a cast to bfloat16 at 16 MiB moves
    24 MiB, and a copy of 32 MiB would run nearer its peak than a copy of 24 MiB does. Up
    to :data:`CEILING_MOST_BYTES`: a transfer that large runs at its peak already, and
    an optimizer step at 1 GiB moves 28 GiB (7 GiB of buffers for its copy)."""
    moved = min(moved, CEILING_MOST_BYTES)
    xp = ctx.native.xp
    if kind == "fill":
        n = max(1, moved // ops.ELEMENT)
        k = ops.rotation(ctx, n * ops.ELEMENT)
        dsts = [xp.ones(n, np.float32) for _ in range(k)]
        return ops.cycle([ctx.native.fill_fn(d) for d in dsts]), n * ops.ELEMENT
    n = max(1, moved // (2 * ops.ELEMENT))
    k = ops.rotation(ctx, 2 * n * ops.ELEMENT)
    dsts = [xp.ones(n, np.float32) for _ in range(k)]
    if kind == "h2d":
        host = np.ones(n, np.float32)
        return ops.cycle([ctx.native.h2d_fn(d, host) for d in dsts]), 2 * n * ops.ELEMENT
    srcs = [xp.ones(n, np.float32) for _ in range(k)]
    return ops.cycle([ctx.native.copy_fn(d, s) for d, s in zip(dsts, srcs, strict=True)]), 2 * n * ops.ELEMENT


@dataclasses.dataclass
class Row:
    op: str
    size_bytes: int
    bytes_moved: int | None = None
    variants: dict = dataclasses.field(default_factory=dict)  # label -> timing dict (+ GBps)
    ceiling: dict | None = None
    check: str = "ok"
    skipped: str | None = None
    extra: dict | None = None  # figures an op measures once besides its times (a checkpoint's host memory)

    @property
    def ours(self) -> dict | None:
        return self.variants.get("ours")

    def fraction_of_ceiling(self) -> float | None:
        if not (self.ceiling and self.ours and self.ours.get("GBps")):
            return None
        return self.ours["GBps"] / self.ceiling["GBps"]

    def baselines(self) -> dict:
        """label -> baseline time / ours (above 1: ours is faster)."""
        ours = self.ours
        return {label: t["median_s"] / ours["median_s"] for label, t in self.variants.items() if label != "ours"}

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["fraction_of_ceiling"] = self.fraction_of_ceiling()
        out["speedup_vs"] = self.baselines() if self.ours else {}
        return out


def measure(ctx, op: ops.Op, nbytes: int, plan) -> Row:
    row = Row(op.name, nbytes)
    if op.max_bytes is not None and nbytes > op.max_bytes:
        row.skipped = op.skip_reason
        return row
    try:
        case = op.build(ctx, nbytes)
        fns = dict(case.fns)
        ceiling_bytes = None
        if case.ceiling:
            fns["ceiling"], ceiling_bytes = ceiling_fns(ctx, case.ceiling, case.bytes_moved or nbytes)
        timings = time_variants(ctx.native.clock, fns, plan)
        row.bytes_moved = case.bytes_moved
        for label, timing in timings.items():  # (kept whatever the check below does)
            entry = timing.as_dict()
            moved = ceiling_bytes if label == "ceiling" else case.bytes_moved
            entry["GBps"] = moved / timing.median_s / 1e9 if moved else None
            if label == "ceiling":
                row.ceiling = dict(entry, kind=case.ceiling, bytes_moved=ceiling_bytes)
            else:
                row.variants[label] = entry
        try:
            case.check()
        except ops.CheckFailed as failure:
            row.check = f"FAILED: {failure}"
        except Exception as error:  # noqa: BLE001 - a check that breaks fails its row, timings kept
            row.check = f"FAILED: the check raised {type(error).__name__}: {error}"
        if case.extra is not None:
            row.extra = case.extra()
    except MemoryError as error:  # includes vs.OutOfMemoryError: the device is too small
        row.skipped = f"out of memory: {error}"
    except Exception as error:  # noqa: BLE001 - a broken op is reported, the others still run
        row.check = f"FAILED: {type(error).__name__}: {error}"
    finally:
        case = fns = None
        if nbytes >= GC_BYTES:  # stores and variables refer to each other: free them now
            gc.collect()
            try:
                ctx.native.release_memory()
            except Exception as error:  # noqa: BLE001 - (after a device fault) the row says so; the run goes on
                row.check = f"FAILED: freeing memory after the op raised {type(error).__name__}: {error}"
    return row


class Progress:
    """A one-line bar on a terminal; a line per op elsewhere (logs, CI)."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.done, self.stream = total, 0, stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.start = time.perf_counter()

    def step(self, label: str, op_finished: bool) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        if self.tty:
            width = 30
            filled = int(width * self.done / self.total)
            bar = "#" * filled + "." * (width - filled)
            self.stream.write(f"\r[{bar}] {self.done}/{self.total} {elapsed:5.0f}s {label[:48]:<48}")
            if self.done == self.total:
                self.stream.write("\n")
        elif op_finished:
            self.stream.write(f"[{self.done}/{self.total}] {elapsed:.0f}s {label}\n")
        self.stream.flush()


def run(op_list, sizes, quick: bool, device=None, use_torch=True, use_keras=True, stream=sys.stderr,
        on_row=None) -> dict:
    """Measure every op at every size; returns the results document (see ``report``).
    ``on_row(document)``, where given, gets the document of the rows done so far after
    each row (a run stopped part-way keeps them)."""
    plan = QUICK if quick else FULL
    ctx = Context(device, use_torch=use_torch, use_keras=use_keras, plan=plan)
    progress = Progress(len(op_list) * len(sizes), stream)
    rows = []
    started = time.time()
    try:
        with warnings.catch_warnings():
            # The cast data holds values that overflow the narrow types on purpose.
            warnings.filterwarnings("ignore", "overflow encountered in cast", RuntimeWarning)
            for op in op_list:
                for i, nbytes in enumerate(sizes):
                    rows.append(measure(ctx, op, nbytes, plan))
                    progress.step(f"{op.name} {report.format_size(nbytes)}", i == len(sizes) - 1)
                    if on_row is not None:
                        on_row(report.document(ctx, op_list, sizes, quick, plan, rows, time.time() - started))
    finally:
        ctx.close()
    return report.document(ctx, op_list, sizes, quick, plan, rows, time.time() - started)


