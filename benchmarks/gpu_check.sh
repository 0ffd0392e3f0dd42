#!/usr/bin/env bash
# One prepared GPU check for a session that draws a CUDA machine (H100/H200; 8 minutes at most).
# Installs nothing: the machine's python3 has torch, triton, transformers and pytest.
#   1. the kernel tests on CUDA (Triton kernels vs the PyTorch reference in fp32 and bf16, the
#      int8/int4 quantized matmul vs the dequantize reference, and the CUDA-graph decode vs eager);
#   2. benchmarks/gpu_bench.py: 7B-shaped random bf16 weights, decode tok/s at 1K/16K/100K vs the
#      HBM limit (eager and CUDA graph), prefill 16K/100K (chunked), warm-keystroke latency,
#      transformers on the same weights, decode tok/s with int8 and int4 weights, peak memory.
# Everything lands in $OUT (the device tool's folder; ./gpu_out when unset): tests.log (the machine,
# then the tests), bench.log, gpu_bench.md (the table). Extra arguments go to gpu_bench.py.
#
# Run from the repository root:
#   bash benchmarks/gpu_check.sh            # both phases
#   bash benchmarks/gpu_check.sh tests      # only the kernel tests
#   bash benchmarks/gpu_check.sh bench ...  # only the benchmark (with gpu_bench.py arguments)
# Time limits (seconds): TESTS_TIMEOUT (240), BENCH_TIMEOUT (330).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
phase="all"
case "${1:-}" in tests|bench) phase="$1"; shift ;; esac
status=0

if [ "$phase" != bench ]; then
  {
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    "$PY" -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__); print(torch.cuda.get_device_name())'
    "$PY" -c 'import transformers; print("transformers", transformers.__version__)' 2>&1
    echo "== kernel tests on CUDA"
    # --confcutdir: only tests/kernels/conftest.py, so the rest of the suite's fixtures (and their
    # dependencies, which this machine may lack) are not needed here.
    timeout "${TESTS_TIMEOUT:-240}" "$PY" -m pytest -q -ra -p no:cacheprovider --confcutdir=tests/kernels tests/kernels
  } 2>&1 | tee "$OUT/tests.log" || status=1
fi

if [ "$phase" != tests ]; then
  echo "== GPU benchmark"
  timeout "${BENCH_TIMEOUT:-330}" "$PY" benchmarks/gpu_bench.py --out "$OUT/gpu_bench.md" "$@" 2>&1 \
    | tee "$OUT/bench.log" || status=1
  [ -f "$OUT/gpu_bench.md" ] && cat "$OUT/gpu_bench.md"
fi
echo "gpu_check exit status: $status"
exit $status
