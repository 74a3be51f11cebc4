"""The names of a trial's metrics, in Tune and in MLflow: one name per figure, laid out for MLflow's UI.

MLflow's run page puts a metric in the chart section named by what comes before its last `/`, sorts the sections
by name and cuts long chart titles. So a trial's figures are grouped one section per measure, the headline
section first, with short names whose distinguishing part comes first, and the per-probe detail goes to logged
tables instead of 200 charts:

    headline/        mean_FG, <category>_FG, stereotype_change, tasks_average, tasks_gain, tasks_BWT, objective
    probe/           <task>: each probe's primary score (a column of the accuracy matrix; step = stage)
    score_initial/ score_final/ score_drop/   <category>: its mean score before tuning, now, and its mean drop
    task_gain/ task_forgetting/ task_max_forgetting/ task_FWT/   <task> (a learned task), and _mean over them
    train/           loss, steps, target_tokens, tokens_per_s, seconds, reload_loss and live_loss (the
                     checkpoint's check)
    vs_base/         mean_FG, <category>_FG, stereotype_change, tasks_gain, tasks_FWT: from the base model
    warm_start/      <category>_change, <category>_change_pct, stereotype_change: what the warm start cost
    work/            what this trial computed itself (0 where the stage cache had it) and how long it took
    system/          MLflow's system metrics of rank 0's machine (tracking.system_metrics)

The step of every metric is the stage (0 = before training), so no metric repeats it; Tune's results also
carry `stage`. Every metric of every probe, and the per-probe forgetting figures, are the run's tables
probe_scores.csv and forgetting_by_probe.csv. A figure that is not defined (NaN) is left out.
"""
from __future__ import annotations

import math

from raycf.forgetting import BIAS, LEARNED, Report

PROBES_TAG = "raycf.probes"  # [[task, category, metric], ...]: the accuracy matrix's columns, in order
MEAN_FG = "headline/mean_FG"
OBJECTIVE = "headline/objective"
LEARNED_AVERAGE = "headline/tasks_average"
LEARNED_GAIN = "headline/tasks_gain"
LEARNED_BWT = "headline/tasks_BWT"
STEREOTYPE_CHANGE = "headline/stereotype_change"
FROM_BASE = "vs_base"
FROM_BASE_MEAN_FG = "vs_base/mean_FG"
WARM_START = "warm_start"
MEAN = "_mean"  # the mean over the learned tasks in a task_* section (a task name has no leading underscore)
TASK_MEASURES = ("gain", "forgetting", "max_forgetting", "FWT")


def category_fg(category: str, section: str = "headline") -> str:
    return f"{section}/{category}_FG"


def probe(task: str) -> str:
    """A probe's primary score: its accuracy-matrix column."""
    return f"probe/{task}"


def warm_start_change(category: str, pct: bool = False) -> str:
    if category == BIAS:
        return f"{WARM_START}/stereotype_change"
    return f"{WARM_START}/{category}_change{'_pct' if pct else ''}"


def forgetting_metrics(r: Report) -> dict[str, float]:
    """The study's figures, measured from the start of continual tuning: headline/, score_*/ and the learned
    tasks' task_*/ sections."""
    m = headline(r, "headline")
    for c in r.categories.values():
        m |= {f"score_initial/{c.category}": c.initial, f"score_final/{c.category}": c.final,
              f"score_drop/{c.category}": c.drop}
    for t in r.learned:
        m |= {f"task_{name}/{t.task}": getattr(t, name.lower()) for name in TASK_MEASURES}
    if s := r.learned_summary:
        m |= {LEARNED_AVERAGE: s.average, LEARNED_GAIN: s.gain, LEARNED_BWT: s.bwt}
        m |= {f"task_{name}/{MEAN}": getattr(s, name.lower()) for name in TASK_MEASURES}
    return finite(m)


def from_base_metrics(r: Report) -> dict[str, float]:
    """The headline figures again, measured from the base model (raycf.baseline)."""
    m = headline(r, FROM_BASE)
    if s := r.learned_summary:
        m |= {f"{FROM_BASE}/tasks_gain": s.gain, f"{FROM_BASE}/tasks_FWT": s.fwt}
    return finite(m)


def headline(r: Report, section: str) -> dict[str, float]:
    """`<section>/mean_FG`, each general category's `_FG` and the bias category's `stereotype_change`."""
    m = {f"{section}/mean_FG": r.mean_fg}
    for c in r.categories.values():
        if c.category == BIAS:
            m[f"{section}/stereotype_change"] = c.change
        elif c.category != LEARNED:
            m[category_fg(c.category, section)] = c.fg
    return m


def forgetting_rows(r: Report, reference: str) -> list[dict]:
    """forgetting_by_probe.csv's rows: one per probe task, from `reference` (start | base)."""
    rows = []
    for t in r.tasks:
        rows.append({"reference": reference, "category": t.category, "task": t.task, "metric": t.metric,
                     "initial": t.initial, "final": t.final, "drop": t.drop,
                     "FG": t.fg if t.category != BIAS else math.nan,
                     "stereotype_change": t.final - t.initial if t.category == BIAS else math.nan,
                     "FG_undefined_because": t.reason or ""})
    return rows


def finite(m: dict) -> dict[str, float]:
    return {k: float(v) for k, v in m.items() if not math.isnan(v)}
