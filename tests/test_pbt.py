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


class Controller:
    """The part of Tune's controller PBT calls at a boundary (a plain object: the scheduler's logic is under test)."""

    def __init__(self, trials):
        self.trials, self.search_alg = trials, None

    def get_trials(self):
        return self.trials

    def get_live_trials(self):
        return set(self.trials)

    def pause_trial(self, trial, should_checkpoint=True):
        trial.set_status(trial.PAUSED)


def population_at_stage_1_with_one_failed(scheduler):
    """Three Tune trials: two report stage 1 and are paused there (as Tune's controller does on PBT's PAUSE),
    the third fails before it reports."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler
    trials = [Trial("__fake", config={"optim.lr": 2e-3}, trial_id=f"t{i}", stub=True) for i in range(3)]
    tc = Controller(trials)
    for t in trials:
        scheduler.on_trial_add(tc, t)
        t.set_status(Trial.RUNNING)
    for t, score in zip(trials[:2], (1.0, 2.0)):
        result = {"stage": 1, "m": score, "training_iteration": 1}
        t.update_last_result(result)
        assert scheduler.on_trial_result(tc, t, result) == TrialScheduler.PAUSE
        t.set_status(Trial.PAUSED)
    trials[2].set_status(Trial.ERROR)
    return tc, trials


def test_a_failed_trial_does_not_hold_the_populations_synchronisation_for_ever():
    """Tune's synchronous PBT perturbs when the last trial reaches the boundary: one that fails never does, and
    the paused trials would wait for ever (a sweep hung so). raycf's scheduler synchronises without it."""
    from ray.tune.schedulers import PopulationBasedTraining

    from raycf.sweep.schedulers import StagePBT
    common = dict(time_attr="stage", metric="m", mode="max", perturbation_interval=1, quantile_fraction=0.5,
                  synch=True, hyperparam_mutations={"optim.lr": [1e-3, 2e-3, 4e-3]})
    tune_own = PopulationBasedTraining(**common)
    tc, _ = population_at_stage_1_with_one_failed(tune_own)
    assert tune_own.choose_trial_to_run(tc) is None  # Tune's own: nothing may run, nothing will report
    raycf = StagePBT(3, None, **common)
    tc, trials = population_at_stage_1_with_one_failed(raycf)
    chosen = raycf.choose_trial_to_run(tc)
    # the boundary's perturbation step happened for the two left, and they go on towards stage 2
    assert [raycf._trial_state[t].last_perturbation_time for t in trials[:2]] == [1, 1]
    assert raycf._next_perturbation_sync == 2 and chosen in trials[:2]


def test_a_trial_killed_after_an_exploit_resumes_on_the_donors_stages_with_the_values_it_went_on_with(tmp_path):
    """The sweep is killed after a trial took a donor's stage 1 and logged its stage 2, before Tune saved either:
    on --resume Tune hands it its own stage-1 checkpoint and its old values, but the trial's own lineage file
    holds the exploit, so it goes on from the donor's stage 1 at the perturbed values (and its stage 2's key is
    the one it trained: the stage cache has it), its exploits kept."""
    from raycf import tracking
    model_dir = resolve_model_dir("tiny-causal")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = tracking.client(uri)
    run_id = c.create_run(c.create_experiment("pbt")).info.run_id
    search = {"optim.lr": {"grid": [1e-3, 2e-3, 4e-3]}}
    old, new = cfg(**{"optim.lr": 1e-3, "search": search}), cfg(**{"optim.lr": 4e-3, "search": search})
    donor_plan, own_plan = make_plan(cfg(**{"optim.lr": 4e-3}), model_dir), make_plan(old, model_dir)
    record = {"trial": "d", "run_id": "r-d", "name": "lr=4e-3", "digest": "x", "values": {"optim.lr": 4e-3}}
    donor = {"stage": 1, "fixed": 0, "stage_keys": donor_plan.stage_keys, "trial": "d", "run_id": "r-d",
             "name": "lr=4e-3", "exploits": [], "stages": [{**record, "stage": 1, "key": donor_plan.stage_keys[0]}]}
    own_stage_1 = {**record, "stage": 1, "key": own_plan.stage_keys[0], "trial": "t", "values": {"optim.lr": 1e-3}}
    mine = {**donor, "stage_keys": own_plan.stage_keys, "trial": "t", "run_id": run_id, "name": "lr=1e-3",
            "stages": [own_stage_1]}
    first = pbt.Lineage(new, "t", run_id, "lr=1e-3", uri, str(tmp_path))
    assert first.restore(donor) == {}  # the exploit: Tune's config holds the perturbed values already
    went_on = first.plan(lambda prefix: make_plan(new, model_dir, prefix=prefix))

    resumed = pbt.Lineage(old, "t", run_id, "lr=1e-3", uri, str(tmp_path))
    values = resumed.restore(mine)  # Tune's saved state: the trial's own stage 1, its old lr
    assert values == {"optim.lr": 4e-3}
    plan = resumed.plan(lambda prefix: make_plan(old.with_overrides(values), model_dir, prefix=prefix))
    assert plan.stage_keys == went_on.stage_keys and plan.stage_keys[0] == donor_plan.stage_keys[0]
    assert [e["donor"] for e in resumed.events] == ["d"] and c.get_run(run_id).data.tags["raycf.pbt.exploits"] == "1"
