"""What a trial reports after each stage: its train stats, probe scores and forgetting so far (the accuracy
matrix through raycf.forgetting; the names: raycf.layout), its tables, and the objective a sweep ranks by."""
from __future__ import annotations

import numpy as np

from raycf.config.schema import ExperimentConfig
from raycf.data.sources import probe_task
from raycf import layout
from raycf.baseline import base_metrics, from_base
from raycf.forgetting import AccuracyMatrix, forgetting
from raycf.trial.plan import TrialPlan


def accuracy_matrix(cfg: ExperimentConfig, plan: TrialPlan, rows: list[dict]):
    """The accuracy matrix R so far: one row per probe pass, one column per probe task (primary metric)."""
    tasks = [probe_task(cfg, t) for t in plan.probe_tasks]
    scores = np.full((len(cfg.stages) + 1, len(tasks)), np.nan)
    for i, row in enumerate(rows):
        for j, t in enumerate(tasks):
            scores[i, j] = row["scores"][t.name][t.metric[0]]
    return AccuracyMatrix(scores=scores, tasks=[t.name for t in tasks], categories=[t.category for t in tasks],
                          stages=list(cfg.stages), metrics=[t.metric[0] for t in tasks])


def base_scores(cfg: ExperimentConfig, plan: TrialPlan, base_row: dict) -> np.ndarray:
    """The base model's row of the accuracy matrix (its primary metric per probe task)."""
    return accuracy_matrix(cfg, plan, [base_row]).scores[0]


def stage_metrics(cfg: ExperimentConfig, plan: TrialPlan, k: int, stats: dict, rows: list[dict],
                  base_row: dict | None = None) -> dict:
    """What Tune and MLflow see after stage k (names: raycf.layout): train stats, each probe's primary score,
    forgetting so far (and from the base model, with the warm start's cost, when its row is given)."""
    metrics = {"stage": k}
    metrics.update({key: v for key, v in stats.items() if key.startswith("train/")})
    if rows and rows[-1]:
        for t in (probe_task(cfg, n) for n in plan.probe_tasks):
            metrics[layout.probe(t.name)] = rows[-1]["scores"][t.name][t.metric[0]]
        metrics["work/probe_pass_seconds"] = rows[-1]["seconds"]
        if k > 0:
            R = accuracy_matrix(cfg, plan, rows)
            metrics.update(layout.forgetting_metrics(forgetting(R)))
            if base_row:
                metrics.update(base_metrics(R, base_scores(cfg, plan, base_row)))
    if k > 0:  # before training there is nothing to rank
        metrics[layout.OBJECTIVE] = objective(metrics, cfg.sweep.task_floor)
    return metrics


def probe_table(cfg: ExperimentConfig, plan: TrialPlan, rows: list[dict]) -> list[dict]:
    """probe_scores.csv: every metric of every probe at every stage so far."""
    tasks = [probe_task(cfg, n) for n in plan.probe_tasks]
    return [{"stage": i, "after": cfg.stages[i - 1] if i else "(start)", "category": t.category, "task": t.name,
             "metric": name, "value": value}
            for i, row in enumerate(rows) if row for t in tasks for name, value in row["scores"][t.name].items()]


def forgetting_table(cfg: ExperimentConfig, plan: TrialPlan, rows: list[dict], base_row: dict | None) -> list[dict]:
    """forgetting_by_probe.csv: each probe's forgetting figures so far, from the start (and from the base model)."""
    if len(rows) < 2:
        return []
    R = accuracy_matrix(cfg, plan, rows)
    out = layout.forgetting_rows(forgetting(R), "start")
    if base_row:
        out += layout.forgetting_rows(from_base(R, base_scores(cfg, plan, base_row)), "base")
    return out


def objective(metrics: dict, task_floor: float) -> float:
    """What a sweep minimises by default: mean FG over the general categories, plus 100 x how far the
    learned tasks' average falls short of `task_floor` (so forgetting nothing by learning nothing loses)."""
    fg = metrics.get(layout.MEAN_FG, 0.0)
    learned = metrics.get(layout.LEARNED_AVERAGE)
    shortfall = max(0.0, task_floor - learned) if learned is not None else 0.0
    return fg + 100.0 * shortfall


TRAIN_METRICS = (layout.OBJECTIVE, "train/loss", "train/steps", "train/lr", "train/target_tokens",
                 "train/tokens_per_s", "train/seconds", "train/reload_loss", "train/live_loss",
                 "work/probe_pass_seconds", "work/stage_trainings", "work/probe_passes", "work/train_seconds",
                 "work/probe_seconds")


def metric_names(cfg: ExperimentConfig, probe_names: list[str]) -> list[str]:
    """Every metric a trial of `cfg` reports after its last stage (what sweep.metric may name): the forgetting
    figures are those of a made-up accuracy matrix of the trial's shape, so the names are exactly the real ones."""
    tasks = [probe_task(cfg, t) for t in probe_names]
    names = list(TRAIN_METRICS) + [layout.probe(t.name) for t in tasks]
    if cfg.continual.method in ("ewc", "lwf", "o_lora"):  # raycf.continual.Method.adds_loss
        names.append("train/method_loss")
    if tasks:
        R = AccuracyMatrix(scores=np.full((len(cfg.stages) + 1, len(tasks)), 0.5), tasks=[t.name for t in tasks],
                           categories=[t.category for t in tasks], stages=list(cfg.stages),
                           metrics=[t.metric[0] for t in tasks])
        names += [*layout.forgetting_metrics(forgetting(R)), *base_metrics(R, R.scores[0])]
    return names
