"""The trials of a sweep as MLflow holds them: their params, latest metrics and accuracy matrices (from the metric
history of `probe/<category>/<task>/<metric>`, step = stage)."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from raycf.data import load_task
from raycf.errors import DataError, ReportError, did_you_mean
from raycf.forgetting import LEARNED, AccuracyMatrix


CATEGORIES = ("knowledge", "reasoning", "reading", "bias")


MEAN_FG = "forgetting/mean_FG"


FROM_BASE_MEAN_FG = "from_base/mean_FG"


LEARNED_AVERAGE = f"forgetting/{LEARNED}/average"


# Which way is better. A bias score is a stereotype preference: lower is better; it gets no FG, its figure is
# the stereotype score's change (> 0 = more stereotyped).
LOWER_IS_BETTER_SCORE = {"bias"}


@dataclass
class Trial:
    """One trial run as MLflow holds it. metrics: latest value per key (the last stage logged so far)."""
    number: int                  # 1-based label in tables and figures (#1, #2, ...)
    run_id: str
    name: str
    status: str                  # RUNNING | FINISHED | KILLED | FAILED | SCHEDULED
    params: dict
    metrics: dict
    matrix: AccuracyMatrix | None = None   # from the metric history; NaN rows for stages not run yet

    @property
    def stages(self) -> list[str]:
        return [s for s in self.params.get("stages", "").split(" > ") if s]

    @property
    def progress(self) -> str:
        """Stages logged / stages of the trial, e.g. 1/3."""
        return f"{int(self.metrics.get('stage', 0))}/{len(self.stages) or '?'}"

    @property
    def finished(self) -> bool:
        return self.status == "FINISHED"


def load_trials(client, experiment: str, sweep: str | None = None) -> tuple[str, list[Trial]]:
    """The trials to report (see the module docstring) and a label saying which runs they are."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise ReportError(f"no experiment named {experiment!r} at this tracking URI{hint(experiment, names)}")
    runs = _all_runs(client, exp.experiment_id)
    sweeps = sorted((r for r in runs if "raycf.sweep" in r.data.tags), key=lambda r: r.info.start_time)
    if sweep is not None and sweep not in [r.info.run_name for r in sweeps]:
        raise ReportError(f"--sweep {sweep!r}: experiment {experiment!r} has no such sweep"
                          f"{hint(sweep, [r.info.run_name for r in sweeps])}")
    if sweeps:
        parent = [r for r in sweeps if r.info.run_name == sweep][-1] if sweep else sweeps[-1]
        label = f"sweep {parent.info.run_name!r} ({parent.info.status})"
        chosen = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    else:
        label = "single-trial runs"
        chosen = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    if not chosen:
        raise ReportError(f"experiment {experiment!r} has no trial runs yet" + (f" in {label}" if sweeps else ""))
    chosen.sort(key=lambda r: (r.info.start_time, r.info.run_name))
    trials = [Trial(i, r.info.run_id, r.info.run_name, r.info.status, dict(r.data.params), dict(r.data.metrics))
              for i, r in enumerate(chosen, 1)]
    for t in trials:
        t.matrix = accuracy_matrix(client, t)
    return label, trials


def _all_runs(client, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def hint(name: str, choices: list[str]) -> str:
    """' (did you mean X?)', else the known names; '' when there are none."""
    if not choices:
        return ""
    return did_you_mean(name, sorted(choices))


@functools.cache
def primary_metric(task: str, logged: tuple[str, ...]) -> str:
    """The score a task's accuracy-matrix cell holds: the registry's first metric, as the trial's own
    matrix uses; for a task the registry does not know, the alphabetically first logged one."""
    try:
        first = load_task(task).metric[0]
    except DataError:
        first = None
    return first if first in logged else min(logged)


def accuracy_matrix(client, trial: Trial) -> AccuracyMatrix | None:
    """The trial's accuracy matrix from the metric history (step = stage index, 0 = before training)."""
    logged: dict[tuple[str, str], list[str]] = {}
    for key in trial.metrics:
        parts = key.split("/", 3)
        if len(parts) == 4 and parts[0] == "probe" and "/" not in parts[3]:
            logged.setdefault((parts[1], parts[2]), []).append(parts[3])
    if not logged or not trial.stages:
        return None
    order = {c: i for i, c in enumerate((*CATEGORIES, LEARNED))}
    columns = sorted(logged, key=lambda ct: (order.get(ct[0], len(order)), ct[0],
                                             trial.stages.index(ct[1]) if ct[1] in trial.stages else 0, ct[1]))
    scores = np.full((len(trial.stages) + 1, len(columns)), np.nan)
    metrics = [primary_metric(task, tuple(logged[category, task])) for category, task in columns]
    for j, (category, task) in enumerate(columns):
        metric = metrics[j]
        history = sorted(client.get_metric_history(trial.run_id, f"probe/{category}/{task}/{metric}"),
                         key=lambda m: m.timestamp)
        for m in history:  # a resumed run may log a stage again: the later value wins
            if 0 <= m.step < len(scores):
                scores[m.step, j] = m.value
    try:
        return AccuracyMatrix(scores, [t for _, t in columns], [c for c, _ in columns], trial.stages, metrics)
    except ValueError:
        return None  # runs logged by something other than raycf.trial: no matrix, the table still shows


def searched_params(trials: list[Trial]) -> list[str]:
    """Params whose value differs between the trials (`stages` is left out when `task_order` says it)."""
    keys = sorted({k for t in trials for k in t.params})
    searched = [k for k in keys if len({t.params.get(k) for t in trials}) > 1]
    return [k for k in searched if not (k == "stages" and "task_order" in searched)]
