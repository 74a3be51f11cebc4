"""A trial's plan: what every worker needs besides the config, resolved once by the driver. Chiefly the cache keys
of its warm start, its stages and its probe rows, which hash everything that determines their content, so that
trials whose stage prefixes agree share checkpoints and a restarted trial finds its finished stages."""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from raycf import cache, storage
from raycf.config.checks import chat_template_text
from raycf.config.schema import ExperimentConfig
from raycf.data.registry import GENERAL
from raycf.data.sources import probe_task, probe_task_names, stage_rows
from raycf.models.folder import model_kind


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
    base_probe_key: str = ""            # the base model's probe row (= probe_keys[0] without a warm start)
    tracking_uri: str = ""
    run_id: str | None = None
    logged: int = -1                    # last stage the MLflow run already holds (a retried or resumed trial)
    work: dict = field(default_factory=dict)  # record.WORK_KEYS counts of the trial's earlier attempts (carried on)
    fixed: int = 0                      # leading stages another recipe trained (PBT: a donor's), never trained here
    pinned: dict = field(default_factory=dict)  # stage -> SHA-256 its entry's manifest must have (PBT's donor's)

    def stage_entry(self, k: int) -> cache.Entry:
        return cache.Entry(self.storage, "stages", self.stage_keys[k - 1])

    def probe_entry(self, k: int) -> cache.Entry:
        return cache.Entry(self.storage, "probes", self.probe_keys[k])

    def base_entry(self) -> cache.Entry:
        return cache.Entry(self.storage, "probes", self.base_probe_key)

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


def fingerprint(model_dir: Path) -> str:
    """Identity of a model folder: its config and its files (their bytes up to 256 MB in all, names and sizes
    beyond: hashing a 7B checkpoint on every trial start would cost more than it protects)."""
    files = sorted(p for p in Path(model_dir).iterdir() if p.is_file())
    if sum(p.stat().st_size for p in files) <= 256 << 20:
        return cache.key((Path(model_dir) / "config.json").read_text(),
                         [(p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in files])
    return cache.key((Path(model_dir) / "config.json").read_text(), [(p.name, p.stat().st_size) for p in files])


def bf16_training(cfg: ExperimentConfig) -> bool:
    """Whether a trial trains under bf16 autocast (and FSDP2's bf16 policy): resources.mixed_precision bf16,
    or auto on a GPU. On CPU auto stays fp32: the numbers then agree exactly across machines (bf16 kernels
    differ by CPU) and with lm-eval; bf16 is a measured opt-in (README, scripts/bench_train.py)."""
    mp = cfg.resources.mixed_precision
    return mp == "bf16" or (mp == "auto" and cfg.resources.gpus_per_worker > 0)


def make_plan(cfg: ExperimentConfig, model_dir: Path, *, run_id: str | None = None, tracking_uri: str = "",
              prefix: list | None = None) -> TrialPlan:
    """prefix: the stage keys of the first stages when another recipe trained them (a PBT donor's checkpoint);
    the later stages are then keyed on the last of them, this config's recipe and their own data."""
    kind = model_kind(model_dir) if cfg.model.kind == "auto" else cfg.model.kind
    root = storage.resolve(cfg.storage_path)
    start = model_key = fingerprint(model_dir)
    precision = ["bf16"] if bf16_training(cfg) else []  # fp32 keys as before bf16 existed: caches stay valid
    # data.template chat changes every row's tokens; alpaca keys as before the chat template existed
    given = [chat_template_text(cfg.data.chat_template)] if cfg.data.chat_template else []  # keys as before it
    chat = ["chat", cfg.data.system_prompt, *given] if cfg.data.template == "chat" else []
    data = {k: v for k, v in asdict(cfg.data).items()
            if (chat or k not in ("template", "system_prompt")) and k != "chat_template"}  # its text: in `chat`
    warm_key = None
    if cfg.warm_start.kind == "general":
        ws = cfg.warm_start
        warm_key = cache.key("warm", start, data_key(cfg, GENERAL), ws.lr, ws.steps,
                             ws.batch_size, cfg.optim.max_length, ws.seed, *precision, *chat)
        start = warm_key
    elif cfg.warm_start.kind == "checkpoint":
        start = fingerprint(Path(cfg.warm_start.path))
    method = [cfg.continual.method, cfg.continual.strengths()] if cfg.continual.method != "naive" else []
    if cfg.continual.method == "general_mix":  # its rows are part of every stage's
        method.append(data_key(cfg, GENERAL))
    recipe = [asdict(cfg.finetune), optim_key(cfg), data, cfg.seed, *precision, *method]
    prefix = list(prefix or [])
    base = prefix[-1] if prefix else start  # without a prefix: the keys every trial had before PBT existed
    stage_keys = prefix + [cache.key("stage", base, recipe, [data_key(cfg, s) for s in cfg.stages[len(prefix):k]])
                           for k in range(len(prefix) + 1, len(cfg.stages) + 1)]
    probe_tasks = probe_task_names(cfg)
    # the seed draws the few-shot examples only: 0-shot rows are shared by the trials of every seed
    shot_seed = [] if cfg.probes.shots == 0 else [cfg.seed]
    probe_recipe = [task_key(probe_task(cfg, t)) for t in probe_tasks], cfg.probes.shots, cfg.probes.limit, \
        cfg.probes.max_new_tokens, *shot_seed, *([cfg.probes.precision] if cfg.probes.precision != "fp32" else []), \
        *chat, *(["mc_chat", cfg.data.system_prompt, *given] if cfg.probes.apply_chat_template else [])  # prompts
    probe_keys = [cache.key("probe", w, probe_recipe) for w in [start] + stage_keys]
    return TrialPlan(model_dir=str(model_dir), kind=kind, storage=root, start_key=start, warm_key=warm_key,
                     stage_keys=stage_keys, probe_tasks=probe_tasks, probe_keys=probe_keys,
                     base_probe_key=cache.key("probe", model_key, probe_recipe), tracking_uri=tracking_uri,
                     run_id=run_id, fixed=len(prefix))


STAGE_SCHEDULE_DEFAULTS = {"stage_lr_decay": 1.0, "stage_lrs": [], "stage_steps": []}


def optim_key(cfg: ExperimentConfig) -> dict:
    """The optimizer settings that key a stage: the per-stage schedules only where set, so that the keys of
    trials without them are what they were before those keys existed (their caches stay valid)."""
    d = asdict(cfg.optim)
    return {k: v for k, v in d.items() if k not in STAGE_SCHEDULE_DEFAULTS or v != STAGE_SCHEDULE_DEFAULTS[k]}


def data_key(cfg: ExperimentConfig, stage: str) -> str:
    """Stages are keyed by their rows' content, so edited data never reuses a stale checkpoint."""
    return cache.key(stage, stage_rows(cfg, stage))


def task_key(task) -> tuple:
    """A probe task's identity: its version, and the rows' content when they are the user's own file."""
    return (task.name, task.version) if task.source == "shipped" else (task.name, task.version, cache.key(task.rows))
