#!/usr/bin/env bash
# The first run on a GPU host, in parts sized for a few short calls:
#
#   OUT=/path/to/results bash bench/scripts/gpu_first_run.sh [PART ...]
#
# PART, in the order given (default: install roofline verify, 8.5 minutes at most):
#   install   NumPy from .wheels/ where there is one (numba-cuda 0.30 needs NumPy < 2.5:
#             the wheel folder is git-ignored, so bring it along with the checkout), then
#             this checkout, editable, without dependencies; checks the imports and that
#             NumPy is below 2.5. When it fails, nothing else runs.
#   verify    the GPU tiers with the default (driver) launch: pytest -m "gpu or kernels"
#   roofline  the memory-roofline ops at 16 MiB and 1 GiB against the copy ceiling, memset,
#             PyTorch and CuPy: casts to and from 16/8-bit types, the scalar fills (float32,
#             and float64's 8-byte pattern), the Philox fills, `v[::2, 1::3] = b` and its read,
#             a range of rows `v[1:-1] = b`, `v[::2, 1::3] = 1.5`, the wide accumulate
#   calls     per-call host time at 4 KiB against CuPy (the driver launch)
#   numba     the GPU tiers again with VARSTORE_CUDA_LAUNCH=numba, and its per-call time
#   training  vs.foreach and Adam at 256 KiB, 16 MiB and 1 GiB against PyTorch
#   quick     the quick suite: every op, 4 KiB to 64 MiB
#
# Everything lands in at most seven files under $OUT:
# summary.txt (device, versions after the install, each part's exit status and seconds),
# log.txt (every part's output, in order) and one JSON per bench part. A part that fails or runs out of
# time is recorded and the next one runs. The test parts stop any one test after 90 s
# (pytest-timeout, where installed) and print the failures' names (-rfE).
set -uo pipefail
OUT=${OUT:-/tmp/varstore-gpu}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)  # (absolute: the next line moves to the repository root)
cd "$(dirname "$0")/../.."  # (pytest reads pyproject.toml and tests/ from the repository root)
: > "$OUT/summary.txt"
: > "$OUT/log.txt"
export PYTHONUNBUFFERED=1

part() {  # part NAME TIMEOUT COMMAND...: run, log, record status and time
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  echo "=== $name: $*" >> "$OUT/log.txt"
  timeout -k 10 "$limit" "$@" >> "$OUT/log.txt" 2>&1
  local status=$?
  echo "$name: exit $status in $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
}

INSTALL='wheel=$(ls .wheels/numpy-*.whl 2> /dev/null | sort -V | tail -1)
if [ -n "$wheel" ]; then
  python -m pip install --no-deps --no-index "$wheel" || exit 1
fi
python -m pip install --no-deps --no-build-isolation -e . || exit 1
python -c "import cupy, numba_cuda, numpy, varstore, xdist, hypothesis; print(\"numpy\", numpy.__version__)" || exit 1
python -c "import sys, numpy; sys.exit(\"NumPy >= 2.5, which numba-cuda 0.30 cannot use: bring .wheels/\" if tuple(map(int, numpy.__version__.split(\".\")[:2])) >= (2, 5) else 0)"'

versions() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  python -m pip list 2>/dev/null | grep -i -E "^(cupy|numba|numpy|torch|ml.dtypes|cuda|nvidia-nvjitlink)"
  git rev-parse HEAD 2>/dev/null
}
case " ${*:-install} " in
  *" install "*) ;;  # (recorded after it)
  *) versions >> "$OUT/summary.txt" ;;
esac

ROOFLINE_OPS="cast/float32->bfloat16 cast/float32->float16 cast/float32->float8_e4m3fn cast/bfloat16->float32
  fill assign/scalar_float64 init/ones init/random_uniform init/random_normal random slice/strided slice/read
  slice/strided_float64->bfloat16 slice/strided_float64->float32 slice/rows slice/columns slice/fill accumulate"
PER_TEST=$(python -c "import pytest_timeout" 2> /dev/null && echo "--timeout=90")
for name in "${@:-install roofline verify}"; do
  for p in $name; do
    case $p in
      install) part install 90 bash -c "$INSTALL"
               versions >> "$OUT/summary.txt"
               grep -q "^install: exit 0 " "$OUT/summary.txt" || { echo "install failed: stopping" | tee -a "$OUT/summary.txt"; exit 1; } ;;
      verify) part verify 160 python -m pytest -m "gpu or kernels" -q -rfE --tb=short --maxfail=100 $PER_TEST -n 8 \
                -p no:cacheprovider ;;
      roofline) part roofline 240 python -m varstore bench --device cuda:0 --ops $ROOFLINE_OPS --sizes 16MiB,1GiB \
                  --json "$OUT/roofline.json" ;;
      calls) part calls 150 python -m varstore bench --device cuda:0 --ops calls cast fill slice init --sizes 4KiB \
               --json "$OUT/calls.json" ;;
      numba) part numba 240 env VARSTORE_CUDA_LAUNCH=numba python -m pytest -m "gpu or kernels" -q -rfE $PER_TEST \
               -n 8 -p no:cacheprovider
             part numba-calls 120 env VARSTORE_CUDA_LAUNCH=numba python -m varstore bench --device cuda:0 --ops calls \
               --sizes 4KiB \
               --json "$OUT/calls-numba.json" ;;
      training) part training 180 python -m varstore bench --device cuda:0 --ops foreach optimizer \
                  --sizes 256KiB,16MiB,1GiB \
                  --json "$OUT/training.json" ;;
      quick) part quick 240 python -m varstore bench --device cuda:0 --quick --json "$OUT/quick.json" ;;
      *) echo "unknown part $p (install verify roofline calls numba training quick)" | tee -a "$OUT/summary.txt" ;;
    esac
  done
done
