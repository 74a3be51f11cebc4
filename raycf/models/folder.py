"""A model folder read before anything loads it: its config.json, and what would make it unusable or unsafe
(the folder's own code without trust_remote_code, pickle weights without allow_pickle, no weights, no tokenizer,
a tokenizer larger than the embedding matrix)."""
from __future__ import annotations

import json
from pathlib import Path

from raycf.errors import ModelError


PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt")


def is_model_folder(path: Path) -> bool:
    return (path / "config.json").exists()


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


def architecture_problems(model_dir: Path, kind: str = "auto", key: str = "model.name") -> list[str]:
    """A config.json transformers cannot build (no or an unknown model_type), or one whose kind (causal or
    seq2seq) contradicts model.kind."""
    from transformers import CONFIG_MAPPING
    try:
        cfg = read_config(model_dir, key)
    except ModelError as e:
        return [str(e)]
    path = Path(model_dir) / "config.json"
    model_type = cfg.get("model_type")
    if not model_type:
        return [f"{key}: {path}: no model_type; save the model with save_pretrained (transformers writes it)"]
    if model_type not in CONFIG_MAPPING and not cfg.get("auto_map"):
        return [f"{key}: {path}: model_type {model_type!r} is not known to this transformers; upgrade transformers "
                f"or give a folder of a supported architecture"]
    actual = "seq2seq" if cfg.get("is_encoder_decoder") else "causal"
    if kind != "auto" and kind != actual:
        return [f"model.kind: {kind}, but {path} is a {actual} model (is_encoder_decoder: "
                f"{bool(cfg.get('is_encoder_decoder'))}); set model.kind=auto or {actual}"]
    return []
