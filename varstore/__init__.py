"""varstore: Keras-style variables whose storage lives in GPU memory.

Importing varstore compiles nothing, touches no GPU and imports neither CuPy nor numba:
those load on first use.

>>> import varstore as vs
>>> v = vs.Variable([[1.0, 2.0]], name="w", store=vs.VariableStore(device="cpu"))
>>> v.assign_add(1.0).numpy()
array([[2., 3.]], dtype=float32)
"""

from . import distributed, foreach, initializers, optimizers
from .backends import backend, devices
from .distributed.store import ReplicatedStore, SyncStats
from .dtypes import DTYPES, floatx, set_floatx, standardize_dtype
from .errors import ArgumentTypeError, BackendUnavailableError, OutOfMemoryError
from .random import set_seed
from .scopes import AutocastScope, StatelessScope, name_scope
from .store import VariableStore, default_store
from .variable import Variable

__version__ = "0.1.0"

__all__ = [
    "DTYPES",
    "AutocastScope",
    "StatelessScope",
    "ArgumentTypeError",
    "BackendUnavailableError",
    "OutOfMemoryError",
    "ReplicatedStore",
    "SyncStats",
    "Variable",
    "VariableStore",
    "backend",
    "default_store",
    "distributed",
    "devices",
    "floatx",
    "foreach",
    "initializers",
    "name_scope",
    "optimizers",
    "set_floatx",
    "set_seed",
    "standardize_dtype",
]
