#!/usr/bin/env bash
# The kernel layer's first run on a GPU host: verify, then measure, in one call.
#
#   OUT=/path/to/results bash bench/scripts/gpu_first_run.sh
#
# Order matters (see bench/RESULTS.md, "Not yet run on a GPU"): the GPU tiers with the
# default driver launch, the same with numba-cuda's launch, then per-call host time at
# 4 KiB and throughput at 16 MiB under each mechanism, then the quick suite (every op). Each step
# writes its log or JSON under $OUT and the script goes on after a failure.
set -uo pipefail
OUT=${OUT:-/tmp/varstore-gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/device.txt" 2>&1
python -m pip list 2>/dev/null | grep -i -E "^(cupy|numba|numpy|torch|ml.dtypes|cuda)" >> "$OUT/device.txt"

for mechanism in driver numba; do
  VARSTORE_CUDA_LAUNCH=$mechanism timeout 300 python -m pytest -m "gpu or kernels" -q -n 8 -p no:cacheprovider \
    > "$OUT/tests-$mechanism.txt" 2>&1
  echo "tests ($mechanism): exit $?" >> "$OUT/summary.txt"
done
for mechanism in driver numba; do
  VARSTORE_CUDA_LAUNCH=$mechanism timeout 240 varstore bench --ops calls cast fill slice init --sizes 4KiB,16MiB \
    --json "$OUT/kernels-$mechanism.json" > "$OUT/bench-$mechanism.txt" 2>&1
  echo "bench ($mechanism): exit $?" >> "$OUT/summary.txt"
done
# The memory-roofline targets: casts, fills, Philox and strided writes at 1 GiB against the
# copy ceiling, memset, PyTorch and CuPy (wide access, driver memsets, division-free regions).
timeout 240 varstore bench --ops cast fill init slice --sizes 1GiB --json "$OUT/roofline-1GiB.json" \
  > "$OUT/bench-roofline.txt" 2>&1
echo "bench (1 GiB): exit $?" >> "$OUT/summary.txt"
# The wide accumulate and the Philox fills of bfloat16/float64 variables (a file of their
# own: a timeout loses only these).
timeout 180 varstore bench --ops accumulate random --sizes 16MiB,1GiB --json "$OUT/accumulate-random.json" \
  > "$OUT/bench-accumulate-random.txt" 2>&1
echo "bench (accumulate, random): exit $?" >> "$OUT/summary.txt"
# The training-loop primitives: foreach over 1,000 small variables against torch._foreach_sub_,
# Adam against torch.optim.Adam(fused=True) and the bandwidth bound (28 bytes per parameter).
timeout 240 varstore bench --ops foreach optimizer --sizes 256KiB,16MiB,1GiB --json "$OUT/training.json" \
  > "$OUT/bench-training.txt" 2>&1
echo "bench (training): exit $?" >> "$OUT/summary.txt"
timeout 240 varstore bench --quick --json "$OUT/quick.json" > "$OUT/bench-quick.txt" 2>&1
echo "bench (quick): exit $?" >> "$OUT/summary.txt"
cat "$OUT/summary.txt"
