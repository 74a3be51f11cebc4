"""The weights a trial's continual stages start from: the model itself, a checkpoint of the user's, or the
`general` warm start (full fine-tuning on general instruction data, as ALPACA is LLAMA after general
instruction tuning), trained once and shared through the stage cache."""
from __future__ import annotations

import json
from pathlib import Path

from raycf import cache
from raycf.config.schema import ExperimentConfig
from raycf.data.registry import GENERAL
from raycf.data.sources import stage_rows
from raycf.redact import redact_uri
from raycf.train import encode, train_stage, wrap
from raycf.trial.checkpoint import fetched, full_state_dict, load_base, unwrap
from raycf.trial.collective import agree, barrier
from raycf.trial.plan import TrialPlan


def ensure_warm_start(cfg: ExperimentConfig, plan: TrialPlan, rank: int, world: int, device,
                      bf16: bool, stop=None) -> tuple[Path, float]:
    """The folder the continual stages start from: the model, a checkpoint, or the cached `general`
    warm start (full fine-tuning on general instruction data), trained here if no trial has yet; and the
    seconds spent training it here (0 if it was not)."""
    if cfg.warm_start.kind == "checkpoint":
        return Path(cfg.warm_start.path), 0.0
    if cfg.warm_start.kind == "none":
        return Path(plan.model_dir), 0.0
    if agree(cache.lookup(plan.warm_entry()) is not None):
        return fetched(plan.warm_entry()), 0.0
    import torch
    model, tok = load_base(cfg, plan.model_dir)
    model.to(device)
    model = wrap(model, cfg.resources.strategy, device, bf16)
    ws = cfg.warm_start
    examples = encode(stage_rows(cfg, GENERAL), tok, plan.kind, cfg.optim.max_length, source=GENERAL,
                      template=cfg.data.template, system=cfg.data.system_prompt)
    stats = train_stage(model, examples, kind=plan.kind, pad_id=tok.pad_token_id, batch_size=ws.batch_size,
                        steps=ws.steps, grad_accum=1, lr=ws.lr, weight_decay=0.0, schedule="constant", warmup=0,
                        max_grad_norm=cfg.optim.max_grad_norm, seed=cfg.seed, device=device,
                        autocast_dtype=torch.bfloat16 if bf16 else None,
                        on_step=(lambda step: stop()) if stop is not None else None)
    sd = full_state_dict(model)
    if rank == 0:
        with cache.writing(plan.warm_entry()) as tmp:
            unwrap(model).save_pretrained(tmp, state_dict=sd)
            tok.save_pretrained(tmp)
            (tmp / "result.json").write_text(json.dumps({"stage": 0, "task": GENERAL,
                                                         "train/loss": stats.loss, "train/seconds": stats.seconds}))
        print(f"[raycf] warm start 'general' trained: loss {stats.loss:.4f} in {stats.seconds:.1f}s -> "
              f"{redact_uri(plan.warm_entry().location)}")
    barrier()
    return fetched(plan.warm_entry()), stats.seconds
