"""raycf-tiny: the tiny LLaMA-style model pretrained on raycf's offline corpus, the offline base model.

    python -m raycf.pretrain [--cache-dir DIR] [--ship]     # rebuild it (raycf/pretrain.py is the command)

raycf ships the result (raycf/weights/raycf-tiny, 8.7 MB) so that the default sweep starts at once; this
module is how it was made. A plain, seeded PyTorch loop over raycf.data.corpus.pretrain_texts() (3-12
minutes on 2 CPU cores, depending on load). The cache folder is content-addressed by corpus + tokenizer +
shape + training settings, and published atomically like raycf.models.tiny.tiny_model_dir. The shipped copy
records that key in pretrain.json; tests/test_pretrain.py fails when the corpus, tokenizer or settings
drift from it (then run `python -m raycf.pretrain --ship`).
"""
from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from raycf.cache import digest, publish
from raycf.data.corpus import pretrain_texts
from raycf.models.builtin import RAYCF_TINY_SHAPE
from raycf.models.tiny import tiny_model, tiny_tokenizer
from raycf.storage import default_cache_dir


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of the pretraining run; all of them enter the cache key."""
    shape: dict = field(default_factory=lambda: dict(RAYCF_TINY_SHAPE))
    steps: int = 600
    batch_tokens: int = 2048     # tokens per step, padding included (one document per sequence)
    max_length: int = 256        # longer documents are cut (none is, today)
    lr: float = 3e-3             # peak; linear warmup then cosine decay to lr/10
    warmup: int = 50
    weight_decay: float = 0.01
    seed: int = 0
    threads: int = 2


def _corpus_digest() -> str:
    h = hashlib.sha256()
    for doc in pretrain_texts():
        h.update(doc.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


SHIPPED = Path(__file__).parent.parent / "weights" / "raycf-tiny"


def build_key(cache_dir: Path | None = None, config: PretrainConfig | None = None) -> str:
    """Content key of raycf-tiny: settings, corpus and tokenizer (builds the tokenizer if needed)."""
    tok = tiny_tokenizer(cache_dir)
    return digest(["raycf-tiny", asdict(config or PretrainConfig()), _corpus_digest(), Path(tok.name_or_path).name], 16)


def shipped_dir(cache_dir: Path | None = None) -> Path:
    """The raycf-tiny folder to use: the shipped copy, or (an install without it) one pretrained in the cache."""
    return SHIPPED if (SHIPPED / "model.safetensors").exists() else pretrained_tiny_dir(cache_dir)


def pretrained_tiny_dir(cache_dir: Path | None = None, config: PretrainConfig | None = None) -> Path:
    """Folder holding raycf-tiny (model + tokenizer) in the cache, pretraining it on first use."""
    config = config or PretrainConfig()
    tok = tiny_tokenizer(cache_dir)
    key = build_key(cache_dir, config)
    folder = Path(cache_dir or default_cache_dir()) / "models" / f"raycf-tiny-{key}"
    if not (folder / "config.json").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        model = pretrain(tok, config)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        publish(tmp, folder)
    return folder


def batches(docs: list[list[int]], tokens: int, rng) -> list[list[int]]:
    """One epoch of batches (lists of document indices), each at most `tokens` tokens with padding.

    Every document is its own sequence starting at position 0, exactly as a probe context is scored: with
    packed documents a model must first learn to ignore the earlier documents of its block before copying
    from a passage pays off, which a tiny model did not learn in minutes. Documents are shuffled, then
    sorted by length within windows of ~16 batches so padding stays small but batches stay mixed.
    """
    order = list(range(len(docs)))
    rng.shuffle(order)
    mean = max(1, sum(len(d) for d in docs) // max(1, len(docs)))
    window = max(1, 16 * tokens // mean)
    out = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w:w + window], key=lambda i: len(docs[i]))
        cur, width = [], 0
        for i in chunk:
            if cur and max(width, len(docs[i])) * (len(cur) + 1) > tokens:
                out.append(cur)
                cur, width = [], 0
            cur.append(i)
            width = max(width, len(docs[i]))
        if cur:
            out.append(cur)
    rng.shuffle(out)
    return out


def pretrain(tok, config: PretrainConfig, log=print):
    """Train a fresh tiny causal model on the corpus; returns the model (eval mode)."""
    import random
    import torch

    torch.set_num_threads(config.threads)
    torch.set_flush_denormal(True)  # denormal floats late in training made CPU steps up to 10x slower
    torch.use_deterministic_algorithms(True)  # cheap on CPU; same bytes for the same config
    model = tiny_model("causal", tok, seed=config.seed, **config.shape)
    docs = [d[:config.max_length - 1] + [tok.eos_token_id]
            for d in tok(pretrain_texts(), add_special_tokens=False)["input_ids"]]
    rng = random.Random(config.seed)
    # Half the documents start with BOS: probes score CrowS pairs after BOS (lm-eval's empty context) and
    # multiple choice without it, so the model should know both starts.
    docs = [[tok.bos_token_id] + d if rng.random() < 0.5 else d for d in docs]
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.95))

    def lr_at(step):
        if step < config.warmup:
            return config.lr * (step + 1) / config.warmup
        t = (step - config.warmup) / max(1, config.steps - config.warmup)
        return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    model.train()
    plan, t0, epoch, step = [], time.time(), 0, 0
    while step < config.steps:
        if not plan:  # a new epoch: new order and batches
            plan = batches(docs, config.batch_tokens, rng)
            plan.reverse()
            epoch += 1
        seqs = [docs[i] for i in plan.pop()]
        width = max(len(d) for d in seqs)
        batch = torch.tensor([d + [tok.pad_token_id] * (width - len(d)) for d in seqs])
        labels = batch.masked_fill(batch == tok.pad_token_id, -100)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = model(input_ids=batch, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if step % 50 == 0 or step == config.steps:
            log(f"step {step}/{config.steps} epoch {epoch} loss {loss.item():.3f} {time.time() - t0:.0f}s")
    model.eval()
    return model
