#!/usr/bin/env bash
# Train the shipped Fashion-MNIST classifiers (issue 6), one after another, on one CPU thread:
#   fashion-classifier          clean classifier: the feature extractor of `sdelab evaluate` (FD / IS)
#   fashion-tdc-<sde>           time-dependent (noisy) classifiers for classifier guidance
# and, with NAMES=fashion-cond-vp-linear, the class-conditional ScoreNet (label dropout 0.1) of
# classifier-free guidance.
#
# Each is reproduced by exactly one command (also stored in its card's "command" field):
#   sdelab train --config tools/configs/<name>.json --run-dir runs/<name> --export checkpoints/<name>
# Export scores the EMA weights on the test split (accuracy; for noisy classifiers accuracy against t)
# and writes it into the card's "metrics".
#
# Resumable like tools/train_checkpoints.sh: a finished model is skipped, an interrupted one
# continues from runs/<name>/state.pt. Logs: runs/<name>/log.txt. With COMMIT=1 (the default) each
# finished checkpoint's two files are committed by path.
#
# Usage (from the repository root):  nohup tools/train_classifiers.sh > runs/train_classifiers.out 2>&1 &
set -u
cd "$(dirname "$0")/.."
PY=${SDELAB_PYTHON:-.venv/bin/python}
COMMIT=${COMMIT:-1}
NAMES=${NAMES:-"fashion-classifier fashion-tdc-vp-linear fashion-tdc-subvp-linear fashion-tdc-ve"}
for name in $NAMES; do
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
         && git commit -q -m "Checkpoint $name: trained on Fashion-MNIST by tools/train_classifiers.sh" \
              -- "checkpoints/$name.json" "checkpoints/$name.safetensors"; then
        echo "$(date -Is) $name: committed"; break
      fi
      sleep 5
    done
  fi
done
echo "$(date -Is) all done"
