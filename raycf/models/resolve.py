"""Model names (see raycf.models) to folders: a built-in is built (or found) in the cache, a folder is checked to
be one, a hub name is downloaded only with model.allow_download."""
from __future__ import annotations

from pathlib import Path

from raycf.errors import ModelError
from raycf.models.builtin import BUILTIN, SMOLLM2_WHEEL
from raycf.models.folder import hidden_size, is_model_folder
from raycf.models.pretrain import shipped_dir
from raycf.models.smollm2 import smollm2_available, smollm2_dir
from raycf.models.tiny import tiny_model_dir


def resolve_model_dir(name: str, *, allow_download: bool = False, seed: int = 0,
                      cache_dir: Path | None = None, key: str = "model.name",
                      download_flag: str = "model.allow_download=true") -> Path:
    """The folder holding model `name` (see raycf.models), building it if it is a built-in. key: the setting that
    named the model, first in an error message; download_flag: how to allow a hub name."""
    if name in ("tiny-causal", "tiny-seq2seq"):
        return tiny_model_dir(name, seed=0, cache_dir=cache_dir)  # init is fixed; `seed` drives training
    if name == "raycf-tiny":
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
                     f"for a hub model (org/name) give {download_flag}")


def peek_hidden_size(name: str, *, allow_download: bool = False, cache_dir: Path | None = None) -> int | None:
    """Hidden size of model `name` WITHOUT building it (dry runs, validation): None for a hub model.
    Raises ModelError for a name that is neither a built-in, a model folder, nor an allowed hub name."""
    if name == "smollm2-135m" and not smollm2_available(cache_dir):
        raise ModelError(SMOLLM2_WHEEL)
    if name in BUILTIN:
        return BUILTIN[name]
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
