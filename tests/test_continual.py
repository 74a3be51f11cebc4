"""raycf.continual and the rows each method trains on: exact values on hand-made inputs, no Ray."""
from collections import Counter

import pytest
import torch

from raycf import config, continual
from raycf.data.registry import GENERAL
from raycf.data.sources import stage_rows, stage_train_rows

STAGES = ["simplification", "headline", "explanation"]


def cfg(**over):
    return config.load(None, {"model.name": "tiny-causal", "stages": STAGES, "data.examples_per_stage": 30, **over})


def origin(c, rows) -> Counter:
    """Which set each row came from (rows are dicts: compared by content)."""
    sets = {name: [r for r in stage_rows(c, name)] for name in [*STAGES, GENERAL]}
    return Counter(next(name for name, pool in sets.items() if r in pool) for r in rows)


def test_naive_trains_on_its_own_stage_only():
    c = cfg()
    assert origin(c, stage_train_rows(c, 3)) == {"explanation": 30}


def test_replay_adds_its_ratio_of_earlier_rows_uniformly_or_balanced():
    c = cfg(**{"continual.method": "replay", "continual.replay.ratio": 0.25})
    assert origin(c, stage_train_rows(c, 1)) == {"simplification": 30}  # nothing earlier to replay
    rows = stage_train_rows(c, 3)
    assert len(rows) == 40 and origin(c, rows)["explanation"] == 30  # 10 replayed = 25 % of 40
    balanced = cfg(**{"continual.method": "replay", "continual.replay.ratio": 0.25, "continual.replay.balanced": True})
    assert origin(balanced, stage_train_rows(balanced, 3)) == {"explanation": 30, "simplification": 5, "headline": 5}
    odd = cfg(**{"continual.method": "replay", "continual.replay.ratio": 0.5, "continual.replay.balanced": True,
                 "data.examples_per_stage": 31})
    assert origin(odd, stage_train_rows(odd, 3)) == {"explanation": 31, "simplification": 16, "headline": 15}


def test_general_mix_adds_its_ratio_of_general_instruction_rows():
    c = cfg(**{"continual.method": "general_mix", "continual.general_mix.ratio": 0.4})
    assert origin(c, stage_train_rows(c, 2)) == {"headline": 30, GENERAL: 20}  # 20 / 50 = 0.4


def test_average_mixes_exactly_alpha_of_the_weights_before_and_leaves_frozen_ones():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    model[1].weight.requires_grad_(False)
    frozen = model[1].weight.detach().clone()
    before = continual.trained(model)
    assert set(before) == {"0.weight", "0.bias", "1.bias"}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    after = {n: p.detach().clone() for n, p in model.named_parameters()}
    continual.interpolate(model, before, 0.25)
    for name, p in model.named_parameters():
        if name in before:
            torch.testing.assert_close(p, 0.25 * before[name] + 0.75 * after[name], rtol=0, atol=0)
    assert torch.equal(model[1].weight, frozen + 1.0)  # not trained: not averaged


def test_a_method_and_its_strength_key_the_stages_and_unused_strengths_do_not():
    from raycf.models.resolve import resolve_model_dir
    from raycf.trial.plan import make_plan
    model_dir = resolve_model_dir("tiny-causal")
    keys = lambda **over: make_plan(cfg(**over), model_dir).stage_keys  # noqa: E731
    naive = keys()
    assert keys(**{"continual.replay.ratio": 0.4}) == naive  # a section of a method not run is not read
    replay = keys(**{"continual.method": "replay"})
    assert replay != naive and keys(**{"continual.method": "replay", "continual.replay.ratio": 0.4}) != replay
    assert keys(**{"continual.method": "average"}) != naive != keys(**{"continual.method": "general_mix"})


@pytest.mark.parametrize("over, line", [
    ({"continual.method": "ewc_online"}, "continual.method: 'ewc_online' is not one of naive, replay, general_mix"),
    ({"continual.average.alpha": 1.0}, "continual.average.alpha: 1.0 is outside [0, 1)"),
    ({"continual.general_mix.ratio": 0.0}, "continual.general_mix.ratio: 0.0 is outside (0, 1)"),
    ({"continual.general_mix.balanced": True}, "continual.general_mix.balanced: balanced is a key of "
                                               "continual.replay, not of continual.general_mix"),
])
def test_each_methods_keys_are_checked_in_one_line(over, line):
    with pytest.raises(config.ConfigError) as e:
        cfg(**over)
    assert any(p.startswith(line) for p in e.value.problems), e.value.problems
