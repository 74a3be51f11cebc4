"""The sweep's best trial: marked on the parent run, and its last stage's weights logged to its own run as an
MLflow model (transformers flavor) that loads back with one call, registered when sweep.register_best names it:

    import mlflow
    parts = mlflow.transformers.load_model(f"runs:/{run_id}/model", return_type="components")  # model, tokenizer

A LoRA trial's adapter is merged into the weights it was trained on (the base model or its warm start), so the
logged model stands alone: no base model to find, no PEFT to install.
"""
from __future__ import annotations

import json
from pathlib import Path

from raycf import cache, storage, tracking
from raycf.config.schema import ExperimentConfig
from raycf.models.resolve import resolve_model_dir
from raycf.trial.plan import make_plan


def best_row(cfg: ExperimentConfig, rows: list[dict]) -> dict | None:
    """The finished trial with the best sweep.metric, or None."""
    sc = cfg.sweep
    done = [r for r in rows if r["status"] == "FINISHED" and sc.metric in r["metrics"]]
    if not done:
        return None
    return (min if sc.mode == "min" else max)(done, key=lambda r: r["metrics"][sc.metric])


def mark_best(cfg: ExperimentConfig, uri: str, parent_run_id: str, best: dict | None) -> dict:
    """The best trial as the parent's tags (`raycf.best_run_id`, `raycf.best_run`, `raycf.best_metric`); its value
    as the parent's metric `best/<metric>`."""
    if best is None:
        return {}
    c = tracking.client(uri)
    for k, v in {"raycf.best_run_id": best["run_id"], "raycf.best_run": best["run"],
                 "raycf.best_metric": cfg.sweep.metric}.items():
        c.set_tag(parent_run_id, k, v)
    return {f"best/{cfg.sweep.metric.replace('/', '_')}": best["metrics"][cfg.sweep.metric]}


def trial_config(cfg: ExperimentConfig, sweep_dir: str, run_id: str) -> tuple[ExperimentConfig, list] | None:
    """The config the trial of MLflow run `run_id` ran last (its Tune point, kept under <sweep>/runs/; a PBT trial's
    latest values) and the stage keys it took from a PBT donor."""
    runs = storage.join(sweep_dir, "runs")
    for name in storage.listdir(runs) if storage.exists(runs) else []:
        kept = json.loads(storage.read_text(storage.join(runs, name)))
        if kept.get("run_id") == run_id:
            return cfg.with_overrides({**kept.get("params", {}), "search": {}}), kept.get("prefix", [])
    return None


def log_best_model(cfg: ExperimentConfig, uri: str, sweep_dir: str, best: dict | None) -> str | None:
    """Log the best trial's last stage as the model `model` of its run (registered as sweep.register_best when
    set); the model's URI, or None (no finished trial, or its stage no longer in the stage cache: said)."""
    if best is None:
        return None
    kept = trial_config(cfg, sweep_dir, best["run_id"])
    if kept is None:
        print(f"[raycf] best trial {best['run']}: its point is not under {sweep_dir}/runs; no model logged")
        return None
    tc, prefix = kept
    model_dir = resolve_model_dir(tc.model.name, allow_download=tc.model.allow_download,
                                  cache_dir=Path(tc.cache_dir) if tc.cache_dir else None)
    plan = make_plan(tc, model_dir, prefix=prefix)
    last = cache.lookup(plan.stage_entry(len(tc.stages)))
    if last is None:
        print(f"[raycf] best trial {best['run']}: its last stage is gone from the stage cache; no model logged")
        return None
    model, tok = weights(tc, plan, model_dir, last)
    import mlflow
    mlflow.set_tracking_uri(uri)
    ended = tracking.client(uri).get_run(best["run_id"]).info.end_time
    with mlflow.start_run(run_id=best["run_id"]):  # the trial's own (finished) run; it ends FINISHED again
        info = mlflow.transformers.log_model(
            {"model": model, "tokenizer": tok}, name="model", task="text-generation",
            pip_requirements=[f"transformers=={version('transformers')}", f"torch=={version('torch')}"],
            registered_model_name=cfg.sweep.register_best or None,
            metadata={"raycf.stages": " > ".join(tc.stages), "raycf.finetune": tc.finetune.method})
    c = tracking.client(uri)
    c.set_terminated(best["run_id"], "FINISHED", end_time=ended)  # its duration stays the trial's own
    c.set_tag(best["run_id"], "raycf.model_uri", f"runs:/{best['run_id']}/model")
    return info.model_uri


def weights(tc: ExperimentConfig, plan, model_dir: Path, last: Path):
    """The trial's model after its last stage: the full weights, or its start with the adapter merged in."""
    if tc.finetune.method == "full":
        from raycf.models.load import load_model
        return load_model(last, dtype=tc.model.dtype)
    from raycf.trial.checkpoint import load_base, with_adapter  # torch and PEFT: only a sweep that logs its model
    start = cache.lookup(plan.warm_entry()) if plan.warm_key else model_dir
    base, tok = load_base(tc, start)
    return with_adapter(base, last).merge_and_unload(), tok


def version(package: str) -> str:
    from importlib.metadata import version as installed
    return installed(package)
