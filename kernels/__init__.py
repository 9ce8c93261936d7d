"""varstore's Numba kernels (installed as ``varstore.kernels``).

Importing this package compiles nothing and imports neither numba-cuda nor CuPy: the
submodules import numba, and CUDA kernels compile at their first launch.
"""

import importlib

#: The submodules, loaded on first attribute access (``varstore.kernels.cast``): the
#: modules above import this package at their top and numba loads when a kernel is
#: first needed, not when varstore is imported.
_SUBMODULES = frozenset({
    "access", "build", "cast", "declare", "intrinsics", "launch", "multi_tensor", "philox", "random_fill",
    "strided", "templates", "updates",
})


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")  # (sets the attribute: next time no call)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
