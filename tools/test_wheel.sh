#!/usr/bin/env bash
# The Colab path, offline: every chapter runs from an installed sdelab, not from this checkout.
#
#   bash tools/test_wheel.sh [book/NN_name.ipynb ...]     (default: every book/*.ipynb)
#
# 1. builds the sdist from this tree, then the wheel from the sdist (so both carry the shipped
#    models: checkpoints/ becomes sdelab/_shipped/ in the package);
# 2. makes a fresh virtual environment outside the repository and installs torch, then the wheel
#    with the [chapters] extra (what a chapter's first cell installs in Colab) and the test tools;
# 3. copies the chapters to a folder outside the repository, checks that `import sdelab` finds
#    the venv's site-packages (not this checkout), and runs them with nbval: the stored outputs
#    must be reproduced, with the same sanitizing rules as the in-repo run.
#
# Settings (environment): SDELAB_WHEEL_DIR (default /tmp/sdelab-wheel-test; emptied first),
# PYTHON (the interpreter the venv is made from; default python3), TORCH_SPEC (default
# "torch==2.14.1 torchvision==0.29.1": the versions the chapters' outputs were made with),
# SDELAB_WHEEL_KEEP=1 (keep the venv after a pass; it is always kept after a failure).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${SDELAB_WHEEL_DIR:-/tmp/sdelab-wheel-test}
python=${PYTHON:-python3}
torch_spec=${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
export GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-1000} PIP_DISABLE_PIP_VERSION_CHECK=1
case "$work" in "$repo"|"$repo"/*) echo "SDELAB_WHEEL_DIR must be outside the repository" >&2; exit 2;; esac

if [ $# -gt 0 ]; then
  notebooks=()
  for nb in "$@"; do notebooks+=("$(cd "$(dirname "$nb")" && pwd)/$(basename "$nb")"); done
else
  notebooks=("$repo"/book/*.ipynb)
fi
start=$(date +%s)
step() { echo "[test_wheel $(( $(date +%s) - start )) s] $*"; }

rm -rf "$work"
mkdir -p "$work/dist" "$work/run"
step "building the sdist, then the wheel from it"
"$python" -m venv "$work/build-venv"
"$work/build-venv/bin/pip" install -q -U "setuptools>=77"
(cd "$repo" && "$work/build-venv/bin/python" -c \
  "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))" "$work/dist" \
  | tail -n 1)
"$work/build-venv/bin/pip" wheel -q --no-deps --no-build-isolation -w "$work/dist" "$work"/dist/sdelab-*.tar.gz
wheel=$(ls "$work"/dist/sdelab-*.whl)
step "wheel $(basename "$wheel"): $(du -k "$wheel" | cut -f1) KiB"

step "fresh venv $work/venv: $torch_spec"
"$python" -m venv "$work/venv"
venv_py="$work/venv/bin/python"
# shellcheck disable=SC2086
"$venv_py" -m pip install -q $torch_spec
step "installing the wheel with [chapters] and the test tools"
"$venv_py" -m pip install -q "sdelab[chapters,test] @ file://$wheel"

cp "${notebooks[@]}" "$work/run/"
cp "$repo/tests/nbval_sanitize.cfg" "$work/run/"
cd "$work/run"
# Nothing of the checkout may leak in: no PYTHONPATH, a folder outside the repository.
unset PYTHONPATH
"$venv_py" - "$work/venv" <<'EOF'
import sys
from pathlib import Path

import sdelab
from sdelab import checkpoints

venv, where = Path(sys.argv[1]).resolve(), Path(sdelab.__file__).resolve()
assert venv in where.parents and "site-packages" in where.parts, f"sdelab imported from {where}"
names = checkpoints.available()
assert len(names) >= 1 and checkpoints.registry_dir().is_relative_to(where.parent), names
checkpoints.load(names[0])  # sha256 checked
print(f"sdelab from {where.parent}; {len(names)} shipped models in {checkpoints.registry_dir()}")
EOF
step "nbval on ${#notebooks[@]} chapter(s) from $work/run"
"$venv_py" -m pytest -p no:cacheprovider -q -ra --nbval --nbval-current-env \
  --nbval-sanitize-with nbval_sanitize.cfg --rootdir "$work/run" ./*.ipynb
step "done"
# The venv holds torch (several GB): removed after a pass unless SDELAB_WHEEL_KEEP=1.
if [ "${SDELAB_WHEEL_KEEP:-0}" != 1 ]; then rm -rf "$work/venv" "$work/build-venv"; fi
