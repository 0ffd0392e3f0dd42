#!/usr/bin/env bash
# The default model's recipe on a leased CUDA machine, in one go (steps 3-4 of README.md, sized by time).
# Needs, under CARRY (default .gpu_carry, ignored by git): corpus/train.jsonl.xz and tokenizer.model
# from steps 1-2. Writes to OUT: pretrain-*.safetensors, lcft-*.safetensors and, with RECALL_MINUTES,
# lcft-recall-*.safetensors (LCFT continued with recall documents) and, with SERVED_MINUTES too,
# served-*.safetensors (trained on the language server's own prompts) (bf16 weights, at most 15 MiB a
# file) and train.log (the run's output, then every stage's metrics as JSON lines).
#   PRETRAIN_MINUTES=4 LCFT_MINUTES=1 bash recipes/default_model/gpu_train.sh
# SHAPE (stage.py's SHAPES, default 320x8, the shipped model's) trains a larger model through every
# stage. The served stage's examples take the language server's context builder about four minutes
# on one core: build them here first (`stage.py prepare --stage served --run $RUN`) and carry
# $RUN/streams/served.{bin,json} as CARRY/streams/ (19 MB); the other streams are built there.
#   SHAPE=448x10 PRETRAIN_MINUTES=4 LCFT_MINUTES=1 RECALL_MINUTES=1 SERVED_MINUTES=1 bash recipes/default_model/gpu_train.sh
# Back here:  python recipes/default_model/stage.py export --from-shards OUT/lcft --out models/default
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/gpu_out}"
CARRY="${CARRY:-$PWD/.gpu_carry}"
RUN="${RUN:-/tmp/default-run}"
PY="${PYTHON:-python3}"
WORKERS="${WORKERS:-12}"
DEVICE="${DEVICE:-cuda}"  # DEVICE=cpu PRE_BATCH=1 LCFT_BATCH=1 ... checks the script here
SHAPE="${SHAPE:-320x8}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$RUN/corpus"
cp "$CARRY/corpus/train.jsonl.xz" "$RUN/corpus/" && cp "$CARRY/tokenizer.model" "$RUN/" || exit 1
if [ -d "$CARRY/streams" ]; then mkdir -p "$RUN/streams" && cp "$CARRY"/streams/* "$RUN/streams/"; fi
stage() { "$PY" recipes/default_model/stage.py "$@" --run "$RUN"; }
train() { stage "$@" --shape "$SHAPE" --device "$DEVICE" --loss-chunk 16384 --steps 1000000; }
{
  date -u
  # Pretraining: every training file, four passes with different FIM splits; 32 x 1,024 tokens a step.
  echo "shape $SHAPE"
  train pretrain --max-chars "${MAX_CHARS:--1}" --passes "${PASSES:-4}" --workers "$WORKERS" \
    --micro-batch "${PRE_BATCH:-32}" --warmup "${PRE_WARMUP:-100}" --log-every 50 --fit-minutes "${PRETRAIN_MINUTES:-4}" \
    && stage shards --stage pretrain --out "$OUT" \
    && date -u \
    && train lcft --max-chars "${MAX_CHARS:--1}" --passes 1 --workers "$WORKERS" \
      --micro-batch "${LCFT_BATCH:-8}" --lr 3e-4 --warmup 10 --log-every 20 --fit-minutes "${LCFT_MINUTES:-1}" \
    && stage shards --stage lcft --out "$OUT" \
    && if [ -n "${RECALL_MINUTES:-}" ]; then
      train lcft-recall --max-chars "${RECALL_CHARS:-0}" --workers "$WORKERS" \
        --micro-batch "${RECALL_BATCH:-16}" --log-every 20 --fit-minutes "$RECALL_MINUTES" \
        && stage shards --stage lcft-recall --out "$OUT" \
        && if [ -n "${SERVED_MINUTES:-}" ]; then
          train served --workers "$WORKERS" --micro-batch "${SERVED_BATCH:-16}" --log-every 20 \
            --fit-minutes "$SERVED_MINUTES" && stage shards --stage served --out "$OUT"
        fi
    fi
  rc=$?
  date -u
  for s in pretrain lcft lcft-recall served; do
    [ -f "$RUN/$s/metrics.jsonl" ] && sed "s/^{/{\"stage\": \"$s\", /" "$RUN/$s/metrics.jsonl" | sed 's/^/METRICS /'
  done
  echo "gpu_train exit status: $rc"
} 2>&1 | tee "$OUT/train.log"
