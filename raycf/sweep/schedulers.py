"""The Tune schedulers of a sweep: ASHA (stops weak trials at stage boundaries) and population-based training
(PBT or PB2: weak trials take a strong trial's stage checkpoint and go on with perturbed values; raycf.sweep.pbt).

Both PBTs run synchronously: every trial of the population reaches a boundary before any is perturbed, so trials
are compared after the same number of stages (their forgetting figures mean something only then). Neither acts
after the last stage. A trial that PBT pauses or restarts from a donor has its worker-pool job cancelled at once,
and a job waits at each stage boundary until its trial is told to go on (raycf.trial.pool's gate): no stage is
trained, or logged, past a boundary PBT has not decided on.
"""
from __future__ import annotations

import random

from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining, TrialScheduler
from ray.tune.schedulers.pb2 import PB2

from raycf.space import annotation
from raycf.sweep import pbt
from raycf.trial import pool


class StageBoundaries:
    """Mixed into Tune's PBT and PB2: no perturbation after the last stage, and the job of a trial that does not
    go on is cancelled on the worker pool's board."""
    n_stages: int
    board: str | None

    def on_trial_add(self, tune_controller, trial):
        """A trial that `--resume` brings back has reported stages already, but Tune saves no scheduler state: its
        place in the population (score, last stage, last perturbation) is rebuilt from its last result, and the
        next synchronisation point is the first boundary after the furthest-behind unfinished trial. Without it
        the fresh scheduler waits for a boundary every trial has passed and never lets one run again."""
        super().on_trial_add(tune_controller, trial)
        stage = trial.last_result.get("stage") if trial.has_reported_at_least_once else None
        if not stage or trial.status in (trial.TERMINATED, trial.ERROR):
            return
        k = self._perturbation_interval
        state = self._trial_state[trial]
        state.last_result = trial.last_result
        if self._metric in trial.last_result:
            state.last_score = self._metric_op * trial.last_result[self._metric]
        state.last_train_time, state.last_perturbation_time = stage, stage // k * k
        self._restored = {**getattr(self, "_restored", {}), trial.trial_id: stage}
        self._next_perturbation_sync = (min(self._restored.values()) // k + 1) * k

    def set_aside_failed(self, tune_controller) -> None:
        """A trial that ended in ERROR reports no more. Tune's synchronous PBT perturbs when the last trial of the
        population reaches the boundary, so the trials paused there would wait for it for ever (seen: a sweep
        whose trial failed on --resume hung with every other trial PAUSED). Kept level with the next
        synchronisation point, it holds none up; finished, it is in no quantile."""
        for t in tune_controller.get_trials():
            if t.status == t.ERROR and t in self._trial_state:
                state = self._trial_state[t]
                state.last_train_time = max(state.last_train_time, self._next_perturbation_sync)

    def choose_trial_to_run(self, tune_controller):
        """Tune's choice, once the trials left are released: where every unfinished trial waits PAUSED at the
        synchronisation point (the one that would have completed it failed), it happens now."""
        self.set_aside_failed(tune_controller)
        left = [t for t in tune_controller.get_trials() if not t.is_finished()]
        if left and all(t.status == t.PAUSED and t.last_result and t in self._trial_state and
                        self._trial_state[t].last_train_time >= self._next_perturbation_sync for t in left):
            self.on_trial_result(tune_controller, left[-1], left[-1].last_result)
        return super().choose_trial_to_run(tune_controller)

    def on_trial_result(self, tune_controller, trial, result):
        self.set_aside_failed(tune_controller)
        if result.get("stage") == self.n_stages:  # the trial ends here: nothing is left to perturb for
            if trial in self._trial_state:  # nor does any synchronisation wait on it
                self._trial_state[trial].last_train_time = result["stage"]
            return TrialScheduler.CONTINUE
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision != TrialScheduler.CONTINUE and self.board is not None:
            pool.find_board(self.board).cancel.remote(trial.trial_id)
        return decision


class StagePBT(StageBoundaries, PopulationBasedTraining):
    def __init__(self, n_stages: int, board: str | None, **kwargs):
        self.n_stages, self.board = n_stages, board
        super().__init__(**kwargs)


class StagePB2(StageBoundaries, PB2):
    def __init__(self, n_stages: int, board: str | None, **kwargs):
        self.n_stages, self.board = n_stages, board
        super().__init__(**kwargs)


class Clip:
    """PBT's custom_explore_fn (a class: Tune pickles the scheduler): perturbed values kept in their domain."""

    def __init__(self, resolved: dict, keys: list[str], kinds: dict):
        self.resolved, self.keys, self.kinds = resolved, keys, kinds

    def __call__(self, config: dict) -> dict:
        return pbt.clipped(config, self.resolved, self.keys, self.kinds)


def make(cfg, resolved: dict, board: str | None):
    """The sweep's scheduler (None for FIFO)."""
    sc = cfg.sweep
    if sc.scheduler == "asha":
        return ASHAScheduler(time_attr="stage", max_t=len(cfg.stages), grace_period=sc.grace_period,
                             reduction_factor=sc.reduction_factor)
    if not pbt.is_pbt(cfg):
        return None
    random.seed(cfg.seed)  # Tune's PBT draws its perturbations from `random`: a seeded sweep perturbs alike
    keys = pbt.perturbed_keys(cfg)
    kinds = {k: "int" if annotation(cfg, k).startswith("int") else "other" for k in keys}
    common = dict(time_attr="stage", perturbation_interval=sc.pbt.interval, quantile_fraction=sc.pbt.quantile,
                  synch=True, custom_explore_fn=Clip(resolved, keys, kinds))
    if sc.scheduler == "pb2":
        return StagePB2(len(cfg.stages), board, hyperparam_bounds={k: list(pbt.bounds(resolved, k)) for k in keys},
                        **common)
    return StagePBT(len(cfg.stages), board, hyperparam_mutations={k: mutation(resolved[k]) for k in keys},
                    resample_probability=sc.pbt.resample, **common)


def mutation(domain: tuple):
    """What PBT perturbs a key with: the list of a grid or choice (it steps to a neighbour), else the Tune domain
    (resampled, or the value x 0.8 or x 1.2)."""
    from ray import tune
    name, arg = domain
    if name in ("grid", "choice"):
        return list(arg)
    return {"uniform": lambda a: tune.uniform(*a), "loguniform": lambda a: tune.loguniform(*a),
            "randint": lambda a: tune.randint(a[0], a[1] + 1)}[name](arg)
