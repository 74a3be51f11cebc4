#!/usr/bin/env bash
# Create .venv and install raycf with test and peer extras. On a machine without CUDA, torch is pinned
# by constraints-cpu.txt so pip takes the CPU build instead of several GB of CUDA wheels.
#   bash scripts/setup.sh            # CPU (default)
#   RAYCF_GPU=1 bash scripts/setup.sh  # let pip pick torch for a CUDA machine
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
constraints=(-c constraints-cpu.txt)
[ "${RAYCF_GPU:-0}" = "1" ] && constraints=()
python -m pip install -q "${constraints[@]}" -e ".[test,peer]"
