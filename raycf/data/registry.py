"""Registry of probe tasks and instruction stages.

    python -m raycf.data.registry            # list tasks by category with row counts
    python -m raycf.data.registry FILE.jsonl # validate a file of your own rows

A probe task is one small YAML in raycf/data/tasks/ (see raycf/data/README.md for the fields and the
row schema). Rows come from the shipped JSONL in raycf/data/sets/ unless a user asks for the study's
hub dataset (`source: hub`, needs network and `datasets`; raycf.data.hub) or names a local .jsonl/.parquet
file (read by raycf.data.rows).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from raycf.data import lm_eval_tasks
from raycf.data.hub import HUB_KEYS, HUB_MAPS, hub_rows, hub_split
from raycf.data.rows import TYPES, check_row, load_rows, template_fields
from raycf.errors import DataError, cli, did_you_mean, parser
from raycf.yamlfile import read_yaml

is_lm_eval = lm_eval_tasks.is_lm_eval

CLOSE = dict(n=3, cutoff=0.7)  # how close a "did you mean" must be, and how many it offers


DATA_DIR = Path(__file__).parent


TASKS_DIR = DATA_DIR / "tasks"


SETS_DIR = DATA_DIR / "sets"


STAGES = ("simplification", "empathetic_dialogue", "question_generation", "explanation", "headline")


GENERAL = "general"


CATEGORIES = ("knowledge", "reasoning", "reading", "bias", "tasks")


SPLITS = ("train", "eval")


YAML_KEYS = {"name", "category", "type", "source", "fewshot_source", "template", "shots", "metric", "version",
             "licence", "description", "hub"}


# Metrics raycf.probe computes for each row type (a task YAML may name these only).
METRICS = {"multiple_choice": ("acc", "acc_norm"), "pairs": ("pct_stereotype", "likelihood_diff"),
           "generation": ("bleu", "rouge1", "sari")}


@dataclass(frozen=True)
class Task:
    """A probe task: rows to score, a k-shot pool, and how to turn a row into a context."""
    name: str
    category: str          # one of CATEGORIES
    type: str              # multiple_choice | pairs | generation
    template: str          # str.format over a row's fields -> the context ("" for pairs)
    shots: int             # default k for k-shot contexts (drawn from fewshot_rows)
    metric: tuple          # metric names, e.g. ("acc", "acc_norm")
    version: int
    rows: list
    fewshot_rows: list     # disjoint from rows
    source: str            # "shipped", "hub:<dataset>", a file path or "lm_eval:<task>"
    target_delimiter: str = " "       # between a context and each choice (lm-eval's target_delimiter)
    fewshot_in_context: bool = False  # the rows' contexts hold their k-shot examples (lm-eval tasks)
    chat_turns: bool = False          # the rows' contexts are lm-eval's chat turns (lm_eval_tasks.render_turns)
    lm_eval: tuple | None = None      # (task, include folders): a generate_until task lm-eval's evaluator runs


@lru_cache(maxsize=None)
def _spec_from_file(path: str) -> dict:
    p = Path(path)
    spec = read_yaml(p, DataError)
    if not isinstance(spec, dict):
        raise DataError(f"{p}: a task YAML must be a mapping of fields (see raycf/data/README.md)")
    errors = validate_spec(spec, p)
    if errors:
        raise DataError(f"{p}: " + "; ".join(errors))
    return spec


def validate_spec(spec: dict, path: Path) -> list[str]:
    """All problems of a task YAML at once (empty when fine)."""
    errors = [f"unknown key {k!r}{did_you_mean(k, sorted(YAML_KEYS), **CLOSE)}" for k in spec if k not in YAML_KEYS]
    for k in ("name", "category", "type", "template", "shots", "metric", "version"):
        if k not in spec:
            errors.append(f"missing key {k!r}")
    own = path.parent != TASKS_DIR
    if own and spec.get("source") == "shipped":
        errors.append("source: shipped is for raycf's own tasks; give the file of your rows, e.g. source: rows.jsonl")
    if own and "source" not in spec:
        errors.append("missing key 'source': a task YAML of your own names its rows, e.g. source: my_rows.jsonl "
                      "(relative to the YAML's folder)")
    for k in ("name", "source", "fewshot_source", "description", "licence"):
        if k in spec and (not isinstance(spec[k], str) or not spec[k].strip()):
            errors.append(f"{k} must be a non-empty string, got {type(spec[k]).__name__} {spec[k]!r}")
    if "template" in spec:
        errors += template_problems(spec["template"])
    if spec.get("category") not in CATEGORIES:
        errors.append(f"category {spec.get('category')!r} is not one of {', '.join(CATEGORIES)}")
    if spec.get("type") not in TYPES:
        errors.append(f"type {spec.get('type')!r} is not one of {', '.join(TYPES)}")
    if isinstance(spec.get("name"), str) and not own and spec["name"] != path.stem:
        errors.append(f"name {spec['name']!r} must equal the file name {path.stem!r}")
    shots = spec.get("shots", 0)
    if not isinstance(shots, int) or isinstance(shots, bool) or not 0 <= shots <= 64:
        errors.append(f"shots must be an integer in [0, 64], got {shots!r}")
    if not isinstance(spec.get("version", 1), int) or isinstance(spec.get("version", 1), bool):
        errors.append("version must be an integer")
    if "hub" in spec and not isinstance(spec["hub"], dict):
        errors.append(f"hub must be a mapping like {{path: DATASET, split: test, map: NAME}}, got "
                      f"{type(spec['hub']).__name__} {spec['hub']!r}")
        spec = {**spec, "hub": {}}
    metric = spec.get("metric", [])
    if not isinstance(metric, (list, str)):
        errors.append("metric must be a list of metric names")
    elif spec.get("type") in METRICS:
        known = METRICS[spec["type"]]
        errors += [f"metric {m!r} is not computed for {spec['type']} tasks{did_you_mean(m, sorted(known), **CLOSE)}"
                   for m in ([metric] if isinstance(metric, str) else metric) if m not in known]
    hub = spec.get("hub") or {}
    errors += [f"hub: unknown key {k!r}{did_you_mean(k, sorted(HUB_KEYS), **CLOSE)}" for k in hub
               if k not in HUB_KEYS]
    if hub and hub.get("map") not in HUB_MAPS:
        hint = did_you_mean(hub.get("map"), sorted(HUB_MAPS), **CLOSE)
        errors.append(f"hub.map {hub.get('map')!r} is unknown{hint}")
    return errors


def template_problems(template) -> list[str]:
    """A template must be "alpaca" or a str.format string over a row's fields."""
    if not isinstance(template, str):
        return [f"template must be a string (str.format over a row's fields, or alpaca), got "
                f"{type(template).__name__} {template!r}"]
    try:
        fields = template_fields(template)
    except ValueError as e:
        return [f"template {template!r} is not a str.format string ({e}); write fields as {{name}} and a literal "
                f"brace as {{{{ or }}}}"]
    bad = [f for f in fields if not f.isidentifier()]
    return [f"template field {{{bad[0]}}} must be a plain field name like {{question}}"] if bad else []


def _registry() -> dict[str, Path]:
    return {p.stem: p for p in sorted(TASKS_DIR.glob("*.yaml"))}


def is_task_file(name) -> bool:
    """A task YAML of the user's own, named by its path."""
    return str(name).endswith((".yaml", ".yml"))


def _spec(name: str) -> dict:
    if is_task_file(name):
        if not Path(name).is_file():
            raise DataError(f"{name}: no such task YAML; check the path or give a registered task name")
        return _spec_from_file(str(Path(name).resolve()))
    reg = _registry()
    if name not in reg:
        raise DataError(f"unknown task {name!r}{did_you_mean(name, sorted(reg), **CLOSE)}")
    return _spec_from_file(str(reg[name]))


def stage_spec(name: str) -> dict:
    """The learned-task probe of a stage of the user's own (data.sources, no task YAML): its eval rows in
    the Alpaca template, greedy generation scored by ROUGE-1, as the shipped headline stage is."""
    return {"name": name, "category": "tasks", "type": "generation", "template": "alpaca", "shots": 0,
            "metric": ["rouge1"], "version": 1}


def resolve_template(spec: dict) -> str:
    if spec["template"] == "alpaca":  # the study's instruction template (raycf.data.template)
        from raycf.data.template import PROMPT_WITH_INPUT
        return PROMPT_WITH_INPUT
    return spec["template"]


def task_names(category: str | None = None) -> list[str]:
    """Registered probe tasks, in CATEGORIES order (stages in the study's order)."""
    if category is not None and category not in CATEGORIES:
        raise DataError(f"unknown category {category!r}{did_you_mean(category, sorted(CATEGORIES), **CLOSE)}")
    specs = [_spec_from_file(str(p)) for p in _registry().values()]
    order = {c: i for i, c in enumerate(CATEGORIES)}
    specs.sort(key=lambda s: (order[s["category"]], STAGES.index(s["name"]) if s["name"] in STAGES else 0, s["name"]))
    return [s["name"] for s in specs if category in (None, s["category"])]


def suite(names_or_categories, lm_eval_include: tuple = ()) -> list[str]:
    """Task names for a list of task and category names (categories and lm-eval groups expand), de-duplicated in
    order. lm_eval_include: folders of lm-eval task YAMLs for `lm_eval:NAME` items."""
    if isinstance(names_or_categories, str):
        names_or_categories = [names_or_categories]
    known = task_names()
    out, errors = [], []
    for item in names_or_categories:
        if is_lm_eval(item):
            try:
                out += lm_eval_tasks.expand(item, tuple(lm_eval_include))
            except DataError as e:
                errors.append(str(e))
        elif item in CATEGORIES:
            out += task_names(item)
        elif item in known:
            out.append(item)
        elif is_task_file(item):
            try:
                _spec(item)
                out.append(item)
            except DataError as e:
                errors.append(str(e))
        else:
            hint = did_you_mean(item, sorted([*CATEGORIES, *known]), **CLOSE)
            errors.append(f"{item!r} is neither a task nor a category{hint}")
    if errors:
        raise DataError("; ".join(errors))
    return list(dict.fromkeys(out))


def load_task(name: str, source: str | None = None, fewshot_source: str | None = None,
              shots: int | None = None, limit: int | None = None, lm_eval_include: tuple = (),
              chat_system: str | None = None) -> Task:
    """The probe task `name` (or a task YAML path) with its rows.

    source: None = the YAML's `source` (default "shipped"); "shipped"; "hub" (the study's dataset via
    `datasets.load_dataset`, needs the network); or a .jsonl/.parquet path of your own rows (a relative
    `source:` in a task YAML of your own starts at the YAML's folder).
    fewshot_source: a file for the k-shot pool when `source` is a file (else the pool is empty).
    shots: override the YAML's default k. limit: keep the first `limit` rows.
    A name that is no registered task, given with a file `source`, is a stage of the user's own (stage_spec).
    `lm_eval:TASK`: an lm-evaluation-harness task (raycf.data.lm_eval_tasks; lm_eval_include: folders of its
    YAMLs), its k-shot contexts built by lm-eval at `shots` (None: the task's own); chat_system not None: as
    chat turns (probes.apply_chat_template, see lm_eval_tasks.load). Other tasks apply it when probed.
    """
    if is_lm_eval(name):
        task = Task(**lm_eval_tasks.load(name, tuple(lm_eval_include), shots, chat_system=chat_system))
        return replace(task, rows=task.rows[:limit]) if limit else task
    own_stage = source not in (None, "shipped", "hub") and not is_task_file(name) and name not in _registry()
    spec = stage_spec(name) if own_stage else _spec(name)
    template = resolve_template(spec)
    fields = template_fields(template)
    k = spec["shots"] if shots is None else shots
    src = source or spec.get("source", "shipped")
    if source is None and is_task_file(name) and src not in ("shipped", "hub"):
        src = str(Path(name).parent / src)
    if fewshot_source is None and is_task_file(name) and spec.get("fewshot_source"):
        fewshot_source = str(Path(name).parent / spec["fewshot_source"])  # relative to the YAML, as source is
    if src == "shipped":
        rows, pool = _shipped(spec)
    elif src == "hub":
        rows, pool = hub_rows(spec)
    else:
        pool = load_rows(fewshot_source, spec["type"], fields) if fewshot_source else []
        if k > len(pool):  # before reading the rows: a wrong k is the cheaper mistake to report
            raise DataError(f"task {spec['name']} asks for {k} shots but its fewshot pool has {len(pool)} rows; "
                            f"name a pool with `fewshot_source: FILE` in its task YAML, or use fewer shots "
                            f"(probes.shots, or shots: in the YAML)")
        rows = load_rows(src, spec["type"], fields)
    if src in ("shipped", "hub"):
        for what, rs in (("rows", rows), ("fewshot rows", pool)):
            bad = next((p for r in rs if (p := check_row(r, spec["type"], fields))), None)
            if bad:
                raise DataError(f"task {spec['name']} ({src}) {what}: {bad}")
    if k > len(pool):
        raise DataError(f"task {spec['name']} asks for {k} shots but its fewshot pool has {len(pool)} rows; "
                        f"use at most {len(pool)} shots (probes.shots, --shots)")
    metric = (spec["metric"],) if isinstance(spec["metric"], str) else tuple(spec["metric"])
    label = src if src in ("shipped",) else (f"hub:{spec['hub']['path']}" if src == "hub" else str(src))
    return Task(name=spec["name"], category=spec["category"], type=spec["type"], template=template, shots=k,
                metric=metric, version=spec["version"], rows=rows[:limit] if limit else rows,
                fewshot_rows=pool, source=label)


def _read_set(file: str) -> list[dict]:
    return [json.loads(line) for line in (SETS_DIR / file).read_text(encoding="utf-8").splitlines() if line.strip()]


def _shipped(spec: dict) -> tuple[list[dict], list[dict]]:
    name = spec["name"]
    if spec["type"] == "generation":  # a stage probed on its eval split, k-shot pool from its train split
        return _read_set(f"{name}.eval.jsonl"), _read_set(f"{name}.train.jsonl")[:50]
    return _read_set(f"{name}.test.jsonl"), _read_set(f"{name}.fewshot.jsonl")


def load_stage(name: str, split: str = "train", limit: int | None = None, source: str = "shipped") -> list[dict]:
    """Rows {"instruction", "input", "output"} of an instruction stage (one of STAGES, or GENERAL).

    split: train | eval (disjoint). The eval split of simplification also has "references" (for SARI).
    source: "shipped", "hub" (the study's dataset; not for `general`), or a .jsonl/.parquet path (then
    `name` may be a stage of the user's own).
    """
    if name not in (*STAGES, GENERAL) and source in ("shipped", "hub"):
        raise DataError(f"unknown stage {name!r}{did_you_mean(name, sorted((*STAGES, GENERAL)), **CLOSE)}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for stage {name}{did_you_mean(split, sorted(SPLITS), **CLOSE)}")
    if source == "shipped":
        rows = _read_set(f"{name}.{split}.jsonl")
    elif source == "hub":
        if name == GENERAL:
            raise DataError("stage general has no hub source; use source='shipped' or a file of your own")
        spec = _spec(name)
        rows = hub_split(spec, spec["hub"].get("fewshot_split", "train") if split == "train" else spec["hub"]["split"])
    else:
        rows = load_rows(source, "generation")
    return rows[:limit] if limit else rows


def list_or_check(args) -> int:
    """Validate the files given, or list every shipped task and stage."""
    if args.files:
        for path in args.files:
            print(f"{path}: {len(load_rows(path))} rows ok")
        return 0
    for cat in CATEGORIES:
        for name in task_names(cat):
            t = load_task(name)
            print(f"{cat:10s} {name:22s} {t.type:16s} {len(t.rows):4d} rows  {len(t.fewshot_rows):3d} fewshot  "
                  f"{t.shots}-shot  {','.join(t.metric)}")
    for s in (*STAGES, GENERAL):
        print(f"{'stage':10s} {s:22s} train {len(load_stage(s)):4d}  eval {len(load_stage(s, 'eval')):3d}")
    return 0


def main(argv=None) -> int:
    p = parser("raycf.data.registry", "list the shipped probe tasks and stages, or check files of your own rows")
    p.add_argument("files", nargs="*", help=".jsonl or .parquet files of rows to check (see raycf/data/README.md)")
    return cli(p, list_or_check, argv)


if __name__ == "__main__":
    sys.exit(main())
