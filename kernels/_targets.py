"""Compile one piece of kernel math for both targets.

The math of every kernel is written once, as scalar *element functions* decorated with
:func:`element`. They are ``numba.njit(inline="always")`` functions, which numba-cuda
also compiles for the GPU when a CUDA kernel calls them, so the CPU and the GPU run the
same source. Under the CUDA simulator they run as their CPU build, called from the
simulated threads (which is why they take and return scalars only: the simulator's
arrays cannot be passed into compiled code).

Around the element functions, the loops of each kernel are generated from its declaration
(``kernels.declare``, ``kernels.templates``) and compiled on first launch
(``kernels.build``), so importing a kernels module compiles nothing and never imports
numba-cuda.

Compiled kernels are cached on disk. Numba keys a cache entry on the kernel's own source
file only, so an edit to an element function in another file would load stale machine
code; the cache folder is therefore named after a hash of every source file in this
package (and the numba versions), and any edit starts a fresh folder.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pathlib
import threading

import numba

_HERE = pathlib.Path(__file__).resolve().parent
_cache_lock = threading.Lock()


#: numba options of every CPU compile of kernel code (loops, element functions, the
#: simulator's steps). ``error_model="numpy"``: a float division by zero gives inf or
#: NaN, as IEEE arithmetic and numba-cuda's kernels do. numba's default ("python")
#: raises ZeroDivisionError from inside the loop, after the elements before it were
#: written, and its check on every divisor is an early exit that keeps LLVM from
#: vectorizing the loop (Adam's step ran 7x slower on one core for it).
CPU_OPTIONS = {"error_model": "numpy"}


def element(fn):
    """Declare ``fn`` a scalar element function usable from CPU and CUDA kernels."""
    return numba.njit(inline="always", **CPU_OPTIONS)(fn)


def called(element_fn):
    """A twin of an element function that numba compiles once per signature and *calls*,
    where :func:`element` copies its IR into every call site.

    For element functions that call many others (the conversion switch of the strided
    kernels): IR inlining re-types every copy, and such a kernel took 7 s to compile
    instead of 1. The inlined form stays the default: LLVM does not inline calls
    between numba functions reliably on the CPU, and the random fills ran 5x slower
    through calls. (On the GPU, NVVM inlines them either way.)
    """
    return numba.njit(**CPU_OPTIONS)(getattr(element_fn, "py_func", element_fn))


@functools.lru_cache(maxsize=1)
def _source_hash() -> str:
    h = hashlib.sha256()
    for path in sorted(_HERE.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    h.update(numba.__version__.encode())
    try:
        from importlib.metadata import version

        h.update(version("numba-cuda").encode())
    except Exception:  # numba-cuda is optional
        pass
    return h.hexdigest()[:16]


#: The distributions whose versions decide the PTX (NVVM) and the cubin (nvJitLink) built
#: from one source, CUDA 12 and 13 wheels alike.
_TOOLKIT_DISTRIBUTIONS = ("cuda-toolkit", "cuda-bindings", "cuda-core", "nvidia-nvvm", "nvidia-cuda-nvcc-cu12",
                          "nvidia-nvjitlink", "nvidia-nvjitlink-cu12")


@functools.lru_cache(maxsize=1)
def toolkit_tag() -> str:
    """A short hash of the CUDA toolkit that builds PTX and cubins here: the versions of
    its wheels, ``CUDA_HOME``/``CUDA_PATH``, the NVVM library file and nvJitLink's
    version. Cached PTX and cubins are named with it, so an image another toolkit built
    (which an older driver refuses) is never loaded: it is built again. Worked out at
    the first PTX build, not at import."""
    from importlib.metadata import PackageNotFoundError, version

    h = hashlib.sha256()
    for name in _TOOLKIT_DISTRIBUTIONS:
        try:
            h.update(f"{name}={version(name)};".encode())
        except PackageNotFoundError:
            pass
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        h.update(f"{variable}={os.environ.get(variable, '')};".encode())
    h.update(_libraries().encode())
    return h.hexdigest()[:8]


def _libraries() -> str:
    """The NVVM library numba-cuda loads (path, size, modification time: a system or
    conda toolkit has no wheel version) and nvJitLink's version, where found."""
    found = []
    try:
        from numba.cuda.cuda_paths import get_cuda_paths

        path = get_cuda_paths()["nvvm"].info
        stat = os.stat(path)
        found.append(f"nvvm={path}:{stat.st_size}:{stat.st_mtime_ns}")
    except Exception:  # noqa: S110 - no NVVM found: the wheels and the variables above decide
        pass
    try:
        from cuda.bindings import nvjitlink

        found.append(f"nvjitlink={nvjitlink.version()}")
    except Exception:  # noqa: S110 - no nvJitLink: the driver JIT-compiles the PTX
        pass
    return ";".join(found)


def cache_dir() -> str | None:
    """The folder compiled kernels are cached in, or None when no writable one exists.

    Base folder: ``NUMBA_CACHE_DIR`` when set, else ``VARSTORE_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/varstore`` (``~/.cache/varstore``). ``VARSTORE_CACHE_DIR=off``
    disables the cache.
    """
    base = os.environ.get("NUMBA_CACHE_DIR") or os.environ.get("VARSTORE_CACHE_DIR")
    if base and base.lower() == "off":
        return None
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "varstore")
    path = os.path.join(base, "kernels-" + _source_hash())
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


@contextlib.contextmanager
def _numba_cache_dir(configs):
    """Point numba's cache locator at our folder while one of our kernels is declared.

    Numba reads ``config.CACHE_DIR`` once, when a cached dispatcher is created; the
    previous value is restored right after, so user code keeps its own setting.
    """
    path = cache_dir()
    with _cache_lock:
        saved = [c.CACHE_DIR for c in configs]
        try:
            for c in configs:
                c.CACHE_DIR = path or ""
            yield path is not None
        finally:
            for c, value in zip(configs, saved, strict=True):
                c.CACHE_DIR = value


def simulator_enabled() -> bool:
    """True when numba runs CUDA kernels in its simulator (set before numba's import)."""
    return bool(numba.config.ENABLE_CUDASIM)
