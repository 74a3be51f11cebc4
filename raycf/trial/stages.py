"""The worker side of a trial: every rank of a Ray Train worker group runs the same StageRunner.

    setup()                       threads and device, the warm start, the finished stages (the stage cache),
                                  the model to train from there (wrapped for FSDP2 or DDP)
    run(): for k = 0 .. stages    train k (k > 0, not cached), checkpoint k, probe k, record k
                                  (k = 0: the probe before training; MLflow step 0, no Tune iteration)

Finished stages live in the content-addressed stage cache (raycf.cache), so a restarted worker group resumes
after the last finished stage, and trials whose stage prefixes agree share checkpoints.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

from raycf import cache, continual
from raycf.config.schema import ExperimentConfig
from raycf.data.sources import probe_task, stage_train_rows
from raycf.probe.run import run_probes
from raycf.sweep import pbt
from raycf.timeline import mark
from raycf.train import encode, num_steps, train_stage, wrap
from raycf.trial import record
from raycf.trial.checkpoint import (build_model, cached_prefix, check_lineage, fetched, is_fsdp, last_reported_stage,
                                    load_base, plain_model, save_checkpoint)
from raycf.trial.collective import agree, barrier, gather
from raycf.trial.plan import TrialPlan, bf16_training
from raycf.trial.results import stage_metrics
from raycf.trial.warm_start import ensure_warm_start


class StageRunner:
    """One trial on this worker group. report(k, metrics, checkpoint): hands stage k's result to the caller
    (Tune) on every rank. reported: stages <= this (a restarted or resumed run) are not logged or reported
    again, but for the last. stop(): called before each stage and at every optimizer step, may raise on
    every rank at once (the worker pool's Cancelled)."""

    def __init__(self, cfg: ExperimentConfig, plan: TrialPlan, rank: int, world: int, report, *,
                 reported: int = -1, stop=None):
        self.cfg, self.plan, self.rank, self.world = cfg, plan, rank, world
        self.report, self.reported, self.stop = report, reported, stop
        self.rows: list[dict] = []  # the probe rows so far: the accuracy matrix
        self.base_row: dict = {}  # the base model's probe row (the start's own without a warm start)
        self.work = {k: plan.work.get(k, 0) for k in record.WORK_KEYS}
        self.probe_copy: dict = {}  # FSDP2: the plain model the probes score, built once
        self.nodes: dict[int, list[str]] = {}  # stage -> the Ray nodes its ranks trained on

    def setup(self) -> None:
        import torch
        cfg = self.cfg
        mark("trial_start")
        torch.set_num_threads(max(1, int(cfg.resources.cpus_per_worker)))  # a pooled worker serves many trials
        self.device = worker_device(cfg)
        self.bf16 = bf16_training(cfg)
        self.autocast = torch.bfloat16 if self.bf16 else None
        self.base_dir, self.warm_seconds = ensure_warm_start(cfg, self.plan, self.rank, self.world, self.device,
                                                             self.bf16, self.stop)
        self.done = agree(cached_prefix(self.plan))
        check_lineage(self.plan, self.done)
        model, self.tok = build_model(cfg, self.plan, self.base_dir, self.done, self.device)
        self.model = wrap(model, cfg.resources.strategy, self.device, self.bf16)
        self.method = continual.Method(cfg)
        if self.done > 0:
            self.method.resume(self.model, continual.load_state(fetched(self.plan.stage_entry(self.done))))
        mark("model_ready")

    def run(self, prepare_only: bool = False) -> None:
        """Every stage; prepare_only: just the before-training row (k = 0), which trials then share."""
        for k in range(0, 1 if prepare_only else len(self.cfg.stages) + 1):
            if self.stop is not None:
                self.stop()
            state = None
            if k > self.done:
                stats, examples = self.train(k)
                state = self.checkpoint(k, stats, examples)
                mark(f"stage{k}_trained train_s={stats['train/seconds']:.2f}")
            else:
                stats = cache.read_json(fetched(self.plan.stage_entry(k))) if k > 0 else {}
            row, fresh = self.probe(k, state)
            if k == 0:
                self.base_row = self.probe_base(row)
            if not prepare_only:
                self.record(k, stats, state is not None, row, fresh)
        mark("trial_end")

    def train(self, k: int) -> tuple[dict, list]:
        """Stage k's training: its stats, and the examples it trained on."""
        cfg, o = self.cfg, self.cfg.optim
        examples = stage_examples(cfg, k, self.tok, self.plan.kind)
        steps, lr = num_steps(len(examples), o.batch_size, o.epochs, o.stage_steps_given(k)), o.stage_lr(k)
        self.method.before_stage(self.model)
        stats = train_stage(self.model, examples, kind=self.plan.kind, pad_id=self.tok.pad_token_id,
                            batch_size=o.batch_size, steps=steps, grad_accum=o.grad_accum, lr=lr,
                            weight_decay=o.weight_decay, schedule=o.schedule, warmup=o.warmup_steps,
                            max_grad_norm=o.max_grad_norm, seed=cfg.seed * 1000 + k, device=self.device,
                            autocast_dtype=self.autocast, on_step=on_step(k, self.rank, self.stop),
                            method=self.method)
        # the checkpoint then holds what the method left
        self.method.after_stage(self.model, k, examples, lambda: plain_model(
            cfg, self.plan, self.base_dir, self.model, None, self.probe_copy, self.device),
            self.plan.kind, self.tok.pad_token_id, self.device)
        self.work["work/stage_trainings"] += 1
        self.nodes[k] = sorted(set(gather(node_id())))
        added = self.method.stage_loss()  # a collective: every rank calls it
        return {"stage": k, "task": cfg.stages[k - 1], "train/loss": stats.loss, "train/steps": stats.steps,
                "train/lr": lr, **({"train/method_loss": added} if added is not None else {}),
                "train/target_tokens": stats.tokens, "train/tokens_per_s": stats.seen_tokens / stats.seconds,
                "train/seconds": stats.seconds}, examples

    def checkpoint(self, k: int, stats: dict, examples: list) -> dict:
        """Stage k's checkpoint into the stage cache (checked to reload to the live loss); the full state dict."""
        def plain(sd):  # FSDP2 in bf16: its forward runs in the bf16 policy, the check reads the weights in fp32
            return plain_model(self.cfg, self.plan, self.base_dir, self.model, sd, self.probe_copy, self.device)
        return save_checkpoint(self.cfg, self.plan, k, self.model, self.tok, stats, examples, self.rank, self.device,
                               plain if self.bf16 and is_fsdp(self.model) else None, self.method.state())

    def probe(self, k: int, state: dict | None) -> tuple[dict, int]:
        """Probe scores after stage k (k=0: before training), from the cache or measured now (all ranks);
        and 1 if measured now."""
        plan = self.plan
        row, fresh = {}, 0
        if plan.probe_tasks:
            row, fresh = self.cached_or_probed(plan.probe_entry(k), lambda: plain_model(
                self.cfg, plan, self.base_dir, self.model, state, self.probe_copy, self.device))
        self.work["work/probe_passes"] += fresh
        mark(f"stage{k}_probed probe_s={row.get('seconds', 0.0) if fresh else 0.0:.2f}")
        self.rows.append(row)
        return row, fresh

    def probe_base(self, start_row: dict) -> dict:
        """The base model's probe row, for the figures measured from it: the start's own row without a warm
        start, else from the cache or measured now on the base model (all ranks; once per sweep, shared)."""
        plan = self.plan
        if not plan.probe_tasks or plan.base_probe_key == plan.probe_keys[0]:
            return start_row
        row, fresh = self.cached_or_probed(plan.base_entry(),
                                           lambda: load_base(self.cfg, plan.model_dir)[0].to(self.device))
        self.work["work/probe_passes"] += fresh
        if fresh:
            mark(f"base_probed probe_s={row['seconds']:.2f}")
        return row

    def cached_or_probed(self, entry: cache.Entry, make_model) -> tuple[dict, int]:
        """A probe row from the cache, or measured now on make_model() and published there (every rank calls
        it together); and 1 if measured now."""
        if agree(cache.lookup(entry) is not None):
            return cache.read_json(fetched(entry)), 0
        t0 = time.perf_counter()
        model, p = make_model(), self.cfg.probes
        scores = run_probes(model, self.tok, [probe_task(self.cfg, t) for t in self.plan.probe_tasks],
                            shots=p.shots, limit=p.limit or None, seed=self.cfg.seed, rank=self.rank,
                            world_size=self.world, max_new_tokens=p.max_new_tokens, precision=p.precision,
                            chat_system=self.cfg.data.system_prompt if self.cfg.data.template == "chat" else None,
                            chat_choices=self.cfg.data.system_prompt if p.apply_chat_template else None)
        row = {"scores": scores, "seconds": time.perf_counter() - t0}
        if self.rank == 0:
            with cache.writing(entry) as tmp:
                (tmp / "result.json").write_text(json.dumps(row))
        barrier()
        return row, 1

    def record(self, k: int, stats: dict, trained: bool, row: dict, fresh: int) -> None:
        """Stage k's metrics to MLflow (rank 0) and to the caller (every rank), unless already recorded."""
        metrics = {**stage_metrics(self.cfg, self.plan, k, stats, self.rows, self.base_row), **self.work,
                   # seconds this trial itself spent (0 where the cache had the result); step 0: the warm start
                   "work/train_seconds": stats.get("train/seconds", 0.0) if trained else
                   self.warm_seconds if k == 0 else 0.0,
                   "work/probe_seconds": row.get("seconds", 0.0) if fresh else 0.0}
        if k > 0 and pbt.is_pbt(self.cfg):  # the values PBT perturbs, as this stage trained with them
            metrics |= {f"pbt/{k}": float(v) for k, v in pbt.values(self.cfg).items() if isinstance(v, (int, float))}
        if k <= self.reported:  # a restarted or resumed run: MLflow and Tune already have this stage
            if k == len(self.cfg.stages):  # ...but the caller (Tune) still needs a final result from this run
                self.report(k, metrics, False)
            return
        if self.rank == 0:
            record.log_stage(self.cfg, self.plan, k, metrics, self.rows, self.base_row, self.nodes.get(k))
        mark(f"stage{k}_logged")
        if k > 0:  # the before-training row goes to MLflow (step 0); Tune's iterations are the stages
            self.report(k, metrics, True)


def stage_examples(cfg: ExperimentConfig, k: int, tok, kind: str) -> list:
    """Stage k's training examples: its rows (with replay, raycf.data.sources) encoded for the model."""
    return encode(stage_train_rows(cfg, k), tok, kind, cfg.optim.max_length, source=cfg.stages[k - 1],
                  template=cfg.data.template, system=cfg.data.system_prompt)


def run_stages(cfg: ExperimentConfig, plan: TrialPlan, rank: int, world: int, report, *, reported: int = -1,
               prepare_only: bool = False, stop=None) -> None:
    """One trial on this worker group (every rank calls it): StageRunner's setup, then its stages."""
    runner = StageRunner(cfg, plan, rank, world, report, reported=reported, stop=stop)
    with record.system_metrics(cfg, plan, rank):
        runner.setup()
        runner.run(prepare_only)


def trial_loop(args: dict) -> None:
    """Ray Train worker entry point of one trial (`python -m raycf.trial`, or a sweep without the worker pool):
    every stage, resuming after the finished ones. args: config and plan (dataclasses), prepare_only."""
    import ray.train
    cfg, plan = args["config"], args["plan"]
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()

    def report(k: int, metrics: dict, checkpoint: bool) -> None:
        ckpt = ray.train.Checkpoint.from_directory(str(plan.stage_dir(k))) if checkpoint and rank == 0 else None
        ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=f"stage_{k:03d}" if checkpoint else None)
    restored = last_reported_stage()
    if restored > plan.logged and plan.run_id:
        # Ray Train restarted the worker group after stage `restored`: the attempt before this one logged its work
        # counts there (a stage is logged before it is reported), so they go on from those
        plan = replace(plan, work=agree(logged_counts(plan) if rank == 0 else None))
    run_stages(cfg, plan, rank, ctx.get_world_size(), report, reported=max(restored, plan.logged),
               prepare_only=bool(args.get("prepare_only")))
    barrier()  # no rank tears down while another still reports


def logged_counts(plan: TrialPlan) -> dict:
    """The work counts the trial's run holds (its spool counted); the plan's own where MLflow cannot say."""
    from raycf import tracking
    try:
        with tracking.quick_failures():  # a server away: seconds, not MLflow's minutes of retries
            return {**plan.work, **record.logged_work(plan.tracking_uri, plan.run_id, plan.spool_dir())[1]}
    except Exception as e:  # noqa: BLE001 - a bookkeeping figure: the trial goes on with what it knows
        print(f"[raycf] could not read the work counts of run {plan.run_id} ({type(e).__name__}); they count this "
              f"attempt only", flush=True)
        return dict(plan.work)


def worker_device(cfg: ExperimentConfig):
    import torch
    if cfg.resources.gpus_per_worker > 0:
        import ray.train.torch
        return ray.train.torch.get_device()
    return torch.device("cpu")


def node_id() -> str:
    """The Ray node this process runs on ("" outside Ray)."""
    import ray
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def on_step(k: int, rank: int, stop=None):
    """What runs before each optimizer step: the stop check, and a progress file (pid, stage, step) when
    RAYCF_HEARTBEAT_DIR is set (fault-injection tests use it to kill a worker by PID in the middle of a stage)."""
    folder = os.environ.get("RAYCF_HEARTBEAT_DIR")
    if not folder and stop is None:
        return None

    def step_hook(step: int) -> None:
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / f"rank{rank}.json").write_text(json.dumps({"pid": os.getpid(), "stage": k,
                                                                      "step": step}))
        if stop is not None:
            stop()
    return step_hook
