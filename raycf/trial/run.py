"""The driver of one trial outside a sweep: check everything, open its MLflow run, run its stages on a
TorchTrainer of its own (or a worker pool), end the run.

    from raycf.trial.run import run
    run(cfg)     # the final metrics; `python -m raycf.trial` is the command
"""
from __future__ import annotations

import os
import sys
import time

from raycf import cache, storage, tracking
from raycf.config.files import flat_params, to_yaml
from raycf.config.schema import ExperimentConfig
from raycf.errors import ConfigError, StorageFull, sigterm_interrupts
from raycf.redact import redact_uri
from raycf.space import first_value
from raycf.trial import pool, record
from raycf.trial.launch import pool_shape, ray_session, trainer
from raycf.trial.plan import TrialPlan, make_plan
from raycf.trial.preflight import check


def run(cfg: ExperimentConfig, *, parent_run_id: str | None = None, name: str | None = None, workers=None,
        dashboard: bool = False) -> dict:
    """Run one trial to the end on the current Ray cluster (started locally if none); returns the final
    metrics. The MLflow run ends FINISHED, or FAILED with the error. workers: a worker pool (raycf.trial.pool.Pool
    of this trial's shape) to run it on, instead of a TorchTrainer of its own. dashboard: a local Ray started here
    gets Ray's dashboard."""
    if workers is not None and not workers.holds(cfg):
        raise ConfigError([f"resources: the worker pool given has {workers.shape}, this trial needs "
                           f"{pool_shape(cfg)}; make a pool of the trial's shape"])
    print(storage.where_results_go(storage.resolve(cfg.storage_path), tracking.resolve_uri(cfg.tracking.uri)))
    storage.check(cfg.storage_path)  # before the model is built: a path that cannot be written is the cheaper news
    model_dir = check(cfg)
    uri = tracking.resolve_uri(cfg.tracking.uri)
    tracking.check_reachable(uri)
    name = name or f"{cfg.name}-trial-{time.strftime('%Y%m%d-%H%M%S')}"
    resolved = to_yaml(cfg)
    run_id = record.open_run(uri, cfg, name, flat_params(cfg), parent_run_id=parent_run_id)
    plan = make_plan(cfg, model_dir, run_id=run_id, tracking_uri=uri)
    print(f"[raycf] trial {name}: {len(cfg.stages)} stages ({' > '.join(cfg.stages)}), "
          f"MLflow run {run_id} at {redact_uri(uri)}")
    try:
        storage.write_text(storage.join(plan.storage, "configs", f"{name}.yaml"), resolved)
        with ray_session(address=os.environ.get("RAY_ADDRESS"), include_dashboard=dashboard, log_to_driver=True), \
                sigterm_interrupts():  # `ray job stop`: like Ctrl-C
            if workers is None:
                final = trainer(cfg, plan, name).fit().metrics or {}
            else:
                final = on_pool(workers, cfg, plan, name)
    except BaseException as e:  # Ctrl-C: KILLED, like a trial a scheduler stops; anything else FAILED
        record.end_run(uri, run_id, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED", plan.spool_dir())
        if cache.disk_full(e):  # Ray's own writes to storage_path may be what failed first
            raise StorageFull(f"no space left on the disk of {redact_uri(plan.storage)} while trial {name} wrote "
                              f"there; entries written before are intact: free space there or set storage_path to "
                              f"a larger disk, then run again to continue from them") from e
        raise
    record.end_run(uri, run_id, "FINISHED", plan.spool_dir())
    if tracking.flush(uri, plan.spool_dir(), run_id=run_id, wait_s=60):
        print(f"[raycf] MLflow is still unreachable: this run's last metrics wait in {plan.spool_dir()}; send them "
              f"with `python -m raycf.tracking flush --storage {redact_uri(plan.storage)}`", file=sys.stderr)
    return dict(final)


def on_pool(workers, cfg: ExperimentConfig, plan: TrialPlan, name: str) -> dict:
    """Run the trial as a job of a worker pool; its last stage's metrics."""
    import ray
    job = ray.get(workers.board.submit.remote(pool.job(cfg, plan, name)))
    final: dict = {}
    for item in pool.results(workers.board, job):
        final = item["metrics"]
    return final


def first_point(cfg: ExperimentConfig) -> ExperimentConfig:
    """A single trial from a search space: each searched key takes the first value of its domain."""
    if not cfg.search:
        return cfg
    fixed = {key: v for key, domain in cfg.search.items() if (v := first_value(domain, key)) is not None}
    print(f"[raycf] single trial: searched keys fixed to {fixed} (override with --set)")
    return cfg.with_overrides({**fixed, "search": {}})


def summary(metrics: dict) -> str:
    keys = [k for k in sorted(metrics) if k.startswith(("train/loss", "headline/", "vs_base/", "stage"))]
    return "\n".join(f"{k:45s} {metrics[k]:.4f}" if isinstance(metrics[k], float) else f"{k:45s} {metrics[k]}"
                     for k in keys)
