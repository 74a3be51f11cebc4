"""Methods against forgetting, chosen by continual.method (each one's strengths in its own config section):

    naive        each stage fine-tunes the model the last one left (the study's setting)
    replay       each stage's rows plus rows of the earlier stages, `ratio` of the result; `balanced`: as many of
                 each earlier stage (else uniform over their rows)  -- rows: raycf.data.sources.stage_train_rows
    general_mix  each stage's rows plus rows of the general instruction set, `ratio` of the result (the study
                 reports that mixing in general data reduces forgetting)
    average      after each stage, theta <- alpha * theta_before + (1 - alpha) * theta_after for every trained
                 parameter (WiSE-FT-style averaging, Wortsman et al. 2022). With LoRA the adapter's factors A and B
                 are averaged (not their product); the frozen base never changes.

The method and its strengths are part of every stage's cache key (raycf.trial.plan), so trials of different
methods share no checkpoint after the first stage they differ on, and a trial's checkpoints hold the weights
the method left (averaged ones for `average`), which is what the next stage and a resumed trial start from.
"""
from __future__ import annotations

import dataclasses

from raycf.config.schema import ExperimentConfig


def strengths(cfg: ExperimentConfig) -> dict:
    """The method's own config section (empty for naive): what, beside the method, keys its stages."""
    c = cfg.continual
    section = getattr(c, c.method, None)
    return dataclasses.asdict(section) if dataclasses.is_dataclass(section) else {}


def trained(model) -> dict:
    """A copy of every trainable parameter (under FSDP2 each rank's own shards: no collective is needed)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def interpolate(model, before: dict, alpha: float) -> None:
    """In place: each trainable parameter becomes alpha * before + (1 - alpha) * its current value."""
    import torch
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.mul_(1.0 - alpha).add_(before[name], alpha=alpha)


def after_stage(cfg: ExperimentConfig, model, before: dict | None) -> None:
    """What the method does to the weights once a stage has trained (before its checkpoint is saved)."""
    if cfg.continual.method == "average" and before is not None:
        interpolate(model, before, cfg.continual.average.alpha)


def before_stage(cfg: ExperimentConfig, model) -> dict | None:
    """What the method keeps of the weights before a stage trains."""
    return trained(model) if cfg.continual.method == "average" else None
