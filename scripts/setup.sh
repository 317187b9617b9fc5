#!/usr/bin/env bash
# Create .venv and install cogrpo with every plugin package and the exact pin set for this machine.
# Usage: bash scripts/setup.sh            (idempotent; re-run after pulling)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements/cpu.txt
.venv/bin/python -m pip install --quiet --no-deps -r requirements/cpu-nodeps.txt
echo "cogrpo installed in .venv ($(.venv/bin/python -c 'import cogrpo; print(cogrpo.__version__)'))"
