"""Ray plumbing of a trial: the Ray session a command runs in, and the TorchTrainer that runs a trial's stages (or a
worker pool's slot) on cfg.resources' workers."""
from __future__ import annotations

import contextlib
import os

from raycf import storage
from raycf.config.schema import ExperimentConfig
from raycf.trial.plan import TrialPlan


LOCAL_TRAIN_ENV = {
    # one machine has no spot nodes to lose: Ray Train's preemption watcher (a process per TorchTrainer) is off
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}


@contextlib.contextmanager
def ray_session(**init):
    """The Ray this process is connected to, or one started (or connected to) here with `init` and stopped on the
    way out; a local one gets LOCAL_TRAIN_ENV for its TorchTrainers, where the environment does not say otherwise.
    Without an address it is a new local Ray of this process's own (`address="local"`), never one that `ray start`
    left running on this machine: a cluster is named by RAY_ADDRESS (`ray job submit` sets it; `auto` finds the
    one this machine is in)."""
    import ray
    if ray.is_initialized():
        yield
        return
    init = {**init, "address": init.get("address") or "local"}
    local = LOCAL_TRAIN_ENV if init["address"] == "local" else {}
    saved = {k: os.environ.get(k) for k in local}
    for k, v in local.items():
        os.environ.setdefault(k, v)
    ray.init(**init)
    try:
        yield
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)


def trainer(cfg: ExperimentConfig, plan: TrialPlan, name: str, callbacks=None, prepare_only: bool = False):
    """The TorchTrainer of one trial. prepare_only: just the warm start and the before-training probe row,
    which trials then share."""
    from raycf.trial.stages import trial_loop  # the Train workers' code: torch, transformers, PEFT
    return torch_trainer(cfg, trial_loop, {"config": cfg, "plan": plan, "prepare_only": prepare_only},
                         name, plan.storage, callbacks=callbacks, max_failures=cfg.resources.max_failures)


def torch_trainer(cfg: ExperimentConfig, loop, loop_config: dict, name: str, root: str, *, callbacks=None,
                  max_failures: int = 2):
    """A TorchTrainer running `loop` on cfg.resources' workers (gloo on CPU, NCCL on GPU), its Ray results under
    <root>/ray (root: the storage_path, a folder or URI). max_failures: worker-group restarts (-1: no limit; the
    worker pool counts them per job)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    # Ray Train V2's controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (default 2 s) and sees a
    # finished run only at a poll: 3-4 s idle teardown per trial on 2 CPUs, 0.6 s at 0.25 s (measured). Train copies
    # the variable from the process that calls fit() into its controller, so this works on any cluster; a value
    # already in the environment wins.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    r = cfg.resources
    res = {"CPU": r.cpus_per_worker}
    if r.gpus_per_worker:
        res["GPU"] = r.gpus_per_worker
    return TorchTrainer(
        loop,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if r.gpus_per_worker else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=r.workers, use_gpu=r.gpus_per_worker > 0,
                                               resources_per_worker=res),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage.join(root, "ray"), callbacks=callbacks,
            # a worker group that cannot start (no resources within the start timeout, 60 s by default) is
            # retried ten times, then the trial fails with Ray's message instead of waiting forever
            failure_config=ray.train.FailureConfig(max_failures=max_failures, controller_failure_limit=10),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1)),
    )


def pool_shape(cfg: ExperimentConfig) -> dict:
    """What a worker group is made of; a pool serves trials of its own shape (strategy, precision and restarts
    are per trial)."""
    r = cfg.resources
    return {"workers": r.workers, "cpus_per_worker": r.cpus_per_worker, "gpus_per_worker": r.gpus_per_worker}
