"""The ``varstore`` command (also ``python -m varstore``): ``info``, ``bench``, ``demo``."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import signal
import sys

import varstore as vs

from . import demo as demo_module
from .backends import cuda_unavailable_reason, get


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _nvml_driver() -> str | None:
    """The driver's version string from NVML (nvidia-ml-py), or None."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
            return version.decode() if isinstance(version, bytes) else str(version)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no nvidia-ml-py, no NVML library, or an NVML error
        return None


def _cuda_version(number: int) -> str:
    return f"{number // 1000}.{number % 1000 // 10} ({number})"


def _cuda_lines() -> list[str]:
    """Devices, memory, compute capability, CUDA versions: only where CUDA runs."""
    reason = cuda_unavailable_reason()
    if reason is not None:
        return [f"  cuda backend: unavailable ({reason})"]
    import cupy

    runtime = cupy.cuda.runtime
    driver = _nvml_driver()
    lines = [
        f"  CUDA runtime: {_cuda_version(runtime.runtimeGetVersion())}",
        f"  CUDA driver:  {_cuda_version(runtime.driverGetVersion())}"
        + (f", NVIDIA driver {driver}" if driver else ""),
    ]
    backend = get("cuda")
    source = "NVML" if driver else "CUDA runtime"
    for device in backend.devices():
        index = int(device.split(":")[1])
        props = runtime.getDeviceProperties(index)
        total, free = backend.device_memory(device)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        lines.append(
            f"  {device}: {name}, compute capability {props['major']}.{props['minor']}, "
            f"{props['multiProcessorCount']} SMs, memory {total / 2**30:.1f} GiB total, "
            f"{free / 2**30:.1f} GiB free ({source})"
        )
    return lines


def info() -> int:
    print(f"varstore {vs.__version__} on Python {platform.python_version()} ({platform.machine()})")
    try:
        name = vs.backend()
    except Exception as exc:  # a forced but unusable backend: say why, do not crash
        name = f"unavailable: {exc}"
    print(f"backend: {name}")
    print("versions:")
    for package in ("numpy", "numba", "numba-cuda", "ml_dtypes", "nvidia-ml-py"):
        print(f"  {package}: {_version(package)}")
    cupys = [f"{p} {_version(p)}" for p in ("cupy-cuda13x", "cupy-cuda12x", "cupy") if _version(p) != "not installed"]
    print(f"  cupy: {', '.join(cupys) or 'not installed'}")
    print("devices:")
    total, free = get("numpy").device_memory("cpu")
    memory = f", memory {total / 2**30:.1f} GiB total, {free / 2**30:.1f} GiB free" if total and free else ""
    print(f"  cpu: numpy backend, always available, {os.cpu_count()} cores{memory}")
    for line in _cuda_lines():
        print(line)
    return 0


def bench(args) -> int:
    from .bench import ops, plot, report, suite  # (here: the other commands start without the suite)

    try:
        op_list = ops.select([name for item in args.ops for name in item.replace(",", " ").split()])
        sizes = suite.parse_sizes(args.sizes) if args.sizes else (suite.QUICK_SIZES if args.quick else suite.FULL_SIZES)
    except ValueError as error:
        print(f"varstore bench: {error}", file=sys.stderr)
        return 2
    if args.list:
        for op in op_list:
            print(f"{op.name:32s} {op.summary}")
        return 0
    if args.plot:
        try:
            plot.require_matplotlib()
        except RuntimeError as error:
            print(f"varstore bench: {error}", file=sys.stderr)
            return 2
    write = None if not args.json else lambda doc: _write_json(doc, args.json)
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)  # (a time limit's kill keeps the rows done)
    try:
        doc = suite.run(op_list, sizes, quick=args.quick, device=args.device,
                        use_torch=not args.no_torch, use_keras=not args.no_keras, on_row=write)
    except (ValueError, RuntimeError) as error:  # a bad --device, or a backend that cannot run
        print(f"varstore bench: {error}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(report.table(doc))
    print(report.summary(doc))
    if args.json:
        _write_json(doc, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        plot.plot(doc, args.plot)
        print(f"wrote {args.plot}")
    return 1 if doc["failures"] else 0


def _write_json(doc: dict, path: str) -> None:
    """``doc`` into ``path`` whole: written beside it, then renamed over it."""
    partial = f"{path}.partial"
    with open(partial, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(partial, path)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def demo(args) -> int:
    try:
        result = demo_module.run(device=args.device, steps=args.steps, checkpoint=args.checkpoint, seed=args.seed)
    except (ValueError, RuntimeError) as error:
        print(f"varstore demo: {error}", file=sys.stderr)
        return 2
    return 0 if result["loss_ratio"] >= 10 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="varstore", description="GPU variable store.")
    parser.add_argument("--version", action="version", version=f"varstore {_version('varstore')}",
                        help="print varstore's version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("info", help="backend, versions, devices and memory")

    bench_parser = commands.add_parser(
        "bench", help="the benchmark suite",
        description="Times each op against its ceiling and baselines measured in the same run, and checks its "
                    "results.",
    )
    bench_parser.add_argument("--quick", action="store_true",
                              help="sizes 4 KiB to 64 MiB, fewer repeats (about a minute on 2 CPU cores)")
    bench_parser.add_argument("--json", metavar="FILE", help="write every measurement and the environment as JSON")
    bench_parser.add_argument("--plot", metavar="FILE.png",
                              help="throughput against size per op, with the ceiling (needs matplotlib)")
    bench_parser.add_argument("--ops", nargs="*", default=[], metavar="OP",
                              help="ops or groups to run, e.g. 'fill cast init/glorot_uniform' "
                                   "(default: all; see --list)")
    bench_parser.add_argument("--sizes", metavar="LIST", help="sizes of the float32 data, e.g. '4KiB,1MiB,1GiB'")
    bench_parser.add_argument("--device", help="'cpu' or 'cuda:N' (default: the default backend's first device)")
    bench_parser.add_argument("--list", action="store_true", help="list the ops and exit")
    bench_parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out of the baselines")
    bench_parser.add_argument("--no-keras", action="store_true", help="leave Keras out of the baselines")

    demo_parser = commands.add_parser("demo", help="a small training loop whose weights are varstore variables")
    demo_parser.add_argument("--device", help="'cpu' or 'cuda:N' (default: the default backend's first device)")
    demo_parser.add_argument("--steps", type=int, default=300, help="SGD steps (default 300)")
    demo_parser.add_argument("--seed", type=int, default=0,
                             help="seed of the initial weights and the data (default 0): the same seed, the same run")
    demo_parser.add_argument("--checkpoint", metavar="FILE",
                             help="where to save the weights (default: a temporary folder)")

    args = parser.parse_args(argv)
    if args.command == "info":
        return info()
    if args.command == "bench":
        return bench(args)
    if args.command == "demo":
        return demo(args)
    parser.print_help(sys.stderr)
    return 2
