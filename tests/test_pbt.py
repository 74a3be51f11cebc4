"""Population-based training across stage boundaries (raycf.sweep.pbt, raycf.sweep.schedulers): the stage keys of a
trial that goes on from a donor's checkpoint, what a restored lineage plans, the perturbed values kept in their
domain, the per-stage table, and the worker pool's stage-boundary gate. The sweep itself: tests/test_sweep_pbt.py."""
import asyncio

from raycf import config
from raycf.models.resolve import resolve_model_dir
from raycf.sweep import pbt
from raycf.trial.plan import make_plan
from raycf.trial.pool import Board

STAGES = ["simplification", "headline", "explanation"]


def cfg(**over):
    return config.load(None, {"model.name": "tiny-causal", "stages": STAGES, **over})


def test_a_trial_on_a_donors_stage_keeps_its_keys_and_keys_its_own_stages_on_them():
    model_dir = resolve_model_dir("tiny-causal")
    donor = make_plan(cfg(**{"optim.lr": 1e-3}), model_dir)
    assert make_plan(cfg(**{"optim.lr": 1e-3}), model_dir, prefix=[]).stage_keys == donor.stage_keys
    own = make_plan(cfg(**{"optim.lr": 2e-3}), model_dir)
    went_on = make_plan(cfg(**{"optim.lr": 2e-3}), model_dir, prefix=donor.stage_keys[:1])
    assert went_on.stage_keys[0] == donor.stage_keys[0] and went_on.fixed == 1
    # stages 2 and 3 trained at the new lr on the donor's stage 1: neither the donor's nor the trial's own
    assert not set(went_on.stage_keys[1:]) & set(donor.stage_keys + own.stage_keys)
    assert went_on.probe_keys[:2] == donor.probe_keys[:2] and went_on.probe_keys[2] != donor.probe_keys[2]
    assert make_plan(cfg(**{"optim.lr": 2e-3}), model_dir, prefix=donor.stage_keys[:1]).stage_keys == \
        went_on.stage_keys  # the same keys on every node and every restart


def test_a_restored_lineage_goes_on_with_its_segment_unless_the_values_changed():
    model_dir = resolve_model_dir("tiny-causal")
    donor_cfg = cfg(**{"optim.lr": 1e-3})
    donor = make_plan(donor_cfg, model_dir)
    lineage = {"stage": 2, "fixed": donor.fixed, "stage_keys": donor.stage_keys}

    def keys_of(c):
        return lambda prefix: make_plan(c, model_dir, prefix=prefix).stage_keys
    # its own checkpoint (a pause), or a donor whose values came out the same: the segment's later stages shared
    assert pbt.plan_prefix(lineage, keys_of(donor_cfg)) == []
    # perturbed: a new segment after stage 2
    assert pbt.plan_prefix(lineage, keys_of(cfg(**{"optim.lr": 1.2e-3}))) == donor.stage_keys[:2]
    # a lineage that already went on from a donor's stage 1: its prefix stays, whatever the values
    second = make_plan(cfg(**{"optim.lr": 1.2e-3}), model_dir, prefix=donor.stage_keys[:1])
    again = {"stage": 2, "fixed": 1, "stage_keys": second.stage_keys}
    assert pbt.plan_prefix(again, keys_of(cfg(**{"optim.lr": 1.2e-3}))) == donor.stage_keys[:1]
    assert pbt.plan_prefix(again, keys_of(cfg(**{"optim.lr": 3e-3}))) == second.stage_keys[:2]


def test_perturbed_values_stay_in_their_domain():
    resolved = {"optim.lr": ("loguniform", [1e-4, 1e-2]), "optim.warmup_steps": ("randint", [0, 10]),
                "continual.replay.ratio": ("grid", [0.1, 0.3])}
    kinds = {"optim.lr": "other", "optim.warmup_steps": "int", "continual.replay.ratio": "other"}
    out = pbt.clipped({"optim.lr": 1.2e-2, "optim.warmup_steps": 12.0, "continual.replay.ratio": 0.3, "seed": 1},
                      resolved, list(resolved), kinds)
    assert out == {"optim.lr": 1e-2, "optim.warmup_steps": 10, "continual.replay.ratio": 0.3, "seed": 1}
    out = pbt.clipped({"optim.lr": 8e-5, "optim.warmup_steps": 4.8, "continual.replay.ratio": 0.1}, resolved,
                      list(resolved), kinds)
    assert out == {"optim.lr": 1e-4, "optim.warmup_steps": 5, "continual.replay.ratio": 0.1}
    assert isinstance(out["optim.warmup_steps"], int)
    assert pbt.bounds(resolved, "continual.replay.ratio") == (0.1, 0.3)


def test_which_keys_may_change_between_stages():
    assert all(pbt.may_change(k) for k in ("optim.lr", "optim.warmup_steps", "continual.ewc.penalty",
                                           "continual.replay.ratio", "continual.average.alpha"))
    assert not any(pbt.may_change(k) for k in ("finetune.lora_rank", "model.name", "continual.method", "stages",
                                               "seed", "optim.batch_size", "warm_start.kind"))
    c = cfg(**{"search": {"optim.lr": {"grid": [1e-3, 2e-3]}, "finetune.lora_rank": {"grid": [4, 8]}}})
    assert pbt.perturbed_keys(c) == ["optim.lr"]
    assert pbt.perturbed_keys(c.with_overrides({"sweep.pbt.keys": ["optim.lr", "optim.warmup_steps"]})) == \
        ["optim.lr", "optim.warmup_steps"]


def test_the_schedule_table_names_who_trained_each_stage_and_with_what():
    records = [pbt.stage_record(1, "t1", "r1", "lr=0.001 #1", "k1", "d1", {"optim.lr": 1e-3}),
               pbt.stage_record(2, "t1", "r1", "lr=0.001 #1", "k2", "d2", {"optim.lr": 1e-3}),
               pbt.stage_record(3, "t2", "r2", "lr=0.0003 #2", "k3", "d3", {"optim.lr": 1.2e-3})]
    assert pbt.schedule_table(records, STAGES) == (
        "stage  task            trained by    optim.lr\n"
        "1      simplification  lr=0.001 #1   0.001\n"
        "2      headline        lr=0.001 #1   0.001\n"
        "3      explanation     lr=0.0003 #2  0.0012")


def test_a_gated_job_waits_at_the_boundary_until_released_or_cancelled():
    async def scenario():
        board = Board(1)
        job = await board.submit({"trial": "a", "max_failures": 0})
        assert (await board.take(0, timeout=0.1))["id"] == job
        assert await board.gate(job, 1, timeout=0.05) == "wait"
        await board.release(job, 1)
        assert await board.gate(job, 1, timeout=0.05) == "go"
        assert await board.gate(job, 2, timeout=0.05) == "wait"
        await board.cancel("a")
        assert await board.gate(job, 2, timeout=0.05) == "stop"
    asyncio.run(scenario())
