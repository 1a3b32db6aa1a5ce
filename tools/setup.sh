#!/usr/bin/env bash
# Create the virtual environment and install everything sdelab, its book and its tests need.
# Usage: bash tools/setup.sh [VENV_DIR]
set -euo pipefail
venv=${1:-.venv}
cd "$(dirname "$0")/.."

python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[book,test,data]"

# Fashion-MNIST offline: Debian's package installs it under /usr/share/datasets/fashion-mnist.
# Without it, sdelab.data downloads it with torchvision when online.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
      || echo "note: could not install dataset-fashion-mnist; chapters will download Fashion-MNIST"
  else
    echo "note: for offline Fashion-MNIST run: sudo apt-get install dataset-fashion-mnist"
  fi
fi
"$venv/bin/python" -c "import sdelab, torch; print('sdelab', sdelab.__version__, '| torch', torch.__version__, '| device', sdelab.default_device())"
