"""raycf.sweep end to end: real Ray Tune + Train, real MLflow (sqlite), tiny models, offline data."""
from pathlib import Path

import pytest

from raycf import config
from raycf.sweep import driver as sweep_driver
from raycf.trial import launch as launch
from raycf.trial import run as trial_run

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def small(tmp_path, **over) -> dict:
    """A small sweep as `--set` overrides of the default space."""
    base = {
        "name": "s", "model.name": "tiny-causal", "stages": ["simplification", "headline"],
        "optim.steps_per_stage": 2, "optim.batch_size": 4, "data.examples_per_stage": 32,
        "warm_start.steps": 2, "warm_start.batch_size": 4, "finetune.method": "lora", "sweep.seeds": 1,
        "sweep.log_best_model": False, "tracking.system_metrics": False,  # both tested on their own
        "probes.suites": ["knowledge"], "probes.limit": 4, "probes.max_new_tokens": 4,
        "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "tracking.experiment": "sweep-test",
        "storage_path": str(tmp_path / "runs"),
        # two FSDP2 workers of 1 CPU (0.95 beside the trial driver): one trial at a time on 2 CPUs, the shape of
        # the module's shared worker pool
        "resources.workers": 2, "resources.cpus_per_worker": 1,
    }
    base.update(over)
    return base


def load(over: dict):
    return config.load(ROOT / "search_spaces/default.yaml", over)


def children(uri: str, experiment: str):
    from raycf import tracking
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    kids = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return c, parents, kids


def assert_equals_clean_run(metrics: dict | None, over: dict, lr: float, tmp_path, clean_runs: dict,
                            workers=None) -> None:
    """`metrics` hold, bit for bit, the probe and forgetting figures of one uninterrupted trial at the same
    point (raycf.trial's run, in storage and an MLflow store of its own, on `workers` (a worker pool) or a
    TorchTrainer of its own; run once per point and session: `clean_runs`, the conftest fixture). metrics None:
    only run it."""
    import json

    same = ("name", "storage_path", "tracking.uri", "search")  # what does not change the trial's numbers
    point = json.dumps({**{k: v for k, v in over.items() if k not in same}, "optim.lr": lr}, sort_keys=True)
    if point not in clean_runs:
        sized = {"resources.cpus_per_worker": workers.shape["cpus_per_worker"]} if workers else {}  # the pool's
        clean = load({**over, "optim.lr": lr, "search": {}, "storage_path": str(tmp_path / "clean"),
                      "tracking.uri": f"sqlite:///{tmp_path / 'clean.db'}", **sized})
        clean_runs[point] = trial_run.run(clean, workers=workers)
    want = clean_runs[point]
    keys = [k for k in want if k.startswith(("probe/", "headline/", "score_initial/", "score_final/", "task_"))]
    assert keys and (metrics is None or {k: metrics[k] for k in keys} == {k: want[k] for k in keys})


@pytest.fixture(scope="module")
def ray_local(cache_dir, tmp_path_factory):
    import os
    import ray
    beat = tmp_path_factory.mktemp("heartbeat")
    os.environ["RAYCF_HEARTBEAT_DIR"] = str(beat)  # workers and trial drivers inherit it at ray.init

    with launch.ray_session(num_cpus=2, include_dashboard=False, log_to_driver=False):
        yield beat
    del os.environ["RAYCF_HEARTBEAT_DIR"]


# the point of the fault tests below and of tests/test_sweep_interrupt.py: their clean run is shared
def second_trial_in_stage(records, beats, stage: int, proc=None, timeout_s: float = 300) -> tuple:
    """Wait until the sweep's second trial (the second record under `records`) is in `stage` by rank 0's heartbeat
    in `beats` (RAYCF_HEARTBEAT_DIR); (its trial id or None, the last heartbeat). Stops early if `proc` ends."""
    import json
    import time
    deadline, second, beat, first = time.time() + timeout_s, None, {}, set()
    while time.time() < deadline and not (second and beat.get("stage") == stage) and \
            (proc is None or proc.poll() is None):
        seen = {f.stem for f in records.glob("*.json")}
        if len(seen) == 1:
            first = seen
        if second is None and len(seen) == 2:
            (second,) = seen - first  # the first trial is done: forget its heartbeats
            for f in beats.glob("rank*.json"):
                f.unlink()
        try:
            beat = json.loads((beats / "rank0.json").read_text()) if second else {}
        except (OSError, ValueError):
            beat = {}
        time.sleep(0.05)
    return second, beat


FAULT_POINT = {"stages": ["simplification", "headline", "explanation"], "optim.steps_per_stage": 8}


@pytest.fixture(scope="module")
def shared_pool(ray_local, clean_runs, tmp_path_factory):
    """One worker pool for this module's sweeps (sweep_driver.start_pool): Ray Train starts once, not per sweep. The
    fault tests' clean run is its first trial (a pool trial gives a TorchTrainer's numbers bit for bit:
    tests/test_autoscaling.py)."""
    d = tmp_path_factory.mktemp("pool")
    workers = sweep_driver.start_pool(load(small(d, name="pool")))
    assert_equals_clean_run(None, small(d, **FAULT_POINT), 2e-3, d, clean_runs, workers=workers)
    yield workers
    workers.close()


def test_the_best_trials_model_loads_from_mlflow_in_one_call_and_scores_its_last_probe_numbers(warm_sweep, tmp_path):
    import json

    import mlflow
    from raycf import layout
    from raycf.data.sources import probe_task
    from raycf.probe.run import run_probes
    uri, _ = warm_sweep
    c, parents, kids = children(uri, "warm-sweep")
    p = parents[0].data
    done = [k for k in kids if k.info.status == "FINISHED"]
    best = min(done, key=lambda k: k.data.metrics["headline/objective"])
    assert p.tags["raycf.best_run_id"] == best.info.run_id and p.tags["raycf.best_run"] == best.info.run_name
    assert p.metrics["best/headline_objective"] == best.data.metrics["headline/objective"]
    (version,) = c.search_model_versions("name = 'warm-best'")  # sweep.register_best
    assert version.run_id == best.info.run_id and best.data.tags["raycf.model_uri"] == f"runs:/{best.info.run_id}/model"
    mlflow.set_tracking_uri(uri)
    parts = mlflow.transformers.load_model(f"runs:/{best.info.run_id}/model", return_type="components")
    # the trial's own resolved config, as its run keeps it, says how it was probed
    cfg = config.load(c.download_artifacts(best.info.run_id, "config.yaml", str(tmp_path)))
    names = [t for t, _, _ in json.loads(best.data.tags[layout.PROBES_TAG])]
    scores = run_probes(parts["model"].eval(), parts["tokenizer"], [probe_task(cfg, n) for n in names],
                        shots=cfg.probes.shots, limit=cfg.probes.limit, seed=cfg.seed,
                        max_new_tokens=cfg.probes.max_new_tokens, precision=cfg.probes.precision)
    want = {n: best.data.metrics[layout.probe(n)] for n in names}
    got = {n: scores[n][probe_task(cfg, n).metric[0]] for n in names}
    assert got == want and len(want) == 11


def test_warm_start_sweep_tracks_parent_children_and_shares_the_warm_start(warm_sweep):
    uri, folder = warm_sweep  # conftest: warm start none vs general x 2 seeds, 2 stages, every probe suite
    c, parents, kids = children(uri, "warm-sweep")
    assert len(parents) == 1 and len(kids) == 4
    assert parents[0].info.status == "FINISHED" and all(k.info.status == "FINISHED" for k in kids)
    assert {k.data.tags["mlflow.parentRunId"] for k in kids} == {parents[0].info.run_id}
    assert sorted((k.data.params["warm_start.kind"], k.data.params["seed"]) for k in kids) == \
        [("general", "0"), ("general", "1"), ("none", "0"), ("none", "1")]
    for k in kids:
        m = k.data.metrics
        steps = [h.step for h in c.get_metric_history(k.info.run_id, "probe/facts_geography")]
        assert sorted(steps) == [0, 1, 2]
        assert "headline/knowledge_FG" in m and "headline/bias_FG" not in m and "headline/tasks_FG" not in m
        assert k.data.params["task_order"] == "simplification > headline"
        # the base model's scores: the start's own without a warm start, the none trials' row 0 with one
        assert m["score_initial/knowledge"] - m["warm_start/knowledge_change"] == pytest.approx(
            next(x for x in kids if x.data.params["warm_start.kind"] == "none").data.metrics["score_initial/knowledge"])
        if k.data.params["warm_start.kind"] == "none":
            assert m["vs_base/mean_FG"] == m["headline/mean_FG"] and m["warm_start/knowledge_change"] == 0
    p = parents[0].data
    # the warm start and the 0-shot rows before training are shared by both seeds: 2 starts + 8 stages probed
    assert (p.metrics["sweep/stage_trainings"], p.metrics["sweep/probe_passes"]) == (8, 10)
    assert len(list((folder / "runs" / "cache" / "warm").iterdir())) == 1
    assert "verdict/warm_start/none-general/mean" in p.metrics
    assert p.tags["mlflow.note.content"].startswith("per setting, mean ± sd [95% t interval] over seeds:")
    assert "warm start, on vs_base/mean_FG (both measured from the base model)" in p.tags["mlflow.note.content"]
    findings = Path(c.download_artifacts(parents[0].info.run_id, "findings.txt", str(folder))).read_text()
    assert findings.strip() == p.tags["mlflow.note.content"].replace("\n\n", "\n")


def test_all_orders_of_three_tasks_train_15_stages(shared_pool, tmp_path):
    over = small(tmp_path, stages=["simplification", "headline", "explanation"],
                 search={"stages": {"orders": "all"}}, name="orders")
    assert sweep_driver.run(load(over), workers=shared_pool) == 0
    _, parents, kids = children(over["tracking.uri"], "sweep-test")
    assert len(kids) == 6
    m = parents[0].data.metrics
    assert (m["sweep/stage_trainings"], m["sweep/stage_trainings_naive"]) == (15, 18)
    # trials run one at a time here, so the first computes the before-training row and the rest reuse it:
    # one probe pass before training, then one per distinct stage prefix
    assert m["sweep/probe_passes"] == 1 + 15
    assert len({k.data.params["task_order"] for k in kids}) == 6


def test_asha_stops_a_worse_trial_after_stage_1_and_its_run_ends_killed(shared_pool, tmp_path):
    over = small(tmp_path, stages=["simplification", "headline", "explanation"], name="asha",
                 search={"optim.lr": {"grid": [3e-3, 1e-7]}},
                 sweep={"scheduler": "asha", "metric": "train/loss", "mode": "min", "grace_period": 1,
                        "reduction_factor": 2})
    assert sweep_driver.run(load(over), workers=shared_pool) == 0
    _, _, kids = children(over["tracking.uri"], "sweep-test")
    killed = [k for k in kids if k.info.status == "KILLED"]
    assert killed, [k.info.status for k in kids]
    # ASHA decided on the stage-1 result (its first rung); the stop reaches the workers asynchronously, so a
    # stopped run may hold one more stage, never all three
    assert sorted(k.data.tags["raycf.stopped_after_stage"] for k in killed)[0] == "1"
    assert all(int(k.data.tags["raycf.stages_done"]) < 3 for k in killed)
    assert all(k.info.status in ("FINISHED", "KILLED") for k in kids)
    best = [k for k in kids if k.data.params["optim.lr"] == "0.003"]
    assert best[0].info.status == "FINISHED" and best[0].data.tags["raycf.stages_done"] == "3"


def test_optuna_searches_two_objectives_and_the_summary_prints_their_pareto_set(shared_pool, tmp_path, capsys):
    """sweep.objectives with search_alg optuna: Optuna's multi-objective sampler proposes the trials (seeded: the
    same learning rates again on a rerun), and the Pareto set the parent run records is the brute-force set of the
    finished trials' final metrics."""
    import json

    from tests.test_pareto import brute_force
    objectives = {"headline/mean_FG": "min", "headline/tasks_average": "max"}
    over = small(tmp_path, name="pareto", search={"optim.lr": {"loguniform": [1e-4, 1e-2]}},
                 **{"probes.suites": ["knowledge", "tasks"]},
                 sweep={"search_alg": "optuna", "num_samples": 3, "objectives": objectives, "seeds": 1,
                        "log_best_model": False})
    assert sweep_driver.run(load(over), workers=shared_pool) == 0
    out = capsys.readouterr().out
    c, (parent,), kids = children(over["tracking.uri"], "sweep-test")
    done = [k for k in kids if k.info.status == "FINISHED"]
    assert len(done) == 3 and len({k.data.params["optim.lr"] for k in done}) == 3
    points = [tuple(k.data.metrics[m] for m in objectives) for k in done]
    front = {done[i].info.run_id for i in brute_force(points, list(objectives.values()))}
    assert set(json.loads(parent.data.tags["raycf.pareto"])) == front
    assert parent.data.metrics["sweep/pareto_size"] == len(front)
    assert json.loads(parent.data.params["sweep.objectives"]) == objectives
    assert (f"Pareto set of headline/mean_FG (min) and headline/tasks_average (max): {len(front)} of 3 finished "
            f"trials") in out


def sweep_with_a_kill(beats, over: dict, workers, beat: str, when, victim) -> tuple:
    """Run the sweep of `over` on `workers` while a thread SIGKILLs the pid victim(heartbeat) the first time
    when(heartbeat) holds for the heartbeat file `beat`; checks that the kill happened and that the one trial
    finished with each stage logged once. Returns (MLflow client, the trial's run id)."""
    import json
    import os
    import signal
    import threading
    import time
    killed = []

    def killer():
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                seen = json.loads((beats / beat).read_text())
                if when(seen):
                    pid = victim(seen)
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
    for f in beats.glob("*.json"):
        f.unlink()
    t = threading.Thread(target=killer, daemon=True)
    t.start()
    assert sweep_driver.run(load(over), workers=workers) == 0
    t.join(timeout=1)
    assert killed, f"{beat} never showed the moment to kill"
    c, _, kids = children(over["tracking.uri"], "sweep-test")
    assert len(kids) == 1 and kids[0].info.status == "FINISHED"
    run_id = kids[0].info.run_id
    assert [m.step for m in c.get_metric_history(run_id, "train/loss")] == [1, 2, 3]  # each stage logged once
    return c, run_id


def test_trial_driver_killed_mid_stage_2_is_retried_from_stage_1_with_the_same_results(ray_local, shared_pool,
                                                                                      clean_runs, tmp_path):
    """Tune retries a trial whose driver process died. Its workers live in the pool, not in the driver: the
    retry's job supersedes the old one, which stops (inside stage 2, or after it if the stage ended before the
    cancel arrived), and goes on from the last stage the old one finished: each stage trained and logged once into
    the same MLflow run, and the results of an uninterrupted run (same seed, bit for bit)."""
    import json
    over = small(tmp_path, name="driverkill", search={"optim.lr": {"grid": [2e-3]}}, **FAULT_POINT)
    c, run_id = sweep_with_a_kill(ray_local, over, shared_pool, "rank0.json", lambda b: b.get("stage") == 2,
                                  lambda b: json.loads((ray_local / "driver.json").read_text())["pid"])
    # counted over both attempts: 1, 2, 3 once each (a stage 2 cut by the cancel is not a training); retraining
    # stage 1, or stage 2 after it finished, would make it 4 or more
    assert c.get_metric_history(run_id, "work/stage_trainings")[-1].value == 3
    assert_equals_clean_run(c.get_run(run_id).data.metrics, over, 2e-3, tmp_path, clean_runs)


def test_pool_worker_killed_mid_stage_2_restarts_its_group_which_resumes_from_stage_1(ray_local, shared_pool,
                                                                                     clean_runs, tmp_path):
    """A Train worker of the worker pool dies inside stage 2: Ray Train restarts the slot's worker group, which
    takes the same job again, goes on from stage 1's checkpoint, logs each stage once, and ends with the results
    of an uninterrupted run (same seed, bit for bit)."""
    over = small(tmp_path, name="workerkill", search={"optim.lr": {"grid": [2e-3]}}, **FAULT_POINT)
    c, run_id = sweep_with_a_kill(ray_local, over, shared_pool, "rank1.json",
                                  lambda b: b.get("stage") == 2 and b.get("step", 0) >= 1, lambda b: b["pid"])
    assert c.get_metric_history(run_id, "work/stage_trainings")[-1].value == 3  # stage 1 was not trained again
    assert_equals_clean_run(c.get_run(run_id).data.metrics, over, 2e-3, tmp_path, clean_runs)
