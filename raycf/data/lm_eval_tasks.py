"""lm-evaluation-harness tasks as raycf probes: `lm_eval:NAME` in probes.suites (or `python -m raycf.probe
--suite lm_eval:NAME`), NAME a task or group that lm-eval's TaskManager knows (its shipped task configs, plus the
YAMLs under probes.lm_eval_include / --lm-eval-include).

lm-eval reads the documents and builds every request itself (`Task.build_all_requests`: its doc_to_text,
doc_to_choice, doc_to_target, description, few-shot sampler with simple_evaluate's seed 1234, delimiters), so the
contexts and continuations raycf scores are the ones `simple_evaluate` would score; raycf's own engine computes
the log-likelihoods (sharded over the trial's workers) and acc / acc_norm as lm-eval does (output_type
multiple_choice with one context per document). generate_until tasks are scored by lm-eval's simple_evaluate
itself on the model in memory (generate_metrics); other output types are refused by name.

lm-eval is an optional dependency (`pip install 'raycf[peer]'`); a shipped lm-eval task reads its dataset from
the Hugging Face hub or its cache, a YAML of one's own can read local files (`dataset_path: json`).

probes.apply_chat_template: lm-eval builds each context as chat turns (simple_evaluate's apply_chat_template
with fewshot_as_multiturn, data.system_prompt as its system_instruction); the rows keep those turns and the
probe renders them with the model's tokenizer, as lm-eval's HFLM.apply_chat_template does (render_turns).
"""
from __future__ import annotations

import contextlib
import difflib
import io
import json
import os
from pathlib import Path
from functools import lru_cache

from raycf.errors import DataError

PREFIX = "lm_eval:"
CATEGORY = "lm_eval"   # reported as its own category (FG_lm_eval), outside mean FG unless mapped to one
FEWSHOT_SEED = 1234    # simple_evaluate's fewshot_random_seed


def is_lm_eval(name) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


@lru_cache(maxsize=None)
def _manager(include: tuple, defaults: bool):
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise DataError("lm_eval: tasks need lm-evaluation-harness; install it with pip install 'raycf[peer]' "
                        "(lm-eval 0.4.13)") from None
    missing = [d for d in include if not os.path.isdir(d)]
    if missing:
        raise DataError(f"probes.lm_eval_include: {missing[0]} is not a folder; give folders of lm-eval task YAMLs")
    return TaskManager(include_path=list(include) or None, include_defaults=defaults, verbosity="ERROR")


def manager_for(name: str, include: tuple = ()):
    """The TaskManager that knows `name`: the include folders alone first (indexing lm-eval's ~15k shipped
    configs takes seconds), then with lm-eval's own tasks."""
    if include:
        tm = _manager(include, False)
        if name in tm.all_tasks:
            return tm
    if not name:
        raise DataError("lm_eval: names no task; write lm_eval:TASK, e.g. lm_eval:arc_easy")
    unreadable = yaml_problem(name, include)
    if unreadable:
        raise DataError(f"lm_eval:{name}: {unreadable}")
    tm = _manager(include, True)
    if name not in tm.all_tasks:
        close = difflib.get_close_matches(name, tm.all_tasks, n=3, cutoff=0.7)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise DataError(f"lm_eval:{name}: lm-eval knows no task or group {name!r}{hint}; name one of `lm_eval "
                        f"--tasks list`, or give the folder of its YAML with probes.lm_eval_include "
                        f"(--lm-eval-include DIR)")
    return tm


def yaml_problem(name: str, include: tuple) -> str | None:
    """A NAME.yaml in the include folders that is not YAML (lm-eval skips such a file without a word)."""
    import yaml
    for folder in include:
        for path in sorted(Path(folder).rglob(f"{name}.y*ml")):
            try:
                yaml.load(path.read_text(), Loader=yaml.BaseLoader)  # lm-eval's own tags (!function) load too
            except (yaml.YAMLError, OSError, UnicodeDecodeError) as e:
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                return f"{path} is not valid YAML ({first}); fix the file"
    return None


def expand(name: str, include: tuple = ()) -> list[str]:
    """`lm_eval:NAME` -> the `lm_eval:TASK` names of its tasks (a group expands to its subtasks, in order)."""
    return [PREFIX + t for t in _tasks(name[len(PREFIX):] if is_lm_eval(name) else name, include)]


@lru_cache(maxsize=None)
def _tasks(name: str, include: tuple) -> tuple:
    return tuple(t.config.task for t in _walk(_task_dict(name, include)))


@lru_cache(maxsize=None)  # the task objects, their documents read once (load() sets shots before each build)
def _task_dict(name: str, include: tuple) -> dict:
    from lm_eval.tasks import get_task_dict
    try:
        return get_task_dict([name], manager_for(name, include))
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - lm-eval's own error (dataset not found, bad YAML), in one line
        raise DataError(f"lm_eval:{name}: lm-eval could not load it: {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}") from None


def _walk(tree: dict):
    """The lm-eval Task objects of get_task_dict's (nested, for groups) answer, in order."""
    from lm_eval.api.task import Task as LmTask
    for value in tree.values():
        if isinstance(value, tuple) and value:
            value = value[-1]
        if isinstance(value, dict):
            yield from _walk(value)
        elif isinstance(value, LmTask):
            yield value


@lru_cache(maxsize=None)
def load(name: str, include: tuple = (), shots: int | None = None, category: str = CATEGORY,
         chat_system: str | None = None):
    """The fields of the raycf Task (raycf.data.registry.Task) of the lm-eval task `lm_eval:TASK` at `shots`
    (None: the task's own num_fewshot, else 0, as simple_evaluate): one row per document with lm-eval's full
    context (description and few-shot examples included), its choices and the index of the gold one.
    chat_system not None: each context is lm-eval's chat turns (JSON, see render_turns), that text as the system
    instruction if not empty."""
    task_name = name[len(PREFIX):] if is_lm_eval(name) else name
    where = f"lm_eval:{task_name}"
    lm = next((t for t in _walk(_task_dict(task_name, include)) if t.config.task == task_name), None)
    if lm is None:
        raise DataError(f"{where} is a group; name one of its tasks: {', '.join(expand(task_name, include))}")
    kind = lm.config.output_type
    default = lm.get_config("num_fewshot")  # simple_evaluate's rule: a task whose YAML fixes 0 shots stays at 0
    k = shots if shots is not None and default != 0 else (default or 0)
    if kind == "generate_until":
        return generation_fields(lm, task_name, include, k, category, chat_system)
    if kind != "multiple_choice":
        raise DataError(f"{where}: output_type {kind!r} is not probed by raycf (multiple_choice and "
                        f"generate_until only); pick such a task, or run it with lm_eval itself")
    if lm.multiple_input:
        raise DataError(f"{where}: one context per choice (multiple inputs, e.g. winogrande) is not probed by "
                        f"raycf; pick a task whose choices are continuations")
    lm.set_config(key="num_fewshot", value=k)
    lm.set_fewshot_seed(seed=FEWSHOT_SEED)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # lm-eval's progress bar: stderr is for one error line
            lm.build_all_requests(limit=None, rank=0, world_size=1, **chat_kwargs(chat_system))
    except Exception as e:  # noqa: BLE001 - e.g. more shots than the few-shot split holds
        raise DataError(f"{where}: lm-eval could not build its {k}-shot requests: {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}") from None
    delimiter = None  # the task's target_delimiter, or "" under a chat template (lm-eval's construct_requests)
    by_doc: dict[int, list] = {}
    for inst in lm.instances:
        by_doc.setdefault(inst.doc_id, []).append(inst)
    rows = []
    for doc_id in sorted(by_doc):
        insts = sorted(by_doc[doc_id], key=lambda i: i.idx)
        doc = insts[0].doc
        choices = lm.doc_to_choice(doc)
        contexts = {i.arguments[0] for i in insts}
        conts = [i.arguments[1] for i in insts]
        if delimiter is None and choices and conts and conts[0].endswith(choices[0]):
            delimiter = conts[0][:len(conts[0]) - len(choices[0])]
        if len(contexts) != 1 or conts[:len(choices)] != [delimiter + c for c in choices]:
            raise DataError(f"{where}: document {doc_id}: lm-eval's requests are not one context with "
                            f"'{delimiter}' + each choice; raycf cannot score this task the same way")
        if len(conts) != len(choices):
            raise DataError(f"{where}: metric acc_mutual_info is not computed by raycf; drop it from the "
                            f"task's metric_list")
        gold = lm.doc_to_target(doc)
        if isinstance(gold, str):
            gold = choices.index(gold) if gold in choices else -1
        if not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < len(choices):
            raise DataError(f"{where}: document {doc_id}: its target {lm.doc_to_target(doc)!r} is not one of its "
                            f"{len(choices)} choices (raycf scores one gold index per document)")
        rows.append({"context": contexts.pop(), "choices": list(choices), "answer": gold})
    if not rows:
        raise DataError(f"{where}: lm-eval found no documents")
    version = lm.config.metadata.get("version", 0) if isinstance(lm.config.metadata, dict) else 0
    return dict(name=where, category=category, type="multiple_choice", template="{context}", shots=k,
                metric=("acc", "acc_norm"), version=int(float(version or 0)), rows=rows, fewshot_rows=[],
                source=f"lm_eval:{task_name}", target_delimiter=delimiter, fewshot_in_context=True,
                chat_turns=chat_system is not None)


def generation_fields(lm, task_name: str, include: tuple, k: int, category: str, chat_system: str | None) -> dict:
    """The Task fields of a generate_until task: lm-eval's evaluator runs it when probed (generate_metrics), so
    the rows only count its documents; the metrics are named `metric` (filter none) or `metric_filter`."""
    filters = [f.name for f in getattr(lm, "_filters", [])] or ["none"]
    names = tuple(metric_name(m, f) for f in filters for m in lm._metric_fn_list)
    if not names:
        raise DataError(f"lm_eval:{task_name}: no metric in its metric_list; add one, e.g. exact_match")
    version = lm.config.metadata.get("version", 0) if isinstance(lm.config.metadata, dict) else 0
    return dict(name=f"lm_eval:{task_name}", category=category, type="generation", template="", shots=k,
                metric=names, version=int(float(version or 0)), rows=[{"doc_id": i} for i in range(len(lm.eval_docs))],
                fewshot_rows=[], source=f"lm_eval:{task_name}", fewshot_in_context=True,
                chat_turns=chat_system is not None, lm_eval=(task_name, include))


def metric_name(metric: str, filter_name: str) -> str:
    return metric if filter_name == "none" else f"{metric}_{filter_name}"


def generate_metrics(model, tok, task, limit: int | None, batch_size: int, chat_system: str | None) -> dict:
    """A generate_until task (generation_fields) scored by lm-eval's own simple_evaluate on the model in memory
    (lm-eval's HFLM around it: no reload), at the task's shots, as `lm_eval --apply_chat_template
    --system_instruction` would with chat_system; its metrics under raycf's names."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    task_name, include = task.lm_eval
    chat = chat_system is not None
    with contextlib.redirect_stderr(io.StringIO()):  # lm-eval's progress bars: stderr is for one error line
        out = simple_evaluate(model=HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size), tasks=[task_name],
                              task_manager=manager_for(task_name, include), num_fewshot=task.shots, limit=limit,
                              bootstrap_iters=0, log_samples=False, apply_chat_template=chat,
                              fewshot_as_multiturn=chat, system_instruction=chat_system or None)
    results = out["results"][task_name]
    return {metric_name(*key.split(",", 1)): float(value) for key, value in results.items()
            if "," in key and not key.split(",", 1)[0].endswith("_stderr")
            and metric_name(*key.split(",", 1)) in task.metric}


def chat_kwargs(chat_system: str | None) -> dict:
    """build_all_requests' arguments for simple_evaluate(apply_chat_template=True, fewshot_as_multiturn=True,
    system_instruction=chat_system): its chat template returns the turns as JSON, rendered later with the
    tokenizer of the model probed (render_turns)."""
    if chat_system is None:
        return {}
    return {"apply_chat_template": True, "fewshot_as_multiturn": True, "system_instruction": chat_system or None,
            "chat_template": lambda turns, add_generation_prompt=True: json.dumps([turns, add_generation_prompt])}


def render_turns(tok, context: str) -> str:
    """A context of a task loaded with chat_system, in `tok`'s chat template as lm-eval's
    HFLM.apply_chat_template renders it."""
    turns, generation_prompt = json.loads(context)
    return tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=generation_prompt,
                                   continue_final_message=not generation_prompt)
