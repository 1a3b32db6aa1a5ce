#!/usr/bin/env bash
# Train the shipped Fashion-MNIST checkpoints (issues 6 and 7), one after another:
#   fashion-<sde>               ScoreNets, <sde> in ve, vp-linear, vp-cosine, subvp-linear, subvp-cosine
#   fashion-classifier          clean classifier: the feature extractor of `sdelab evaluate` (FD / IS)
#   fashion-tdc-<sde>           time-dependent (noisy) classifiers for classifier guidance
#   fashion-cond-vp-linear      class-conditional ScoreNet (label dropout 0.1) for classifier-free guidance
#
# Each model is reproduced by exactly one command (also stored in its card's "command" field):
#   sdelab train --config tools/configs/<name>.json --run-dir runs/<name> --export checkpoints/<name>
# Export writes the card; classifiers are scored on the test split at export (accuracy; for noisy
# classifiers accuracy against t). Sample metrics come later from tools/evaluate_checkpoints.py.
#
# The script is resumable: a finished model (card + weights in checkpoints/) is skipped, an
# interrupted one continues from runs/<name>/state.pt (saved every 250 steps) with the same loss
# trajectory. Logs: runs/<name>/log.txt. With COMMIT=1 (the default) each finished checkpoint's two
# files are committed by path as soon as they exist. NAMES="..." trains a subset.
#
# Usage (from the repository root):  nohup tools/train_checkpoints.sh > runs/train_checkpoints.out 2>&1 &
set -u
cd "$(dirname "$0")/.."
PY=${SDELAB_PYTHON:-.venv/bin/python}
COMMIT=${COMMIT:-1}
NAMES=${NAMES:-"fashion-ve fashion-vp-linear fashion-vp-cosine fashion-subvp-linear fashion-subvp-cosine
  fashion-classifier fashion-tdc-vp-linear fashion-tdc-subvp-linear fashion-tdc-ve fashion-cond-vp-linear"}
for name in $NAMES; do
  if [ -f "checkpoints/$name.json" ] && [ -f "checkpoints/$name.safetensors" ]; then
    echo "$(date -Is) $name: already exported, skipping"; continue
  fi
  if [ ! -f "tools/configs/$name.json" ]; then
    echo "$(date -Is) $name: no tools/configs/$name.json, skipped"; continue
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
         && git commit -q -m "Checkpoint $name: trained on Fashion-MNIST by tools/train_checkpoints.sh" \
              -- "checkpoints/$name.json" "checkpoints/$name.safetensors"; then
        echo "$(date -Is) $name: committed"; break
      fi
      sleep 5
    done
  fi
done
echo "$(date -Is) all done"
