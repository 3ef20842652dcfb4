#!/usr/bin/env bash
# Train the two shipped checkpoints and their same-budget Transformer baselines, then
# evaluate all four on 1000 held-out (test-split) sequences with `python -m pulse.evaluate`.
#
#   scripts/train_checkpoints.sh [OUT_DIR]        (default: runs/shipped; PYTHON=python3)
#
# Three lanes share one GPU: story-world PULSE | recall PULSE, then recall Transformer |
# story-world Transformer. Extra arguments for every run can be given in TRAIN_ARGS
# (e.g. TRAIN_ARGS="--set train.max_time_s=400"). Copy runs/shipped/<name> (without its
# checkpoints/ folder) to checkpoints/<name> to ship it.
set -uo pipefail
OUT=${1:-runs/shipped}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
run() {  # run CONFIG NAME
  $PY -m pulse.train --config "configs/$1.yaml" --out "$OUT/$2" --no-progress ${TRAIN_ARGS:-} \
    > "$OUT/$2.train.log" 2>&1
  echo "$2: train exit $? ($(date +%T))"
}
start=$(date +%s)
run story_world_pulse story-world-pulse &
(run recall_pulse recall-pulse; run recall_transformer recall-transformer) &
run story_world_transformer story-world-transformer &
wait
echo "training wall time: $(( $(date +%s) - start )) s"
for name in story-world-pulse story-world-transformer recall-pulse recall-transformer; do
  [ -f "$OUT/$name/config.json" ] || { echo "$name: no model"; continue; }
  $PY -m pulse.evaluate --checkpoint "$OUT/$name" --n 1000 --split test --json "$OUT/$name/eval_test.json" \
    > "$OUT/$name.eval.log" 2>&1
  echo "$name: $(tail -n 1 "$OUT/$name.eval.log")"
done
