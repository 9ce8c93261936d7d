"""Compile one piece of kernel math for both targets.

The math of every kernel is written once, as scalar *element functions* decorated with
:func:`element`. They are ``numba.njit(inline="always")`` functions, which numba-cuda
also compiles for the GPU when a CUDA kernel calls them, so the CPU and the GPU run the
same source. Under the CUDA simulator they run as their CPU build, called from the
simulated threads (which is why they take and return scalars only: the simulator's
arrays cannot be passed into compiled code).

Around the element functions, each kernel has two thin loops: a CPU loop decorated with
:func:`cpu_kernel` and a CUDA grid-stride loop decorated with :func:`cuda_kernel`. The CUDA
one is compiled on first launch, so importing a kernels module never imports numba-cuda.

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


def element(fn):
    """Declare ``fn`` a scalar element function usable from CPU and CUDA kernels."""
    return numba.njit(inline="always")(fn)


def called(element_fn):
    """A twin of an element function that numba compiles once per signature and *calls*,
    where :func:`element` copies its IR into every call site.

    For element functions that call many others (the conversion switch of the strided
    kernels): IR inlining re-types every copy, and such a kernel took 7 s to compile
    instead of 1. The inlined form stays the default: LLVM does not inline calls
    between numba functions reliably on the CPU, and the random fills ran 5x slower
    through calls. (On the GPU, NVVM inlines them either way.)
    """
    return numba.njit(getattr(element_fn, "py_func", element_fn))


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
            for c, value in zip(configs, saved):
                c.CACHE_DIR = value


def cpu_kernel(fn):
    """Compile a CPU loop (lazily, at first call), cached on disk."""
    with _numba_cache_dir([numba.config]) as cache:
        return numba.njit(cache=cache, nogil=True)(fn)


def simulator_enabled() -> bool:
    """True when numba runs CUDA kernels in its simulator (set before numba's import)."""
    return bool(numba.config.ENABLE_CUDASIM)


class CudaKernel:
    """A CUDA grid-stride loop, compiled at first launch.

    The loop's module refers to ``cuda`` (for ``cuda.grid``) as a global; it is bound to
    ``numba.cuda`` here, on first use, so that nothing imports numba-cuda before a CUDA
    launch is asked for.
    """

    def __init__(self, fn):
        self.py_func = fn
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        self._dispatcher = None
        self._lock = threading.Lock()

    def _bind_cuda(self):
        from numba import cuda

        self.py_func.__globals__["cuda"] = cuda
        return cuda

    def ptx(self, argtypes: tuple, cc: tuple = (9, 0)) -> str:
        """The PTX for ``argtypes`` (numba types). Needs NVVM, not a GPU."""
        cuda = self._bind_cuda()
        ptx, _ = cuda.compile_ptx(self.py_func, argtypes, cc=cc)
        return ptx

    @property
    def dispatcher(self):
        if self._dispatcher is None:
            with self._lock:
                if self._dispatcher is None:
                    cuda = self._bind_cuda()
                    if simulator_enabled():
                        self._dispatcher = cuda.jit(self.py_func)
                    else:
                        from numba.cuda.core import config as cuda_config

                        with _numba_cache_dir([cuda_config]) as cache:
                            self._dispatcher = cuda.jit(cache=cache)(self.py_func)
        return self._dispatcher

    def __getitem__(self, launch_config):
        return self.dispatcher[launch_config]

    def __repr__(self):
        return f"<CudaKernel {self.__name__}>"


def cuda_kernel(fn):
    """Declare a CUDA grid-stride loop; nothing is imported or compiled until launch."""
    return CudaKernel(fn)


class Kernel:
    """The CPU loop and the CUDA loop of one kernel; backends launch the one they run.

    Launch contract: the loops run over ``n`` elements; every 1-D array argument of size
    ``n`` is indexed by element, so a CPU launch may split it into chunks and run them on
    several threads. A kernel whose math depends on the element's global index takes it
    as ``offset_arg`` (the index of its first element), which each chunk advances.
    """

    def __init__(self, name: str, cpu, cuda: CudaKernel, offset_arg: int | None = None, chunked: bool = True,
                 chunk_table: int | None = None):
        self.name = name
        self.cpu = cpu
        self.cuda = cuda
        self.offset_arg = offset_arg
        self.chunked = chunked  # False: arrays are not indexed by element (strided kernels)
        # Multi-tensor kernels: the index of their (chunk_tensor, chunk_first, chunk_count)
        # arguments; a CPU launch may hand each thread a run of whole chunks.
        self.chunk_table = chunk_table

    def __repr__(self):
        return f"<Kernel {self.name}>"
