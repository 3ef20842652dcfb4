#!/usr/bin/env bash
# One GPU call: the second stage of story-world-pulse and the story-world Transformer baseline,
# side by side. Run folders (without optimizer checkpoints) go to $OUT as one tarball each.
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT" runs/gpu
export PYTHONPATH=. PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt"
train() { name=$1; shift; $PY -m pulse.train --no-progress --out runs/gpu/$name "$@" > runs/gpu/$name.log 2>&1; }
train story-world-pulse-2 --config configs/story_world_pulse_stage2.yaml &
train story-world-transformer --config configs/story_world_transformer.yaml &
wait
for d in runs/gpu/*/; do n=$(basename "$d"); rm -rf "$d/checkpoints"; tar czf "$OUT/$n.tgz" -C runs/gpu "$n" "$n.log"; done
tail -n 3 runs/gpu/*.log > "$OUT/summary.txt"
