"""varstore's Numba kernels (installed as ``varstore.kernels``).

Importing this package compiles nothing and imports neither numba-cuda nor CuPy: the
submodules import numba, and CUDA kernels compile at their first launch.
"""
