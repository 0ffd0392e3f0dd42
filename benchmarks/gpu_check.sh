#!/usr/bin/env bash
# One prepared GPU check for a session that draws a CUDA machine (H100/H200; 8 minutes at most).
# Installs nothing: the machine's python3 has torch, triton, transformers and pytest.
#   1. the kernel tests on CUDA (Triton kernels vs the PyTorch reference in fp32 and bf16, the
#      int8/int4 quantized matmul vs the dequantize reference, and the CUDA-graph decode vs eager);
#   2. benchmarks/gpu_bench.py: 7B-shaped random bf16 weights, decode tok/s at 1K/16K/100K vs the
#      HBM limit (eager and CUDA graph), prefill 16K/100K (chunked), warm-keystroke latency,
#      transformers on the same weights, decode tok/s with int8 and int4 weights, peak memory;
#   3. kv8: gpu_bench.py again with the int8 KV cache (issue 16): decode at 16K and 100K (eager, CUDA
#      graph, vs the bandwidth limit of the int8 bytes), KV GiB and peak memory. KV8_ARGS adds options,
#      e.g. KV8_ARGS="--quant int4" for the acceptance point (7B shape, int4 weights + int8 KV, 100K;
#      the int8 KV cache alone is 25 GiB there, see benchmarks/RESULTS.md).
#   4. served (only when named, not in "all"): benchmarks/served_bench.py (issue 17): the language
#      server's completion path, LocalBackend.complete, with cudaGraphs on and off, against the raw
#      CUDA-graph and eager decode loops at 16K on the same 7B-shaped weights, and a warm keystroke's
#      time to the first token at 16K (about a minute). SERVED_ARGS adds options (e.g. --context 1024).
# Everything lands in $OUT (the device tool's folder; ./gpu_out when unset): tests.log (the machine,
# then the tests), bench.log, gpu_bench.md (the table), kv8.log, gpu_bench_kv8.md, served.log,
# served_bench.md. Extra arguments go to gpu_bench.py (bench phase).
#
# Run from the repository root:
#   bash benchmarks/gpu_check.sh            # all three phases
#   bash benchmarks/gpu_check.sh tests      # only the kernel tests
#   bash benchmarks/gpu_check.sh bench ...  # only the benchmark (with gpu_bench.py arguments)
#   bash benchmarks/gpu_check.sh kv8        # only the int8 KV cache benchmark
#   bash benchmarks/gpu_check.sh served     # only the served-path benchmark
#   bash benchmarks/gpu_check.sh tests served   # the kernel tests, then the served-path benchmark
# Time limits (seconds): TESTS_TIMEOUT (240), BENCH_TIMEOUT (330), KV8_TIMEOUT (200), SERVED_TIMEOUT
# (180). All three phases of "all" can pass the device tool's 10 minutes per command: then run one
# phase per call (`tests`, `bench`, `kv8`).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
phase="all"
case "${1:-}" in tests|bench|kv8|served) phase="$1"; shift ;; esac
served=no
[ "$phase" = served ] && served=yes
if [ "$phase" = tests ] && [ "${1:-}" = served ]; then served=yes; shift; fi
status=0

if [ "$phase" = all ] || [ "$phase" = tests ]; then
  {
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    "$PY" -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__); print(torch.cuda.get_device_name())'
    "$PY" -c 'import transformers; print("transformers", transformers.__version__)' 2>&1
    echo "== kernel tests on CUDA"
    # --confcutdir: only tests/engine/kernels/conftest.py, so the rest of the suite's fixtures (and their
    # dependencies, which this machine may lack) are not needed here.
    timeout "${TESTS_TIMEOUT:-240}" "$PY" -m pytest -q -ra -p no:cacheprovider --confcutdir=tests/engine/kernels tests/engine/kernels
  } 2>&1 | tee "$OUT/tests.log" || status=1
fi

if [ "$phase" = all ] || [ "$phase" = bench ]; then
  echo "== GPU benchmark"
  timeout "${BENCH_TIMEOUT:-330}" "$PY" benchmarks/gpu_bench.py --out "$OUT/gpu_bench.md" "$@" 2>&1 \
    | tee "$OUT/bench.log" || status=1
  [ -f "$OUT/gpu_bench.md" ] && cat "$OUT/gpu_bench.md"
fi

if [ "$phase" = all ] || [ "$phase" = kv8 ]; then
  echo "== GPU benchmark, int8 KV cache"
  # shellcheck disable=SC2086  # KV8_ARGS is a list of options
  timeout "${KV8_TIMEOUT:-200}" "$PY" benchmarks/gpu_bench.py --kv-cache-dtype int8 \
    --decode-contexts 16384 100000 --keystroke-contexts 16384 --skip hf \
    --out "$OUT/gpu_bench_kv8.md" ${KV8_ARGS:-} 2>&1 | tee "$OUT/kv8.log" || status=1
  [ -f "$OUT/gpu_bench_kv8.md" ] && cat "$OUT/gpu_bench_kv8.md"
fi
if [ "$served" = yes ]; then
  echo "== served path: LocalBackend.complete vs the raw decode loops"
  # shellcheck disable=SC2086  # SERVED_ARGS is a list of options
  timeout "${SERVED_TIMEOUT:-180}" "$PY" benchmarks/served_bench.py --out "$OUT/served_bench.md" ${SERVED_ARGS:-} 2>&1 \
    | tee "$OUT/served.log" || status=1
  [ -f "$OUT/served_bench.md" ] && cat "$OUT/served_bench.md"
fi
echo "gpu_check exit status: $status"
exit $status
