"""The Tune trainable of a sweep: one Tune trial applies its sampled point to the sweep's config, opens (or reopens)
its MLflow run, and runs the trial's stages on the worker pool or on a TorchTrainer of its own."""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from raycf import storage, tracking
from raycf.config.files import flat_params
from raycf.config.schema import ExperimentConfig
from raycf.models.resolve import resolve_model_dir
from raycf.sweep import pbt
from raycf.trial import pool, record
from raycf.trial.launch import trainer
from raycf.trial.plan import make_plan


def tune_trial(params: dict, *, base: ExperimentConfig, sweep_dir: str, parent_run_id: str, uri: str,
               board: str | None = None) -> None:
    """One Tune trial: apply the sampled point, open (or, on resume, reopen) its MLflow run, and run the trial:
    as a job of the worker pool (`board`: the name of its board actor), relaying each stage's result to Tune, or
    as a TorchTrainer of its own with Tune reporting. (Names, not actor handles, travel in Tune's state: a resumed
    sweep has a new pool.)"""
    import ray
    import ray.tune
    cfg = base.with_overrides(params)
    ctx = ray.tune.get_context()
    trial_id, trial_name = ctx.get_trial_id(), ctx.get_trial_name()
    runs = storage.join(sweep_dir, "runs", f"{trial_id}.json")
    logged, work = -1, {}
    if storage.exists(runs):  # a retried trial or a resumed sweep: same MLflow run, stages it holds not logged again
        opened = json.loads(storage.read_text(runs))
        run_id, name = opened["run_id"], opened.get("name", trial_name)
        logged, work = record.reopen_run(uri, run_id, storage.join(storage.resolve(cfg.storage_path), "spool"))
    else:
        if parent_run_id:  # a driver killed while it opened this trial's run, before it kept the id: nothing logged
            c = tracking.client(uri)
            exp = c.get_run(parent_run_id).info.experiment_id
            for r in c.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_run_id}' and "
                                          f"tags.`raycf.trial_id` = '{trial_id}'"):
                c.delete_run(r.info.run_id)
        order = " > ".join(cfg.stages)
        name = record.run_name(params, trial_name if base.sweep.num_samples > 1 else None)
        run_id = record.open_run(uri, cfg, name, {**flat_params(cfg), "task_order": order},
                                 parent_run_id=parent_run_id,
                                 tags={"raycf.trial_id": trial_id, "raycf.tune_trial": trial_name,
                                       "raycf.task_order": order})
        storage.write_text(runs, json.dumps({"run_id": run_id, "params": params, "name": name}))
    model_dir = resolve_model_dir(cfg.model.name, allow_download=cfg.model.allow_download,
                                  cache_dir=Path(cfg.cache_dir) if cfg.cache_dir else None)
    lineage = None
    if pbt.is_pbt(cfg):  # from the Tune checkpoint it starts from: its own (paused, retried) or a donor's
        lineage = pbt.Lineage(cfg, trial_id, run_id, name, uri, sweep_dir)
        checkpoint, given = ray.tune.get_checkpoint(), None
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                given = pbt.read_lineage(folder)
        values = lineage.restore(given)
        if values:
            cfg = lineage.cfg = cfg.with_overrides(values)
    plan = lineage.plan(lambda prefix: make_plan(cfg, model_dir, run_id=run_id, tracking_uri=uri, prefix=prefix)) \
        if lineage else make_plan(cfg, model_dir, run_id=run_id, tracking_uri=uri)
    plan = replace(plan, logged=logged, work=work)
    if lineage is not None and (state := lineage.catch_up(plan)) is not None:
        lineage.log(state)
    if lineage is not None and (given or {}).get("stage", 0) < plan.logged < len(cfg.stages):
        # the sweep was killed after the run logged a stage and before Tune saved it: the pool does not report
        # that stage again, so PBT hears of it here (else its synchronisation waits on this trial forever)
        latest = tracking.client(uri).get_run(run_id).data.metrics
        report_lineage({**latest, "stage": plan.logged, "stage_checkpoint": ""}, lineage.state(plan))
    if lineage is not None and lineage.restored is not None:  # its latest values and lineage: for its best model
        storage.write_text(runs, json.dumps({"run_id": run_id, "params": params, "name": name,
                                             "prefix": plan.stage_keys[:plan.fixed]}))
    if os.environ.get("RAYCF_HEARTBEAT_DIR"):  # fault-injection tests kill this trial driver by its pid
        beat = Path(os.environ["RAYCF_HEARTBEAT_DIR"]) / "driver.json"
        beat.parent.mkdir(parents=True, exist_ok=True)
        beat.write_text(json.dumps({"pid": os.getpid(), "trial_id": trial_id}))
    # the run's end status is set by the driver (Progress): a trial the scheduler stops is killed mid-call
    if board is None:
        from ray.tune.integration.ray_train import TuneReportCallback
        trainer(cfg, plan, name=f"{trial_name}", callbacks=[TuneReportCallback()]).fit()
        return
    board = pool.find_board(board)
    job = ray.get(board.submit.remote(pool.job(cfg, plan, trial_id, gated=lineage is not None)))
    for item in pool.results(board, job):
        metrics = {**item["metrics"], "stage_checkpoint": item.get("checkpoint", "")}
        if lineage is None or not item.get("checkpoint"):
            ray.tune.report(metrics)
            continue
        # PBT: the stage's lineage as its Tune checkpoint (the weights stay in the stage cache); Tune returns
        # from report() once its scheduler lets the trial go on, and the job waits for that at the boundary
        state = lineage.stage_done(item["stage"], plan, item["checkpoint"])
        lineage.log(state)
        report_lineage(metrics, state)
        board.release.remote(job, item["stage"])


def report_lineage(metrics: dict, state: dict) -> None:
    """A stage's result to Tune with the PBT lineage as its Tune checkpoint (the weights stay in the stage cache)."""
    import ray.tune
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / pbt.LINEAGE_FILE).write_text(json.dumps(state))
        ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(folder))
