"""The trials of a sweep as MLflow holds them: their params, latest metrics and accuracy matrices (from the metric
history of `probe/<task>`, step = stage; each column's category and metric from the run's `raycf.probes` tag)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from raycf import layout
from raycf.errors import ReportError, did_you_mean
from raycf.forgetting import AccuracyMatrix
from raycf.layout import PROBES_TAG


CATEGORIES = ("knowledge", "reasoning", "reading", "bias")


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
    tags: dict = field(default_factory=dict)
    experiment_id: str = ""
    fg_by_stage: dict = field(default_factory=dict)  # stage -> mean FG so far (the metric history)
    objectives: dict = field(default_factory=dict)   # the sweep's sweep.objectives ({metric: min | max}), if any

    @property
    def stages(self) -> list[str]:
        return [s for s in self.params.get("stages", "").split(" > ") if s]

    @property
    def progress(self) -> str:
        """Stages logged / stages of the trial, e.g. 1/3."""
        return f"{self.tags.get('raycf.stages_done', '0')}/{len(self.stages) or '?'}"

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
    names = [r.data.tags["raycf.sweep"] for r in sweeps]  # the sweep's name (its run is named with its space)
    if sweep is not None and sweep not in names:
        raise ReportError(f"--sweep {sweep!r}: experiment {experiment!r} has no such sweep{hint(sweep, names)}")
    objectives = {}
    if sweeps:
        parent = [r for r in sweeps if r.data.tags["raycf.sweep"] == sweep][-1] if sweep else sweeps[-1]
        objectives = json.loads(parent.data.params.get("sweep.objectives", "{}"))
        label = f"sweep {parent.data.tags['raycf.sweep']!r} ({parent.info.status})"
        chosen = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    else:
        label = "single-trial runs"
        chosen = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    if not chosen:
        raise ReportError(f"experiment {experiment!r} has no trial runs yet" + (f" in {label}" if sweeps else ""))
    chosen.sort(key=lambda r: (r.info.start_time, r.info.run_name))
    trials = [Trial(i, r.info.run_id, r.info.run_name, r.info.status, dict(r.data.params), dict(r.data.metrics),
                    tags=dict(r.data.tags), experiment_id=exp.experiment_id, objectives=objectives)
              for i, r in enumerate(chosen, 1)]
    for t in trials:
        t.matrix = accuracy_matrix(client, t)
        for m in sorted(client.get_metric_history(t.run_id, layout.MEAN_FG), key=lambda m: m.timestamp):
            t.fg_by_stage[m.step] = m.value  # a resumed run may log a stage again: the later value wins
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


def accuracy_matrix(client, trial: Trial) -> AccuracyMatrix | None:
    """The trial's accuracy matrix from the metric history (step = stage index, 0 = before training)."""
    try:
        probes = json.loads(trial.tags.get(PROBES_TAG, "[]"))  # [[task, category, metric], ...] in column order
    except ValueError:
        probes = []
    probes = [p for p in probes if isinstance(p, list) and len(p) == 3 and layout.probe(p[0]) in trial.metrics]
    if not probes or not trial.stages:
        return None
    scores = np.full((len(trial.stages) + 1, len(probes)), np.nan)
    for j, (task, _, _) in enumerate(probes):
        history = sorted(client.get_metric_history(trial.run_id, layout.probe(task)), key=lambda m: m.timestamp)
        for m in history:  # a resumed run may log a stage again: the later value wins
            if 0 <= m.step < len(scores):
                scores[m.step, j] = m.value
    try:
        return AccuracyMatrix(scores, [p[0] for p in probes], [p[1] for p in probes], trial.stages,
                              [p[2] for p in probes])
    except ValueError:
        return None  # runs logged by something other than raycf.trial: no matrix, the table still shows


def searched_params(trials: list[Trial]) -> list[str]:
    """Params whose value differs between the trials (`stages` is left out when `task_order` says it)."""
    keys = sorted({k for t in trials for k in t.params})
    searched = [k for k in keys if len({t.params.get(k) for t in trials}) > 1]
    return [k for k in searched if not (k == "stages" and "task_order" in searched)]
