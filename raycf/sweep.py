"""The sweep: Ray Tune explores a search space of continual fine-tuning trials; MLflow compares them.

    python -m raycf.sweep                                   # offline default sweep (search_spaces/default.yaml)
    python -m raycf.sweep --space search_spaces/X.yaml --set optim.lr=3e-4 --dry-run
    python -m raycf.sweep --resume                          # continue an interrupted sweep
    ray job submit --working-dir . -- python -m raycf.sweep # the same on a Ray cluster

Trials run on the worker pool (raycf.pool): Train worker groups started once per sweep, one per trial
slot, that take trial after trial. Shared work is done once: the `general` warm start and the
before-training probe row per (model, warm start) are prepared before trials run side by side, and stage
checkpoints are shared through the content-addressed stage cache by trials whose stage prefixes agree
(one trial at a time, as on 2 CPUs, reuses every prefix; two trials that reach the same new stage at the
same moment both train it, and the second's equal copy is dropped).
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from raycf.config import ConfigError, ExperimentConfig, _build, redact_uri


@dataclass
class SweepConfig:
    num_samples: int = 1              # samples of the sampled domains (grid domains multiply this)
    search_alg: str = "basic"         # basic (Tune's grid/random) | optuna
    scheduler: str = "fifo"           # fifo | asha (time = stage index)
    metric: str = "objective"         # what ranks trials and drives ASHA / optuna
    mode: str = "min"
    task_floor: float = 0.0           # objective = mean FG + 100 x shortfall of learned-task average below this
    grace_period: int = 1             # ASHA: stages before a trial may be stopped
    reduction_factor: float = 2.0
    max_concurrent: int = 0           # 0 = as many as the cluster holds
    trial_cpus: float = 0.1           # the Tune trial's own driver (it only waits on its Train workers)
    worker_pool: bool = True          # trials run on persistent Train worker groups (raycf.pool); false: a
                                      # TorchTrainer per trial, whose workers come and go with it


SCHEDULERS, ALGS = ("fifo", "asha"), ("basic", "optuna")


def sweep_config(cfg: ExperimentConfig) -> SweepConfig:
    problems: list[str] = []
    sc = _build(SweepConfig, cfg.sweep, "sweep.", problems)
    if not problems:
        if sc.scheduler not in SCHEDULERS:
            problems.append(f"sweep.scheduler: {sc.scheduler!r} is not one of {', '.join(SCHEDULERS)}")
        if sc.search_alg not in ALGS:
            problems.append(f"sweep.search_alg: {sc.search_alg!r} is not one of {', '.join(ALGS)}")
        if sc.mode not in ("min", "max"):
            problems.append(f"sweep.mode: {sc.mode!r} must be min or max")
        if sc.num_samples < 1:
            problems.append(f"sweep.num_samples: must be >= 1, got {sc.num_samples}")
    if problems:
        raise ConfigError(problems)
    return sc


# ----------------------------------------------------------------------------- resources

def fit_resources(cfg: ExperimentConfig, sc: SweepConfig, cluster: dict) -> tuple[ExperimentConfig, int]:
    """Worker CPUs that leave room for the trial driver (the naive 1 + 2 x 1 CPUs on 2 CPUs deadlocks),
    and how many trials fit at once. Raises ConfigError if one trial can never fit."""
    r = cfg.resources
    total_cpu, total_gpu = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    need = sc.trial_cpus + r.workers * r.cpus_per_worker
    if r.workers * r.gpus_per_worker > total_gpu + 1e-9:
        raise ConfigError([f"resources: a trial needs {r.workers * r.gpus_per_worker:g} GPUs, the cluster has "
                           f"{total_gpu:g}; set resources.gpus_per_worker=0 or add GPU nodes"])
    if need > total_cpu + 1e-9:
        if r.workers * r.cpus_per_worker > total_cpu + 1e-9:
            raise ConfigError([f"resources: a trial needs {r.workers} workers x {r.cpus_per_worker:g} CPU + "
                               f"{sc.trial_cpus:g} = {need:g} CPUs, the cluster has {total_cpu:g}; lower "
                               f"resources.workers or resources.cpus_per_worker"])
        # shrink each worker's share just enough for the trial driver to fit beside them
        share = round((total_cpu - sc.trial_cpus) / r.workers - 0.005, 2)
        cfg = cfg.with_overrides({"resources.cpus_per_worker": share})
        need = sc.trial_cpus + r.workers * share
    fits = max(1, int((total_cpu + 1e-9) // need))
    if r.gpus_per_worker > 0:
        fits = min(fits, int((total_gpu + 1e-9) // (r.workers * r.gpus_per_worker)))
    if sc.max_concurrent:
        fits = min(fits, sc.max_concurrent)
    return cfg, fits


# ----------------------------------------------------------------------------- the Tune trainable

def tune_trial(params: dict, *, base: dict, sweep_dir: str, parent_run_id: str, uri: str,
               board: str | None = None) -> None:
    """One Tune trial: apply the sampled point, open (or, on resume, reopen) its MLflow run, and run the trial:
    as a job of the worker pool (`board`: the name of its board actor), relaying each stage's result to Tune, or
    as a TorchTrainer of its own with Tune reporting. (Names, not actor handles, travel in Tune's state: a resumed
    sweep has a new pool.)"""
    import ray
    import ray.tune
    from raycf import pool, storage, tracking, trial
    from raycf.config import flat_params, from_dict
    from raycf.models import resolve_model_dir

    cfg = from_dict(base).with_overrides(params)
    ctx = ray.tune.get_context()
    trial_id, trial_name = ctx.get_trial_id(), ctx.get_trial_name()
    record = storage.join(sweep_dir, "runs", f"{trial_id}.json")
    logged, work = -1, {}
    if storage.exists(record):  # a retried trial or a resumed sweep: same MLflow run, stages it holds not logged again
        run_id = json.loads(storage.read_text(record))["run_id"]
        c = tracking.client(uri)
        c.update_run(run_id, status="RUNNING")
        for key in ("sweep/probe_passes", "sweep/stage_trainings"):
            history = c.get_metric_history(run_id, key)
            logged = max([logged] + [m.step for m in history])
            if history:
                work[key] = max(history, key=lambda m: (m.step, m.timestamp)).value
    else:
        run_id = tracking.start_run(uri, cfg.tracking.experiment, trial_name, parent_run_id=parent_run_id,
                                    tags={"raycf.trial_id": trial_id, "raycf.task_order": " > ".join(cfg.stages)})
        storage.write_text(record, json.dumps({"run_id": run_id, "params": params}))
        tracking.log_params(uri, run_id, {**flat_params(cfg), "task_order": " > ".join(cfg.stages)})
    model_dir = resolve_model_dir(cfg.model.name, allow_download=cfg.model.allow_download,
                                  cache_dir=Path(cfg.cache_dir) if cfg.cache_dir else None)
    plan = replace(trial.make_plan(cfg, model_dir, run_id=run_id, tracking_uri=uri), logged=logged, work=work)
    if os.environ.get("RAYCF_HEARTBEAT_DIR"):  # fault-injection tests kill this trial driver by its pid
        beat = Path(os.environ["RAYCF_HEARTBEAT_DIR"]) / "driver.json"
        beat.parent.mkdir(parents=True, exist_ok=True)
        beat.write_text(json.dumps({"pid": os.getpid(), "trial_id": trial_id}))
    # the run's end status is set by the driver (Progress): a trial the scheduler stops is killed mid-call
    if board is None:
        from ray.tune.integration.ray_train import TuneReportCallback
        trial.trainer(cfg, plan, name=f"{trial_name}", callbacks=[TuneReportCallback()]).fit()
        return
    board = pool.find_board(board)
    job = ray.get(board.submit.remote(pool.job(cfg, plan, trial_id)))
    for item in pool.results(board, job):
        ray.tune.report({**item["metrics"], "stage_checkpoint": item.get("checkpoint", "")})


# ----------------------------------------------------------------------------- shared work

def prepare_shared(points: list[ExperimentConfig], uri: str, board=None) -> int:
    """Train each distinct `general` warm start and probe each distinct start once, before trials run (on the
    worker pool's slots side by side, or a TorchTrainer each). Returns how many prepare jobs ran."""
    import ray
    from raycf import cache, pool, trial
    seen, jobs, ran = set(), [], 0
    for cfg in points:
        model_dir = trial.check(cfg)
        plan = trial.make_plan(cfg, model_dir, tracking_uri=uri)
        if plan.start_key in seen:
            continue
        seen.add(plan.start_key)
        warm_ready = plan.warm_key is None or cache.published(plan.warm_entry())
        probe_ready = not plan.probe_tasks or cache.published(plan.probe_entry(0))
        if warm_ready and probe_ready:
            continue
        print(f"[raycf] preparing shared start {plan.start_key} (warm start: {cfg.warm_start.kind})")
        ran += 1
        if board is None:
            trial.trainer(cfg, plan, name=f"prepare-{plan.start_key}", prepare_only=True).fit()
        else:
            jobs.append(ray.get(board.submit.remote(pool.job(cfg, plan, f"prepare-{plan.start_key}",
                                                             prepare_only=True))))
    for job in jobs:
        for _ in pool.results(board, job):
            pass
    return ran


# ----------------------------------------------------------------------------- driver

def points_of(cfg: ExperimentConfig, resolved: dict) -> list[ExperimentConfig]:
    """One config per grid point (sampled keys at their first value): for checks and shared work."""
    from raycf.space import first_value, grid_points
    sampled = {k: first_value(cfg.search[k], k) for k, (name, _) in resolved.items() if name != "grid"}
    return [cfg.with_overrides({**sampled, **p, "search": {}, "sweep": {}}) for p in grid_points(resolved)]


def dry_run(cfg: ExperimentConfig, sc: SweepConfig, resolved: dict, points, fits: int) -> str:
    from raycf.space import count_trials
    n = count_trials(resolved, sc.num_samples)
    stages = sum(len(p.stages) for p in points) * sc.num_samples
    r = cfg.resources
    return (f"space ok: {n} trials, {stages} stage trainings without sharing, "
            f"{r.workers} workers x {r.cpus_per_worker:g} CPU"
            f"{f' + {r.gpus_per_worker:g} GPU' if r.gpus_per_worker else ''} + {sc.trial_cpus:g} CPU driver "
            f"per trial, {fits} at a time on this cluster")


def absolute_paths(cfg: ExperimentConfig) -> ExperimentConfig:
    """storage_path and cache_dir made absolute against the driver's working directory (cloud URIs kept)."""
    fixed = {}
    for key, value in (("storage_path", cfg.storage_path), ("cache_dir", cfg.cache_dir)):
        if value and "://" not in value:
            fixed[key] = str(Path(value).expanduser().resolve())
    return cfg.with_overrides(fixed) if fixed else cfg


def start_pool(cfg: ExperimentConfig):
    """A worker pool for sweeps shaped like `cfg` (its resources, fitted to the current Ray cluster) that several
    run(..., workers=pool) calls share, e.g. from a notebook: the Train start-up is paid once. close() it after."""
    import ray
    from raycf import pool, storage
    cfg = absolute_paths(cfg)
    cfg, fits = fit_resources(cfg, sweep_config(cfg), ray.cluster_resources())
    return pool.Pool(cfg, fits, storage.resolve(cfg.storage_path), f"{cfg.name}-shared")


def run(cfg: ExperimentConfig, *, resume: bool = False, dry: bool = False, workers=None) -> int:
    """The sweep of `cfg` (a search space); exit status 0 if every trial finished. workers: a pool from
    start_pool() to run the trials on (kept open), instead of one started and closed here."""
    import ray
    from raycf import space, storage, tracking, trial
    trial.mark("sweep_start")
    cfg = absolute_paths(cfg)  # trials run in Tune's per-trial working dirs: a relative path would scatter
    sc = sweep_config(cfg)
    resolved = space.resolve(cfg)
    points = points_of(cfg, resolved)
    if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):  # a cluster (e.g. `ray job submit`): ask it
        ray.init(address=os.environ.get("RAY_ADDRESS"), ignore_reinit_error=True)
        cluster = ray.cluster_resources()
    else:
        cluster = trial.local_cluster()
    for p in points:  # every problem of every grid point, before training (models built after a dry run)
        trial.check(p, cluster=cluster, build=False)
    cfg, fits = fit_resources(cfg, sc, cluster)
    share = {"resources.cpus_per_worker": cfg.resources.cpus_per_worker}
    points = [p.with_overrides(share) for p in points]
    print(dry_run(cfg, sc, resolved, points, fits))
    if dry:
        return 0
    uri = tracking.resolve_uri(cfg.tracking.uri)
    tracking.check_reachable(uri)
    root = storage.resolve(cfg.storage_path)
    storage.check(root)
    sweep_dir = storage.join(root, "sweeps", cfg.name)
    parent_file = storage.join(sweep_dir, "parent_run.json")
    if resume and not storage.exists(parent_file):
        raise ConfigError([f"--resume: no sweep named {cfg.name!r} under {redact_uri(root)}; run without --resume"])
    if not resume and storage.exists(parent_file):
        raise ConfigError([f"sweep {cfg.name!r} already exists under {redact_uri(root)}; continue it with --resume or "
                           f"give a new name with --set name=..."])
    # a local Ray started here is stopped when the sweep ends
    with trial.ray_session(num_cpus=int(cluster["CPU"]), include_dashboard=True, log_to_driver=False):
        trial.mark("sweep_ray_ready")
        t0, t_start = time.perf_counter(), time.time()
        own = workers is None and sc.worker_pool
        if workers is not None and not workers.holds(cfg):
            raise ConfigError([f"resources: the worker pool given has {workers.shape}, this sweep needs "
                               f"{trial.pool_shape(cfg)}; start a pool for it with start_pool()"])
        if own:  # started first: its workers import while the driver opens the MLflow runs
            from raycf import pool
            workers = pool.Pool(cfg, fits, root, cfg.name)
            print(f"[raycf] starting the worker pool: {fits} Train worker group(s) of {cfg.resources.workers} "
                  f"worker(s), kept for every trial")
        fits = workers.slots if workers is not None else fits
        try:
            parent_run_id = open_parent(cfg, uri, sweep_dir, resume)
            try:
                # no waiting for the pool: Tune starts its trials meanwhile, their jobs wait on the board
                board = workers.board if workers else None
                prepared = prepare_shared(points, uri, board) if fits > 1 else 0  # one at a time: the cache shares
                grid = tuner(cfg, sc, resolved, sweep_dir, parent_run_id, uri, fits, resume,
                             workers.name if workers else None).fit()
            except BaseException:
                close_children(uri, parent_run_id, "KILLED")
                tracking.end_run(uri, parent_run_id, "FAILED")
                raise
        finally:
            startup = 0.0
            if own:
                ready = workers.ready_at()
                startup = ready - t_start if ready else 0.0
                workers.close()
        trial.mark("sweep_trials_done")
        spool = storage.join(root, "spool")
        waiting = tracking.flush(uri, spool, wait_s=60)  # what an MLflow outage kept back
        if waiting:
            raise ConnectionError(f"MLflow at {redact_uri(uri)} still does not answer; {waiting:g} operation(s) wait in "
                                  f"{redact_uri(spool)}: send them with `python -m raycf.tracking flush --storage "
                                  f"{redact_uri(root)}`, then see the summary with --resume")
        close_children(uri, parent_run_id, "KILLED")  # trials the scheduler stopped
        rows = summarize(uri, parent_run_id, sc)
        stats = work_counts(rows, points, sc)
        tracking.log_metrics(uri, parent_run_id, {**stats, "wall_seconds": time.perf_counter() - t0,
                                                  "prepare_jobs": prepared, "pool_startup_seconds": startup}, step=0)
        tracking.end_run(uri, parent_run_id, "FINISHED" if not grid.errors else "FAILED")
        print_summary(cfg, sc, rows, stats, uri)
        return 1 if grid.errors else 0


def open_parent(cfg: ExperimentConfig, uri: str, sweep_dir: str, resume: bool) -> str:
    """The sweep's parent MLflow run: reopened on --resume, else created with the search space as artifact."""
    from raycf import storage, tracking
    from raycf.config import to_yaml
    parent_file = storage.join(sweep_dir, "parent_run.json")
    if resume:
        return json.loads(storage.read_text(parent_file))["run_id"]
    parent_run_id = tracking.start_run(uri, cfg.tracking.experiment, cfg.name, tags={"raycf.sweep": cfg.name})
    storage.write_text(parent_file, json.dumps({"run_id": parent_run_id}))
    space = to_yaml(cfg)
    storage.write_text(storage.join(sweep_dir, "search_space.yaml"), space)
    tracking.log_text(uri, parent_run_id, "search_space.yaml", space)
    return parent_run_id


def print_summary(cfg: ExperimentConfig, sc: SweepConfig, rows: list[dict], stats: dict, uri: str) -> None:
    """The ranked table, the effect of each searched parameter, the shared-work counts, and where to compare."""
    searched = list(cfg.search)
    print(ranked_table(rows, sc, searched))
    for line in effects(rows, searched):
        print(line)
    print(f"stage trainings: {stats['stage_trainings']:g} run (naive: {stats['stage_trainings_naive']:g}); "
          f"probe passes: {stats['probe_passes']:g} run (naive: {stats['probe_passes_naive']:g})")
    if uri.startswith(("http://", "https://")):
        print(f"compare runs:  open {redact_uri(uri)} (experiment {cfg.tracking.experiment})")
    else:
        print(f"compare runs:  mlflow ui --backend-store-uri {redact_uri(uri)}")


def tuner(cfg, sc, resolved, sweep_dir: str, parent_run_id: str, uri: str, fits: int, resume: bool,
          board: str | None = None):
    from ray import tune
    from raycf import space, storage
    trainable = tune.with_resources(
        tune.with_parameters(tune_trial, base=cfg.to_dict(), sweep_dir=sweep_dir,
                             parent_run_id=parent_run_id, uri=uri, board=board),
        {"CPU": sc.trial_cpus})
    path = storage.join(sweep_dir, "tune")
    if resume and tune.Tuner.can_restore(path):
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
    scheduler = None
    if sc.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler
        scheduler = ASHAScheduler(time_attr="stage", max_t=len(cfg.stages), grace_period=sc.grace_period,
                                  reduction_factor=sc.reduction_factor)
    search_alg = None
    if sc.search_alg == "optuna":
        from ray.tune.search.optuna import OptunaSearch
        search_alg = OptunaSearch()
    return tune.Tuner(
        trainable,
        param_space=space.param_space(resolved),
        tune_config=tune.TuneConfig(metric=sc.metric, mode=sc.mode, num_samples=sc.num_samples,
                                    scheduler=scheduler, search_alg=search_alg, max_concurrent_trials=fits,
                                    # FIFO: one trial actor serves trial after trial (no process start, no
                                    # re-import of tune/mlflow/raycf: ~7 s a trial on 2 CPUs, measured). Not
                                    # with ASHA: a stopped trial's fit() would keep running in the kept actor
                                    reuse_actors=sc.scheduler == "fifo"),
        run_config=tune.RunConfig(name="tune", storage_path=sweep_dir,
                                  callbacks=[Progress(sc, sweep_dir, storage.join(cfg.storage_path, "spool"), uri,
                                                      len(cfg.stages), board)],
                                  verbose=0, failure_config=tune.FailureConfig(max_failures=1)),
    )


def close_children(uri: str, parent_run_id: str, status: str) -> None:
    """Nothing stays RUNNING: children the scheduler stopped (or a crash left) end as `status`."""
    from raycf import tracking
    c = tracking.client(uri)
    parent = c.get_run(parent_run_id)
    for r in c.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'"):
        if r.info.status == "RUNNING":
            c.set_terminated(r.info.run_id, status=status)


def summarize(uri: str, parent_run_id: str, sc: SweepConfig) -> list[dict]:
    from raycf import tracking
    c = tracking.client(uri)
    exp = c.get_run(parent_run_id).info.experiment_id
    rows = []
    for r in c.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_run_id}'"):
        rows.append({"run": r.info.run_name, "status": r.info.status, "params": r.data.params,
                     "metrics": r.data.metrics, "run_id": r.info.run_id})
    return rows


def work_counts(rows: list[dict], points, sc: SweepConfig) -> dict:
    trained = sum(r["metrics"].get("sweep/stage_trainings", 0) for r in rows)
    probed = sum(r["metrics"].get("sweep/probe_passes", 0) for r in rows)
    naive = sum(len(p.stages) for p in points) * sc.num_samples
    return {"stage_trainings": trained, "stage_trainings_naive": naive,
            "probe_passes": probed, "probe_passes_naive": naive + len(points) * sc.num_samples}


def _param_col(key: str) -> str:
    return {"task_order": "order", "warm_start.kind": "warm_start"}.get(key, key.split(".")[-1])


def ranked_table(rows: list[dict], sc: SweepConfig, searched: list[str]) -> str:
    """Trials best first by the sweep's metric, with the searched parameters and the forgetting figures."""
    cols = ["forgetting/mean_FG", "forgetting/knowledge/FG", "forgetting/reasoning/FG", "forgetting/reading/FG",
            "forgetting/bias/FG", "forgetting/tasks/average"]
    params = ["task_order" if k == "stages" else k for k in searched]
    sign = 1 if sc.mode == "min" else -1
    rows = sorted(rows, key=lambda r: sign * r["metrics"].get(sc.metric, float("inf") * sign))
    width = {k: max([len(_param_col(k))] + [len(r["params"].get(k, "-")) for r in rows]) for k in params}
    head = f"{'rank':4s} {'trial':28s} {'status':8s} " + " ".join(f"{_param_col(k):>{width[k]}s}" for k in params) + \
        f" {'stage':>5s} " + " ".join(f"{c.removeprefix('forgetting/'):>15s}" for c in cols)
    lines = [head]
    for i, r in enumerate(rows, 1):
        m, p = r["metrics"], r["params"]
        vals = " ".join(f"{m[c]:15.2f}" if c in m else f"{'-':>15s}" for c in cols)
        lines.append(f"{i:<4d} {r['run'][:28]:28s} {r['status'][:8]:8s} " +
                     " ".join(f"{p.get(k, '-'):>{width[k]}s}" for k in params) +
                     f" {int(m.get('stage', 0)):5d} {vals}")
    return "\n".join(lines)


def effects(rows: list[dict], searched: list[str], metric: str = "forgetting/mean_FG") -> list[str]:
    """One line per searched parameter: the mean of `metric` over the trials at each of its values; for
    the warm start, whether `general` forgot less than `none` (the study's finding), said either way."""
    params = ["task_order" if k == "stages" else k for k in searched]
    done = [r for r in rows if metric in r["metrics"]]
    lines = []
    for k in params:
        groups: dict[str, list[float]] = {}
        for r in done:
            groups.setdefault(r["params"].get(k, "-"), []).append(r["metrics"][metric])
        if len(groups) < 2:
            continue
        lines.append(f"{metric} by {k}: " + ", ".join(
            f"{v} {sum(x) / len(x):.2f} ({len(x)} trials)" for v, x in groups.items()))
    if "warm_start.kind" in params:
        others = [k for k in params if k != "warm_start.kind"]
        pairs: dict[tuple, dict[str, float]] = {}
        for r in done:
            pairs.setdefault(tuple(r["params"].get(k) for k in others), {})[r["params"]["warm_start.kind"]] = \
                r["metrics"][metric]
        matched = [(p["general"], p["none"]) for p in pairs.values() if {"general", "none"} <= p.keys()]
        if matched:
            wins = sum(g < n for g, n in matched)
            g, n = (sum(x) / len(matched) for x in zip(*matched))
            verdict = ("general forgets less than none, as the study found" if wins == len(matched) else
                       "general does NOT forget less than none here, unlike the study" if wins == 0 else
                       f"mixed: general forgets less in {wins} of {len(matched)} matched settings, "
                       f"so this sweep does not confirm the study's finding everywhere")
            lines.append(f"warm start: mean FG general {g:.2f} vs none {n:.2f} over {len(matched)} matched "
                         f"settings; {verdict}")
    return lines


def _progress_cls():
    from ray.tune import Callback

    class Progress(Callback):
        """Driver side: one line per finished stage, and each trial's MLflow run ended FINISHED (all
        stages), KILLED (stopped by the scheduler) or FAILED (raised). With the worker pool, a trial that
        ends, fails or is retried has its job cancelled there at once (its workers stop at the next step)."""

        def __init__(self, sc: SweepConfig, sweep_dir: str, spool: str, uri: str, n_stages: int,
                     board: str | None = None):
            self.sc, self.sweep_dir, self.spool, self.uri = sc, sweep_dir, spool, uri
            self.n_stages, self.board = n_stages, board

        def _cancel(self, trial) -> None:
            if self.board is not None:
                from raycf import pool
                pool.find_board(self.board).cancel.remote(trial.trial_id)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            stage, fg, loss = result.get("stage"), result.get("forgetting/mean_FG"), result.get("train/loss")
            done = sum(t.status == "TERMINATED" for t in trials)
            print(f"[sweep] {trial.trial_id} stage {stage}: "
                  f"loss {loss if loss is None else round(loss, 4)}  mean FG so far "
                  f"{fg if fg is None else round(fg, 2)}  ({done}/{len(trials)} trials done)", flush=True)

        def _send(self, trial, op: dict) -> None:
            from raycf import storage, tracking
            record = storage.join(self.sweep_dir, "runs", f"{trial.trial_id}.json")
            if storage.exists(record):
                tracking.send(self.uri, json.loads(storage.read_text(record))["run_id"], op, self.spool)

        def _end(self, trial, status: str) -> None:
            self._send(trial, {"op": "end", "status": status})

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._cancel(trial)
            stage = (trial.last_result or {}).get("stage")
            if stage != self.n_stages:
                # the scheduler decided on this stage's result; the workers, not yet told, may have logged
                # one more stage before they were stopped
                self._send(trial, {"op": "tags", "tags": {"raycf.stopped_after_stage": str(stage)}})
            self._end(trial, "FINISHED" if stage == self.n_stages else "KILLED")

        def on_trial_recover(self, iteration, trials, trial, **info):
            self._cancel(trial)  # its driver died; the retry's job starts after this one stopped

        def on_trial_error(self, iteration, trials, trial, **info):
            self._cancel(trial)
            self._end(trial, "FAILED")
    return Progress


def Progress(sc: SweepConfig, sweep_dir: str, spool: str, uri: str, n_stages: int,  # noqa: N802 - lazy ray import
             board: str | None = None):
    return _progress_cls()(sc, sweep_dir, spool, uri, n_stages, board)


def main(argv=None) -> int:
    import argparse
    from raycf.config import load, parse_overrides
    p = argparse.ArgumentParser(prog="python -m raycf.sweep", description=__doc__.splitlines()[0])
    p.add_argument("--space", default="search_spaces/default.yaml", help="search-space YAML")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a dotted key")
    p.add_argument("--dry-run", action="store_true", help="resolve, validate and count; train nothing")
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep of the same name")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    try:
        cfg = load(args.space, parse_overrides(args.set))
        return run(cfg, resume=args.resume, dry=args.dry_run)
    except (ConfigError, ConnectionError) as e:
        if args.debug:
            raise
        print(e.lines(args.space) if isinstance(e, ConfigError) else f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
