"""The config's rules beyond types: every number's range, the choices, and the rules between keys. validate()
appends one line per problem (key, bad value, fix)."""
from __future__ import annotations

import math
import re
from pathlib import Path

from raycf.config.dotted import get_dotted
from raycf.errors import did_you_mean

CHOICES = {
    "model.kind": ("auto", "causal", "seq2seq"),
    "model.dtype": ("float32", "bfloat16", "float16"),
    "finetune.method": ("lora", "full"),
    "optim.schedule": ("constant", "linear", "cosine"),
    "warm_start.kind": ("none", "general", "checkpoint"),
    "continual.method": ("naive", "replay", "general_mix", "ewc", "lwf", "o_lora", "merge", "average"),
    "resources.strategy": ("fsdp", "ddp"),
    "resources.mixed_precision": ("auto", "bf16", "fp32"),
    "probes.precision": ("fp32", "bf16"),
    "data.template": ("alpaca", "chat"),
    "sweep.search_alg": ("basic", "optuna"),
    "sweep.scheduler": ("fifo", "asha", "pbt", "pb2"),
    "sweep.mode": ("min", "max"),
}


MAX_INT = 2 ** 32 - 1
LORA_METHODS = ("o_lora", "merge")  # continual methods that only exist for LoRA adapters


# key -> (low, high, what): the value must satisfy low <= value <= high; "low" or "high" given as (x,) is strict
RANGES = {
    "seed": (0, MAX_INT, "a seed, below 2^32"),
    "warm_start.seed": (0, MAX_INT, "a seed, below 2^32"),
    "sweep.seeds": (1, 1000, "a number of seeds per setting"),
    "finetune.lora_rank": (1, 65536, "the LoRA rank"),
    "finetune.lora_alpha": ((0.0,), 1e6, "the LoRA scale numerator"),
    "finetune.lora_dropout": (0.0, (1.0,), "a probability"),
    "optim.lr": ((0.0,), 1.0, "a learning rate"),
    "optim.warmup_steps": (0, 10 ** 7, "a step count"),
    "optim.weight_decay": (0.0, 10.0, "AdamW's decoupled weight decay"),
    "optim.epochs": (0.0, 1000.0, "passes over a stage's data"),
    "optim.steps_per_stage": (0, 10 ** 7, "a step count"),
    "optim.batch_size": (1, 65536, "examples per optimizer step"),
    "optim.grad_accum": (1, 4096, "microbatches per step"),
    "optim.max_length": (8, 1 << 20, "tokens"),
    "optim.max_grad_norm": (0.0, 1e6, "a gradient norm (0 = no clipping)"),
    "optim.stage_lr_decay": ((0.0,), 100.0, "each stage's lr over the one before"),
    "data.examples_per_stage": (0, 10 ** 8, "a row count (0 = all)"),
    "continual.replay.ratio": ((0.0,), (1.0,), "a fraction of each stage's examples"),
    "continual.general_mix.ratio": ((0.0,), (1.0,), "a fraction of each stage's examples"),
    "continual.average.alpha": (0.0, (1.0,), "the weight of the weights before the stage"),
    "continual.ewc.penalty": (0.0, 1e12, "EWC's lambda"),
    "continual.ewc.fisher_examples": (1, 10 ** 6, "examples the Fisher is estimated on"),
    "continual.ewc.decay": (0.0, 1.0, "the weight of the earlier stages' Fisher"),
    "continual.lwf.alpha": (0.0, 1e6, "the distillation weight"),
    "continual.lwf.temperature": ((0.0,), 1000.0, "a softmax temperature"),
    "continual.o_lora.orth": (0.0, 1e6, "the orthogonality weight"),
    "continual.o_lora.l2": (0.0, 1e6, "the L2 weight"),
    "warm_start.lr": ((0.0,), 1.0, "a learning rate"),
    "warm_start.steps": (1, 10 ** 7, "a step count"),
    "warm_start.batch_size": (1, 65536, "examples per optimizer step"),
    "probes.shots": (0, 64, "few-shot examples"),
    "probes.limit": (0, 10 ** 7, "rows per task (0 = all)"),
    "probes.max_new_tokens": (1, 4096, "tokens per generated answer"),
    "resources.workers": (1, 1024, "Ray Train workers per trial"),
    "resources.cpus_per_worker": (0.0, 1024.0, "CPUs (fractions work)"),
    "resources.gpus_per_worker": (0.0, 64.0, "GPUs (fractions work)"),
    "resources.max_failures": (0, 1000, "worker-group restarts"),
    "sweep.num_samples": (1, 100000, "samples"),
    "sweep.grace_period": (1, 100000, "stages"),
    "sweep.reduction_factor": ((1.0,), 1000.0, "ASHA's halving rate"),
    "sweep.max_concurrent": (0, 100000, "trials at a time (0 = as many as fit)"),
    "sweep.trial_cpus": ((0.0,), 1024.0, "CPUs of a trial's driver"),
    "sweep.task_floor": (0.0, 1e6, "a learned-task score"),
    "sweep.pbt.interval": (1, 100000, "stages between perturbations"),
    "sweep.pbt.quantile": ((0.0,), 0.5, "the fraction of the population that exploits"),
    "sweep.pbt.resample": (0.0, 1.0, "a probability"),
}


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def range_problem(key: str, value, low, high, what: str) -> str | None:
    """The line for a number outside [low, high] (a bound given as (x,) excludes x), or None."""
    lo, lo_open = (low[0], True) if isinstance(low, tuple) else (low, False)
    hi, hi_open = (high[0], True) if isinstance(high, tuple) else (high, False)
    if (value < lo or (lo_open and value == lo)) or (value > hi or (hi_open and value == hi)):
        bounds = f"{'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"
        return f"{key}: {value!r} is outside {bounds} ({what})"
    return None


def _num(x) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def validate(cfg, problems: list[str]) -> None:
    """Every value's range of `cfg` (an ExperimentConfig) and the rules between keys (the types were checked by
    build_section)."""
    for key, options in CHOICES.items():
        value = get_dotted(cfg, key)
        if isinstance(value, str) and value not in options:  # another type: build_section said so
            hint = did_you_mean(value, options)
            problems.append(f"{key}: {value!r} is not one of {', '.join(options)}"
                            f"{hint if hint.startswith('; did you mean') else ''}")
    for key, (low, high, what) in RANGES.items():
        value = get_dotted(cfg, key)
        if key == "finetune.lora_rank" and cfg.finetune.method != "lora":
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            line = range_problem(key, value, low, high, what)
            if line:
                problems.append(line)
    problems += stage_schedule_problems(cfg)
    if cfg.optim.steps_per_stage == 0 and cfg.optim.epochs == 0 and not cfg.optim.stage_steps:
        problems.append("optim: set optim.steps_per_stage > 0 or optim.epochs > 0, else no stage trains")
    if cfg.resources.cpus_per_worker == 0 and cfg.resources.gpus_per_worker == 0:
        problems.append("resources.cpus_per_worker: a worker needs some CPU or GPU; set it > 0 (fractions work)")
    if not isinstance(cfg.stages, list):
        pass  # reported by build_section
    elif not cfg.stages or not all(isinstance(s, str) and s for s in cfg.stages):
        problems.append(f"stages: expected a non-empty list of task names, got {cfg.stages!r}")
    elif len(set(cfg.stages)) != len(cfg.stages):
        problems.append(f"stages: a task appears twice in {cfg.stages}; each stage must be a different task")
    problems += source_problems(cfg.data.sources)
    if (line := chat_template_problem(cfg)) is not None:
        problems.append(line)
    problems += naming_problems(cfg)
    ws = cfg.warm_start
    if ws.kind == "checkpoint" and not ws.path:
        problems.append("warm_start.path: required when warm_start.kind is checkpoint")
    if ws.kind != "checkpoint" and ws.path:
        problems.append(f"warm_start.path: given, but warm_start.kind is {ws.kind!r}, which does not read it; set "
                        f"warm_start.kind=checkpoint or remove warm_start.path")
    workers = cfg.resources.workers
    per_step = workers * cfg.optim.grad_accum
    if isinstance(per_step, int) and per_step > 0 and cfg.optim.batch_size % per_step:
        problems.append(f"optim.batch_size: {cfg.optim.batch_size} must be a multiple of resources.workers x "
                        f"optim.grad_accum = {per_step} (it is the global batch)")
    if ws.kind == "general" and isinstance(workers, int) and workers > 0 and ws.batch_size % workers:
        problems.append(f"warm_start.batch_size: {ws.batch_size} must be a multiple of resources.workers = "
                        f"{workers} (it is the global batch; every worker takes an equal share)")
    n = cfg.data.examples_per_stage
    if isinstance(n, int) and 0 < n < cfg.optim.batch_size:
        problems.append(f"data.examples_per_stage: {n} rows make no full batch of optim.batch_size="
                        f"{cfg.optim.batch_size}; use at least {cfg.optim.batch_size} rows or a smaller batch")
    if not isinstance(cfg.probes.suites, list) or not cfg.probes.suites or \
            not all(isinstance(x, str) and x for x in cfg.probes.suites):
        problems.append(f"probes.suites: expected a non-empty list of categories, task names or task YAMLs, got "
                        f"{cfg.probes.suites!r}; e.g. [knowledge, reasoning, tasks]")
    inc = cfg.probes.lm_eval_include
    if not isinstance(inc, list):
        pass  # its type is reported already
    elif not all(isinstance(d, str) and d for d in inc):
        problems.append(f"probes.lm_eval_include: expected a list of folders of lm-eval task YAMLs, got {inc!r}")
    else:
        problems += [f"probes.lm_eval_include: {d} is not a folder; give folders of lm-eval task YAMLs"
                     for d in inc if not Path(d).is_dir()]
    method = cfg.continual.method
    if method in LORA_METHODS and cfg.finetune.method != "lora":
        problems.append(f"continual.method: {method} works on LoRA adapters, but finetune.method is "
                        f"{cfg.finetune.method!r}; set finetune.method=lora or another continual.method")
    sc = cfg.sweep
    problems += objective_problems(sc)
    if sc.scheduler == "asha" and isinstance(sc.grace_period, int) and isinstance(cfg.stages, list) \
            and cfg.stages and sc.grace_period > len(cfg.stages):
        problems.append(f"sweep.grace_period: {sc.grace_period} stages, but a trial has {len(cfg.stages)}; ASHA could "
                        f"never stop a trial: use a grace period <= {len(cfg.stages)}")


TEMPLATE_FILES = (".jinja", ".j2")  # a data.chat_template ending so names a file


def chat_template_text(value: str) -> str:
    """data.chat_template's Jinja text: the file it names (.jinja, .j2) or the value itself ("": none)."""
    return Path(value).expanduser().read_text(encoding="utf-8") if value.endswith(TEMPLATE_FILES) else value


def given_template(cfg, tok):
    """The tokenizer with data.chat_template, if given, as its chat template."""
    if cfg.data.chat_template:
        tok.chat_template = chat_template_text(cfg.data.chat_template)
    return tok


def chat_template_problem(cfg) -> str | None:
    """data.chat_template: a file that reads, Jinja that parses, and something that applies it."""
    value = cfg.data.chat_template
    if not isinstance(value, str) or not value:
        return None  # a wrong type is reported by build_section
    if cfg.data.template != "chat" and not cfg.probes.apply_chat_template:
        return ("data.chat_template: given, but nothing applies it; set data.template: chat or "
                "probes.apply_chat_template: true, or remove it")
    try:
        text = chat_template_text(value)
    except (OSError, UnicodeDecodeError) as e:
        return f"data.chat_template: {value}: cannot be read ({type(e).__name__}); give a UTF-8 Jinja file"
    import jinja2
    try:
        jinja2.Environment().parse(text)
    except jinja2.TemplateSyntaxError as e:
        return f"data.chat_template: line {e.lineno}: not a Jinja template ({e.message}); fix the template"
    if "messages" not in text:
        return "data.chat_template: the template never reads `messages`; loop over the conversation's turns"
    return None


def stage_schedule_problems(cfg) -> list[str]:
    """optim.stage_lrs and optim.stage_steps: one value per stage, each a valid lr or step count."""
    problems = []
    n = len(cfg.stages) if isinstance(cfg.stages, list) else None
    for key, (low, high, what), is_int in (("stage_lrs", RANGES["optim.lr"], False),
                                           ("stage_steps", (1, 10 ** 7, "a step count"), True)):
        values = getattr(cfg.optim, key)
        if not isinstance(values, list) or not values:
            continue
        if n is not None and len(values) != n:
            problems.append(f"optim.{key}: {len(values)} values for {n} stages; give one per stage, e.g. "
                            f"optim.{key}=[{', '.join(str(v) for v in (values * n)[:n])}]")
        for i, v in enumerate(values):
            ok = isinstance(v, int) if is_int else isinstance(v, (int, float))
            if not ok or isinstance(v, bool) or (not is_int and not math.isfinite(v)):
                problems.append(f"optim.{key}[{i}]: {v!r} is not {'an integer' if is_int else 'a number'} ({what})")
            else:
                line = range_problem(f"optim.{key}[{i}]", v, low, high, what)
                if line:
                    problems.append(line)
    if cfg.optim.stage_lrs and cfg.optim.stage_lr_decay != 1.0:
        problems.append("optim.stage_lr_decay: given with optim.stage_lrs, which sets every stage's lr; drop one")
    return problems


def objective_problems(sc) -> list[str]:
    """sweep.objectives: {metric: min | max}, two or more, not with ASHA (it stops trials on one metric). Whether
    each is a metric the trials report is checked with sweep.metric (raycf.sweep.driver.metric_problem)."""
    obj = sc.objectives
    if not isinstance(obj, dict) or not obj:
        return []
    problems = [f"sweep.objectives.{k}: {v!r} is not min or max" for k, v in obj.items() if v not in ("min", "max")]
    if len(obj) == 1:
        (k, v), = obj.items()
        problems.append(f"sweep.objectives: one objective ({k}); give two or more, or set sweep.metric={k} and "
                        f"sweep.mode={v} for a single one")
    if sc.scheduler == "asha":
        problems.append("sweep.objectives: ASHA stops trials on one metric (sweep.metric); with several objectives "
                        "use sweep.scheduler=fifo")
    return problems


def tracking_uri_problem(uri: str, key: str) -> str | None:
    """What is wrong with an MLflow tracking URI as written (never echoing its credentials), or None."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if not uri.strip():
        return (f"{key}: empty; leave it out (a sqlite file in the working directory) or give "
                f"sqlite:///PATH/mlflow.db or http://HOST:PORT")
    if scheme and scheme.split("+")[0] not in TRACKING_SCHEMES:
        return (f"{key}: unknown scheme {scheme + '://'!r}{did_you_mean(scheme, TRACKING_SCHEMES)}; give "
                f"sqlite:///PATH/mlflow.db or http://HOST:PORT")
    if scheme == "sqlite" and (not uri.startswith("sqlite:///") or uri == "sqlite:///"):
        return (f"{key}: a sqlite URI has three slashes and a file: sqlite:///RELATIVE/mlflow.db or "
                f"sqlite:////ABSOLUTE/PATH/mlflow.db")
    return None


def naming_problems(cfg) -> list[str]:
    """The sweep's name (a folder under storage_path), storage_path and tracking.uri."""
    problems = []
    if isinstance(cfg.name, str) and not NAME.match(cfg.name):
        problems.append(f"name: {cfg.name!r} must be letters, digits, '_', '.' or '-' (it names a folder under "
                        f"storage_path and the MLflow parent run), e.g. name=my-sweep")
    if isinstance(cfg.storage_path, str) and not cfg.storage_path.strip():
        problems.append("storage_path: empty; give a folder (e.g. raycf_runs) or a cloud URI (s3://bucket/path)")
    if isinstance(cfg.tracking.uri, str):
        line = tracking_uri_problem(cfg.tracking.uri, "tracking.uri")
        if line:
            problems.append(line)
    name = cfg.sweep.register_best
    if isinstance(name, str) and name and (name != name.strip() or any(c in name for c in "/:")):
        problems.append(f"sweep.register_best: {name!r} is no MLflow model name (no '/', ':' or surrounding "
                        f"spaces), e.g. sweep.register_best=raycf-best")
    return problems


SOURCE_SPLITS = ("train", "eval")


def source_problems(sources: dict) -> list[str]:
    """The shape of data.sources (the files themselves are read by raycf.trial.check)."""
    problems = []
    for name, files in sources.items() if isinstance(sources, dict) else ():
        key = f"data.sources.{name}"
        if not isinstance(files, dict):
            problems.append(f"{key}: expected {{train: FILE.jsonl, eval: FILE.jsonl}}, got "
                            f"{type(files).__name__} {files!r}")
            continue
        for split, path in files.items():
            if split not in SOURCE_SPLITS:
                problems.append(f"{key}.{split}: unknown key{did_you_mean(str(split), SOURCE_SPLITS)}")
            elif not isinstance(path, str) or not path:
                problems.append(f"{key}.{split}: expected a file path, got {type(path).__name__} {path!r}")
        if "train" not in files and set(files) <= set(SOURCE_SPLITS):  # else the misspelt key is the problem
            problems.append(f"{key}.train: missing; give the stage's training rows (a .jsonl or .parquet file)")
    return problems
