"""Tiny models for tests and demos: random-init 2-layer LLaMA- and T5-style models, and the byte-level BPE
tokenizer every tiny model uses, trained once on raycf's offline corpus. Folders are content-addressed under the
cache dir and published atomically, so every process loads the same bytes."""
from __future__ import annotations

import os
from pathlib import Path

from raycf.cache import digest, publish
from raycf.data.corpus import tokenizer_texts
from raycf.models.builtin import TINY_SHAPES, TINY_VOCAB
from raycf.storage import default_cache_dir


SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "</s>", "bos_token": "<s>", "unk_token": "<unk>"}


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

    texts = tokenizer_texts()
    folder = Path(cache_dir or default_cache_dir()) / "tokenizers" / f"bpe{TINY_VOCAB}-{digest(texts, 16)}"
    if not (folder / "tokenizer.json").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        build_tokenizer(texts).save_pretrained(tmp)
        publish(tmp, folder)
    return AutoTokenizer.from_pretrained(folder)


def tiny_model_dir(name: str, seed: int = 0, cache_dir: Path | None = None) -> Path:
    """Folder of the random-init tiny model `name` (tiny-causal | tiny-seq2seq) for `seed`."""
    tok = tiny_tokenizer(cache_dir)
    key = digest([name, seed, TINY_SHAPES[name], tok.name_or_path], 16)
    folder = Path(cache_dir or default_cache_dir()) / "models" / f"{name}-{key}"
    if not (folder / "config.json").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        model = tiny_model("causal" if name == "tiny-causal" else "seq2seq", tok, seed=seed)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        publish(tmp, folder)
    return folder
