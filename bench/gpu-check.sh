#!/usr/bin/env bash
# The GPU checks, in one go, for a machine with an NVIDIA GPU and no network (a lent GPU machine whose
# Python already has numba-cuda, torch, CuPy, scikit-build-core and CMake): installs fastopt from
# this checkout (wheels in .whl/ go first on the path: cffi and pycparser where the machine lacks them,
# numpy<2.5 where its numpy is 2.5, which numba-cuda 0.30 cannot import with), then runs the
# CUDA tests on the GPU, the PyTorch drop-in tests (their CUDA cases included) and the GPU benchmark.
# Logs and JSON go to $OUT (default /tmp/fastopt-gpu).  Name the phases to run (all by default).
#
#     bash bench/gpu-check.sh [cuda-tests] [torch-tests] [bench] [profile]
#
# CUDA_TESTS_K / TORCH_TESTS_K: pytest -k expressions for the two test phases.
set -u
OUT=${OUT:-/tmp/fastopt-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NUMBA_ENABLE_CUDASIM=0 CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
PY=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit
    export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/machine.txt"
$PY -m pip list 2>/dev/null | grep -iE "^(numba|numba-cuda|torch|cupy-cuda[0-9x]+|cuda-bindings|numpy|ml.dtypes|cffi) " \
    | tee -a "$OUT/machine.txt"

phase() { echo "== $1 ($(date +%T))"; }
want() { [ -z "$PHASES" ] || [[ " $PHASES " == *" $1 "* ]]; }
PHASES="$*"
phase install
$PY -m pip install -q --no-build-isolation --no-deps --no-index . >"$OUT/install.log" 2>&1 || { tail -30 "$OUT/install.log"; exit 1; }
cd tests || exit
$PY -c "import fastopt, json; print(json.dumps(fastopt.info()))"

phase "compile every kernel (first import on this machine)"
$PY -c "
import time; t = time.perf_counter()
import fastopt.cuda as c; n = c.precompile()
print(n, 'signatures in %.1f s' % (time.perf_counter() - t))" >"$OUT/compile.log" 2>&1
tail -20 "$OUT/compile.log"
grep -q signatures "$OUT/compile.log" || exit 1

if want cuda-tests; then
    phase "tests: test_cuda.py on the GPU"
    timeout 240 $PY -m pytest -q -p no:cacheprovider -rs --durations=5 test_cuda.py ${CUDA_TESTS_K:+-k "$CUDA_TESTS_K"} 2>&1 | tee "$OUT/test_cuda.log" | tail -40
fi
if want bench; then
    phase "benchmark: python -m fastopt.bench.gpu"
    timeout 150 $PY -m fastopt.bench.gpu --repeats 20 --json "$OUT/bench-gpu.json" 2>&1 | tee "$OUT/bench-gpu.txt"
fi
if want torch-tests; then
    phase "tests: test_torch_dropin.py (CUDA cases included)"
    timeout 120 $PY -m pytest -q -p no:cacheprovider -rs test_torch_dropin.py ${TORCH_TESTS_K:+-k "$TORCH_TESTS_K"} 2>&1 \
        | tee "$OUT/test_torch_dropin.log" | tail -15
fi
if want profile; then
    phase "profile: where a 20-tensor AdamW step's host time goes"
    timeout 60 $PY -m fastopt.bench.gpu --profile 2>&1 | tee "$OUT/profile.txt" | head -70 | cut -c1-150
fi
phase done
