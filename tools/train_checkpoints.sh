#!/usr/bin/env bash
# Train the five shipped Fashion-MNIST ScoreNet checkpoints (issue 7), one after another.
#
# Each model is reproduced by exactly one command (also stored in its card's "command" field):
#   sdelab train --config tools/configs/fashion-<sde>.json --run-dir runs/fashion-<sde> --export checkpoints/fashion-<sde>
# for <sde> in ve, vp-linear, vp-cosine, subvp-linear, subvp-cosine.
#
# The script is resumable: a finished model (card + weights in checkpoints/) is skipped, an
# interrupted one continues from runs/fashion-<sde>/state.pt (saved every 250 steps) with the same
# loss trajectory. Logs: runs/fashion-<sde>/log.txt. With COMMIT=1 (the default) each finished
# checkpoint's two files are committed by path as soon as they exist.
#
# Usage (from the repository root):  nohup tools/train_checkpoints.sh > runs/train_checkpoints.out 2>&1 &
set -u
cd "$(dirname "$0")/.."
PY=${SDELAB_PYTHON:-.venv/bin/python}
COMMIT=${COMMIT:-1}
SDES=${SDES:-"ve vp-linear vp-cosine subvp-linear subvp-cosine"}
for sde in $SDES; do
  name="fashion-$sde"
  if [ -f "checkpoints/$name.json" ] && [ -f "checkpoints/$name.safetensors" ]; then
    echo "$(date -Is) $name: already exported, skipping"; continue
  fi
  mkdir -p "runs/$name"
  echo "$(date -Is) $name: training"
  if ! "$PY" -m sdelab.cli train --config "tools/configs/$name.json" --run-dir "runs/$name" \
        --export "checkpoints/$name" >> "runs/$name/log.txt" 2>&1; then
    echo "$(date -Is) $name: FAILED, see runs/$name/log.txt"; continue
  fi
  echo "$(date -Is) $name: exported"
  if [ "$COMMIT" = 1 ]; then
    for try in 1 2 3 4 5 6 7 8 9 10; do
      if [ ! -e .git/index.lock ] && git add "checkpoints/$name.json" "checkpoints/$name.safetensors" \
         && git commit -q -m "Checkpoint $name: ScoreNet on Fashion-MNIST ($sde), trained by tools/train_checkpoints.sh" \
              -- "checkpoints/$name.json" "checkpoints/$name.safetensors"; then
        echo "$(date -Is) $name: committed"; break
      fi
      sleep 5
    done
  fi
done
echo "$(date -Is) all done"
