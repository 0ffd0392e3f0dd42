#!/usr/bin/env bash
# The default model, end to end (see README.md). Every step can be rerun; training steps resume.
#   RUN=/work/runs/default PRETRAIN_MINUTES=60 LCFT_MINUTES=25 RECALL_MINUTES=95 recipes/default_model/build.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
RUN=${RUN:-/work/runs/default}
[ -f "$RUN/corpus/train.jsonl" ] || $PY recipes/default_model/build_corpus.py --out "$RUN/corpus"
[ -f "$RUN/tokenizer.model" ] || $PY recipes/default_model/train_tokenizer.py --run "$RUN"
nice -n 10 $PY recipes/default_model/stage.py pretrain --run "$RUN" --steps 100000 --resume \
    --max-minutes "${PRETRAIN_MINUTES:-60}"
nice -n 10 $PY recipes/default_model/stage.py lcft --run "$RUN" --steps "${LCFT_STEPS:-40}" --resume \
    --max-minutes "${LCFT_MINUTES:-25}"
# LCFT continued with recall documents, the cosine fitted to the minutes (no --resume: see README.md).
[ -d "$RUN/lcft-recall" ] || nice -n 10 $PY recipes/default_model/stage.py lcft-recall --run "$RUN" \
    --steps 100000 --fit-minutes "${RECALL_MINUTES:-95}"
$PY recipes/default_model/stage.py export --run "$RUN" --out models/default
