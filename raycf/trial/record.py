"""The one owner of a trial's MLflow run: opened (or, for a retried or resumed trial, reopened) by the driver,
logged to by rank 0 after every stage (metric step = stage index; the accuracy matrix and its figures at the
end), and ended FINISHED, KILLED or FAILED. Everything a worker sends goes through the outage spool
(raycf.tracking.send), so a tracking server that is away for a while loses nothing."""
from __future__ import annotations

import contextlib
import csv
import json
import tempfile
from pathlib import Path

from raycf import cache, layout, tracking
from raycf.config.files import to_yaml
from raycf.config.schema import ExperimentConfig
from raycf.data.sources import probe_task, probe_task_names, stage_rows
from raycf.report.plots import category_lines_png
from raycf.trial.plan import TrialPlan
from raycf.trial.results import accuracy_matrix, forgetting_table, probe_table

PROVENANCE = ("mlflow.source.type", "mlflow.source.name", "mlflow.user", "mlflow.source.git.commit", "raycf.version")
WORK_KEYS = ("work/probe_passes", "work/stage_trainings")  # what a trial computed itself, over its attempts


def open_run(uri: str, cfg: ExperimentConfig, name: str, params: dict, *, parent_run_id: str | None = None,
             tags: dict | None = None) -> str:
    """A new RUNNING run: the trial's params, its resolved config (`config.yaml`), its training and probe data as
    MLflow dataset inputs, and as tags its probe columns, what each step is, and where it came from; its id."""
    probes = [probe_task(cfg, n) for n in probe_task_names(cfg)]
    origin = tracking.provenance() if parent_run_id is None else {  # a Tune actor's argv and cwd say nothing
        k: v for k, v in tracking.client(uri).get_run(parent_run_id).data.tags.items() if k in PROVENANCE}
    all_tags = {**origin, **(tags or {}), "raycf.steps": steps_text(cfg),
                layout.PROBES_TAG: json.dumps([[t.name, t.category, t.metric[0]] for t in probes])}
    run_id = tracking.start_run(uri, cfg.tracking.experiment, name, parent_run_id=parent_run_id, tags=all_tags)
    tracking.log_params(uri, run_id, params)
    tracking.log_text(uri, run_id, "config.yaml", to_yaml(cfg.with_overrides({"search": {}})))
    tracking.client(uri).log_inputs(run_id, datasets=datasets(cfg, probes))
    return run_id


# how a searched key reads in a run name (else its last part): `ws=general lr=0.003 r=16 seed=1`
SHORT = {"warm_start.kind": "ws", "optim.lr": "lr", "finetune.lora_rank": "r", "finetune.method": "ft",
         "stages": "order", "model.name": "model", "continual.method": "method", "continual.replay.ratio": "replay",
         "continual.general_mix.ratio": "mix", "continual.average.alpha": "alpha"}


def run_name(point: dict, tune_trial: str | None = None) -> str:
    """A sweep child's name from its searched values (the seed last), and the Tune trial's number when several
    samples share values; MLflow's tables and legends show it where they would show `tune_trial_70f2e_00003`."""
    def text(key, value) -> str:
        if isinstance(value, (list, tuple)):
            return ">".join(str(v) for v in value)
        if isinstance(value, float):  # the shorter of 0.003 and 3e-3
            mantissa, exp = f"{value:.2e}".split("e")
            short = f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"
            return min(f"{value:.3g}", short, key=len)
        return Path(str(value)).name if key == "model.name" else str(value)
    keys = sorted(point, key=lambda k: k == "seed")
    name = " ".join(f"{SHORT.get(k, k.split('.')[-1])}={text(k, point[k])}" for k in keys)
    if tune_trial:  # tune_trial_70f2e_00003 (Tune's own grid and random search) -> #3; a searcher's
        tail = tune_trial.rsplit("_", 1)[-1]  # tune_trial_3a5c077f (Optuna) -> #3a5c077f
        name = f"{name or 'trial'} #{int(tail) if len(tail) == 5 and tail.isdigit() else tail}"
    return name or "trial"


def datasets(cfg: ExperimentConfig, probes: list) -> list:
    """MLflow dataset inputs: each stage's training rows (context `train`) and each probe set (`probe`), with
    the digest the stage cache keys them by, where they come from, and how many rows."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    def one(name: str, rows: list, source: str, context: str) -> DatasetInput:
        kind = "hf" if source.startswith("hub") else "code" if source == "shipped" else "local"
        ds = Dataset(name=name, digest=cache.key(name, rows)[:32], source_type=kind,
                     source=json.dumps({"uri": source}), profile=json.dumps({"num_rows": len(rows)}))
        return DatasetInput(ds, tags=[InputTag("mlflow.data.context", context)])
    out = []
    for stage in dict.fromkeys(cfg.stages):
        file = cfg.data.sources.get(stage, {}).get("train")
        source = file or ("hub" if cfg.data.hub else "shipped")
        out.append(one(stage, stage_rows(cfg, stage), source, "train"))
    for t in probes:
        limit = cfg.probes.limit
        out.append(one(f"probe:{t.name}", t.rows[:limit] if limit else t.rows, t.source, "probe"))
    return out


def reopen_run(uri: str, run_id: str, spool: str | None = None) -> tuple[int, dict]:
    """The run of a retried trial or a resumed sweep, RUNNING again: the last stage it holds (-1: none) and the
    work counts it logged there (carried on, so that the counts cover every attempt). spool: the outage spool,
    sent first; what it still holds (the server down) counts as logged."""
    if spool is not None:  # e.g. a stage kept back by a locked sqlite file when the sweep was stopped
        tracking.flush(uri, spool, run_id=run_id)
    tracking.client(uri).update_run(run_id, status="RUNNING")
    return logged_work(uri, run_id, spool)


def logged_work(uri: str, run_id: str, spool: str | None = None) -> tuple[int, dict]:
    """The last stage the run holds (-1: none) and the work counts (WORK_KEYS) it logged there, counting what the
    outage spool still holds for it."""
    c = tracking.client(uri)
    points = {key: [(m.step, m.timestamp, m.value) for m in c.get_metric_history(run_id, key)] for key in WORK_KEYS}
    for op in tracking.pending(spool, run_id) if spool is not None else []:
        for key in WORK_KEYS:
            if op["op"] == "metrics" and key in op["metrics"]:
                points[key].append((op["step"], op["timestamp"], op["metrics"][key]))
    logged = max([-1] + [step for history in points.values() for step, _, _ in history])
    return logged, {key: max(history)[2] for key, history in points.items() if history}


def log_stage(cfg: ExperimentConfig, plan: TrialPlan, k: int, metrics: dict, rows: list[dict],
              base_row: dict | None = None, nodes: list[str] | None = None) -> None:
    """Rank 0: stage k's metrics at step k (`stage` is the step: not a metric) and the run's description; after
    the last stage also its tables, the accuracy matrix and its figures. nodes: the Ray node ids stage k trained
    on (tag raycf.nodes.stage<k>; none for a stage this run took from the cache)."""
    if not plan.run_id:
        return
    spool = plan.spool_dir()
    tracking.log_metrics(plan.tracking_uri, plan.run_id, {m: v for m, v in metrics.items() if m != "stage"},
                         step=k, spool=spool)
    tags = {"mlflow.note.content": describe(cfg, k, metrics), "raycf.stages_done": str(k),
            **({f"raycf.nodes.stage{k}": ",".join(nodes)} if nodes else {})}
    tracking.send(plan.tracking_uri, plan.run_id, {"op": "tags", "tags": tags}, spool)
    if k == len(cfg.stages):
        log_final_artifacts(cfg, plan, rows, base_row)


def log_final_artifacts(cfg: ExperimentConfig, plan: TrialPlan, rows: list[dict], base_row: dict | None = None) -> None:
    """The accuracy matrix (CSV, heatmap), the category scores over stages (the report's figures) and the tables
    probe_scores.csv and forgetting_by_probe.csv."""
    if not plan.probe_tasks:
        return
    R = accuracy_matrix(cfg, plan, rows)
    with tempfile.TemporaryDirectory() as d:
        R.to_csv(Path(d) / "accuracy_matrix.csv")
        R.heatmap_png(Path(d) / "accuracy_matrix.png")
        category_lines_png(R, Path(d) / "category_scores.png")
        write_csv(Path(d) / "probe_scores.csv", probe_table(cfg, plan, rows))
        names = ["accuracy_matrix.csv", "accuracy_matrix.png", "category_scores.png", "probe_scores.csv"]
        if table := forgetting_table(cfg, plan, rows, base_row):
            write_csv(Path(d) / "forgetting_by_probe.csv", table)
            names.append("forgetting_by_probe.csv")
        for name in names:
            tracking.log_artifact(plan.tracking_uri, plan.run_id, Path(d) / name, spool=plan.spool_dir())


@contextlib.contextmanager
def system_metrics(cfg: ExperimentConfig, plan: TrialPlan, rank: int):
    """MLflow's system metrics (system/cpu_utilization_percentage, system/system_memory_usage_megabytes, GPU ones
    where there are GPUs) of rank 0's machine every 10 s while the trial runs; off with tracking.system_metrics."""
    if rank != 0 or not plan.run_id or not cfg.tracking.system_metrics:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
    try:
        monitor = SystemMetricsMonitor(plan.run_id, sampling_interval=10, resume_logging=True,
                                       tracking_uri=plan.tracking_uri)
        monitor.start()
    except Exception as e:  # noqa: BLE001 - an outage or a missing sensor costs the charts, never the trial
        print(f"[raycf] no system metrics for run {plan.run_id}: {e.__class__.__name__}: {e}", flush=True)
        monitor = None
    try:
        yield
    finally:
        if monitor is not None:
            monitor.finish()


def steps_text(cfg: ExperimentConfig) -> str:
    """What each metric step is: `0 start · 1 simplification · 2 headline`."""
    return " · ".join(f"{i} {name}" for i, name in enumerate(["start", *cfg.stages]))


def describe(cfg: ExperimentConfig, k: int, metrics: dict) -> str:
    """The run's description (MLflow's note): its headline figures after stage k, and what the steps are."""
    def fig(key: str, label: str, fmt: str, unit: str = "") -> str | None:
        return f"{label} {metrics[key]:{fmt}}{unit}" if key in metrics else None
    where = f"after stage {k}/{len(cfg.stages)}" + (f" ({cfg.stages[k - 1]})" if k else " (before training)")
    figures = [fig(layout.MEAN_FG, "mean FG", ".1f", " %"),
               *(fig(layout.category_fg(c), f"{c} FG", ".1f", " %") for c in ("knowledge", "reasoning", "reading")),
               fig(layout.STEREOTYPE_CHANGE, "stereotype change", "+.3f"),
               fig(layout.LEARNED_AVERAGE, "learned tasks", ".2f"), fig(layout.LEARNED_GAIN, "gain", "+.2f"),
               fig(layout.OBJECTIVE, "objective", ".2f")]
    return f"{where}: " + ", ".join(f for f in figures if f) + f"\n\nsteps: {steps_text(cfg)}"


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


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
