#!/usr/bin/env bash
# One GPU call: the bank training-speed benchmark, then the demo models trained side by side
# (bank-only variants and the full PULSE story model). Results go to $OUT (or ./gpu_out).
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT" runs/gpu
export PYTHONPATH=. PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/bench.txt"
[ "${SKIP_BENCH:-0}" = 1 ] || $PY benchmarks/bank_training_speed.py --batch 256 --steps 20 2>&1 | tee -a "$OUT/bench.txt"
C=configs/story_world_bank.yaml
train() { name=$1; shift; $PY -m pulse.train --no-progress --out runs/gpu/$name "$@" > runs/gpu/$name.log 2>&1; }
train bank-mass --config $C &
train bank-mean-comm --config $C --set model.state_write_mode=mean --set model.state_communication=true &
train bank-mass-comm --config $C --set model.state_communication=true &
[ "${SKIP_FULL:-0}" = 1 ] || train bank-mass-lr2 --config $C --lr 2e-3 &
[ "${SKIP_FULL:-0}" = 1 ] || train pulse-full --config configs/story_world_pulse.yaml &
wait
for d in runs/gpu/*/; do n=$(basename "$d"); rm -rf "$d/checkpoints"; tar czf "$OUT/$n.tgz" -C runs/gpu "$n" "$n.log"; done
tail -n 3 runs/gpu/*.log > "$OUT/summary.txt"
