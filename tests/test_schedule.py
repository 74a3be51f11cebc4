"""Per-stage schedules (optim.stage_lr_decay, optim.stage_lrs, optim.stage_steps): the values each stage trains
with, their checks, and their place in the stage cache key."""
import pytest

from raycf import config
from raycf.models.resolve import resolve_model_dir
from raycf.trial.plan import make_plan, optim_key

STAGES = ["simplification", "headline", "explanation"]


def cfg(**over):
    return config.load(None, {"model.name": "tiny-causal", "stages": STAGES, **over})


def test_each_stage_takes_its_own_lr_and_steps():
    o = cfg(**{"optim.lr": 1e-3, "optim.stage_lr_decay": 0.5}).optim
    assert [o.stage_lr(k) for k in (1, 2, 3)] == [1e-3, 5e-4, 2.5e-4]
    o = cfg(**{"optim.stage_lrs": [3e-3, 1e-3, 3e-4], "optim.stage_steps": [10, 20, 5]}).optim
    assert [o.stage_lr(k) for k in (1, 2, 3)] == [3e-3, 1e-3, 3e-4]
    assert [o.stage_steps_given(k) for k in (1, 2, 3)] == [10, 20, 5]
    o = cfg(**{"optim.steps_per_stage": 7}).optim
    assert [o.stage_lr(k) for k in (1, 2, 3)] == [o.lr] * 3 and o.stage_steps_given(2) == 7


def test_stage_keys_without_a_per_stage_schedule_are_unchanged_and_a_schedule_keys_the_stages():
    model_dir = resolve_model_dir("tiny-causal")
    plain = cfg()
    assert not {"stage_lr_decay", "stage_lrs", "stage_steps"} & set(optim_key(plain))  # keys as before they existed
    keys = make_plan(plain, model_dir).stage_keys
    assert make_plan(cfg(**{"optim.stage_lr_decay": 0.5}), model_dir).stage_keys[0] != keys[0]
    assert make_plan(cfg(**{"optim.stage_steps": [4, 4, 4]}), model_dir).stage_keys != keys


@pytest.mark.parametrize("over, line", [
    ({"optim.stage_lrs": [1e-3, 1e-3]}, "optim.stage_lrs: 2 values for 3 stages; give one per stage, e.g. "
                                        "optim.stage_lrs=[0.001, 0.001, 0.001]"),
    ({"optim.stage_lrs": [1e-3, -1.0, 1e-3]}, "optim.stage_lrs[1]: -1.0 is outside (0, 1] (a learning rate)"),
    ({"optim.stage_lrs": [1e-3, "fast", 1e-3]}, "optim.stage_lrs[1]: 'fast' is not a number (a learning rate)"),
    ({"optim.stage_steps": [4, 2.5, 4]}, "optim.stage_steps[1]: 2.5 is not an integer (a step count)"),
    ({"optim.stage_steps": [4, 0, 4]}, "optim.stage_steps[1]: 0 is outside [1, 10000000] (a step count)"),
    ({"optim.stage_lr_decay": 0.0}, "optim.stage_lr_decay: 0.0 is outside (0, 100] (each stage's lr over the one "
                                     "before)"),
    ({"optim.stage_lr_decay": 0.5, "optim.stage_lrs": [1e-3] * 3},
     "optim.stage_lr_decay: given with optim.stage_lrs, which sets every stage's lr; drop one"),
])
def test_a_bad_per_stage_schedule_is_one_line(over, line):
    with pytest.raises(config.ConfigError) as e:
        cfg(**over)
    assert line in e.value.problems, e.value.problems


def test_a_trial_trains_each_stage_at_its_lr_for_its_steps_and_logs_them(tmp_path, cache_dir):
    from tests.test_continual import _one_process_trial
    _, results = _one_process_trial(tmp_path, "naive", **{"optim.stage_lrs": [3e-3, 1e-3],
                                                          "optim.stage_steps": [2, 5]})
    assert [(r["train/lr"], r["train/steps"]) for r in results] == [(3e-3, 2), (1e-3, 5)]
