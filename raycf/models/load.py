"""Loading a model folder (only as its safety checks allow) and adding a fresh LoRA adapter."""
from __future__ import annotations

from pathlib import Path

from raycf.errors import ModelError, did_you_mean
from raycf.models.folder import model_kind, unsafe_problems


def load_model(model_dir: Path, *, dtype: str = "float32", trust_remote_code: bool = False,
               allow_pickle: bool = False):
    """Model + tokenizer from a folder; causal or seq2seq decided by its config.
    trust_remote_code: run the folder's own model code (auto_map). allow_pickle: load pickle weights
    (pytorch_model.bin) when the folder has no safetensors; off, such a folder raises ModelError."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    unsafe = unsafe_problems(model_dir, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    if unsafe:
        raise ModelError(unsafe[0])
    auto = AutoModelForSeq2SeqLM if model_kind(model_dir) == "seq2seq" else AutoModelForCausalLM
    model = auto.from_pretrained(model_dir, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code,
                                 use_safetensors=None if allow_pickle else True)
    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def add_lora(model, rank: int, alpha: float, dropout: float, target_modules, fused: bool = True):
    """Wrap `model` with a fresh LoRA adapter. target_modules 'auto' = every linear layer but the head.
    fused: compute each adapted layer as one autograd op (raycf.lora; same math, faster); False keeps
    PEFT's own forward (what the training benchmark's peer runs)."""
    from peft import LoraConfig, TaskType, get_peft_model
    from raycf.lora import fuse

    task = TaskType.SEQ_2_SEQ_LM if model.config.is_encoder_decoder else TaskType.CAUSAL_LM
    targets = "all-linear" if target_modules in (None, "auto") else list(target_modules)
    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type=task)
    model = get_peft_model(model, cfg)
    if fused:
        fuse(model)
    return model


def target_module_problems(model_dir: Path, targets, trust_remote_code: bool = False) -> list[str]:
    """LoRA target module names that match no module of the model (built on the meta device: no weights read)."""
    if targets in (None, "auto"):
        return []
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) and t for t in targets):
        return [f"finetune.target_modules: expected auto or a list of module names, got {targets!r}"]
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    auto = AutoModelForSeq2SeqLM if model_kind(model_dir) == "seq2seq" else AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(config, trust_remote_code=trust_remote_code)
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
    bad = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    return [f"finetune.target_modules: {t!r} matches no linear layer of the model{did_you_mean(t, leaves)}"
            for t in bad]
