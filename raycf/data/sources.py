"""Where a trial's rows come from: a stage's rows (the user's file in data.sources, the study's hub dataset with
data.hub, else the shipped set), the rows a stage trains on (with replay of earlier stages), and its probes."""
from __future__ import annotations

import random

from raycf.config.schema import ExperimentConfig
from raycf.data.registry import GENERAL, is_lm_eval, load_stage, load_task, suite


def stage_rows(cfg: ExperimentConfig, name: str, split: str = "train") -> list[dict]:
    """Rows of stage `name`: the user's file from data.sources when it gives this split, else the study's dataset
    (data.hub) or the shipped set."""
    file = cfg.data.sources.get(name, {}).get(split)
    if file:
        return load_stage(name, split, source=file)
    return load_stage(name, split, source="hub" if cfg.data.hub and name != GENERAL else "shipped")


def probe_task(cfg: ExperimentConfig, name: str):
    """The probe task `name`; a stage with an eval file in data.sources is probed on those rows, and with
    data.hub the study's dataset is; an lm-eval task (lm_eval:NAME) is built at probes.shots."""
    if is_lm_eval(name):
        return load_task(name, shots=cfg.probes.shots, lm_eval_include=tuple(cfg.probes.lm_eval_include),
                         chat_system=cfg.data.system_prompt if cfg.probes.apply_chat_template else None)
    return load_task(name, source=cfg.data.sources.get(name, {}).get("eval") or ("hub" if cfg.data.hub else None))


def probe_task_names(cfg: ExperimentConfig) -> list[str]:
    """General-ability probes from the suites, plus the trial's own stages when `tasks` is asked for."""
    general = [s for s in cfg.probes.suites if s != "tasks"]
    names = suite(general, tuple(cfg.probes.lm_eval_include)) if general else []
    if "tasks" in cfg.probes.suites:
        names += [s for s in cfg.stages]
    return names


def stage_train_rows(cfg: ExperimentConfig, k: int) -> list[dict]:
    """The rows stage k trains on: a seeded sample of its task's rows (data.examples_per_stage), plus, by
    continual.method, rows of earlier stages (replay) or of the general instruction set (general_mix), as the
    method's `ratio` of the result."""
    rows = stage_rows(cfg, cfg.stages[k - 1])
    n = cfg.data.examples_per_stage or len(rows)
    rng = random.Random(cfg.seed * 1000 + k)
    rows = rng.sample(rows, min(n, len(rows)))
    c = cfg.continual
    if c.method == "replay" and k > 1:
        want = extra(len(rows), c.replay.ratio)
        if c.replay.balanced:  # each earlier stage an equal share (the earliest get the remainder)
            earlier = cfg.stages[:k - 1]
            for i, s in enumerate(earlier):
                share = want // len(earlier) + (i < want % len(earlier))
                pool = stage_rows(cfg, s)
                rows = rows + rng.sample(pool, min(share, len(pool)))
        else:
            pool = [r for s in cfg.stages[:k - 1] for r in stage_rows(cfg, s)]
            rows = rows + rng.sample(pool, min(want, len(pool)))
    elif c.method == "general_mix":
        pool = stage_rows(cfg, GENERAL)
        rows = rows + rng.sample(pool, min(extra(len(rows), c.general_mix.ratio), len(pool)))
    return rows


def extra(n: int, ratio: float) -> int:
    """How many rows to add to n so that they are `ratio` of the result."""
    return int(round(n * ratio / (1 - ratio)))
