"""First-call times of one process: import, first cast, first converting strided write,
first glorot_uniform variable. Run twice with an empty ``VARSTORE_CACHE_DIR`` for the cold
(compiling) and warm (cached) figures:

    VARSTORE_CACHE_DIR=/tmp/coldcache python bench/scripts/first_calls.py
"""
import time

t0 = time.perf_counter()
import numpy as np

import varstore as vs

t1 = time.perf_counter()
v = vs.Variable(np.arange(1024, dtype=np.float32), device="cpu")
t2 = time.perf_counter()
v.astype("bfloat16")
t3 = time.perf_counter()
v2 = vs.Variable(np.zeros((64, 64), np.float32), device="cpu")
t4 = time.perf_counter()
v2[::2, 1::3] = np.ones((32, 21), np.float16)
t5 = time.perf_counter()
t6 = time.perf_counter()
vs.Variable(initializer="glorot_uniform", shape=(64, 64), device="cpu")
t7 = time.perf_counter()
print(f"import {t1-t0:.3f}s  first cast f32->bf16 {t3-t2:.3f}s  first converting strided write {t5-t4:.3f}s"
      f"  first glorot_uniform variable {t7-t6:.3f}s")
