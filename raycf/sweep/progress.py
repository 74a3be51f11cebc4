"""The sweep driver's Tune callback: one line per finished stage, and each trial's MLflow run ended FINISHED (all
stages), KILLED (stopped by the scheduler) or FAILED (raised). With the worker pool, a trial that ends, fails or
is retried has its job cancelled there at once (its workers stop at the next step)."""
from __future__ import annotations

import json

from ray.tune import Callback

from raycf import storage
from raycf.trial import pool, record


class Progress(Callback):
    def __init__(self, sweep_dir: str, spool: str, uri: str, n_stages: int, board: str | None = None):
        self.sweep_dir, self.spool, self.uri = sweep_dir, spool, uri
        self.n_stages, self.board = n_stages, board

    def _cancel(self, trial) -> None:
        if self.board is not None:
            pool.find_board(self.board).cancel.remote(trial.trial_id)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        stage, fg, loss = result.get("stage"), result.get("headline/mean_FG"), result.get("train/loss")
        done = sum(t.status == "TERMINATED" for t in trials)
        print(f"[sweep] {trial.trial_id} stage {stage}: "
              f"loss {loss if loss is None else round(loss, 4)}  mean FG so far "
              f"{fg if fg is None else round(fg, 2)}  ({done}/{len(trials)} trials done)", flush=True)

    def _end(self, trial, status: str, stopped_after_stage: int | None = None) -> None:
        runs = storage.join(self.sweep_dir, "runs", f"{trial.trial_id}.json")
        if storage.exists(runs):
            run_id = json.loads(storage.read_text(runs))["run_id"]
            record.end_run(self.uri, run_id, status, self.spool, stopped_after_stage=stopped_after_stage)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._cancel(trial)
        stage = (trial.last_result or {}).get("stage")
        if stage == self.n_stages:
            self._end(trial, "FINISHED")
        else:  # the scheduler decided on this stage's result
            self._end(trial, "KILLED", stopped_after_stage=stage)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._cancel(trial)  # its driver died; the retry's job starts after this one stopped

    def on_trial_error(self, iteration, trials, trial, **info):
        self._cancel(trial)
        self._end(trial, "FAILED")
