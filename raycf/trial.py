"""One trial = one model, warm start, hyperparameter set and task order, run as one Ray Train job.

    python -m raycf.trial --space search_spaces/default.yaml [--set optim.lr=3e-4 ...] [--debug]

The workers of one worker group run every stage: (warm start) -> probe before training -> for each
stage: train, checkpoint, probe, report. Finished stages live in the content-addressed stage cache
(raycf.cache), so a restarted worker group resumes after the last finished stage, and trials whose
stage prefixes agree share checkpoints.
"""
from __future__ import annotations

import contextlib
import hashlib

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from raycf import cache, storage
from raycf.config import ConfigError, ExperimentConfig, from_dict, redact_uri


@dataclass
class TrialPlan:
    """Everything a worker needs besides the config, resolved once by the driver."""
    model_dir: str
    kind: str                           # causal | seq2seq
    storage: str                        # storage_path: an absolute folder or a URI (the stage cache lives there)
    start_key: str                      # identity of the weights the continual stages start from
    warm_key: str | None = None         # cache key of the `general` warm start, if any
    stage_keys: list = field(default_factory=list)
    probe_tasks: list = field(default_factory=list)
    probe_keys: list = field(default_factory=list)   # one per row of the accuracy matrix (0 = before)
    tracking_uri: str = ""
    run_id: str | None = None
    logged: int = -1                    # last stage the MLflow run already holds (a retried or resumed trial)
    work: dict = field(default_factory=dict)  # sweep/* work counts of the trial's earlier attempts (carried on)

    def stage_entry(self, k: int) -> cache.Entry:
        return cache.Entry(self.storage, "stages", self.stage_keys[k - 1])

    def probe_entry(self, k: int) -> cache.Entry:
        return cache.Entry(self.storage, "probes", self.probe_keys[k])

    def warm_entry(self) -> cache.Entry:
        return cache.Entry(self.storage, "warm", self.warm_key)

    def stage_dir(self, k: int) -> Path:
        """Stage k's checkpoint on this process's disk (fetched there by a cache.lookup of its entry)."""
        return self.stage_entry(k).path

    def warm_dir(self) -> Path:
        return self.warm_entry().path

    def spool_dir(self) -> str:
        """MLflow operations an outage kept back (raycf.tracking.send), in storage."""
        return storage.join(self.storage, "spool")


# ----------------------------------------------------------------------------- driver side: the plan

def fingerprint(model_dir: Path) -> str:
    """Identity of a model folder: its config and its files (their bytes up to 256 MB in all, names and sizes
    beyond: hashing a 7B checkpoint on every trial start would cost more than it protects)."""
    files = sorted(p for p in Path(model_dir).iterdir() if p.is_file())
    if sum(p.stat().st_size for p in files) <= 256 << 20:
        return cache.key((Path(model_dir) / "config.json").read_text(),
                         [(p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in files])
    return cache.key((Path(model_dir) / "config.json").read_text(), [(p.name, p.stat().st_size) for p in files])


def make_plan(cfg: ExperimentConfig, model_dir: Path, *, run_id: str | None = None,
              tracking_uri: str = "") -> TrialPlan:
    from raycf import data
    from raycf.models import model_kind
    kind = model_kind(model_dir) if cfg.model.kind == "auto" else cfg.model.kind
    root = storage.resolve(cfg.storage_path)
    start = fingerprint(model_dir)
    warm_key = None
    if cfg.warm_start.kind == "general":
        ws = cfg.warm_start
        warm_key = cache.key("warm", start, _data_key(cfg, data.GENERAL), ws.lr, ws.steps,
                             ws.batch_size, cfg.optim.max_length, cfg.seed)
        start = warm_key
    elif cfg.warm_start.kind == "checkpoint":
        start = fingerprint(Path(cfg.warm_start.path))
    recipe = [asdict(cfg.finetune), asdict(cfg.optim), asdict(cfg.data), cfg.seed]
    stage_keys = [cache.key("stage", start, recipe, [_data_key(cfg, s) for s in cfg.stages[:k]])
                  for k in range(1, len(cfg.stages) + 1)]
    probe_tasks = probe_task_names(cfg)
    probe_recipe = [_task_key(probe_task(cfg, t)) for t in probe_tasks], cfg.probes.shots, cfg.probes.limit, \
        cfg.probes.max_new_tokens, cfg.seed
    probe_keys = [cache.key("probe", w, probe_recipe) for w in [start] + stage_keys]
    return TrialPlan(model_dir=str(model_dir), kind=kind, storage=root, start_key=start, warm_key=warm_key,
                     stage_keys=stage_keys, probe_tasks=probe_tasks, probe_keys=probe_keys,
                     tracking_uri=tracking_uri, run_id=run_id)


def _data_key(cfg: ExperimentConfig, stage: str) -> str:
    """Stages are keyed by their rows' content, so edited data never reuses a stale checkpoint."""
    return cache.key(stage, stage_rows(cfg, stage))


def _task_key(task) -> tuple:
    """A probe task's identity: its version, and the rows' content when they are the user's own file."""
    return (task.name, task.version) if task.source == "shipped" else (task.name, task.version, cache.key(task.rows))


def stage_rows(cfg: ExperimentConfig, name: str, split: str = "train") -> list[dict]:
    """Rows of stage `name`: the user's file from data.sources when it gives this split, else the study's dataset
    (data.hub) or the shipped set."""
    from raycf import data
    file = cfg.data.sources.get(name, {}).get(split)
    if file:
        return data.load_stage(name, split, source=file)
    return data.load_stage(name, split, source="hub" if cfg.data.hub and name != data.GENERAL else "shipped")


def probe_task(cfg: ExperimentConfig, name: str):
    """The probe task `name`; a stage with an eval file in data.sources is probed on those rows, and with
    data.hub the study's dataset is."""
    from raycf import data
    return data.load_task(name, source=cfg.data.sources.get(name, {}).get("eval") or ("hub" if cfg.data.hub else None))


def probe_task_names(cfg: ExperimentConfig) -> list[str]:
    """General-ability probes from the suites, plus the trial's own stages when `tasks` is asked for."""
    from raycf import data
    general = [s for s in cfg.probes.suites if s != "tasks"]
    names = data.suite(general) if general else []
    if "tasks" in cfg.probes.suites:
        names += [s for s in cfg.stages]
    return names


# ----------------------------------------------------------------------------- worker side

class Cancelled(Exception):
    """The job's trial was stopped (by the scheduler, a retry or a lost driver); every rank raises it at the same
    optimizer step, so no rank is left waiting in a collective."""


def mark(event: str) -> None:
    """Append `<epoch s> <pid> <event>` to $RAYCF_TIMELINE, if set: where a trial's wall time goes
    (scripts/bench_sweep.py --timeline reads it)."""
    path = os.environ.get("RAYCF_TIMELINE")
    if path:
        with open(path, "a") as f:
            f.write(f"{time.time():.3f} {os.getpid()} {event}\n")


def trial_loop(args: dict) -> None:
    """Ray Train worker entry point of one trial (`python -m raycf.trial`, or a sweep without the worker pool):
    every stage, resuming after the finished ones."""
    import ray.train

    cfg, plan = from_dict(args["config"]), TrialPlan(**args["plan"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = worker_setup(cfg)

    def report(k: int, metrics: dict, checkpoint: bool) -> None:
        ckpt = ray.train.Checkpoint.from_directory(str(plan.stage_dir(k))) if checkpoint and rank == 0 else None
        ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=f"stage_{k:03d}" if checkpoint else None)
    run_stages(cfg, plan, rank, world, device, report, reported=max(_last_reported_stage(), plan.logged),
               prepare_only=bool(args.get("prepare_only")))
    _barrier()  # no rank tears down while another still reports


def worker_setup(cfg: ExperimentConfig):
    """Threads and device of this worker for `cfg` (called per trial: a pooled worker serves many)."""
    import torch
    torch.set_num_threads(max(1, int(cfg.resources.cpus_per_worker)))
    return _device(cfg)


def run_stages(cfg: ExperimentConfig, plan: TrialPlan, rank: int, world: int, device, report, *,
               reported: int = -1, prepare_only: bool = False, stop=None) -> None:
    """One trial on this worker group (every rank calls it): warm start, probe before training, then per stage
    train, checkpoint, probe, log to MLflow (rank 0) and report(k, metrics, checkpoint) on every rank. Stages
    the stage cache holds are not trained again; stages <= `reported` (a restarted or resumed run) are not
    logged or reported again, but for the last. stop(): called before each stage and at every optimizer step,
    raises Cancelled on every rank at once. prepare_only: just the warm start and the before-training row."""
    mark("trial_start")
    base_dir, warm_seconds = ensure_warm_start(cfg, plan, rank, world, device, stop)
    done = _agree(cached_prefix(plan))
    model, tok = build_model(cfg, plan, base_dir, done, device)
    from raycf.train import wrap
    model = wrap(model, cfg.resources.strategy, device, _bf16(cfg, device))
    mark("model_ready")
    rows: list[dict] = []
    # what this trial computed itself, over all its attempts
    work = {k: plan.work.get(k, 0) for k in ("sweep/stage_trainings", "sweep/probe_passes")}
    copy: dict = {}
    for k in range(0, 1 if prepare_only else len(cfg.stages) + 1):
        if stop is not None:
            stop()
        state = None
        if k > done:
            stats, state = run_stage(cfg, plan, k, model, tok, rank, world, device, stop)
            work["sweep/stage_trainings"] += 1
            mark(f"stage{k}_trained train_s={stats['train/seconds']:.2f}")
        else:
            stats = cache.read_json(_fetched(plan.stage_entry(k))) if k > 0 else {}
        row, fresh = probe_row(cfg, plan, k, lambda: plain_model(cfg, plan, base_dir, model, state, copy, device),
                               tok, rank, world)
        work["sweep/probe_passes"] += fresh
        mark(f"stage{k}_probed probe_s={row.get('seconds', 0.0) if fresh else 0.0:.2f}")
        rows.append(row)
        metrics = {**stage_metrics(cfg, plan, k, stats, rows), **work,
                   # seconds this trial itself spent (0 where the cache had the result); step 0: the warm start
                   "work/train_seconds": stats.get("train/seconds", 0.0) if state is not None else
                   warm_seconds if k == 0 else 0.0,
                   "work/probe_seconds": row.get("seconds", 0.0) if fresh else 0.0}
        if prepare_only:
            continue
        if k <= reported:  # a restarted or resumed run: MLflow and Tune already have this stage
            if k == len(cfg.stages):  # ...but the caller (Tune) still needs a final result from this run
                report(k, metrics, False)
            continue
        if rank == 0 and plan.run_id:
            from raycf import tracking
            tracking.log_metrics(plan.tracking_uri, plan.run_id, metrics, step=k, spool=plan.spool_dir())
            if k == len(cfg.stages):
                log_final_artifacts(cfg, plan, rows)
        mark(f"stage{k}_logged")
        if k == 0:
            continue  # the before-training row goes to MLflow (step 0); Tune's iterations are the stages
        report(k, metrics, True)
    mark("trial_end")


def _device(cfg: ExperimentConfig):
    import torch
    if cfg.resources.gpus_per_worker > 0:
        import ray.train.torch
        return ray.train.torch.get_device()
    return torch.device("cpu")


def _bf16(cfg: ExperimentConfig, device) -> bool:
    mp = cfg.resources.mixed_precision
    return mp == "bf16" or (mp == "auto" and device.type == "cuda")


def _last_reported_stage() -> int:
    """The stage of the checkpoint Ray Train restored after a failure, else -1."""
    import ray.train
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return -1
    with ckpt.as_directory() as d:
        return int(json.loads((Path(d) / "result.json").read_text())["stage"])


def cached_prefix(plan: TrialPlan) -> int:
    """How many leading stages are finished (a valid cache entry each)."""
    done = 0
    for k in range(1, len(plan.stage_keys) + 1):
        if cache.lookup(plan.stage_entry(k)) is None:
            break
        done = k
    return done


def _fetched(entry: cache.Entry) -> Path:
    """The entry's local folder: rank 0 saw it published, so every rank can fetch it."""
    path = cache.lookup(entry)
    if path is None:
        raise RuntimeError(f"cache entry {entry.kind}/{entry.key} disappeared from storage while the trial ran")
    return path


def _agree(value):
    """Rank 0's value on every rank: cache lookups must agree, or a rank that saw an entry another trial
    published a moment later would skip a collective the others enter."""
    import torch.distributed as dist
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _barrier():
    import torch.distributed as dist
    if dist.is_initialized():
        dist.barrier()


def ensure_warm_start(cfg: ExperimentConfig, plan: TrialPlan, rank: int, world: int, device,
                      stop=None) -> tuple[Path, float]:
    """The folder the continual stages start from: the model, a checkpoint, or the cached `general`
    warm start (full fine-tuning on general instruction data), trained here if no trial has yet; and the
    seconds spent training it here (0 if it was not)."""
    if cfg.warm_start.kind == "checkpoint":
        return Path(cfg.warm_start.path), 0.0
    if cfg.warm_start.kind == "none":
        return Path(plan.model_dir), 0.0
    if _agree(cache.lookup(plan.warm_entry()) is not None):
        return _fetched(plan.warm_entry()), 0.0
    from raycf import data
    from raycf.train import encode, train_stage, wrap
    model, tok = load_base(cfg, plan.model_dir)
    model.to(device)
    model = wrap(model, cfg.resources.strategy, device, _bf16(cfg, device))
    ws = cfg.warm_start
    examples = encode(stage_rows(cfg, data.GENERAL), tok, plan.kind, cfg.optim.max_length, source=data.GENERAL)
    stats = train_stage(model, examples, kind=plan.kind, pad_id=tok.pad_token_id, batch_size=ws.batch_size,
                        steps=ws.steps, grad_accum=1, lr=ws.lr, weight_decay=0.0, schedule="constant", warmup=0,
                        max_grad_norm=cfg.optim.max_grad_norm, seed=cfg.seed, device=device,
                        on_step=(lambda step: stop()) if stop is not None else None)
    sd = full_state_dict(model)
    if rank == 0:
        with cache.writing(plan.warm_entry()) as tmp:
            _unwrap(model).save_pretrained(tmp, state_dict=sd)
            tok.save_pretrained(tmp)
            (tmp / "result.json").write_text(json.dumps({"stage": 0, "task": data.GENERAL,
                                                         "train/loss": stats.loss, "train/seconds": stats.seconds}))
        print(f"[raycf] warm start 'general' trained: loss {stats.loss:.4f} in {stats.seconds:.1f}s -> "
              f"{redact_uri(plan.warm_entry().location)}")
    _barrier()
    return _fetched(plan.warm_entry()), stats.seconds


def _unwrap(model):
    return getattr(model, "module", model)  # DDP keeps the model in .module; FSDP2 shards in place


def full_state_dict(model) -> dict:
    """Full (unsharded) state dict on every rank: a collective, every rank calls it. Every rank gets the
    tensors because under FSDP2 each rank also probes a plain copy of the model."""
    import torch.distributed as dist
    if not dist.is_initialized() or dist.get_world_size() == 1 or not _is_fsdp(model):
        return {k: v.detach() for k, v in _unwrap(model).state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


def _is_fsdp(model) -> bool:
    from torch.distributed.fsdp import FSDPModule
    return isinstance(model, FSDPModule)


def plain_model(cfg: ExperimentConfig, plan: TrialPlan, base_dir: Path, model, state: dict | None, copy: dict,
                device):
    """The model to probe. DDP and one process: the model itself. FSDP2: a forward is a collective and the
    probe runs different forwards per rank, so every rank probes a plain copy loaded from the full state
    dict (gathered now if the stage came from the cache)."""
    if not _is_fsdp(model):
        return _unwrap(model)
    if state is None:
        state = full_state_dict(model)
    if "model" not in copy:
        copy["model"], _ = build_model(cfg, plan, base_dir, 0, device)
    copy["model"].load_state_dict(state)
    return copy["model"]


def load_base(cfg: ExperimentConfig, folder):
    """The model a trial starts from (model, warm start or checkpoint), loaded only as the config allows:
    its own code with model.trust_remote_code, pickle weights with model.allow_pickle."""
    from raycf.models import load_model
    m = cfg.model
    return load_model(Path(folder), dtype=m.dtype, trust_remote_code=m.trust_remote_code, allow_pickle=m.allow_pickle)


def build_model(cfg: ExperimentConfig, plan: TrialPlan, base_dir: Path, done: int, device):
    """The model to train from stage done+1: base (+ fresh LoRA), or the weights of stage `done`."""
    from raycf.models import add_lora, load_model
    if cfg.finetune.method == "full" and done > 0:
        model, tok = load_model(_fetched(plan.stage_entry(done)), dtype=cfg.model.dtype)
        return model.to(device), tok
    model, tok = load_base(cfg, base_dir)
    if cfg.finetune.method == "lora":
        import torch
        ft = cfg.finetune
        torch.manual_seed(cfg.seed)  # the same adapter init on every rank: FSDP2 shards local tensors as they are
        model = add_lora(model, ft.lora_rank, ft.lora_alpha, ft.lora_dropout, ft.target_modules)
        if done > 0:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file
            set_peft_model_state_dict(model, load_file(_fetched(plan.stage_entry(done)) / "adapter_model.safetensors"))
    return model.to(device), tok


def stage_examples(cfg: ExperimentConfig, k: int, tok, kind: str):
    """Training examples of stage k: its task's rows, plus replayed rows of earlier stages."""
    import random
    from raycf.train import encode
    rows = stage_rows(cfg, cfg.stages[k - 1])
    n = cfg.data.examples_per_stage or len(rows)
    rng = random.Random(cfg.seed * 1000 + k)
    rows = rng.sample(rows, min(n, len(rows)))
    if cfg.data.replay_ratio > 0 and k > 1:
        n_replay = int(round(len(rows) * cfg.data.replay_ratio / (1 - cfg.data.replay_ratio)))
        pool = [r for s in cfg.stages[:k - 1] for r in stage_rows(cfg, s)]
        rows = rows + rng.sample(pool, min(n_replay, len(pool)))
    return encode(rows, tok, kind, cfg.optim.max_length, source=cfg.stages[k - 1])


def run_stage(cfg: ExperimentConfig, plan: TrialPlan, k: int, model, tok, rank: int, world: int,
              device, stop=None) -> tuple[dict, dict]:
    """Train stage k, save its checkpoint into the stage cache (verified); its stats and full state dict."""
    from raycf.train import num_steps, train_stage
    o = cfg.optim
    examples = stage_examples(cfg, k, tok, plan.kind)
    steps = num_steps(len(examples), o.batch_size, o.epochs, o.steps_per_stage)
    stats = train_stage(model, examples, kind=plan.kind, pad_id=tok.pad_token_id, batch_size=o.batch_size,
                        steps=steps, grad_accum=o.grad_accum, lr=o.lr, weight_decay=o.weight_decay,
                        schedule=o.schedule, warmup=o.warmup_steps, max_grad_norm=o.max_grad_norm,
                        seed=cfg.seed * 1000 + k, device=device, on_step=_on_step(plan, k, rank, stop))
    result = {"stage": k, "task": cfg.stages[k - 1], "train/loss": stats.loss, "train/steps": stats.steps,
              "train/target_tokens": stats.tokens, "train/tokens_per_s": stats.seen_tokens / stats.seconds,
              "train/seconds": stats.seconds}
    state = save_stage(cfg, plan, k, model, tok, result, examples, rank, device)
    return result, state


def _on_step(plan: TrialPlan, k: int, rank: int, stop=None):
    """What runs before each optimizer step: the stop check, and a progress file (pid, stage, step) when
    RAYCF_HEARTBEAT_DIR is set (fault-injection tests use it to kill a worker by PID in the middle of a stage)."""
    folder = os.environ.get("RAYCF_HEARTBEAT_DIR")
    if not folder and stop is None:
        return None

    def on_step(step: int) -> None:
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / f"rank{rank}.json").write_text(json.dumps({"pid": os.getpid(), "stage": k,
                                                                      "step": step}))
        if stop is not None:
            stop()
    return on_step


def save_stage(cfg: ExperimentConfig, plan: TrialPlan, k: int, model, tok, result: dict, examples, rank: int,
               device) -> dict:
    """Collective: gather the full state, rank 0 writes adapter (LoRA) or full weights, checks that the
    saved checkpoint is non-empty and reloads to the live model's loss, and publishes it."""
    from raycf.train import eval_loss
    probe_batch = examples[:4]
    live = eval_loss(model, probe_batch, plan.kind, tok.pad_token_id, device)
    sd = full_state_dict(model)
    if rank == 0:
        inner = _unwrap(model)
        with cache.writing(plan.stage_entry(k)) as tmp:
            if cfg.finetune.method == "lora":
                from peft import get_peft_model_state_dict
                adapter = get_peft_model_state_dict(inner, state_dict=sd)
                if not adapter or all(float(t.abs().sum()) == 0 for t in adapter.values()):
                    raise RuntimeError(f"stage {k}: the LoRA adapter to save is empty or all zeros")
                inner.save_pretrained(tmp, state_dict=sd)
            else:
                inner.save_pretrained(tmp, state_dict=sd)
                tok.save_pretrained(tmp)
            reloaded = reload_loss(cfg, plan, tmp, probe_batch, tok.pad_token_id)
            if abs(reloaded - live) > 1e-3 * max(1.0, abs(live)):
                raise RuntimeError(f"stage {k}: checkpoint reloads to loss {reloaded:.6f}, live model {live:.6f}")
            result["checkpoint/reload_loss"] = reloaded
            result["checkpoint/live_loss"] = live
            (tmp / "result.json").write_text(json.dumps(result))
    _barrier()
    return sd


def reload_loss(cfg: ExperimentConfig, plan: TrialPlan, folder: Path, examples, pad_id: int) -> float:
    """Loss of `examples` under the checkpoint in `folder`, loaded fresh in this process."""
    from raycf.models import load_model
    from raycf.train import eval_loss
    if cfg.finetune.method == "full":
        model, _ = load_model(folder, dtype=cfg.model.dtype)
    else:
        from peft import PeftModel
        base_dir = plan.warm_dir() if plan.warm_key else Path(cfg.warm_start.path or plan.model_dir)
        model, _ = load_base(cfg, base_dir)
        model = PeftModel.from_pretrained(model, folder)
    return eval_loss(model, examples, plan.kind, pad_id)


def probe_row(cfg: ExperimentConfig, plan: TrialPlan, k: int, get_model, tok, rank: int,
              world: int) -> tuple[dict, int]:
    """Probe scores after stage k (k=0: before training), from the cache or measured now (all ranks);
    and 1 if measured now."""
    if not plan.probe_tasks:
        return {}, 0
    if _agree(cache.lookup(plan.probe_entry(k)) is not None):
        return cache.read_json(_fetched(plan.probe_entry(k))), 0
    from raycf import probe
    t0 = time.perf_counter()
    tasks = [probe_task(cfg, t) for t in plan.probe_tasks]
    scores = probe.run_probes(get_model(), tok, tasks, shots=cfg.probes.shots, limit=cfg.probes.limit or None,
                              seed=cfg.seed, rank=rank, world_size=world,
                              max_new_tokens=cfg.probes.max_new_tokens)
    row = {"scores": scores, "seconds": time.perf_counter() - t0}
    if rank == 0:
        with cache.writing(plan.probe_entry(k)) as tmp:
            (tmp / "result.json").write_text(json.dumps(row))
    _barrier()
    return row, 1


def accuracy_matrix(cfg: ExperimentConfig, plan: TrialPlan, rows: list[dict]):
    """The accuracy matrix R so far: one row per probe pass, one column per probe task (primary metric)."""
    import numpy as np
    from raycf.forgetting import AccuracyMatrix
    tasks = [probe_task(cfg, t) for t in plan.probe_tasks]
    scores = np.full((len(cfg.stages) + 1, len(tasks)), np.nan)
    for i, row in enumerate(rows):
        for j, t in enumerate(tasks):
            scores[i, j] = row["scores"][t.name][t.metric[0]]
    return AccuracyMatrix(scores=scores, tasks=[t.name for t in tasks], categories=[t.category for t in tasks],
                          stages=list(cfg.stages))


def stage_metrics(cfg: ExperimentConfig, plan: TrialPlan, k: int, stats: dict, rows: list[dict]) -> dict:
    """What Tune and MLflow see after stage k: train stats, probe scores, forgetting so far."""
    metrics = {"stage": k}
    metrics.update({key: v for key, v in stats.items() if key.startswith(("train/", "checkpoint/"))})
    if rows and rows[-1]:
        categories = {t.name: t.category for t in (probe_task(cfg, n) for n in plan.probe_tasks)}
        for name, scores in rows[-1]["scores"].items():
            cat = categories[name]
            metrics.update({f"probe/{cat}/{name}/{m}": v for m, v in scores.items()})
        metrics["probe/seconds"] = rows[-1]["seconds"]
        if k > 0:
            from raycf.forgetting import forgetting
            metrics.update(forgetting(accuracy_matrix(cfg, plan, rows)).to_metrics())
    metrics["objective"] = objective(metrics, float(cfg.sweep.get("task_floor", 0.0)))
    return metrics


def objective(metrics: dict, task_floor: float) -> float:
    """What a sweep minimises by default: mean FG over the general categories, plus 100 x how far the
    learned tasks' average falls short of `task_floor` (so forgetting nothing by learning nothing loses)."""
    fg = metrics.get("forgetting/mean_FG", 0.0)
    learned = metrics.get("forgetting/tasks/average")
    shortfall = max(0.0, task_floor - learned) if learned is not None else 0.0
    return fg + 100.0 * shortfall


def log_final_artifacts(cfg: ExperimentConfig, plan: TrialPlan, rows: list[dict]) -> None:
    """The accuracy matrix (CSV, heatmap) and the category scores over stages: the report's figures."""
    import tempfile
    from raycf import tracking
    from raycf.report import category_lines_png
    if not plan.probe_tasks:
        return
    R = accuracy_matrix(cfg, plan, rows)
    with tempfile.TemporaryDirectory() as d:
        R.to_csv(Path(d) / "accuracy_matrix.csv")
        R.heatmap_png(Path(d) / "accuracy_matrix.png")
        category_lines_png(R, Path(d) / "category_scores.png")
        for name in ("accuracy_matrix.csv", "accuracy_matrix.png", "category_scores.png"):
            tracking.log_artifact(plan.tracking_uri, plan.run_id, Path(d) / name, spool=plan.spool_dir())


# ----------------------------------------------------------------------------- driver: checks and launch

def check(cfg: ExperimentConfig, cluster: dict | None = None, build: bool = True) -> Path | None:
    """Everything that can be checked before Ray starts; raises ConfigError listing every problem.
    build: also build (or find) the model folder and return it; False for dry runs."""
    from raycf.models import ModelError, folder_problems, peek_hidden_size, resolve_model_dir
    problems = data_problems(cfg)
    ws = cfg.warm_start
    if ws.kind == "checkpoint" and ws.path and not (Path(ws.path) / "config.json").exists():
        problems.append(f"warm_start.path: {ws.path} is not a model folder (no config.json); give a folder "
                        f"written by save_pretrained, e.g. a stage checkpoint")
    elif ws.kind == "checkpoint" and ws.path:
        problems += folder_problems(Path(ws.path), trust_remote_code=cfg.model.trust_remote_code,
                                    allow_pickle=cfg.model.allow_pickle, key="warm_start.path")
    problems += resource_problems(cfg, cluster or local_cluster())
    model_dir = None
    try:
        cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else None
        h = peek_hidden_size(cfg.model.name, allow_download=cfg.model.allow_download, cache_dir=cache_dir)
        folder = Path(cfg.model.name).expanduser()
        if folder.is_dir():  # a folder of the user's: read before anything loads it
            problems += folder_problems(folder, trust_remote_code=cfg.model.trust_remote_code,
                                        allow_pickle=cfg.model.allow_pickle)
        if cfg.finetune.method == "lora" and h is not None and cfg.finetune.lora_rank > h:
            problems.append(f"finetune.lora_rank: {cfg.finetune.lora_rank} exceeds the model's hidden size {h}; "
                            f"use a rank <= {h}")
        if build and not problems:
            model_dir = resolve_model_dir(cfg.model.name, allow_download=cfg.model.allow_download,
                                          cache_dir=cache_dir)
            if not folder.is_dir():  # built here or downloaded: the same rules
                problems += folder_problems(model_dir, trust_remote_code=cfg.model.trust_remote_code,
                                            allow_pickle=cfg.model.allow_pickle)
        if not problems and cfg.data.sources:
            problems += long_row_problems(cfg, model_dir or _tokenizer_dir(cfg))
    except ModelError as e:
        problems.append(str(e))
    if problems:
        raise ConfigError(problems)
    return model_dir


def data_problems(cfg: ExperimentConfig) -> list[str]:
    """Stages, data.sources files (every bad row as FILE:LINE) and probe tasks (with their rows)."""
    from raycf import data
    problems = []
    for name, files in cfg.data.sources.items():
        for split, file in files.items():
            try:
                data.load_rows(file, "generation")
            except data.DataError as e:
                problems += [f"data.sources.{name}.{split}: {line}" for line in str(e).splitlines()]
    for i, s in enumerate(cfg.stages):
        if s not in cfg.data.sources:
            try:
                data.load_stage(s, limit=1)
            except data.DataError as e:
                problems.append(f"stages[{i}]: {e} (a stage of your own needs data.sources.{s}.train)")
    try:
        names = probe_task_names(cfg)
    except data.DataError as e:
        return problems + [f"probes.suites: {e}"]
    for name in names:
        if name in cfg.data.sources and name not in data.STAGES and "eval" not in cfg.data.sources[name]:
            problems.append(f"data.sources.{name}.eval: missing; probes.suites has tasks, which probes every stage "
                            f"on its eval rows: give an eval file or drop tasks from probes.suites")
        elif name not in cfg.stages:  # stages and their files were checked above
            try:  # with data.hub the task's definition is checked, not downloaded: checks stay offline
                probe_task(cfg.with_overrides({"data.hub": False}) if cfg.data.hub else cfg, name)
            except data.DataError as e:
                key = f"probes.suites[{cfg.probes.suites.index(name)}]" if name in cfg.probes.suites else \
                    "probes.suites"
                problems += [f"{key}: {line}" for line in str(e).splitlines()]
    return problems


def _tokenizer_dir(cfg: ExperimentConfig) -> Path | None:
    """A folder with the model's tokenizer that needs nothing built: the user's folder or the shipped raycf-tiny."""
    from raycf.pretrain import SHIPPED
    if Path(cfg.model.name).expanduser().is_dir():
        return Path(cfg.model.name).expanduser()
    if cfg.model.name == "raycf-tiny" and (SHIPPED / "tokenizer.json").exists():
        return SHIPPED
    return None


def long_row_problems(cfg: ExperimentConfig, model_dir: Path | None) -> list[str]:
    """Training rows of data.sources longer than optim.max_length tokens (the trainer refuses them, so say so
    before Ray starts). Needs the model's tokenizer: skipped when the model is not built yet (a dry run)."""
    if model_dir is None:
        return []
    from transformers import AutoTokenizer
    from raycf import data
    from raycf.models import model_kind
    from raycf.train import encode_row
    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=cfg.model.trust_remote_code)
    kind = model_kind(model_dir) if cfg.model.kind == "auto" else cfg.model.kind
    problems = []
    for name, files in cfg.data.sources.items():
        if "train" not in files:
            continue
        rows = data.load_rows(files["train"], "generation", numbered=True)
        long = [(line, n) for line, row in rows if (n := encode_row(row, tok, kind).longest) > cfg.optim.max_length]
        if long:
            more = f" (and {len(long) - 1} more rows)" if len(long) > 1 else ""
            (line, n), m = long[0], cfg.optim.max_length
            problems.append(f"data.sources.{name}.train: {files['train']}:{line}: example is {n} tokens, longer "
                            f"than optim.max_length={m}{more}; raise optim.max_length or shorten the row")
    return problems


def local_cluster() -> dict:
    import torch
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


LOCAL_TRAIN_ENV = {
    # one machine has no spot nodes to lose: Ray Train's preemption watcher (a process per TorchTrainer) is off
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}


@contextlib.contextmanager
def ray_session(**init):
    """The Ray this process is connected to, or one started (or connected to) here with `init` and stopped on the
    way out; a local one gets LOCAL_TRAIN_ENV for its TorchTrainers, where the environment does not say otherwise."""
    import ray
    if ray.is_initialized():
        yield
        return
    local = LOCAL_TRAIN_ENV if not init.get("address") else {}
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


def resource_problems(cfg: ExperimentConfig, cluster: dict) -> list[str]:
    r = cfg.resources
    problems = []
    cpus, gpus = r.workers * r.cpus_per_worker, r.workers * r.gpus_per_worker
    if cpus > cluster.get("CPU", 0) + 1e-9:
        problems.append(f"resources: {r.workers} workers x {r.cpus_per_worker:g} CPU = {cpus:g} CPUs, but the cluster "
                        f"has {cluster.get('CPU', 0):g}; lower resources.workers or resources.cpus_per_worker")
    if gpus > cluster.get("GPU", 0) + 1e-9:
        problems.append(f"resources: {r.workers} workers x {r.gpus_per_worker:g} GPU = {gpus:g} GPUs, but the cluster "
                        f"has {cluster.get('GPU', 0):g}; set resources.gpus_per_worker=0 or add GPU nodes")
    return problems


def trainer(cfg: ExperimentConfig, plan: TrialPlan, name: str, callbacks=None, prepare_only: bool = False):
    """The TorchTrainer of one trial. prepare_only: just the warm start and the before-training probe row,
    which trials then share."""
    return torch_trainer(cfg, trial_loop, {"config": cfg.to_dict(), "plan": asdict(plan), "prepare_only": prepare_only},
                         name, plan.storage, callbacks=callbacks, max_failures=cfg.resources.max_failures)


def torch_trainer(cfg: ExperimentConfig, loop, loop_config: dict, name: str, root: str, *, callbacks=None,
                  max_failures: int = 2):
    """A TorchTrainer running `loop` on cfg.resources' workers (gloo on CPU, NCCL on GPU), its Ray results under
    <root>/ray (root: the storage_path, a folder or URI). max_failures: worker-group restarts (-1: no limit; the worker pool counts them per job)."""
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


def run(cfg: ExperimentConfig, *, parent_run_id: str | None = None, name: str | None = None, workers=None) -> dict:
    """Run one trial to the end on the current Ray cluster (started locally if none); returns the final
    metrics. The MLflow run ends FINISHED, or FAILED with the error. workers: a worker pool (raycf.pool.Pool of
    this trial's shape) to run it on, instead of a TorchTrainer of its own."""
    from raycf import tracking
    from raycf.config import flat_params, to_yaml
    if workers is not None and not workers.holds(cfg):
        raise ConfigError([f"resources: the worker pool given has {workers.shape}, this trial needs "
                           f"{pool_shape(cfg)}; make a pool of the trial's shape"])
    model_dir = check(cfg)
    storage.check(cfg.storage_path)
    uri = tracking.resolve_uri(cfg.tracking.uri)
    tracking.check_reachable(uri)
    name = name or f"{cfg.name}-trial-{time.strftime('%Y%m%d-%H%M%S')}"
    run_id = tracking.start_run(uri, cfg.tracking.experiment, name, parent_run_id=parent_run_id)
    plan = make_plan(cfg, model_dir, run_id=run_id, tracking_uri=uri)
    tracking.log_params(uri, run_id, flat_params(cfg))
    resolved = to_yaml(cfg)
    storage.write_text(storage.join(plan.storage, "configs", f"{name}.yaml"), resolved)
    tracking.log_text(uri, run_id, f"{name}.yaml", resolved)
    print(f"[raycf] trial {name}: {len(cfg.stages)} stages ({' > '.join(cfg.stages)}), "
          f"MLflow run {run_id} at {uri}")
    try:
        with ray_session(address=os.environ.get("RAY_ADDRESS"), include_dashboard=True, log_to_driver=True):
            if workers is None:
                final = trainer(cfg, plan, name).fit().metrics or {}
            else:
                final = on_pool(workers, cfg, plan, name)
    except BaseException as e:
        tracking.end_run(uri, run_id, "FAILED", spool=plan.spool_dir())
        if cache.disk_full(e):  # Ray's own writes to storage_path may be what failed first
            raise cache.StorageFull(f"no space left on the disk of {redact_uri(plan.storage)} while trial {name} wrote there; "
                                    f"entries written before are intact: free space there or set storage_path to a "
                                    f"larger disk, then run again to continue from them") from e
        raise
    tracking.end_run(uri, run_id, "FINISHED", spool=plan.spool_dir())
    if tracking.flush(uri, plan.spool_dir(), run_id=run_id, wait_s=60):
        print(f"[raycf] MLflow is still unreachable: this run's last metrics wait in {plan.spool_dir()}; send them "
              f"with `python -m raycf.tracking flush --storage {redact_uri(plan.storage)}`", file=sys.stderr)
    return dict(final)


def on_pool(workers, cfg: ExperimentConfig, plan: TrialPlan, name: str) -> dict:
    """Run the trial as a job of a worker pool; its last stage's metrics."""
    import ray
    from raycf import pool
    job = ray.get(workers.board.submit.remote(pool.job(cfg, plan, name)))
    final: dict = {}
    for item in pool.results(workers.board, job):
        final = item["metrics"]
    return final


def pool_shape(cfg: ExperimentConfig) -> dict:
    """What a worker group is made of; a pool serves trials of its own shape (strategy, precision and restarts
    are per trial)."""
    r = cfg.resources
    return {"workers": r.workers, "cpus_per_worker": r.cpus_per_worker, "gpus_per_worker": r.gpus_per_worker}


def main(argv=None) -> int:
    import argparse
    from raycf.config import load, parse_overrides, to_yaml
    p = argparse.ArgumentParser(prog="python -m raycf.trial", description="run one continual fine-tuning trial")
    p.add_argument("--space", default="search_spaces/default.yaml", help="experiment / search-space YAML")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a dotted key")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    try:
        cfg = load(args.space, parse_overrides(args.set))
        cfg = first_point(cfg)
        print(to_yaml(cfg), end="")
        metrics = run(cfg)
    except (ConfigError, ConnectionError) as e:
        if args.debug:
            raise
        print(e.lines(args.space) if isinstance(e, ConfigError) else f"error: {e}", file=sys.stderr)
        return 2
    print(summary(metrics))
    return 0


def first_point(cfg: ExperimentConfig) -> ExperimentConfig:
    """A single trial from a search space: each searched key takes the first value of its domain."""
    if not cfg.search:
        return cfg
    from raycf.space import first_value
    fixed = {key: v for key, domain in cfg.search.items() if (v := first_value(domain, key)) is not None}
    print(f"[raycf] single trial: searched keys fixed to {fixed} (override with --set)")
    return cfg.with_overrides({**fixed, "search": {}})


def summary(metrics: dict) -> str:
    keys = [k for k in sorted(metrics) if k.startswith(("train/loss", "forgetting/", "stage"))]
    return "\n".join(f"{k:45s} {metrics[k]:.4f}" if isinstance(metrics[k], float) else f"{k:45s} {metrics[k]}"
                     for k in keys)


if __name__ == "__main__":
    sys.exit(main())
