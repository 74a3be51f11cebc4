"""Forgetting measured from the base model, and what a warm start itself cost.

The study's FG (Eq. 1) is measured from the start of continual tuning: for a trial that starts from a warm
start, from the warm-started model. Two trials with different starts then divide by different baselines,
so raycf also gives, beside it, every figure measured from the base model (row 0 of the accuracy matrix
replaced by the base model's scores: `vs_base/...`), and the warm start's own cost per category, base ->
start (`warm_start/...`). Without a warm start both equal the study's figures and a cost of 0.

    change      start - base, in the category's units (mean over its tasks)
    change_pct  change / |base| * 100, only for a category of accuracies (and the stereotype score) whose
                base is at least forgetting.FG_FLOOR; a generation score gets none (see forgetting)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from raycf import layout
from raycf.forgetting import BIAS, FG_FLOOR, RELATIVE_METRICS, AccuracyMatrix, Report, forgetting, mean

RATIO_METRICS = (*RELATIVE_METRICS, "pct_stereotype")  # scores in [0, 1] that a relative change may divide


@dataclass
class WarmStartCost:
    category: str
    base: float    # mean base-model score over the category's tasks
    start: float   # the same after the warm start (row 0 of the trial's matrix)
    change: float  # start - base, in the scores' units
    change_pct: float  # change / |base| * 100; NaN where no relative change is meaningful


def rebased(R: AccuracyMatrix, base) -> AccuracyMatrix:
    """R with row 0 replaced by the base model's scores (one per task, NaN = not measured)."""
    scores = np.array(R.scores, dtype=float)
    scores[0] = np.asarray(base, dtype=float)
    return AccuracyMatrix(scores, R.tasks, R.categories, R.stages, R.metrics)


def from_base(R: AccuracyMatrix, base, higher_is_better: dict[str, bool] | None = None) -> Report:
    """Every forgetting figure of R, measured from the base model's scores instead of R's row 0."""
    return forgetting(rebased(R, base), higher_is_better)


def warm_start_cost(R: AccuracyMatrix, base) -> dict[str, WarmStartCost]:
    """Per category: the base model's mean score, the mean score where continual tuning starts, and the change."""
    base = np.asarray(base, dtype=float)
    costs = {}
    for c in dict.fromkeys(R.categories):
        cols = [j for j, cat in enumerate(R.categories) if cat == c]
        b, s = mean(base[j] for j in cols), mean(R.scores[0, j] for j in cols)
        ratio = all(R.metric(j) in RATIO_METRICS for j in cols)
        pct = (s - b) / abs(b) * 100 if ratio and not math.isnan(b) and abs(b) >= FG_FLOOR else math.nan
        costs[c] = WarmStartCost(c, b, s, s - b, pct)
    return costs


def base_metrics(R: AccuracyMatrix, base) -> dict[str, float]:
    """The MLflow metrics of both (raycf.layout): `vs_base/...`, the headline figures measured from the base
    model, and `warm_start/<category>_change[_pct]`, the warm start's cost; NaN values left out."""
    m = layout.from_base_metrics(from_base(R, base))
    for c in warm_start_cost(R, base).values():
        m |= {layout.warm_start_change(c.category): c.change}
        if c.category != BIAS:
            m |= {layout.warm_start_change(c.category, pct=True): c.change_pct}
    return layout.finite(m)
