"""varstore's benchmark suite, installed as ``varstore.bench``: run it as ``varstore bench``.

- ``ops``: the list of operations; ``ops_*`` (by family: writes, random, casts, store,
  calls, sync) build each one's timed calls, its baselines and the check of ours' result.
- ``natives``: what NumPy/ml_dtypes (CPU) or CuPy (GPU) offer: clock, ceilings, baselines.
- ``torch_baselines``: PyTorch's, when it imports.
- ``measure``: CUDA events or ``perf_counter``, variants timed in alternation.
- ``suite``: the runner; ``report``: the JSON document and the table; ``plot``: the figure.
- ``sync``: ``ReplicatedStore.sync()`` against the raw all-reduce (``python -m
  varstore.bench.sync``, under mpiexec).

``bench/scripts/`` (not installed): ``first_calls.py``, the first calls' compile time in a
fresh process (cold with an empty kernel cache, warm with a filled one), and
``gpu_first_run.sh``, the checks and runs a GPU host needs first, in one call. The
figures, with their dates, devices, versions and commands, are in bench/RESULTS.md.
"""
