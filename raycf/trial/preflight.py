"""Everything about a trial that can be checked before Ray starts: the config's data files, stages and probe
tasks (every bad row as FILE:LINE), the model folder (read, not loaded), LoRA rank against the model, rows
longer than optim.max_length, and the resources against the cluster. check() raises one ConfigError listing
every problem."""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

from raycf.config.checks import given_template
from raycf.config.schema import ExperimentConfig
from raycf.data.registry import GENERAL, STAGES, load_stage
from raycf.data.rows import load_rows
from raycf.data.sources import probe_task, probe_task_names, stage_rows, stage_train_rows
from raycf.errors import ConfigError, DataError, ModelError
from raycf.models.builtin import BUILTIN, CHAT_TEMPLATES, SEQ2SEQ_BUILTIN
from raycf.models.folder import architecture_problems, folder_problems, model_kind
from raycf.models.load import target_module_problems
from raycf.models.pretrain import SHIPPED
from raycf.models.resolve import peek_hidden_size, resolve_model_dir


def check(cfg: ExperimentConfig, cluster: dict | None = None, build: bool = True) -> Path | None:
    """Everything that can be checked before Ray starts; raises ConfigError listing every problem.
    build: also build (or find) the model folder and return it; False for dry runs."""
    problems = data_problems(cfg)
    batches = [] if problems else batch_problems(cfg)  # rows that read fine: enough for a batch?
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
        known = model_dir or tokenizer_dir(cfg)  # a folder to read: built, the user's, or the shipped raycf-tiny
        if not problems and known is not None:
            problems += architecture_problems(known, cfg.model.kind)
        if not problems and known is not None and cfg.finetune.method == "lora":
            problems += target_module_problems(known, cfg.finetune.target_modules, cfg.model.trust_remote_code)
        if not problems:
            problems += long_row_problems(cfg, model_dir or tokenizer_dir(cfg))
        if not problems and known is None:
            problems += builtin_chat_problems(cfg)
    except ModelError as e:
        problems.append(str(e))
    problems += batches
    if problems:
        raise ConfigError(problems)
    return model_dir


def data_problems(cfg: ExperimentConfig) -> list[str]:
    """Stages, data.sources files (every bad row as FILE:LINE) and probe tasks (with their rows)."""
    problems = []
    for name, files in cfg.data.sources.items():
        for split, file in files.items():
            try:
                load_rows(file, "generation")
            except DataError as e:
                problems += [f"data.sources.{name}.{split}: {line}" for line in str(e).splitlines()]
    for i, s in enumerate(cfg.stages):
        if s not in cfg.data.sources:
            try:
                load_stage(s, limit=1)
            except DataError as e:
                problems.append(f"stages[{i}]: {e} (a stage of your own needs data.sources.{s}.train)")
    try:
        names = probe_task_names(cfg)
    except DataError as e:
        return problems + [f"probes.suites: {e}"]
    short: dict[int, list[str]] = {}  # few-shot pool size -> tasks whose pool is smaller than the shots asked
    for name in names:
        if name in cfg.data.sources and name not in STAGES and "eval" not in cfg.data.sources[name]:
            problems.append(f"data.sources.{name}.eval: missing; probes.suites has tasks, which probes every stage "
                            f"on its eval rows: give an eval file or drop tasks from probes.suites")
        elif name not in cfg.stages:  # stages and their files were checked above
            key = f"probes.suites[{cfg.probes.suites.index(name)}]" if name in cfg.probes.suites else \
                "probes.suites"
            try:  # with data.hub the task's definition is checked, not downloaded: checks stay offline
                task = probe_task(cfg.with_overrides({"data.hub": False}) if cfg.data.hub else cfg, name)
            except DataError as e:
                problems += [f"{key}: {line}" for line in str(e).splitlines()]
                continue
            k = task.shots if cfg.probes.shots is None else cfg.probes.shots
            if task.type == "multiple_choice" and k > len(task.fewshot_rows):
                short.setdefault(len(task.fewshot_rows), []).append(task.name)
    for pool, tasks in sorted(short.items()):
        have = "has" if len(tasks) == 1 else "have"
        problems.append(f"probes.shots: {cfg.probes.shots}-shot, but {', '.join(tasks)} {have} {pool} few-shot rows; "
                        f"use probes.shots <= {pool} or give the task a larger pool (fewshot_source: in its YAML)")
    return problems


def batch_problems(cfg: ExperimentConfig) -> list[str]:
    """A stage needs at least one full batch of rows (the trainer uses equal batches only)."""
    problems = []
    b = cfg.optim.batch_size
    for k, name in enumerate(cfg.stages, 1):
        if cfg.data.hub and name not in cfg.data.sources:
            continue  # the study's dataset: far more rows than a batch, and checks stay offline
        rows = len(stage_rows(cfg, name))
        n = len(stage_train_rows(cfg, k)) if not cfg.data.hub else min(cfg.data.examples_per_stage or rows, rows)
        if n < b:
            where = f"data.sources.{name}.train" if name in cfg.data.sources else f"stages[{k - 1}]"
            problems.append(f"{where}: stage {name} trains on {n} rows, fewer than optim.batch_size={b}; give at "
                            f"least {b} rows or lower optim.batch_size")
    ws = cfg.warm_start
    if ws.kind == "general" and (n := len(stage_rows(cfg, GENERAL))) < ws.batch_size:  # shipped (no hub set)
        problems.append(f"warm_start.batch_size: {ws.batch_size} is more than the {n} rows of the general set; lower "
                        f"warm_start.batch_size")
    return problems


def tokenizer_dir(cfg: ExperimentConfig) -> Path | None:
    """A folder with the model's tokenizer that needs nothing built: the user's folder or the shipped raycf-tiny."""
    if Path(cfg.model.name).expanduser().is_dir():
        return Path(cfg.model.name).expanduser()
    if cfg.model.name == "raycf-tiny" and (SHIPPED / "tokenizer.json").exists():
        return SHIPPED
    return None


def chat_problems(cfg: ExperimentConfig, tok, kind: str) -> list[str]:
    """data.template chat or probes.apply_chat_template with a tokenizer that has no chat template (or a seq2seq
    model). tok: the model's tokenizer, or anything with its `chat_template` attribute."""
    from raycf.data import chat
    try:
        if cfg.data.template == "chat":
            chat.check_template(tok, f"model.name {cfg.model.name}", kind)
        if cfg.probes.apply_chat_template:
            chat.check_template(tok, f"model.name {cfg.model.name}", kind, asks="probes.apply_chat_template is true",
                                off="probes.apply_chat_template: false")
    except DataError as e:
        return [str(e)]
    return []


def builtin_chat_problems(cfg: ExperimentConfig) -> list[str]:
    """chat_problems of a built-in model not built yet (a dry run): its name says whether its tokenizer has a
    chat template."""
    if cfg.model.name not in BUILTIN or cfg.data.template != "chat" and not cfg.probes.apply_chat_template:
        return []
    tok = SimpleNamespace(chat_template="built-in" if cfg.model.name in CHAT_TEMPLATES or cfg.data.chat_template
                          else None)
    return chat_problems(cfg, tok, "seq2seq" if cfg.model.name in SEQ2SEQ_BUILTIN else "causal")


def long_row_problems(cfg: ExperimentConfig, model_dir: Path | None) -> list[str]:
    """Training rows (data.sources files and shipped stages) longer than optim.max_length tokens (the trainer
    refuses them, so say so before Ray starts). Needs the model's tokenizer: skipped when the model is not built
    yet (a dry run of a model that needs building)."""
    if model_dir is None:
        return []
    from transformers import AutoTokenizer
    from raycf.train import encode_row  # torch: only where a tokenizer is at hand
    tok = given_template(cfg, AutoTokenizer.from_pretrained(model_dir, trust_remote_code=cfg.model.trust_remote_code))
    kind = model_kind(model_dir) if cfg.model.kind == "auto" else cfg.model.kind
    problems = []
    template, system = cfg.data.template, cfg.data.system_prompt
    problems = chat_problems(cfg, tok, kind)
    if problems:
        return problems
    names = [*cfg.stages, *([GENERAL] if cfg.warm_start.kind == "general" else [])]
    for name in names:
        file = cfg.data.sources.get(name, {}).get("train")
        if file:
            rows, where = load_rows(file, "generation", numbered=True), f"data.sources.{name}.train: {file}:"
        elif cfg.data.hub and name != GENERAL:
            continue  # the study's dataset: checked as it loads, offline checks do not download it
        else:
            rows, where = list(enumerate(stage_rows(cfg, name), 1)), f"stage {name}: shipped row "
        long = []
        for line, row in rows:
            try:
                n = encode_row(row, tok, kind, template, system).longest
            except DataError as e:  # a conversation row without data.template chat, a template that cannot be cut
                problems.append(f"{where}{line}: {e}")
                break
            if n > cfg.optim.max_length:
                long.append((line, n))
        if long:
            more = f" (and {len(long) - 1} more rows)" if len(long) > 1 else ""
            (line, n), m = long[0], cfg.optim.max_length
            problems.append(f"{where}{line}: example is {n} tokens, longer than optim.max_length={m}{more}; raise "
                            f"optim.max_length or shorten the row")
    return problems


def local_cluster() -> dict:
    import torch
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


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
