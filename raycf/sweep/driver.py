"""The sweep driver: Ray Tune explores a search space of continual fine-tuning trials; MLflow compares them.

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
import time
from dataclasses import replace

from raycf import cache, space, storage, tracking
from raycf.cluster import ClusterView, view as cluster_view
from raycf.config.files import to_yaml
from raycf.config.schema import ExperimentConfig, SweepConfig
from raycf.data.sources import probe_task_names
from raycf.errors import (ClusterUnreachable, ConfigError, Terminated, TrackingUnreachable, did_you_mean,
                          sigterm_interrupts)
from raycf.redact import redact_uri
from raycf.space import count_trials, first_value, grid_points
from raycf.sweep import best, pbt
from raycf.sweep.summary import pareto_rows, print_summary, summarize, verdict_metrics, work_counts
from raycf.sweep.trainable import tune_trial
from raycf.timeline import mark
from raycf.trial import pool, record
from raycf.trial.launch import pool_shape, ray_session, trainer
from raycf.trial.plan import make_plan
from raycf.trial.preflight import check, local_cluster
from raycf.trial.results import metric_names


def fit_resources(cfg: ExperimentConfig, sc: SweepConfig, cluster: dict,
                  drivers: int = 0) -> tuple[ExperimentConfig, int]:
    """Worker CPUs that leave room for the trial driver (the naive 1 + 2 x 1 CPUs on 2 CPUs deadlocks),
    and how many trials fit at once. drivers: trial drivers that wait beside the workers whatever runs (a PBT
    population: all of its trials are live at once), their CPUs set aside first. Raises ConfigError if one trial
    can never fit."""
    r = cfg.resources
    if drivers:  # the drivers' CPUs first, the workers' share shrunk to what is left if need be
        rest = cluster.get("CPU", 0.0) - drivers * sc.trial_cpus
        if r.workers * r.cpus_per_worker > rest + 1e-9:
            share = round(rest / r.workers - 0.005, 2)
            if share <= 0:
                raise ConfigError([f"sweep.trial_cpus: {drivers} live trials x {sc.trial_cpus:g} CPU leave no CPU of "
                                   f"{cluster.get('CPU', 0.0):g} for their workers; lower sweep.trial_cpus"])
            cfg = cfg.with_overrides({"resources.cpus_per_worker": share})
        cfg, fits = fit_resources(cfg, replace(sc, trial_cpus=0.0), {**cluster, "CPU": rest})
        return cfg, fits
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


def connect(address: str | None) -> None:
    """ray.init to the cluster at `address` (RAY_ADDRESS), or the one this process is in; one line if none answers."""
    import ray
    try:
        ray.init(address=address, ignore_reinit_error=True)
    except ConnectionError as e:
        why = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        raise ClusterUnreachable([f"RAY_ADDRESS={address}: no Ray cluster let this process in ({why}); check the "
                                  f"address, and on a cluster with Ray's token auth set RAY_AUTH_MODE=token (the "
                                  f"token from ~/.ray/auth_token or RAY_AUTH_TOKEN_PATH)"]) from e


def node_problem(cfg: ExperimentConfig, seen: ClusterView) -> None:
    """One Train worker must fit on one node, live or of a kind the autoscaler may add: a worker never spans
    nodes, so a cluster whose total would do can still never start it. (A total too small is
    preflight.resource_problems' to say.)"""
    r, most = cfg.resources, seen.most()
    problems = [f"resources.{key}: one worker needs {need:g} {res}, the largest node of this cluster has "
                f"{seen.largest_node(res):g}{f' (node types from {seen.source})' if seen.source else ''}; lower "
                f"resources.{key} or add larger nodes"
                for key, res, need in (("cpus_per_worker", "CPU", r.cpus_per_worker),
                                       ("gpus_per_worker", "GPU", r.gpus_per_worker))
                if seen.largest_node(res) + 1e-9 < need <= most.get(res, 0.0) / max(r.workers, 1) + 1e-9]
    if problems:
        raise ConfigError(problems)


def prepare_shared(points: list[ExperimentConfig], uri: str, board=None) -> int:
    """Train each distinct `general` warm start and probe each distinct start once, before trials run (on the
    worker pool's slots side by side, or a TorchTrainer each). Returns how many prepare jobs ran."""
    import ray
    seen, jobs, ran = set(), [], 0
    for cfg in points:
        model_dir = check(cfg)
        plan = make_plan(cfg, model_dir, tracking_uri=uri)
        if plan.start_key in seen:
            continue
        seen.add(plan.start_key)
        warm_ready = plan.warm_key is None or cache.published(plan.warm_entry())
        probe_ready = not plan.probe_tasks or (cache.published(plan.probe_entry(0)) and
                                               cache.published(plan.base_entry()))
        if warm_ready and probe_ready:
            continue
        print(f"[raycf] preparing shared start {plan.start_key} (warm start: {cfg.warm_start.kind})")
        ran += 1
        if board is None:
            trainer(cfg, plan, name=f"prepare-{plan.start_key}", prepare_only=True).fit()
        else:
            jobs.append(ray.get(board.submit.remote(pool.job(cfg, plan, f"prepare-{plan.start_key}",
                                                             prepare_only=True))))
    for job in jobs:
        for _ in pool.results(board, job):
            pass
    return ran


def points_of(cfg: ExperimentConfig, resolved: dict) -> list[ExperimentConfig]:
    """One config per grid point (sampled keys at their first value): for checks and shared work."""
    sampled = {k: first_value(cfg.search[k], k) for k, (name, _) in resolved.items() if name != "grid"}
    return [cfg.with_overrides({**sampled, **p, "search": {}, "sweep": {}}) for p in grid_points(resolved)]


def metric_problem(sc: SweepConfig, points: list[ExperimentConfig]) -> None:
    """sweep.metric and every sweep.objectives name must be a metric every trial reports (a typo would fail
    inside Tune after the first trial)."""
    names = [set(metric_names(p, probe_task_names(p))) for p in points]
    common = set.intersection(*names) if names else set()
    wanted = [("sweep.metric", sc.metric)] + [(f"sweep.objectives.{m}", m) for m in sc.objectives]
    problems = [f"{key}: {name!r} is not a metric the trials report{metric_hint(name, common)}"
                for key, name in wanted if name not in common]
    if problems:
        raise ConfigError(problems)


def metric_hint(name: str, common: set) -> str:
    tail = name.rsplit("/", 1)[-1].lower()  # an old name (forgetting/mean_FG): the same figure's new one
    same = sorted((n for n in common if n.rsplit("/", 1)[-1].lower() == tail), key=lambda n: n[:8] != "headline")
    hint = f"; did you mean {same[0]!r}?" if same else did_you_mean(name, sorted(common))
    if not hint.startswith("; did you mean"):
        hint = "; e.g. " + ", ".join(n for n in ("headline/objective", "headline/mean_FG", "headline/knowledge_FG",
                                                 "headline/tasks_average") if n in common)
    return hint


def dry_run(cfg: ExperimentConfig, sc: SweepConfig, resolved: dict, points, fits: int) -> str:
    n = count_trials(resolved, sc.num_samples)
    stages = sum(len(p.stages) for p in points) * sc.num_samples
    r = cfg.resources
    return (f"space ok: {n} trials, {stages} stage trainings without sharing, "
            f"{r.workers} workers x {r.cpus_per_worker:g} CPU"
            f"{f' + {r.gpus_per_worker:g} GPU' if r.gpus_per_worker else ''} + {sc.trial_cpus:g} CPU driver "
            f"per trial, {fits} at a time on this cluster")


def absolute_paths(cfg: ExperimentConfig) -> ExperimentConfig:
    """storage_path and cache_dir made absolute (storage.resolve: against the driver's working directory, or the
    durable job home inside a Ray job; cloud URIs kept)."""
    fixed = {}
    for key, value in (("storage_path", cfg.storage_path), ("cache_dir", cfg.cache_dir)):
        if value and "://" not in value:
            fixed[key] = storage.resolve(value)
    return cfg.with_overrides(fixed) if fixed else cfg


def start_pool(cfg: ExperimentConfig):
    """A worker pool for sweeps shaped like `cfg` (its resources, fitted to the Ray cluster grown as far as its
    autoscaler may grow it) that several run(..., workers=pool) calls share, e.g. from a notebook: the Train start-up
    is paid once. close() it after."""
    cfg = absolute_paths(cfg)
    cfg, fits = fit_resources(cfg, cfg.sweep, cluster_view().most())
    return pool.Pool(cfg, fits, storage.resolve(cfg.storage_path), f"{cfg.name}-shared")


def run(cfg: ExperimentConfig, *, resume: bool = False, dry: bool = False, workers=None, space_file: str = "",
        dashboard: bool = False) -> int:
    """The sweep of `cfg` (a search space, read from `space_file` if from a file); exit status 0 if every trial
    finished. workers: a pool from start_pool() to run the trials on (kept open), instead of one started and
    closed here. dashboard: a local Ray started here gets Ray's dashboard (--ray-dashboard)."""
    import ray
    mark("sweep_start")
    # Ctrl-C is raycf's to handle (every run ended, Ray stopped, raycf's --resume hint), not Tune's: Tune would
    # stop the trials gracefully, print its own Tuner.restore hint and return as if the sweep had finished
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    cfg = absolute_paths(cfg)  # trials run in Tune's per-trial working dirs: a relative path would scatter
    sc = cfg.sweep
    resolved = space.resolve(cfg)
    points = points_of(cfg, resolved)
    if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):  # a cluster (e.g. `ray job submit`): ask it
        connect(os.environ.get("RAY_ADDRESS"))
        seen = cluster_view()
        cluster = seen.most()  # an autoscaling cluster: sized for what it grows to
    else:
        seen, cluster = None, local_cluster()
    for p in points:  # every problem of every grid point, before training (models built after a dry run)
        check(p, cluster=cluster, build=False)
    metric_problem(sc, points)
    trials = count_trials(resolved, sc.num_samples)
    cfg, fits = fit_resources(cfg, sc, cluster, trials if pbt.is_pbt(cfg) else 0)
    if seen is not None:
        node_problem(cfg, seen)
    fits = min(fits, trials)  # no worker group that no trial would use (each costs a start-up: ~30 s on 2 CPUs)
    share = {"resources.cpus_per_worker": cfg.resources.cpus_per_worker}
    points = [p.with_overrides(share) for p in points]
    uri, root = tracking.resolve_uri(cfg.tracking.uri), storage.resolve(cfg.storage_path)
    if not dry:
        print(storage.where_results_go(root, uri), flush=True)
    if seen is not None:
        print(f"[raycf] {seen.describe()}", flush=True)
    print(dry_run(cfg, sc, resolved, points, fits))
    if dry:
        return 0
    tracking.check_reachable(uri)
    storage.check(root)
    sweep_dir = storage.join(root, "sweeps", cfg.name)
    parent_file = storage.join(sweep_dir, "parent_run.json")
    if resume and not storage.exists(parent_file):
        raise ConfigError([f"--resume: no sweep named {cfg.name!r} under {redact_uri(root)}; run without --resume"])
    if not resume and storage.exists(parent_file):
        raise ConfigError([f"sweep {cfg.name!r} already exists under {redact_uri(root)}; continue it with --resume or "
                           f"give a new name with --set name=..."])
    # a local Ray started here is stopped when the sweep ends
    with ray_session(num_cpus=int(cluster["CPU"]), include_dashboard=dashboard, log_to_driver=False), \
            sigterm_interrupts():  # `ray job stop`: like Ctrl-C
        mark("sweep_ray_ready")
        t0, t_start = time.perf_counter(), time.time()
        own = workers is None and sc.worker_pool
        if workers is not None and not workers.holds(cfg):
            raise ConfigError([f"resources: the worker pool given has {workers.shape}, this sweep needs "
                               f"{pool_shape(cfg)}; start a pool for it with start_pool()"])
        if own:  # started first: its workers import while the driver opens the MLflow runs
            workers = pool.Pool(cfg, fits, root, cfg.name)
            print(f"[raycf] starting the worker pool: {fits} Train worker group(s) of {cfg.resources.workers} "
                  f"worker(s), kept for every trial")
        fits = workers.slots if workers is not None else fits
        parent_run_id, pool_open = None, own
        try:
            parent_run_id = open_parent(cfg, uri, sweep_dir, resume, space_file)
            # no waiting for the pool: Tune starts its trials meanwhile, their jobs wait on the board
            board = workers.board if workers else None
            prepared = prepare_shared(points, uri, board) if fits > 1 else 0  # one at a time: the cache shares
            grid = tuner(cfg, sc, resolved, sweep_dir, parent_run_id, uri, fits, resume,
                         workers.name if workers else None).fit()
            startup = 0.0
            if own:
                ready = workers.ready_at()
                startup = ready - t_start if ready else 0.0
                workers.close(timeout_s=60.0)  # a clean stop can take a minute: a signal meanwhile ends the parent
                pool_open = False
            mark("sweep_trials_done")
            return finish(cfg, uri, root, parent_run_id, points, grid,
                          {"wall_seconds": time.perf_counter() - t0, "prepare_jobs": prepared,
                           "pool_startup_seconds": startup})
        except TrackingUnreachable:
            raise  # nothing can be ended there: --resume does it
        except BaseException as e:
            # the parent first: `ray job stop` sends SIGKILL 3 s after its SIGTERM, the pool's stop comes after
            if parent_run_id is not None:
                end_parent(uri, parent_run_id, e)
            raise
        finally:
            if pool_open:  # stopped early: Ray's shutdown ends what is left
                workers.close(timeout_s=5.0)


def finish(cfg: ExperimentConfig, uri: str, root: str, parent_run_id: str, points, grid, bookkeeping: dict) -> int:
    """After the trials: what an outage kept back is sent, runs the scheduler stopped end KILLED, the parent gets
    the work counts and ends FINISHED (FAILED if a trial failed), and the summary is printed."""
    spool = storage.join(root, "spool")
    waiting = tracking.flush(uri, spool, wait_s=60)  # what an MLflow outage kept back
    if waiting:
        raise TrackingUnreachable(f"MLflow at {redact_uri(uri)} still does not answer; {waiting:g} operation(s) "
                                  f"wait in {redact_uri(spool)}: send them with `python -m raycf.tracking flush "
                                  f"--storage {redact_uri(root)}`, then see the summary with --resume")
    record.close_children(uri, parent_run_id, "KILLED")  # trials the scheduler stopped
    rows = summarize(uri, parent_run_id, cfg.sweep)
    stats = work_counts(rows, points, cfg.sweep)
    sweep = {f"sweep/{k}": v for k, v in {**stats, **bookkeeping}.items()}  # bookkeeping: one section
    top = best.best_row(cfg, rows)
    front = pareto_rows(rows, cfg.sweep.objectives)
    if cfg.sweep.objectives:
        sweep["sweep/pareto_size"] = len(front)
        tracking.client(uri).set_tag(parent_run_id, "raycf.pareto", json.dumps([r["run_id"] for r in front]))
    tracking.log_metrics(uri, parent_run_id, {**sweep, **verdict_metrics(cfg, rows),
                                              **best.mark_best(cfg, uri, parent_run_id, top)}, step=0)
    if cfg.sweep.log_best_model:
        try:
            best.log_best_model(cfg, uri, storage.join(root, "sweeps", cfg.name), top)
        except Exception as e:  # noqa: BLE001 - every trial's numbers are in MLflow; only the extra copy is missing
            print(f"[raycf] the best trial's model was not logged: {e.__class__.__name__}: {e}", flush=True)
    lines = print_summary(cfg, cfg.sweep, rows, stats, uri, parent_run_id)
    tracking.log_text(uri, parent_run_id, "findings.txt", "\n".join(lines) + "\n")
    tracking.client(uri).set_tag(parent_run_id, "mlflow.note.content", "\n\n".join(lines))  # its description
    tracking.end_run(uri, parent_run_id, "FINISHED" if not grid.errors else "FAILED")
    return 1 if grid.errors else 0


def end_parent(uri: str, parent_run_id: str, e: BaseException) -> None:
    """Nothing left RUNNING when the sweep stops early: the children end KILLED, the parent KILLED with a tag
    saying why for Ctrl-C or SIGTERM (e.g. `ray job stop`), else FAILED."""
    interrupted = isinstance(e, KeyboardInterrupt)
    record.close_children(uri, parent_run_id, "KILLED")
    if interrupted:
        why = "SIGTERM" if isinstance(e, Terminated) else "SIGINT"
        tracking.client(uri).set_tag(parent_run_id, "raycf.ended", f"interrupted ({why})")
    tracking.end_run(uri, parent_run_id, "KILLED" if interrupted else "FAILED")


def open_parent(cfg: ExperimentConfig, uri: str, sweep_dir: str, resume: bool, space_file: str = "") -> str:
    """The sweep's parent MLflow run: reopened on --resume, else created, named after the sweep and its space
    file, with the searched space as params and as the artifact search_space.yaml."""
    parent_file = storage.join(sweep_dir, "parent_run.json")
    if resume:  # an interrupted or failed sweep's parent runs again
        run_id = json.loads(storage.read_text(parent_file))["run_id"]
        tracking.client(uri).update_run(run_id, status="RUNNING")
        return run_id
    name = f"{cfg.name} ({os.path.basename(space_file)})" if space_file else cfg.name
    tags = {**tracking.provenance(), "raycf.sweep": cfg.name, "raycf.space": space_file or "(given in Python)"}
    parent_run_id = tracking.start_run(uri, cfg.tracking.experiment, name, tags=tags)
    storage.write_text(parent_file, json.dumps({"run_id": parent_run_id}))
    space = to_yaml(cfg)
    storage.write_text(storage.join(sweep_dir, "search_space.yaml"), space)
    tracking.log_text(uri, parent_run_id, "search_space.yaml", space)
    sc = cfg.sweep
    params = {f"search.{k}": json.dumps(v) for k, v in cfg.search.items()}
    params |= {f"sweep.{k}": getattr(sc, k) for k in ("seeds", "num_samples", "scheduler", "search_alg", "metric",
                                                      "mode")}
    if sc.objectives:
        params["sweep.objectives"] = json.dumps(sc.objectives)
    tracking.log_params(uri, parent_run_id, params)
    return parent_run_id


def tuner(cfg: ExperimentConfig, sc: SweepConfig, resolved: dict, sweep_dir: str, parent_run_id: str, uri: str,
          fits: int, resume: bool,
          board: str | None = None):
    from ray import tune
    from raycf.sweep.progress import Progress  # imports ray.tune: not for dry runs
    trainable = tune.with_resources(
        tune.with_parameters(tune_trial, base=cfg, sweep_dir=sweep_dir,
                             parent_run_id=parent_run_id, uri=uri, board=board),
        {"CPU": sc.trial_cpus})
    path = storage.join(sweep_dir, "tune")
    if resume and tune.Tuner.can_restore(path):
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
    from raycf.sweep import schedulers
    scheduler = schedulers.make(cfg, resolved, board)
    search_alg, metric, mode = None, sc.metric, sc.mode
    if sc.search_alg == "optuna" and sc.objectives:  # Optuna's multi-objective sampler (NSGA-II) on all of them
        from ray.tune.search.optuna import OptunaSearch
        search_alg = OptunaSearch(metric=list(sc.objectives), mode=list(sc.objectives.values()), seed=cfg.seed)
        metric = mode = None  # Tune would hand the searcher its single metric instead
    elif sc.search_alg == "optuna":
        from ray.tune.search.optuna import OptunaSearch
        search_alg = OptunaSearch(seed=cfg.seed)
    return tune.Tuner(
        trainable,
        param_space=space.param_space(resolved),
        tune_config=tune.TuneConfig(metric=metric, mode=mode, num_samples=sc.num_samples,
                                    scheduler=scheduler, search_alg=search_alg,
                                    # PBT compares its whole population at each boundary: every trial is live
                                    # (their jobs wait their turn on the pool's board)
                                    max_concurrent_trials=None if pbt.is_pbt(cfg) else fits,
                                    # FIFO: one trial actor serves trial after trial (no process start, no
                                    # re-import of tune/mlflow/raycf: ~7 s a trial on 2 CPUs, measured); PBT:
                                    # a paused trial's actor serves the next one (its job is cancelled on the
                                    # board, and its thread ends in report()). Not with ASHA: a stopped
                                    # trial's fit() would keep running in the kept actor
                                    reuse_actors=sc.scheduler == "fifo" or pbt.is_pbt(cfg)),
        run_config=tune.RunConfig(name="tune", storage_path=sweep_dir,
                                  callbacks=[Progress(sweep_dir, storage.join(cfg.storage_path, "spool"), uri,
                                                      len(cfg.stages), board)],
                                  verbose=0, failure_config=tune.FailureConfig(max_failures=1)),
    )
