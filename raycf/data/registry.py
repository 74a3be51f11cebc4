"""Registry of probe tasks and instruction stages, and the row loader every source goes through.

    python -m raycf.data.registry            # list tasks by category with row counts
    python -m raycf.data.registry FILE.jsonl # validate a file of your own rows

A probe task is one small YAML in raycf/data/tasks/ (see raycf/data/README.md for the fields and the
row schema). Rows come from the shipped JSONL in raycf/data/sets/ unless a user asks for the study's
hub dataset (`source: hub`, needs network and `datasets`) or names a local .jsonl/.parquet file.
"""
from __future__ import annotations

import difflib
import json
import string
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DATA_DIR = Path(__file__).parent
TASKS_DIR = DATA_DIR / "tasks"
SETS_DIR = DATA_DIR / "sets"

STAGES = ("simplification", "empathetic_dialogue", "question_generation", "explanation", "headline")
GENERAL = "general"
CATEGORIES = ("knowledge", "reasoning", "reading", "bias", "tasks")
TYPES = ("multiple_choice", "pairs", "generation")
SPLITS = ("train", "eval")

# Fields each row type must carry (beyond those its template names).
REQUIRED = {"multiple_choice": ("choices", "answer"), "pairs": ("sent_more", "sent_less", "bias_type"),
            "generation": ("instruction", "input", "output")}
YAML_KEYS = {"name", "category", "type", "source", "template", "shots", "metric", "version", "licence",
             "description", "hub"}
# Metrics raycf.probe computes for each row type (a task YAML may name these only).
METRICS = {"multiple_choice": ("acc", "acc_norm"), "pairs": ("pct_stereotype", "likelihood_diff"),
           "generation": ("bleu", "rouge1", "sari")}
HUB_KEYS = {"path", "name", "split", "fewshot_split", "map"}


class DataError(ValueError):
    """A task, stage, or data file that cannot be used; the message says what to fix."""


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
    source: str            # "shipped", "hub:<dataset>" or a file path


def _did_you_mean(name: str, options) -> str:
    close = difflib.get_close_matches(str(name), list(options), n=3, cutoff=0.7)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else \
        f"; known: {', '.join(sorted(options))}"


# --- rows -----------------------------------------------------------------------------------------

def template_fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def infer_type(row: dict) -> str | None:
    if "choices" in row:
        return "multiple_choice"
    if "sent_more" in row:
        return "pairs"
    if "instruction" in row:
        return "generation"
    return None


def check_row(row, type: str, fields=()) -> str | None:
    """The problem with one row (and its fix), or None when it is fine."""
    if not isinstance(row, dict):
        return f"a row must be a JSON object, got {type_name(row)}; write one {{...}} object per line"
    need = list(dict.fromkeys([*fields, *REQUIRED[type]]))
    missing = [f for f in need if f not in row]
    if missing:
        return (f"row has no field {', '.join(repr(m) for m in missing)} (it has {', '.join(row) or 'none'}); "
                f"a {type} row needs {', '.join(need)}")
    if type == "multiple_choice":
        choices, answer = row["choices"], row["answer"]
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            return f"'choices' is {choices!r}; give a list of strings, e.g. [\"yes\", \"no\"]"
        if len(choices) < 2:
            return f"'choices' has {len(choices)} item(s); give at least 2 choices"
        if not isinstance(answer, int) or isinstance(answer, bool):
            return f"'answer' is {answer!r}; give the 0-based index of the correct choice (an integer)"
        if not 0 <= answer < len(choices):
            return (f"'answer' is {answer} but 'choices' has {len(choices)} items; "
                    f"give the 0-based index of the correct choice (0..{len(choices) - 1})")
    if type == "generation":
        bad = [f for f in REQUIRED["generation"] if not isinstance(row[f], str)]
        if bad:
            return f"{', '.join(repr(b) for b in bad)} must be string(s); quote the value(s) in the JSON"
        refs = row.get("references")
        if refs is not None and (not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs)):
            return "'references' must be a non-empty list of strings; give [\"...\"] or leave the field out"
    if type == "pairs" and not all(isinstance(row[f], str) for f in REQUIRED["pairs"]):
        return "'sent_more', 'sent_less' and 'bias_type' must be strings; quote the values in the JSON"
    return None


def type_name(x) -> str:
    return {dict: "object", list: "list", str: "string", int: "number", float: "number",
            bool: "boolean", type(None): "null"}.get(type(x), type(x).__name__)


def _read_jsonl(path: Path) -> list[tuple[int, object]]:
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path}: file is empty; write one JSON object per line (see raycf/data/README.md)")
    rows, errors = [], []
    for n, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            errors.append(f"{path}:{n}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                          f"save the file as UTF-8")
            continue
        try:
            rows.append((n, json.loads(line)))
        except json.JSONDecodeError as e:
            errors.append(f"{path}:{n}: malformed JSON ({e.msg} at column {e.colno}); "
                          f"write one complete JSON object per line")
    if errors:
        raise DataError("\n".join(errors))
    return rows


def _read_parquet(path: Path) -> list[tuple[int, object]]:
    import pyarrow.parquet as pq
    rows = pq.read_table(path).to_pylist()
    if not rows:
        raise DataError(f"{path}: file is empty; write at least one row (see raycf/data/README.md)")
    return list(enumerate(rows, start=1))


def load_rows(path, type: str | None = None, fields=(), numbered: bool = False) -> list:
    """Validated rows of a .jsonl (one JSON object per line) or .parquet file.

    type: multiple_choice | pairs | generation, or None to infer it from the first row.
    fields: extra fields every row must have (those a template names). Every bad row is reported in
    one DataError, each as `FILE:LINE: problem; fix` (LINE is 1-based; the row number for parquet).
    numbered: return (LINE, row) pairs, for checks that report a line of their own.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; check the path (relative paths start at the working directory)")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give a .jsonl or .parquet file")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".parquet"):
        raise DataError(f"{path}: unknown file type {suffix!r}; give a .jsonl or .parquet file")
    lines = _read_parquet(path) if suffix == ".parquet" else _read_jsonl(path)
    if type is None:
        first = lines[0][1]
        type = infer_type(first) if isinstance(first, dict) else None
        if type is None:
            raise DataError(f"{path}:{lines[0][0]}: cannot tell the row type; a row needs 'choices' "
                            f"(multiple_choice), 'sent_more' (pairs) or 'instruction' (generation)")
    if type not in TYPES:
        raise DataError(f"row type {type!r} is unknown{_did_you_mean(type, TYPES)}")
    errors = [f"{path}:{n}: {problem}" for n, row in lines
              if (problem := check_row(row, type, fields)) is not None]
    if errors:
        more = f"\n... and {len(errors) - 20} more bad rows" if len(errors) > 20 else ""
        raise DataError("\n".join(errors[:20]) + more)
    return lines if numbered else [row for _, row in lines]


# --- task specs (YAML) ----------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _spec_from_file(path: str) -> dict:
    import yaml
    p = Path(path)
    try:
        spec = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        line = p.read_bytes()[:e.start].count(b"\n") + 1
        raise DataError(f"{p}: line {line}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise DataError(f"{p}: {where}malformed YAML ({getattr(e, 'problem', None) or 'syntax'}); fix the syntax") \
            from None
    if not isinstance(spec, dict):
        raise DataError(f"{p}: a task YAML must be a mapping of fields (see raycf/data/README.md)")
    errors = validate_spec(spec, p)
    if errors:
        raise DataError(f"{p}: " + "; ".join(errors))
    return spec


def validate_spec(spec: dict, path: Path) -> list[str]:
    """All problems of a task YAML at once (empty when fine)."""
    errors = [f"unknown key {k!r}{_did_you_mean(k, YAML_KEYS)}" for k in spec if k not in YAML_KEYS]
    for k in ("name", "category", "type", "template", "shots", "metric", "version"):
        if k not in spec:
            errors.append(f"missing key {k!r}")
    if spec.get("category") not in CATEGORIES:
        errors.append(f"category {spec.get('category')!r} is not one of {', '.join(CATEGORIES)}")
    if spec.get("type") not in TYPES:
        errors.append(f"type {spec.get('type')!r} is not one of {', '.join(TYPES)}")
    if "name" in spec and path.parent == TASKS_DIR and spec["name"] != path.stem:
        errors.append(f"name {spec['name']!r} must equal the file name {path.stem!r}")
    if not isinstance(spec.get("shots", 0), int) or spec.get("shots", 0) < 0:
        errors.append("shots must be an integer >= 0")
    if not isinstance(spec.get("version", 1), int):
        errors.append("version must be an integer")
    metric = spec.get("metric", [])
    if not isinstance(metric, (list, str)):
        errors.append("metric must be a list of metric names")
    elif spec.get("type") in METRICS:
        known = METRICS[spec["type"]]
        errors += [f"metric {m!r} is not computed for {spec['type']} tasks{_did_you_mean(m, known)}"
                   for m in ([metric] if isinstance(metric, str) else metric) if m not in known]
    hub = spec.get("hub") or {}
    errors += [f"hub: unknown key {k!r}{_did_you_mean(k, HUB_KEYS)}" for k in hub if k not in HUB_KEYS]
    if hub and hub.get("map") not in HUB_MAPS:
        errors.append(f"hub.map {hub.get('map')!r} is unknown{_did_you_mean(hub.get('map'), HUB_MAPS)}")
    return errors


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
        raise DataError(f"unknown task {name!r}{_did_you_mean(name, reg)}")
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
        raise DataError(f"unknown category {category!r}{_did_you_mean(category, CATEGORIES)}")
    specs = [_spec_from_file(str(p)) for p in _registry().values()]
    order = {c: i for i, c in enumerate(CATEGORIES)}
    specs.sort(key=lambda s: (order[s["category"]], STAGES.index(s["name"]) if s["name"] in STAGES else 0, s["name"]))
    return [s["name"] for s in specs if category in (None, s["category"])]


def suite(names_or_categories) -> list[str]:
    """Task names for a list of task and category names (categories expand), de-duplicated in order."""
    if isinstance(names_or_categories, str):
        names_or_categories = [names_or_categories]
    known = task_names()
    out, errors = [], []
    for item in names_or_categories:
        if item in CATEGORIES:
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
            errors.append(f"{item!r} is neither a task nor a category{_did_you_mean(item, [*CATEGORIES, *known])}")
    if errors:
        raise DataError("; ".join(errors))
    return list(dict.fromkeys(out))


def load_task(name: str, source: str | None = None, fewshot_source: str | None = None,
              shots: int | None = None, limit: int | None = None) -> Task:
    """The probe task `name` (or a task YAML path) with its rows.

    source: None = the YAML's `source` (default "shipped"); "shipped"; "hub" (the study's dataset via
    `datasets.load_dataset`, needs the network); or a .jsonl/.parquet path of your own rows (a relative
    `source:` in a task YAML of your own starts at the YAML's folder).
    fewshot_source: a file for the k-shot pool when `source` is a file (else the pool is empty).
    shots: override the YAML's default k. limit: keep the first `limit` rows.
    A name that is no registered task, given with a file `source`, is a stage of the user's own (stage_spec).
    """
    own_stage = source not in (None, "shipped", "hub") and not is_task_file(name) and name not in _registry()
    spec = stage_spec(name) if own_stage else _spec(name)
    template = resolve_template(spec)
    fields = template_fields(template)
    k = spec["shots"] if shots is None else shots
    src = source or spec.get("source", "shipped")
    if source is None and is_task_file(name) and src not in ("shipped", "hub"):
        src = str(Path(name).parent / src)
    if src == "shipped":
        rows, pool = _shipped(spec)
    elif src == "hub":
        rows, pool = _hub(spec)
    else:
        pool = load_rows(fewshot_source, spec["type"], fields) if fewshot_source else []
        if k > len(pool):  # before reading the rows: a wrong k is the cheaper mistake to report
            raise DataError(f"task {spec['name']} asks for {k} shots but its fewshot pool has {len(pool)} rows; "
                            f"give fewshot_source=FILE or shots=0")
        rows = load_rows(src, spec["type"], fields)
    if src in ("shipped", "hub"):
        for what, rs in (("rows", rows), ("fewshot rows", pool)):
            bad = next((p for r in rs if (p := check_row(r, spec["type"], fields))), None)
            if bad:
                raise DataError(f"task {spec['name']} ({src}) {what}: {bad}")
    if k > len(pool):
        raise DataError(f"task {spec['name']} asks for {k} shots but its fewshot pool has {len(pool)} rows; "
                        f"give fewshot_source=FILE or shots=0")
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


# --- stages ---------------------------------------------------------------------------------------

def load_stage(name: str, split: str = "train", limit: int | None = None, source: str = "shipped") -> list[dict]:
    """Rows {"instruction", "input", "output"} of an instruction stage (one of STAGES, or GENERAL).

    split: train | eval (disjoint). The eval split of simplification also has "references" (for SARI).
    source: "shipped", "hub" (the study's dataset; not for `general`), or a .jsonl/.parquet path (then
    `name` may be a stage of the user's own).
    """
    if name not in (*STAGES, GENERAL) and source in ("shipped", "hub"):
        raise DataError(f"unknown stage {name!r}{_did_you_mean(name, (*STAGES, GENERAL))}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for stage {name}{_did_you_mean(split, SPLITS)}")
    if source == "shipped":
        rows = _read_set(f"{name}.{split}.jsonl")
    elif source == "hub":
        if name == GENERAL:
            raise DataError("stage general has no hub source; use source='shipped' or a file of your own")
        spec = _spec(name)
        rows = _hub_split(spec, spec["hub"].get("fewshot_split", "train") if split == "train" else spec["hub"]["split"])
    else:
        rows = load_rows(source, "generation")
    return rows[:limit] if limit else rows


# --- the study's hub datasets (used only when a user asks: source="hub") --------------------------

def _hub(spec: dict) -> tuple[list[dict], list[dict]]:
    hub = spec.get("hub")
    if not hub:
        raise DataError(f"task {spec['name']} names no hub dataset; use source='shipped' or a file")
    pool = _hub_split(spec, hub["fewshot_split"]) if hub.get("fewshot_split") else []
    return _hub_split(spec, hub["split"]), pool


def _hub_split(spec: dict, split: str) -> list[dict]:
    from datasets import load_dataset  # network: never called by default or in tests
    hub = spec["hub"]
    ds = load_dataset(hub["path"], hub.get("name"), split=split)
    mapper = HUB_MAPS[hub["map"]]
    return [r for r in (mapper(dict(row), ds) for row in ds) if r is not None]


def _map_mmlu(r, ds):
    return {"subject": r["subject"], "question": r["question"].strip(), "choices": list(r["choices"]),
            "answer": int(r["answer"])}


def _map_boolq(r, ds):
    return {"passage": r["passage"], "question": r["question"], "choices": ["no", "yes"], "answer": int(r["answer"])}


def _map_piqa(r, ds):
    return {"goal": r["goal"], "choices": [r["sol1"], r["sol2"]], "answer": int(r["label"])}


def _map_mathqa(r, ds):
    import re  # options look like "a ) 38 , b ) 27.675 , c ) 30 , d ) 15 , e ) 20"; parsed as lm-eval does
    choices = [c[4:].rstrip(" ,") for c in re.findall(r"[abcd] \) .*?, |e \) .*?$", r["options"])]
    return {"problem": r["Problem"], "choices": choices, "answer": "abcde".index(r["correct"])}


def _map_race(r, ds):
    return {"article": r["article"], "question": r["question"], "choices": list(r["options"]),
            "answer": "ABCD".index(r["answer"])}


def _map_crows(r, ds):
    bt = r["bias_type"]
    if isinstance(bt, int):
        bt = ds.features["bias_type"].int2str(bt)
    return {"sent_more": r["sent_more"], "sent_less": r["sent_less"], "bias_type": str(bt)}


def _instruction(instruction, inp, out, **extra):
    return {"instruction": instruction, "input": inp.strip(), "output": out.strip(), **extra}


def _map_wiki_auto(r, ds):
    return _instruction("Simplify the following sentence.", r["normal_sentence"], r["simple_sentence"],
                        references=[r["simple_sentence"].strip()])


def _map_empathetic(r, ds):
    return _instruction("Respond to the speaker with empathy.", r["prompt"].replace("_comma_", ","),
                        r["utterance"].replace("_comma_", ","))


def _map_eli5(r, ds):
    return _instruction("Ask a curious question about this statement.", r["answer"][:400], r["question"])


def _map_esnli(r, ds):
    label = ["entailment", "neutral", "contradiction"][int(r["label"])] if int(r["label"]) >= 0 else None
    if label is None:
        return None
    return _instruction("Explain the label.",
                        f"Premise: {r['premise']} Hypothesis: {r['hypothesis']} Label: {label}", r["explanation_1"])


def _map_gigaword(r, ds):
    words = r["summary"].split()
    word = max(words, key=len) if words else ""
    return _instruction(f"Write a headline for the article that includes the word \"{word}\".", r["document"],
                        r["summary"])


HUB_MAPS = {"mmlu": _map_mmlu, "boolq": _map_boolq, "piqa": _map_piqa, "mathqa": _map_mathqa, "race": _map_race,
            "crows_pairs": _map_crows, "wiki_auto": _map_wiki_auto, "empathetic_dialogues": _map_empathetic,
            "eli5": _map_eli5, "esnli": _map_esnli, "gigaword": _map_gigaword}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv:
            for path in argv:
                print(f"{path}: {len(load_rows(path))} rows ok")
            return 0
        for cat in CATEGORIES:
            for name in task_names(cat):
                t = load_task(name)
                print(f"{cat:10s} {name:22s} {t.type:16s} {len(t.rows):4d} rows  {len(t.fewshot_rows):3d} fewshot  "
                      f"{t.shots}-shot  {','.join(t.metric)}")
        for s in (*STAGES, GENERAL):
            print(f"{'stage':10s} {s:22s} train {len(load_stage(s)):4d}  eval {len(load_stage(s, 'eval')):3d}")
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
