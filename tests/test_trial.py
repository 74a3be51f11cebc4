"""raycf.trial on real Ray Train (2 gloo workers), real MLflow (sqlite), tiny models, offline data."""
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from raycf import config, trial

pytestmark = pytest.mark.slow

STAGES = ["simplification", "empathetic_dialogue", "headline"]


@pytest.fixture(scope="module")
def ray_local(cache_dir, tmp_path_factory):
    import ray
    beat = tmp_path_factory.mktemp("heartbeat")
    os.environ["RAYCF_HEARTBEAT_DIR"] = str(beat)  # workers inherit the driver's env at ray.init
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield beat
    ray.shutdown()


def make_cfg(tmp_path, **over):
    base = {
        "name": "t", "seed": 0, "model": {"name": "tiny-causal"}, "stages": STAGES,
        "finetune": {"method": "lora", "lora_rank": 4, "lora_alpha": 8},
        "optim": {"lr": 3e-3, "steps_per_stage": 4, "batch_size": 4},
        "data": {"examples_per_stage": 64},
        "warm_start": {"kind": "none", "steps": 4, "batch_size": 4},
        "probes": {"suites": ["knowledge", "tasks"], "limit": 6, "max_new_tokens": 8},
        "resources": {"workers": 2, "cpus_per_worker": 1, "strategy": "fsdp", "max_failures": 2},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "test"},
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
    model_dir = trial.check(cfg)
    plan = trial.make_plan(cfg, model_dir)
    return plan, [json.loads((plan.stage_dir(k) / "result.json").read_text()) for k in (1, 2, 3)]


@pytest.fixture(scope="module")
def baseline(ray_local, tmp_path_factory):
    """One FSDP2 causal LoRA trial, uninterrupted: the reference other tests compare with."""
    cfg = make_cfg(tmp_path_factory.mktemp("baseline"))
    return cfg, trial.run(cfg)


def test_causal_trial_three_stages_tracked_and_reloadable(baseline):
    cfg, final = baseline
    assert final["stage"] == 3
    run, losses = history(cfg, "train/loss")
    assert run.info.status == "FINISHED"
    assert sorted(losses) == [1, 2, 3]
    _, probe = history(cfg, "probe/knowledge/facts_geography/acc")
    assert sorted(probe) == [0, 1, 2, 3]  # step 0 = before training
    assert "forgetting/knowledge/FG" in final
    # every stage's adapter reloads, in this process, to the loss the live model had
    plan, results = stage_results(cfg)
    from peft import PeftModel
    from raycf.models import load_model
    from raycf.train import eval_loss
    for k, res in enumerate(results, 1):
        assert res["train/loss"] == pytest.approx(losses[k], rel=1e-6)
        model, tok = load_model(Path(plan.model_dir))
        model = PeftModel.from_pretrained(model, plan.stage_dir(k))
        examples = trial.stage_examples(cfg, k, tok, "causal")[:4]
        assert eval_loss(model, examples, "causal", tok.pad_token_id) == pytest.approx(res["checkpoint/live_loss"],
                                                                                      abs=1e-5)


def test_ddp_gives_the_fsdp_losses(baseline, tmp_path):
    ddp = make_cfg(tmp_path, **{"resources.strategy": "ddp"})
    trial.run(ddp)
    (_, a), (_, b) = stage_results(baseline[0]), stage_results(ddp)
    assert [r["train/loss"] for r in b] == pytest.approx([r["train/loss"] for r in a], abs=1e-4)


def test_seq2seq_trial_completes(ray_local, tmp_path):
    cfg = make_cfg(tmp_path, **{"model.name": "tiny-seq2seq"})
    final = trial.run(cfg)
    assert final["stage"] == 3
    _, losses = history(cfg, "train/loss")
    assert sorted(losses) == [1, 2, 3] and all(v > 0 for v in losses.values())


def test_worker_killed_mid_stage_2_resumes_from_stage_1(ray_local, baseline, tmp_path):
    _, want = stage_results(baseline[0])
    cfg = make_cfg(tmp_path)
    for f in ray_local.glob("*.json"):
        f.unlink()
    killed = []

    def killer():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            try:
                beat = json.loads((ray_local / "rank1.json").read_text())
            except (OSError, ValueError):
                beat = {}
            if beat.get("stage") == 2 and beat.get("step", 0) >= 2:
                os.kill(beat["pid"], signal.SIGKILL)
                killed.append(beat)
            time.sleep(0.05)
    t = threading.Thread(target=killer, daemon=True)
    t.start()
    final = trial.run(cfg)
    t.join(timeout=1)
    assert killed, "the worker was never seen in stage 2"
    _, got = stage_results(cfg)
    assert [r["train/loss"] for r in got] == pytest.approx([r["train/loss"] for r in want], abs=1e-6)
    assert final["stage"] == 3
    _, losses = history(cfg, "train/loss")
    assert sorted(losses) == [1, 2, 3]  # each stage logged once, no duplicate after the restart


def test_general_warm_start_is_computed_once_for_two_trials(ray_local, tmp_path):
    a = make_cfg(tmp_path, **{"warm_start.kind": "general"})
    b = a.with_overrides({"optim.lr": 1e-3, "name": "t2"})
    trial.run(a)
    warm = list((tmp_path / "runs" / "cache" / "warm").iterdir())
    assert len(warm) == 1
    stamp = (warm[0] / "result.json").stat().st_mtime_ns
    trial.run(b)
    assert list((tmp_path / "runs" / "cache" / "warm").iterdir()) == warm
    assert (warm[0] / "result.json").stat().st_mtime_ns == stamp
