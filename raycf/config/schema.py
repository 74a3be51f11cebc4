"""The one typed experiment config and its validation: every section a dataclass, every problem found at once.

    python -m raycf.config --space search_spaces/default.yaml --set optim.lr=3e-4   # print resolved config

from_dict() builds the config from what YAML gives and gathers every problem into one ConfigError (one line per
problem: key, bad value, fix) before anything expensive starts. Unknown keys are errors with a "did you mean".
The YAML side (files, --set overrides, printing) is raycf.config.files.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

from raycf.config.checks import TEMPLATE_FILES, validate
from raycf.config.dotted import set_dotted
from raycf.errors import ConfigError, did_you_mean
from raycf.models.builtin import BUILTIN


@dataclass
class ModelConfig:
    name: str = "raycf-tiny"          # built-in, folder or hub name (see raycf.models)
    kind: str = "auto"                # auto | causal | seq2seq (auto: read from the folder's config.json)
    dtype: str = "float32"            # weights in memory; bf16 autocast on GPU is resources.mixed_precision
    allow_download: bool = False      # hub names need this: raycf is offline by default
    trust_remote_code: bool = False   # run Python code a model folder ships (config.json auto_map): only if trusted
    allow_pickle: bool = False        # load pickle weights (pytorch_model.bin, *.pt: can run code); else safetensors


@dataclass
class FinetuneConfig:
    method: str = "lora"              # lora | full
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    target_modules: typing.Any = "auto"   # auto = every linear layer but the output head, or a list of names


@dataclass
class OptimConfig:
    lr: float = 1e-3
    schedule: str = "constant"        # constant | linear | cosine, restarted at every stage
    warmup_steps: int = 0
    weight_decay: float = 0.0
    epochs: float = 1.0               # passes over a stage's data; ignored when steps_per_stage > 0
    steps_per_stage: int = 0          # optimizer steps per stage; 0 = use epochs
    batch_size: int = 8               # GLOBAL examples per optimizer step, across workers and accumulation
    grad_accum: int = 1
    max_length: int = 256             # tokens; a longer example is an error, not silently cut
    max_grad_norm: float = 1.0        # 0 = no clipping
    # per-stage schedules, each searchable: stage k trains at stage_lrs[k-1] if given, else at
    # lr x stage_lr_decay^(k-1); for stage_steps[k-1] steps if given, else steps_per_stage (or epochs)
    stage_lr_decay: float = 1.0
    stage_lrs: list = field(default_factory=list)
    stage_steps: list = field(default_factory=list)

    def stage_lr(self, k: int) -> float:
        """Stage k's learning rate (k = 1, 2, ...)."""
        return float(self.stage_lrs[k - 1]) if self.stage_lrs else self.lr * self.stage_lr_decay ** (k - 1)

    def stage_steps_given(self, k: int) -> int:
        """Stage k's optimizer steps as configured (0 = from epochs)."""
        return int(self.stage_steps[k - 1]) if self.stage_steps else self.steps_per_stage


@dataclass
class DataConfig:
    examples_per_stage: int = 0       # 0 = all training rows of a stage
    # your own rows: stage name -> {train: FILE, eval: FILE} (.jsonl or .parquet, see raycf/data/README.md;
    # eval optional for a shipped stage). Replaces a shipped stage's rows or adds a stage of that name.
    sources: dict = field(default_factory=dict)
    # the study's own datasets from the Hugging Face hub (each task YAML's `hub:`), for stages without a file
    # in `sources` and for the probes; needs the network. false: raycf's offline sets
    hub: bool = False
    template: str = "alpaca"          # alpaca (the study's) | chat: the tokenizer's chat template, loss on assistant turns
    system_prompt: str = ""           # data.template chat: a system turn before rows that have none
    # a Jinja chat template given to the tokenizer (its text, or a .jinja file): for a tokenizer without one (the
    # tiny models, raycf-tiny), or instead of its own; used by data.template chat and probes.apply_chat_template
    chat_template: str = ""


@dataclass
class ReplayConfig:
    ratio: float = 0.2                # fraction of each stage's examples drawn from earlier stages
    balanced: bool = False            # as many rows of each earlier stage (else uniform over their rows)


@dataclass
class GeneralMixConfig:
    ratio: float = 0.2                # fraction of each stage's examples drawn from the general instruction set


@dataclass
class AverageConfig:
    alpha: float = 0.5                # after a stage: alpha x the weights before it + (1 - alpha) x after it


@dataclass
class EwcConfig:
    penalty: float = 1000.0           # lambda: the loss gains lambda/2 x sum F (theta - theta*)^2
    fisher_examples: int = 32         # the stage's first examples the diagonal Fisher is estimated on
    decay: float = 1.0                # online EWC: F <- decay x F + the new stage's Fisher (1 = plain sum)


@dataclass
class LwfConfig:
    alpha: float = 1.0                # weight of the distillation term against the stage's own loss
    temperature: float = 2.0          # T of both softmaxes; the KL is multiplied by T^2


@dataclass
class OLoraConfig:
    orth: float = 0.5                 # lambda_1: sum over earlier stages of |A_i A_t^T| summed entrywise
    l2: float = 0.0                   # lambda_2: squared L2 norm of the new adapter's A and B


@dataclass
class ContinualConfig:
    """The method against forgetting (raycf.continual); each method's strengths in its own section, which a
    search may explore (e.g. continual.replay.ratio); a section of a method not run is not read."""
    method: str = "naive"             # naive | replay | general_mix | ewc | lwf | o_lora | merge | average
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    general_mix: GeneralMixConfig = field(default_factory=GeneralMixConfig)
    ewc: EwcConfig = field(default_factory=EwcConfig)
    lwf: LwfConfig = field(default_factory=LwfConfig)
    o_lora: OLoraConfig = field(default_factory=OLoraConfig)
    average: AverageConfig = field(default_factory=AverageConfig)

    def strengths(self) -> dict:
        """The method's own section (empty for naive and merge): what, beside the method, keys its stages."""
        section = getattr(self, self.method, None)
        return dataclasses.asdict(section) if dataclasses.is_dataclass(section) else {}


@dataclass
class WarmStartConfig:
    kind: str = "none"                # none | general | checkpoint
    path: str | None = None           # checkpoint folder when kind = checkpoint
    lr: float = 5e-5                  # the `general` instruction-tuning stage: full fine-tuning
    steps: int = 80                   # (the recipe scripts/warm_start_recipes.py chose; README)
    batch_size: int = 8
    seed: int = 0                     # its own seed: trials of every `seed` (sweep.seeds) share one warm start


@dataclass
class ProbeConfig:
    suites: list = field(default_factory=lambda: ["knowledge", "reasoning", "reading", "bias", "tasks"])
    shots: int | None = None          # None: each task's default (5-shot knowledge, 0-shot the rest, as the study)
    limit: int = 0                    # items per task, 0 = all
    max_new_tokens: int = 32          # generation probes (learned tasks)
    precision: str = "fp32"           # fp32 (lm-eval's numbers exactly) | bf16 (autocast: faster, scores move a little)
    lm_eval_include: list = field(default_factory=list)  # folders of lm-eval task YAMLs for lm_eval:NAME in suites
    # multiple-choice probes in the tokenizer's chat template, as lm-eval's apply_chat_template (few-shot examples
    # as turns, data.system_prompt as the system instruction); generation probes follow data.template
    apply_chat_template: bool = False


@dataclass
class ResourcesConfig:
    workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    strategy: str = "fsdp"            # fsdp | ddp
    mixed_precision: str = "auto"     # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    max_failures: int = 2             # worker-group restarts per trial, each resumes from the last stage


@dataclass
class TrackingConfig:
    uri: str | None = None            # None: sqlite:///<cwd>/mlflow.db, or $MLFLOW_TRACKING_URI
    experiment: str = "raycf"
    system_metrics: bool = True       # MLflow's system/... metrics (CPU, memory, GPU) of rank 0's machine


@dataclass
class PbtConfig:
    """Population-based training across stage boundaries (sweep.scheduler pbt | pb2): at every `interval`-th
    boundary the `quantile` worst trials take a best trial's stage checkpoint and go on with perturbed values."""
    keys: list = field(default_factory=list)  # searched keys it perturbs ([] = every searched key that may change)
    interval: int = 1                 # stages between perturbations
    quantile: float = 0.25            # fraction of the population that exploits (and that it exploits)
    resample: float = 0.25            # PBT: chance that a value is drawn anew from its search domain


@dataclass
class SweepConfig:
    num_samples: int = 1              # samples of the sampled domains (grid domains multiply this)
    search_alg: str = "basic"         # basic (Tune's grid/random) | optuna
    scheduler: str = "fifo"           # fifo | asha | pbt | pb2 (time = stage index)
    log_best_model: bool = True       # the best trial's last weights as an MLflow model of its run
    register_best: str = ""           # also register that model under this name in MLflow's model registry
    metric: str = "headline/objective"        # what ranks trials and drives ASHA / optuna
    mode: str = "min"
    # several objectives at once, {metric: min | max}: Optuna's multi-objective sampler searches them
    # (search_alg optuna), the summary prints their Pareto set; sweep.metric still ranks and picks the best
    objectives: dict = field(default_factory=dict)
    task_floor: float = 0.0           # objective = mean FG + 100 x shortfall of learned-task average below this
    grace_period: int = 1             # ASHA: stages before a trial may be stopped
    reduction_factor: float = 2.0
    max_concurrent: int = 0           # 0 = as many as the cluster holds
    trial_cpus: float = 0.1           # the Tune trial's own driver (it only waits on its Train workers)
    seeds: int = 1                    # every setting runs with seeds seed, seed + 1, ..., seed + seeds - 1
    worker_pool: bool = True          # trials run on persistent Train worker groups (raycf.pool); false: a
    #                                   TorchTrainer each
    pbt: PbtConfig = field(default_factory=PbtConfig)


@dataclass
class ExperimentConfig:
    name: str = "default"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stages: list = field(default_factory=lambda: ["simplification", "empathetic_dialogue", "question_generation"])
    continual: ContinualConfig = field(default_factory=ContinualConfig)
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    storage_path: str = "raycf_runs"  # trial checkpoints, stage cache, Ray results; a local path or cloud URI
    cache_dir: str | None = None      # built models; None = $RAYCF_CACHE or ~/.cache/raycf
    search: dict = field(default_factory=dict)   # searched dimensions (raycf.space), ignored by a single trial
    sweep: SweepConfig = field(default_factory=SweepConfig)   # Tune settings (raycf.sweep)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def with_overrides(self, overrides: dict) -> "ExperimentConfig":
        """A copy with dotted keys replaced, validated again (used by Tune to apply one sample)."""
        data = self.to_dict()
        for key, value in overrides.items():
            set_dotted(data, key, value)
        return from_dict(data)


def check_type(value, annotation: str, key: str, problems: list[str]):
    """Coerce what YAML gives (ints for floats, "1e-3" strings for floats) and report anything of the wrong type
    or a float that is not finite (ranges: raycf.config.checks)."""
    ann = annotation.replace(" ", "")
    if ann == "float" and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-3 (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    if ann == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            problems.append(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    expected = {"int": int, "float": float, "bool": bool, "str": str, "list": list, "dict": dict}.get(ann)
    if ann in ("str|None", "int|None"):
        if value is None or isinstance(value, expected := str if ann == "str|None" else int) \
                and not isinstance(value, bool):
            return value
    if expected is None:  # typing.Any
        return value
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    problems.append(f"{key}: expected {ann.replace('|None', ' or null')}, got {type(value).__name__} {value!r}")
    return value


def build_section(cls, data, prefix: str, problems: list[str]):
    if not isinstance(data, dict):
        key = prefix.rstrip('.') or 'config'
        problems.append(f"{key}: expected a mapping, got {type(data).__name__} {data!r}; "
                        f"write {key}: {{key: value, ...}}")
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            problems.append(unknown_key(prefix, str(key), fields))
            continue
        f = fields[key]
        if dataclasses.is_dataclass(f.default_factory) if f.default_factory is not dataclasses.MISSING else False:
            kwargs[key] = build_section(f.default_factory, value, f"{prefix}{key}.", problems)
        else:
            kwargs[key] = check_type(value, str(f.type), prefix + key, problems)
    return cls(**kwargs)


def absolute_paths(cfg: ExperimentConfig) -> None:
    """Paths to data, task YAMLs and model folders are relative to the working directory of the command;
    Ray workers and Tune trials run elsewhere, so the config carries them absolute."""
    cfg.data.sources = {name: {split: str(Path(path).expanduser().absolute()) for split, path in files.items()}
                        for name, files in cfg.data.sources.items()}
    cfg.probes.suites = [str(Path(s).expanduser().absolute()) if isinstance(s, str) and
                         s.endswith((".yaml", ".yml")) and Path(s).expanduser().is_file() else s
                         for s in cfg.probes.suites]
    if isinstance(cfg.probes.lm_eval_include, list):
        cfg.probes.lm_eval_include = [str(Path(d).expanduser().absolute()) if isinstance(d, str) else d
                                      for d in cfg.probes.lm_eval_include]
    if cfg.model.name not in BUILTIN and Path(cfg.model.name).expanduser().is_dir():
        cfg.model.name = str(Path(cfg.model.name).expanduser().absolute())
    if isinstance(cfg.data.chat_template, str) and cfg.data.chat_template.endswith(TEMPLATE_FILES):
        cfg.data.chat_template = str(Path(cfg.data.chat_template).expanduser().absolute())
    if cfg.warm_start.path and Path(cfg.warm_start.path).expanduser().is_dir():
        cfg.warm_start.path = str(Path(cfg.warm_start.path).expanduser().absolute())


# keys that moved, and where to
MOVED = {"data.replay_ratio": "continual.replay.ratio, with continual.method: replay"}


def unknown_key(prefix: str, key: str, fields) -> str:
    """The line for a key the section does not have: where it moved, whose method's key it is, or the nearest."""
    full = f"{prefix}{key}"
    if full in MOVED:
        return f"{full}: moved to {MOVED[full]}"
    if prefix.startswith("continual.") and prefix.count(".") == 2:  # in one method's section
        owners = [f.name for f in dataclasses.fields(ContinualConfig)
                  if dataclasses.is_dataclass(f.default_factory) and key in
                  {g.name for g in dataclasses.fields(f.default_factory)}]
        if owners:
            return (f"{full}: {key} is a key of {' and '.join(f'continual.{o}' for o in owners)}, not of "
                    f"{prefix.rstrip('.')}; set " + " or ".join(f"continual.{o}.{key} (with continual.method: {o})"
                                                              for o in owners))
    return f"{full}: unknown key{did_you_mean(key, fields)}"


def from_dict(data: dict, source: str | None = None) -> ExperimentConfig:
    """Build and validate; raise ConfigError listing every problem."""
    problems: list[str] = []
    cfg = build_section(ExperimentConfig, data, "", problems)
    try:
        validate(cfg, problems)
    except TypeError:
        pass  # a value of the wrong type, already reported by _build
    if problems:
        raise ConfigError(problems, source)
    absolute_paths(cfg)
    return cfg


