"""Probing a model on raycf.data Tasks: the scores of each task, identical on every rank.

    from raycf.probe.run import run_probes
    run_probes(model, tok, ["facts_geography", "boolq_toy"])   # {"facts_geography": {"acc": ..., ...}, ...}
"""
from __future__ import annotations

from dataclasses import dataclass, field

from raycf.data import Task, chat, load_task
from raycf.data.lm_eval_tasks import generate_metrics, render_turns
from raycf.data.template import PROMPT_WITH_INPUT, prompt
from raycf.errors import DataError
from raycf.probe.shard import on_all_ranks, probing
from raycf.probe.tasks import (fewshot_examples, generate, generation_metrics, multiple_choice_lls,
                               multiple_choice_metrics, pair_lls, pair_metrics)


@dataclass(frozen=True)
class ProbeResult:
    """Scores of one task: metrics (name -> value) over n items (counts: metric -> items, where fewer)."""
    task: str
    category: str
    metrics: dict = field(default_factory=dict)
    n: int = 0
    counts: dict = field(default_factory=dict)


def probe_task(model, tok, task, *, shots: int | None = None, limit: int | None = None, seed: int = 0,
               rank: int = 0, world_size: int = 1, batch_size: int = 16, max_new_tokens: int = 64,
               chat_system: str | None = None, chat_choices: str | None = None) -> ProbeResult:
    """Score one raycf.data Task. shots None = the task's own default; limit = its first N rows. chat_system
    not None: generation probes prompt in the tokenizer's chat template (data.template chat), after that system
    prompt if it is not empty. chat_choices not None: multiple-choice probes too, the way lm-eval's
    apply_chat_template does (probes.apply_chat_template; an lm-eval task must be loaded with chat_system)."""
    rows = list(task.rows)[:limit] if limit is not None else list(task.rows)
    counts = {}
    if task.type == "multiple_choice":
        baked = getattr(task, "fewshot_in_context", False)  # lm-eval tasks: the k shots are in each context
        if baked and shots not in (None, task.shots):
            raise DataError(f"task {task.name} was loaded at {task.shots} shots, not {shots}: load it with "
                            f"load_task(name, shots={shots})")
        if baked and (chat_choices is not None) != getattr(task, "chat_turns", False):
            raise DataError(f"task {task.name} was loaded {'with' if task.chat_turns else 'without'} the chat "
                            f"template: load it with load_task(name, chat_system=...) as probed")
        k = 0 if baked else task.shots if shots is None else shots
        examples = fewshot_examples(task.fewshot_rows, k, seed)
        chat_for = None
        if baked and task.chat_turns:  # lm-eval's turns, its system instruction in them
            rows = [{**r, "context": render_turns(tok, r["context"])} for r in rows]
        elif chat_choices is not None:
            def chat_for(turns, generation_prompt):
                return chat.render(tok, chat.with_system(turns, chat_choices), generation_prompt)
        lls = on_all_ranks(lambda idx: multiple_choice_lls(model, tok, task.template, [rows[i] for i in idx],
                                                            examples, batch_size=batch_size,
                                                            delimiter=getattr(task, "target_delimiter", " "),
                                                            chat=chat_for),
                            len(rows), [_cost(task.template.format(**r), r["choices"]) for r in rows],
                            rank, world_size)
        metrics = multiple_choice_metrics(rows, lls)
    elif task.type == "pairs":
        lls = on_all_ranks(lambda idx: pair_lls(model, tok, [rows[i] for i in idx], batch_size=batch_size),
                            len(rows), [_cost("", [r["sent_more"], r["sent_less"]]) for r in rows],
                            rank, world_size)
        metrics = pair_metrics(rows, lls)
        counts = {f"pct_stereotype/{k}": sum(r.get("bias_type") == k for r in rows)
                  for k in {r.get("bias_type", "") for r in rows} - {""}}
    elif task.type == "generation" and getattr(task, "lm_eval", None):  # lm-eval's evaluator, on the first rank
        if (chat_choices is not None) != task.chat_turns:  # lm-eval's tasks follow probes.apply_chat_template
            raise DataError(f"task {task.name} was loaded {'with' if task.chat_turns else 'without'} the chat "
                            f"template: load it with load_task(name, chat_system=...) as probed")
        (metrics,) = on_all_ranks(lambda idx: [generate_metrics(model, tok, task, limit, batch_size, chat_choices)
                                               for _ in idx], 1, [1], rank, world_size)
    elif task.type == "generation":
        prompts = generation_prompts(task, rows, tok, chat_system)
        preds = on_all_ranks(lambda idx: generate(model, tok, [prompts[i] for i in idx],
                                                   max_new_tokens=max_new_tokens, batch_size=batch_size),
                              len(rows), [len(p) + 4 * max_new_tokens for p in prompts], rank, world_size)
        metrics = generation_metrics(task.metric, rows, preds)
    else:
        raise DataError(f"task {task.name}: unknown type {task.type!r} "
                         f"(expected multiple_choice, pairs or generation)")
    return ProbeResult(task.name, task.category, metrics, len(rows), counts)


def generation_prompts(task, rows, tok=None, chat_system: str | None = None) -> list[str]:
    """The prompts of a generation task's rows: the Alpaca template as training builds it (no "### Input" block
    for an empty input), or the task's own template; chat_system not None: that text as the user turn of the
    tokenizer's chat template (as training builds it, raycf.data.chat), then the assistant's generation prompt."""
    alpaca = task.template == PROMPT_WITH_INPUT
    if chat_system is None:
        return [prompt(r) if alpaca else task.template.format(**r) for r in rows]
    users = [chat.instruction_messages({**r, "output": ""})[0] if alpaca else
             {"role": "user", "content": task.template.format(**r)} for r in rows]
    return [chat.render(tok, chat.with_system([u], chat_system), generation_prompt=True) for u in users]


def _cost(context: str, continuations) -> int:
    return len(context) + sum(len(c) for c in continuations)


def probe_tasks(model, tok, task_names, precision: str = "fp32", **kwargs) -> list[ProbeResult]:
    """probe_task for each task (a raycf.data Task, or a name for raycf.data.load_task) on the model as
    `probing` prepares it; precision bf16: under bf16 autocast (fp32: lm-eval's numbers exactly)."""
    import torch
    tasks = [name if isinstance(name, Task) else load_task(name) for name in task_names]
    with probing(model) as plain:
        device = next(plain.parameters()).device.type
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            return [probe_task(plain, tok, task, **kwargs) for task in tasks]


def run_probes(model, tok, task_names, *, shots: int | None = None, limit: int | None = None, seed: int = 0,
               rank: int = 0, world_size: int = 1, batch_size: int = 16,
               max_new_tokens: int = 64, precision: str = "fp32",
               chat_system: str | None = None, chat_choices: str | None = None) -> dict[str, dict[str, float]]:
    """task -> metric -> value, e.g. {"facts_capitals": {"acc": 0.9, "acc_norm": 0.85}}. Identical on all ranks.

    shots: few-shot examples for multiple choice (None = each task's default), drawn with `seed`.
    limit: first N rows per task. batch_size: contexts (questions, pairs, prompts) per forward pass.
    rank/world_size: with torch.distributed initialised, each rank scores a balanced slice and the results
    are all-gathered; every rank must call this together. The model may be plain, DDP- or FSDP2-wrapped
    (see `probing`); it is left in the train/eval mode it came in. precision: fp32 | bf16 (autocast).
    """
    results = probe_tasks(model, tok, task_names, shots=shots, limit=limit, seed=seed, rank=rank,
                          world_size=world_size, batch_size=batch_size, max_new_tokens=max_new_tokens,
                          precision=precision, chat_system=chat_system, chat_choices=chat_choices)
    return {r.task: dict(r.metrics) for r in results}


def format_table(results) -> str:
    lines = [f"{'task':<24} {'category':<10} {'metric':<36} {'value':>8} {'n':>6}"]
    for r in results:
        for name, value in r.metrics.items():
            lines.append(f"{r.task:<24} {r.category:<10} {name:<36} {value:>8.4f} {r.counts.get(name, r.n):>6}")
    return "\n".join(lines)
