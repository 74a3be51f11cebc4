"""raycf.trial.record on a real MLflow sqlite store, no Ray: run names from searched values, the description,
the datasets and tags a run opens with, and MLflow's system metrics while a trial runs."""
import json
import time

from raycf import cache, config, layout, tracking
from raycf.data.sources import probe_task, probe_task_names, stage_rows
from raycf.trial import record
from raycf.trial.plan import TrialPlan


def cfg(tmp_path, **over):
    return config.load(None, {"model.name": "tiny-causal", "stages": ["simplification", "headline"],
                              "probes.suites": ["knowledge", "tasks"], "probes.limit": 5,
                              "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "tracking.experiment": "rec",
                              **over})


def test_run_names_read_as_the_searched_values():
    assert record.run_name({"seed": 1, "warm_start.kind": "general", "optim.lr": 0.003, "finetune.lora_rank": 16}) \
        == "ws=general lr=3e-3 r=16 seed=1"  # the seed last, the shorter of 0.003 and 3e-3
    assert record.run_name({"optim.lr": 0.25, "stages": ["a", "b"]}) == "lr=0.25 order=a>b"
    assert record.run_name({"model.name": "/models/smollm2-135m"}, "tune_trial_70f2e_00003") == \
        "model=smollm2-135m #3"  # several samples share values: the Tune trial's number tells them apart
    assert record.run_name({}, "tune_trial_x_00001") == "trial #1"
    assert record.run_name({"optim.lr": 0.001}, "tune_trial_3a5c077f") == "lr=1e-3 #3a5c077f"  # a searcher (Optuna)


def test_the_description_gives_the_headline_figures_and_what_each_step_is(tmp_path):
    c = cfg(tmp_path)
    text = record.describe(c, 2, {layout.MEAN_FG: 12.345, layout.category_fg("knowledge"): 20.0,
                                  layout.STEREOTYPE_CHANGE: -0.05, layout.LEARNED_AVERAGE: 30.5,
                                  layout.LEARNED_GAIN: 7.25, layout.OBJECTIVE: 12.345})
    assert text == ("after stage 2/2 (headline): mean FG 12.3 %, knowledge FG 20.0 %, stereotype change -0.050, "
                    "learned tasks 30.50, gain +7.25, objective 12.35\n\nsteps: 0 start · 1 simplification · 2 headline")


def test_a_run_opens_with_its_config_datasets_probe_columns_and_provenance(tmp_path):
    c = cfg(tmp_path)
    run_id = record.open_run(c.tracking.uri, c, "r", {"optim.lr": "0.001"})
    run = tracking.client(c.tracking.uri).get_run(run_id)
    names = probe_task_names(c)
    assert json.loads(run.data.tags[layout.PROBES_TAG]) == [[n, probe_task(c, n).category, probe_task(c, n).metric[0]]
                                                            for n in names]
    assert run.data.tags["raycf.steps"] == "0 start · 1 simplification · 2 headline"
    assert run.data.tags["mlflow.source.name"].startswith("python") and "raycf.version" in run.data.tags
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert list(inputs) == ["simplification", "headline", *(f"probe:{n}" for n in names)]
    train = inputs["simplification"]
    rows = stage_rows(c, "simplification")
    assert [t.value for t in train.tags] == ["train"] and train.dataset.source_type == "code"
    assert json.loads(train.dataset.profile) == {"num_rows": len(rows)}
    assert train.dataset.digest == cache.key("simplification", rows)[:32]
    assert json.loads(inputs[f"probe:{names[0]}"].dataset.profile) == {"num_rows": 5}  # probes.limit
    saved = config.load(tracking.client(c.tracking.uri).download_artifacts(run_id, "config.yaml", str(tmp_path)))
    assert saved.stages == c.stages and saved.search == {}


def test_system_metrics_are_logged_while_the_trial_runs_and_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")  # MLflow's own knob; raycf samples at 10 s
    c = cfg(tmp_path)
    uri = c.tracking.uri
    for on in (True, False):
        run_id = tracking.start_run(uri, "rec", f"sys-{on}")
        plan = TrialPlan(model_dir="", kind="causal", storage=str(tmp_path), start_key="", run_id=run_id,
                         tracking_uri=uri)
        with record.system_metrics(c.with_overrides({"tracking.system_metrics": on}), plan, rank=0):
            time.sleep(1.6)
        logged = tracking.client(uri).get_run(run_id).data.metrics
        assert ("system/cpu_utilization_percentage" in logged) is on, sorted(logged)
        assert all(k.startswith("system/") for k in logged)


def test_only_rank_0_samples(tmp_path):
    c = cfg(tmp_path)
    run_id = tracking.start_run(c.tracking.uri, "rec", "r1")
    plan = TrialPlan(model_dir="", kind="causal", storage=str(tmp_path), start_key="", run_id=run_id,
                     tracking_uri=c.tracking.uri)
    with record.system_metrics(c, plan, rank=1):
        pass
    assert tracking.client(c.tracking.uri).get_run(run_id).data.metrics == {}


def test_a_reopened_run_counts_the_work_its_spool_kept_back(tmp_path):
    """A stage logged while the store refused writes (a locked sqlite file, a server away) waits in the spool; a
    resumed trial reopening the run sends it first and carries its work counts on, not the counts before it."""
    c = cfg(tmp_path)
    uri, spool = c.tracking.uri, str(tmp_path / "spool")
    run_id = record.open_run(uri, c, "r", {})
    tracking.log_metrics(uri, run_id, {"work/stage_trainings": 1.0, "work/probe_passes": 2.0}, step=1)
    kept = {"op": "metrics", "metrics": {"work/stage_trainings": 2.0, "work/probe_passes": 3.0, "train/loss": 0.5},
            "step": 2, "timestamp": int(time.time() * 1000)}
    tracking._write_pending(spool, run_id, [kept])
    assert record.reopen_run(uri, run_id) == (1, {"work/stage_trainings": 1.0, "work/probe_passes": 2.0})
    assert record.reopen_run(uri, run_id, spool) == (2, {"work/stage_trainings": 2.0, "work/probe_passes": 3.0})
    assert tracking.pending(spool, run_id) == []  # sent
    history = tracking.client(uri).get_metric_history(run_id, "train/loss")
    assert [(m.step, m.value, m.timestamp) for m in history] == [(2, 0.5, kept["timestamp"])]


def test_a_worker_group_ray_train_restarted_counts_on_from_what_its_run_logged(tmp_path):
    """A trial on a TorchTrainer of its own whose worker group Ray Train restarted after stage 1: the new group's
    work counts go on from those the run logged there (its spool counted, not sent: that is the trial driver's
    part), not from where the trial started; the plan's own where the store cannot answer."""
    from dataclasses import replace

    from raycf import storage
    from raycf.trial import stages
    c = cfg(tmp_path, storage_path=str(tmp_path / "runs"))
    uri, spool = c.tracking.uri, storage.join(c.storage_path, "spool")  # where the plan's stages log to
    run_id = record.open_run(uri, c, "r", {})
    tracking.log_metrics(uri, run_id, {"work/stage_trainings": 1.0, "work/probe_passes": 2.0}, step=1)
    kept = {"op": "metrics", "metrics": {"work/stage_trainings": 2.0, "work/probe_passes": 3.0}, "step": 2,
            "timestamp": int(time.time() * 1000)}
    tracking._write_pending(spool, run_id, [kept])
    plan = TrialPlan(model_dir="", kind="causal", storage=c.storage_path, start_key="", run_id=run_id,
                     tracking_uri=uri, work={"work/stage_trainings": 0, "work/probe_passes": 1})
    assert stages.logged_counts(plan) == {"work/stage_trainings": 2.0, "work/probe_passes": 3.0}
    assert tracking.pending(spool, run_id) == [kept]
    (tmp_path / "a-file").write_text("")
    gone = replace(plan, tracking_uri=f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}")  # no store can be there
    assert stages.logged_counts(gone) == plan.work
