"""resources.mixed_precision: bf16 trains under autocast in every strategy (here: one process, the worker code of
a one-worker trial, checkpoint check included; FSDP2 and DDP: tests/test_train.py and tests/test_trial.py), is
keyed apart from fp32 in the stage cache, and `auto` means bf16 on a GPU only."""
import json

import pytest

from raycf import config
from raycf.trial import plan as trial_plan
from raycf.trial import preflight, stages

BF16_TOLERANCE = 5e-3  # bf16 against fp32: per-stage mean training loss, absolute (tiny-causal's are about 5)


def _cfg(tmp_path, precision, **over):
    return config.from_dict({
        "name": "p", "seed": 0, "model": {"name": "tiny-causal"}, "stages": ["simplification", "headline"],
        "finetune": {"method": "lora", "lora_rank": 4, "lora_alpha": 8},
        "optim": {"lr": 3e-3, "steps_per_stage": 4, "batch_size": 4}, "data": {"examples_per_stage": 32},
        "warm_start": {"kind": "none"}, "probes": {"suites": ["knowledge"], "limit": 2, "shots": 0},
        "resources": {"workers": 1, "cpus_per_worker": 1, "mixed_precision": precision, **over},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}, "storage_path": str(tmp_path / "runs")})


def _one_process_trial(cfg):
    """Every stage of the trial in this process, as its one Ray Train worker runs them (rank 0 of 1)."""
    plan = trial_plan.make_plan(cfg, preflight.check(cfg))
    stages.run_stages(cfg, plan, 0, 1, lambda k, metrics, checkpoint: None)
    return plan, [json.loads((plan.stage_dir(k) / "result.json").read_text()) for k in (1, 2)]


def test_bf16_one_process_trains_in_bf16_and_its_checkpoints_pass_the_reload_check(tmp_path, cache_dir):
    fp32_plan, fp32 = _one_process_trial(_cfg(tmp_path, "fp32"))
    bf16_plan, bf16 = _one_process_trial(_cfg(tmp_path, "bf16"))
    assert set(bf16_plan.stage_keys).isdisjoint(fp32_plan.stage_keys)  # bf16 never reuses an fp32 checkpoint
    for a, b in zip(fp32, bf16):
        assert b["train/loss"] != a["train/loss"]
        assert b["train/loss"] == pytest.approx(a["train/loss"], abs=BF16_TOLERANCE)
        # the checkpoint check reads both the live and the reloaded weights in fp32, whatever the training ran in
        assert b["train/reload_loss"] == pytest.approx(b["train/live_loss"], rel=1e-6)
        assert a["train/reload_loss"] == pytest.approx(a["train/live_loss"], rel=1e-6)


def test_auto_means_bf16_on_a_gpu_and_fp32_on_cpu(tmp_path):
    cpu = _cfg(tmp_path, "auto")
    assert not trial_plan.bf16_training(cpu)
    assert trial_plan.bf16_training(cpu.with_overrides({"resources.gpus_per_worker": 1}))
    assert trial_plan.bf16_training(_cfg(tmp_path, "bf16"))
    assert not trial_plan.bf16_training(_cfg(tmp_path, "fp32").with_overrides({"resources.gpus_per_worker": 1}))


def test_bf16_probes_are_keyed_apart_and_fp32_keys_are_unchanged(tmp_path, cache_dir):
    cfg = _cfg(tmp_path, "fp32")
    model_dir = preflight.check(cfg)
    fp32 = trial_plan.make_plan(cfg, model_dir)
    bf16 = trial_plan.make_plan(cfg.with_overrides({"probes.precision": "bf16"}), model_dir)
    assert set(bf16.probe_keys).isdisjoint(fp32.probe_keys) and bf16.stage_keys == fp32.stage_keys
    explicit = trial_plan.make_plan(cfg.with_overrides({"probes.precision": "fp32"}), model_dir)
    assert explicit.probe_keys == fp32.probe_keys
