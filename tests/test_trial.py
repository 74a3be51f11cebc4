"""raycf.trial on real Ray Train (2 gloo workers), real MLflow (sqlite), tiny models, offline data. Trials run on
a worker pool (raycf.pool, what a sweep uses)."""
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from raycf import config
from raycf.trial import launch as launch
from raycf.trial import plan as trial_plan
from raycf.trial import preflight as preflight
from raycf.trial import run as trial_run
from raycf.trial import stages as stages

pytestmark = pytest.mark.slow

STAGES = ["simplification", "empathetic_dialogue", "headline"]


@pytest.fixture(scope="module")
def ray_local(cache_dir, tmp_path_factory):
    beat = tmp_path_factory.mktemp("heartbeat")
    os.environ["RAYCF_HEARTBEAT_DIR"] = str(beat)  # workers inherit the driver's env at ray.init
    with launch.ray_session(num_cpus=2, include_dashboard=False, log_to_driver=False):  # the pool's 2 workers
        yield beat


@pytest.fixture(scope="module")
def workers(ray_local, tmp_path_factory):
    """A worker pool of the trials' shape (2 FSDP workers): the tests run their trials on it, so Ray Train starts
    once. A trial on a TorchTrainer of its own (`python -m raycf.trial`'s path) runs in tests/test_security.py,
    and loses its worker mid-stage in tests/test_autoscaling.py (its node killed)."""
    from raycf.trial import pool
    d = tmp_path_factory.mktemp("pool")
    p = pool.Pool(make_cfg(d), 1, str(d / "runs"), "trial-tests")
    yield p
    p.close()


def make_cfg(tmp_path, **over):
    base = {
        "name": "t", "seed": 0, "model": {"name": "tiny-causal"}, "stages": STAGES,
        "finetune": {"method": "lora", "lora_rank": 4, "lora_alpha": 8},
        "optim": {"lr": 3e-3, "steps_per_stage": 4, "batch_size": 4},
        "data": {"examples_per_stage": 64},
        "warm_start": {"kind": "none", "steps": 4, "batch_size": 4},
        "probes": {"suites": ["knowledge", "tasks"], "limit": 4, "max_new_tokens": 8},
        "resources": {"workers": 2, "cpus_per_worker": 1, "strategy": "fsdp", "max_failures": 2},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "test", "system_metrics": False},
        "storage_path": str(tmp_path / "runs"),
    }
    cfg = config.from_dict(base)
    return cfg.with_overrides(over) if over else cfg


def history(cfg, key):
    from raycf import tracking
    c = tracking.client(cfg.tracking.uri)
    exp = c.get_experiment_by_name(cfg.tracking.experiment)
    (run,) = c.search_runs([exp.experiment_id])
    return run, {m.step: m.value for m in c.get_metric_history(run.info.run_id, key)}


def stage_results(cfg):
    model_dir = preflight.check(cfg)
    plan = trial_plan.make_plan(cfg, model_dir)
    return plan, [json.loads((plan.stage_dir(k) / "result.json").read_text()) for k in (1, 2, 3)]


@pytest.fixture(scope="module")
def baseline(workers, tmp_path_factory):
    """One FSDP2 causal LoRA trial, uninterrupted: the reference other tests compare with."""
    cfg = make_cfg(tmp_path_factory.mktemp("baseline"))
    return cfg, trial_run.run(cfg, workers=workers)


def test_causal_trial_three_stages_tracked_and_reloadable(baseline):
    cfg, final = baseline
    assert final["stage"] == 3
    run, losses = history(cfg, "train/loss")
    assert run.info.status == "FINISHED"
    assert sorted(losses) == [1, 2, 3]
    _, probe = history(cfg, "probe/facts_geography")
    assert sorted(probe) == [0, 1, 2, 3]  # step 0 = before training
    assert "headline/knowledge_FG" in final
    # every stage's adapter reloads, in this process, to the loss the live model had
    plan, results = stage_results(cfg)
    from peft import PeftModel
    from raycf.models.load import load_model
    from raycf.train import eval_loss
    for k, res in enumerate(results, 1):
        assert res["train/loss"] == pytest.approx(losses[k], rel=1e-6)
        model, tok = load_model(Path(plan.model_dir))
        model = PeftModel.from_pretrained(model, plan.stage_dir(k))
        examples = stages.stage_examples(cfg, k, tok, "causal")[:4]
        assert eval_loss(model, examples, "causal", tok.pad_token_id) == pytest.approx(res["train/live_loss"],
                                                                                      abs=1e-5)


def test_ddp_gives_the_fsdp_losses(baseline, workers, tmp_path):
    ddp = make_cfg(tmp_path, **{"resources.strategy": "ddp"})
    trial_run.run(ddp, workers=workers)
    (_, a), (_, b) = stage_results(baseline[0]), stage_results(ddp)
    assert [r["train/loss"] for r in b] == pytest.approx([r["train/loss"] for r in a], abs=1e-4)


def test_bf16_trials_on_fsdp2_and_ddp_train_in_bf16_and_pass_the_checkpoint_check(baseline, workers, tmp_path):
    """resources.mixed_precision bf16 (what `auto` is on a GPU): FSDP2 (bf16 policy + autocast) and DDP (autocast)
    finish every stage; each checkpoint reloads to the live weights' loss (both read in fp32); the losses are
    fp32's to bf16 precision (tests/test_train.py states the tolerance)."""
    from tests.test_train import BF16_TOLERANCE
    fp32 = [r["train/loss"] for r in stage_results(baseline[0])[1]]
    for strategy in ("fsdp", "ddp"):
        cfg = make_cfg(tmp_path / strategy, **{"resources.mixed_precision": "bf16", "resources.strategy": strategy})
        assert trial_run.run(cfg, workers=workers)["stage"] == 3
        results = stage_results(cfg)[1]
        assert [r["train/loss"] for r in results] != fp32
        assert [r["train/loss"] for r in results] == pytest.approx(fp32, abs=BF16_TOLERANCE), strategy
        for r in results:
            assert r["train/reload_loss"] == pytest.approx(r["train/live_loss"], rel=1e-5), strategy


def test_seq2seq_trial_completes(workers, tmp_path):
    cfg = make_cfg(tmp_path, **{"model.name": "tiny-seq2seq"})
    final = trial_run.run(cfg, workers=workers)
    assert final["stage"] == 3
    _, losses = history(cfg, "train/loss")
    assert sorted(losses) == [1, 2, 3] and all(v > 0 for v in losses.values())


def test_an_ewc_trial_whose_worker_is_killed_in_stage_3_resumes_with_stage_2s_fisher(ray_local, workers, tmp_path):
    """continual.method ewc on 2 FSDP2 workers of the pool: a worker SIGKILLed inside stage 3 (whose penalty needs
    the Fisher and anchors stage 2 left) restarts the group, which reads them back from stage 2's checkpoint, each rank its
    own shards, and ends with the uninterrupted trial's per-stage losses and penalties."""
    over = {"continual.method": "ewc", "continual.ewc.penalty": 1e4, "continual.ewc.fisher_examples": 8}
    (tmp_path / "clean").mkdir()
    (tmp_path / "killed").mkdir()
    clean = make_cfg(tmp_path / "clean", **over)
    trial_run.run(clean, workers=workers)
    _, want = stage_results(clean)
    cfg = make_cfg(tmp_path / "killed", **over)
    killed = []

    def kill():
        pid = json.loads((ray_local / "rank1.json").read_text())["pid"]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
    watcher = when_rank0_reaches(ray_local, 3, kill)
    final = trial_run.run(cfg, workers=workers)  # the pool restarts its worker group, as in a sweep
    watcher.join(timeout=1)
    assert killed and final["stage"] == 3
    _, got = stage_results(cfg)
    for key in ("train/loss", "train/method_loss"):
        assert [r[key] for r in got] == pytest.approx([r[key] for r in want], abs=1e-6), key
    assert got[2]["train/method_loss"] > 0
    _, losses = history(cfg, "train/loss")
    assert sorted(losses) == [1, 2, 3]


def test_general_warm_start_is_computed_once_for_two_trials(workers, tmp_path):
    # one stage each: the shared warm start is what is tested
    a = make_cfg(tmp_path, **{"warm_start.kind": "general", "stages": STAGES[:1]})
    b = a.with_overrides({"optim.lr": 1e-3, "name": "t2"})
    trial_run.run(a, workers=workers)
    warm = list((tmp_path / "runs" / "cache" / "warm").iterdir())
    assert len(warm) == 1
    stamp = (warm[0] / "result.json").stat().st_mtime_ns
    trial_run.run(b, workers=workers)
    assert list((tmp_path / "runs" / "cache" / "warm").iterdir()) == warm
    assert (warm[0] / "result.json").stat().st_mtime_ns == stamp


# --- faults: nothing finished is lost, and the results equal the uninterrupted baseline bit for bit -----

RESULT_PREFIXES = ("probe/", "headline/", "score_initial/", "score_final/", "score_drop/", "task_", "vs_base/",
                   "warm_start/")


def results(metrics: dict) -> dict:
    """The measured results of a trial (probe scores, forgetting figures, objective), without timings."""
    return {k: v for k, v in metrics.items() if k.startswith(RESULT_PREFIXES)}


def when_rank0_reaches(beat_dir: Path, stage: int, action, timeout: float = 300) -> threading.Thread:
    """Run `action()` in a thread once rank 0's heartbeat shows `stage` (its training has begun)."""
    for f in beat_dir.glob("*.json"):
        f.unlink()

    def watch():
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if json.loads((beat_dir / "rank0.json").read_text()).get("stage") == stage:
                    action()
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def test_mlflow_server_stopped_mid_trial_loses_nothing_and_results_are_bit_identical(ray_local, baseline, workers,
                                                                                     mlflow_server, tmp_path):
    from mlflow import MlflowClient
    cfg = make_cfg(tmp_path, **{"tracking.uri": mlflow_server.url})
    spool, events = tmp_path / "runs" / "spool", []

    def outage():
        mlflow_server.stop()
        events.append("stopped")
        deadline = time.time() + 300
        while time.time() < deadline and not list(spool.glob("*.jsonl")):
            time.sleep(0.1)
        events.append("kept")  # stage 2's metrics waited in the spool
        mlflow_server.start()
        events.append("restarted")
    t = when_rank0_reaches(ray_local, 2, outage)
    final = trial_run.run(cfg, workers=workers)
    t.join(timeout=300)
    assert events == ["stopped", "kept", "restarted"]
    assert not list(spool.glob("*.jsonl"))  # everything sent
    c = MlflowClient(mlflow_server.url)
    (run,) = c.search_runs([c.get_experiment_by_name("test").experiment_id])
    assert run.info.status == "FINISHED"
    steps = lambda key: [m.step for m in c.get_metric_history(run.info.run_id, key)]  # noqa: E731
    assert steps("train/loss") == [1, 2, 3]
    assert steps("probe/facts_geography") == [0, 1, 2, 3]
    assert "accuracy_matrix.csv" in [f.path for f in c.list_artifacts(run.info.run_id)]
    assert results(final) == results(baseline[1])  # determinism: same config and seed, same bits
    assert c.get_run(run.info.run_id).data.metrics["headline/mean_FG"] == final["headline/mean_FG"]


def test_disk_full_while_writing_stage_2_keeps_stage_1_and_the_rerun_resumes(ray_local, baseline, workers, tmpfs,
                                                                            tmp_path):
    from peft import PeftModel
    from raycf import cache
    from raycf.models.load import load_model
    from raycf.train import eval_loss
    disk = tmpfs("32m")
    cfg = make_cfg(tmp_path, **{"storage_path": str(disk / "runs"), "resources.max_failures": 0})

    def fill():
        with open(disk / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:
                pass
    t = when_rank0_reaches(ray_local, 2, fill)
    with pytest.raises(Exception) as failed:
        trial_run.run(cfg, workers=workers)
    t.join(timeout=60)
    assert "no space left on the disk of" in str(failed.value)
    assert "entries written before are intact" in str(failed.value)
    plan = trial_plan.make_plan(cfg, preflight.check(cfg))
    assert cache.lookup(plan.stage_dir(1)) == plan.stage_dir(1) and cache.lookup(plan.stage_dir(2)) is None
    assert not [p for p in plan.stage_dir(1).parent.iterdir() if p.name.startswith(".")]  # no half-written entry
    first = json.loads((plan.stage_dir(1) / "result.json").read_text())
    model, tok = load_model(Path(plan.model_dir))
    model = PeftModel.from_pretrained(model, plan.stage_dir(1))
    examples = stages.stage_examples(cfg, 1, tok, "causal")[:4]
    assert eval_loss(model, examples, "causal", tok.pad_token_id) == pytest.approx(first["train/live_loss"],
                                                                                 abs=1e-5)
    run, losses = history(cfg, "train/loss")
    assert run.info.status == "FAILED" and sorted(losses) == [1]
    (disk / "filler").unlink()
    final = trial_run.run(cfg, workers=workers)
    assert final["work/stage_trainings"] == 2  # stages 2 and 3; stage 1 came from the disk
    assert results(final) == results(baseline[1])


def test_corrupted_stage_checkpoint_is_detected_and_recomputed(baseline, workers, tmp_path):
    import shutil
    from raycf import cache
    cfg = make_cfg(tmp_path)
    shutil.copytree(Path(baseline[0].storage_path) / "cache", tmp_path / "runs" / "cache")
    plan = trial_plan.make_plan(cfg, preflight.check(cfg))
    weights = plan.stage_dir(2) / "adapter_model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte in the middle of the tensors
    weights.write_bytes(bytes(blob))
    final = trial_run.run(cfg, workers=workers)
    assert final["work/stage_trainings"] == 2  # stage 2 failed its checksum: it and stage 3 were trained again
    assert cache.lookup(plan.stage_dir(2)) == plan.stage_dir(2)
    assert (plan.stage_dir(2) / "adapter_model.safetensors").read_bytes() != bytes(blob)
    assert results(final) == results(baseline[1])
