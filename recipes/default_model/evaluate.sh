#!/usr/bin/env bash
# The model card's metrics (models/default/MODEL_CARD.md), before and after LCFT, with `python -m engine eval`.
#   BEFORE=/work/runs/default/pretrain-model OUT=/work/runs/default/eval recipes/default_model/evaluate.sh
# BEFORE: the pretraining-stage model (stage.py export --from-shards .../pretrain --out BEFORE);
# AFTER: the shipped model (models/default). Each task writes OUT/<task>.md and OUT/<task>.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
RUN=${RUN:-/work/runs/default}
BEFORE=${BEFORE:-$RUN/pretrain-model}
AFTER=${AFTER:-models/default}
OUT=${OUT:-$RUN/eval}
HELDOUT="$RUN/corpus/heldout.jsonl"
mkdir -p "$OUT"
ev() { task=$1; shift; $PY -m engine eval "$task" --model "$AFTER" --model "$BEFORE" --threads 2 --quiet \
  --json-out "$OUT/$task.json" "$@" | tee "$OUT/$task.md"; }
ev humaneval --formats spm psm
ev infill --data-jsonl "$HELDOUT" --formats spm psm --samples 500
ev keys --data-jsonl "$HELDOUT" --lengths 1024 2048 4096 --samples 8
ev perplexity --data-jsonl "$HELDOUT" --lengths 512 1024 2048 4096 --plot "$OUT/perplexity.png"
# Whether each model continues the prefix where a middle begins, PSM against SPM (fim_boundary.py).
for m in "$AFTER" "$BEFORE"; do $PY recipes/default_model/fim_boundary.py --model "$m" --data-jsonl "$HELDOUT"; done \
  | tee "$OUT/fim_boundary.md"
