"""The one owner of a trial's MLflow run: opened (or, for a retried or resumed trial, reopened) by the driver,
logged to by rank 0 after every stage (metric step = stage index; the accuracy matrix and its figures at the
end), and ended FINISHED, KILLED or FAILED. Everything a worker sends goes through the outage spool
(raycf.tracking.send), so a tracking server that is away for a while loses nothing."""
from __future__ import annotations

import tempfile
from pathlib import Path

from raycf import tracking
from raycf.config.schema import ExperimentConfig
from raycf.report.plots import category_lines_png
from raycf.trial.plan import TrialPlan
from raycf.trial.results import accuracy_matrix

WORK_KEYS = ("sweep/probe_passes", "sweep/stage_trainings")  # what a trial computed itself, over its attempts


def open_run(uri: str, experiment: str, name: str, params: dict, *, parent_run_id: str | None = None,
             tags: dict | None = None, config_text: str | None = None) -> str:
    """A new RUNNING run with the trial's params (and its resolved config as `<name>.yaml`); its id."""
    run_id = tracking.start_run(uri, experiment, name, parent_run_id=parent_run_id, tags=tags)
    tracking.log_params(uri, run_id, params)
    if config_text is not None:
        tracking.log_text(uri, run_id, f"{name}.yaml", config_text)
    return run_id


def reopen_run(uri: str, run_id: str) -> tuple[int, dict]:
    """The run of a retried trial or a resumed sweep, RUNNING again: the last stage it holds (-1: none) and the
    work counts it logged there (carried on, so that the counts cover every attempt)."""
    c = tracking.client(uri)
    c.update_run(run_id, status="RUNNING")
    logged, work = -1, {}
    for key in WORK_KEYS:
        history = c.get_metric_history(run_id, key)
        logged = max([logged] + [m.step for m in history])
        if history:
            work[key] = max(history, key=lambda m: (m.step, m.timestamp)).value
    return logged, work


def log_stage(cfg: ExperimentConfig, plan: TrialPlan, k: int, metrics: dict, rows: list[dict]) -> None:
    """Rank 0: stage k's metrics at step k; after the last stage also the accuracy matrix and its figures."""
    if not plan.run_id:
        return
    tracking.log_metrics(plan.tracking_uri, plan.run_id, metrics, step=k, spool=plan.spool_dir())
    if k == len(cfg.stages):
        log_final_artifacts(cfg, plan, rows)


def log_final_artifacts(cfg: ExperimentConfig, plan: TrialPlan, rows: list[dict]) -> None:
    """The accuracy matrix (CSV, heatmap) and the category scores over stages: the report's figures."""
    if not plan.probe_tasks:
        return
    R = accuracy_matrix(cfg, plan, rows)
    with tempfile.TemporaryDirectory() as d:
        R.to_csv(Path(d) / "accuracy_matrix.csv")
        R.heatmap_png(Path(d) / "accuracy_matrix.png")
        category_lines_png(R, Path(d) / "category_scores.png")
        for name in ("accuracy_matrix.csv", "accuracy_matrix.png", "category_scores.png"):
            tracking.log_artifact(plan.tracking_uri, plan.run_id, Path(d) / name, spool=plan.spool_dir())


def end_run(uri: str, run_id: str, status: str, spool: str, *, stopped_after_stage: int | None = None) -> None:
    """End the run as FINISHED, KILLED or FAILED (through the spool); a trial a scheduler stopped also carries
    raycf.stopped_after_stage (the stage it decided on: the workers, not yet told, may have logged one more)."""
    if stopped_after_stage is not None:
        tags = {"raycf.stopped_after_stage": str(stopped_after_stage)}
        tracking.send(uri, run_id, {"op": "tags", "tags": tags}, spool)
    tracking.end_run(uri, run_id, status, spool=spool)


def close_children(uri: str, parent_run_id: str, status: str) -> None:
    """Nothing stays RUNNING: the parent's children that the scheduler stopped (or a crash left) end as `status`."""
    c = tracking.client(uri)
    parent = c.get_run(parent_run_id)
    for r in c.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'"):
        if r.info.status == "RUNNING":
            c.set_terminated(r.info.run_id, status=status)
