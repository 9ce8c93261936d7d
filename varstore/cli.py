"""The ``varstore`` command: ``varstore info`` (``python -m varstore info``)."""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import sys


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cuda_lines() -> list[str]:
    """Devices, memory, compute capability, CUDA versions: only where CUDA runs."""
    from .backends import cuda_unavailable_reason

    reason = cuda_unavailable_reason()
    if reason is not None:
        return [f"  cuda backend: unavailable ({reason})"]
    import cupy

    runtime = cupy.cuda.runtime
    lines = [
        f"  CUDA runtime: {runtime.runtimeGetVersion()}",
        f"  CUDA driver:  {runtime.driverGetVersion()}",
    ]
    for i in range(runtime.getDeviceCount()):
        props = runtime.getDeviceProperties(i)
        with cupy.cuda.Device(i):
            free, total = runtime.memGetInfo()
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        lines.append(
            f"  cuda:{i}: {name}, compute capability {props['major']}.{props['minor']}, "
            f"{props['multiProcessorCount']} SMs, memory {total / 2**30:.1f} GiB total, "
            f"{free / 2**30:.1f} GiB free"
        )
    return lines


def info() -> int:
    import varstore as vs

    print(f"varstore {vs.__version__} on Python {platform.python_version()} ({platform.machine()})")
    try:
        name = vs.backend()
    except Exception as exc:  # a forced but unusable backend: say why, do not crash
        name = f"unavailable: {exc}"
    print(f"backend: {name}")
    print("versions:")
    for package in ("numpy", "numba", "numba-cuda", "ml_dtypes", "cupy-cuda13x", "cupy-cuda12x", "nvidia-ml-py"):
        print(f"  {package}: {_version(package)}")
    print("devices:")
    print("  cpu (numpy backend, always available)")
    for line in _cuda_lines():
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="varstore", description="GPU variable store.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("info", help="backend, versions, devices and memory")
    args = parser.parse_args(argv)
    if args.command == "info":
        return info()
    parser.print_help(sys.stderr)
    return 2
