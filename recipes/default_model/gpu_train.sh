#!/usr/bin/env bash
# The default model's recipe on a leased CUDA machine, in one go (steps 3-4 of README.md, sized by time).
# Needs, under CARRY (default .gpu_carry, ignored by git): corpus/train.jsonl.xz and tokenizer.model
# from steps 1-2. Writes to OUT: pretrain-*.safetensors, lcft-*.safetensors and, with RECALL_MINUTES,
# lcft-recall-*.safetensors (LCFT continued with recall documents) (bf16 weights, at most
# 15 MiB a file) and train.log (the run's output, then both stages' metrics as JSON lines).
#   PRETRAIN_MINUTES=4 LCFT_MINUTES=1 bash recipes/default_model/gpu_train.sh
# Back here:  python recipes/default_model/stage.py export --from-shards OUT/lcft --out models/default
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/gpu_out}"
CARRY="${CARRY:-$PWD/.gpu_carry}"
RUN="${RUN:-/tmp/default-run}"
PY="${PYTHON:-python3}"
WORKERS="${WORKERS:-12}"
DEVICE="${DEVICE:-cuda}"  # DEVICE=cpu PRE_BATCH=1 LCFT_BATCH=1 ... checks the script here
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$RUN/corpus"
cp "$CARRY/corpus/train.jsonl.xz" "$RUN/corpus/" && cp "$CARRY/tokenizer.model" "$RUN/" || exit 1
stage() { "$PY" recipes/default_model/stage.py "$@" --run "$RUN"; }
{
  date -u
  # Pretraining: every training file, four passes with different FIM splits; 32 x 1,024 tokens a step.
  stage pretrain --device "$DEVICE" --max-chars "${MAX_CHARS:--1}" --passes "${PASSES:-4}" --workers "$WORKERS" \
    --micro-batch "${PRE_BATCH:-32}" --warmup "${PRE_WARMUP:-100}" --loss-chunk 16384 --log-every 50 --steps 1000000 \
    --fit-minutes "${PRETRAIN_MINUTES:-4}" \
    && stage shards --stage pretrain --out "$OUT" \
    && date -u \
    && stage lcft --device "$DEVICE" --max-chars "${MAX_CHARS:--1}" --passes 1 --workers "$WORKERS" \
      --micro-batch "${LCFT_BATCH:-8}" --lr 3e-4 --warmup 10 --loss-chunk 16384 --log-every 20 --steps 1000000 \
      --fit-minutes "${LCFT_MINUTES:-1}" \
    && stage shards --stage lcft --out "$OUT" \
    && if [ -n "${RECALL_MINUTES:-}" ]; then
      stage lcft-recall --device "$DEVICE" --max-chars "${MAX_CHARS:--1}" --workers "$WORKERS" \
        --micro-batch "${RECALL_BATCH:-16}" --loss-chunk 16384 --log-every 20 --steps 1000000 \
        --fit-minutes "$RECALL_MINUTES" && stage shards --stage lcft-recall --out "$OUT"
    fi
  rc=$?
  date -u
  for s in pretrain lcft lcft-recall; do
    [ -f "$RUN/$s/metrics.jsonl" ] && sed "s/^{/{\"stage\": \"$s\", /" "$RUN/$s/metrics.jsonl" | sed 's/^/METRICS /'
  done
  echo "gpu_train exit status: $rc"
} 2>&1 | tee "$OUT/train.log"
