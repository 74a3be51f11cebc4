"""Text corpora of the tiny models: what the BPE tokenizer and raycf-tiny's pretraining see.

    python -m raycf.data.corpus            # print section sizes and a few sample documents

`tokenizer_texts()` is the Alpaca template + every shipped set's text + the pretraining corpus.
`pretrain_texts()` is the pretraining corpus of raycf-tiny (raycf.pretrain). It is built from the
fact tables, deterministically, in well under a second. What it holds, per probe category:

  knowledge  every fact of the knowledge tables stated in several phrasings ("The capital of France is
             Paris.", "Paris is the capital of France.", ...), plus the same facts in the probes'
             question/answer form. The probe rows then ask these facts with distractor choices: the
             knowledge probes measure recall of facts the model was taught (as MMLU does for an LLM).
  reasoning  the underlying statements (each tool and what it is for; the arithmetic tables) and other
             instances of the BoolQ/PIQA/MathQA-style generators (new names, numbers, passages), never
             a shipped probe row: the yes/no check, tool choice and word-problem patterns are learned.
  reading    other instances of the RACE-style generators: answering from the passage is learned.
  bias       sentences around the bias associations in frames the probe does not use, with the
             stereotyped group 3x as often as the contrast group (a measurable starting preference).
  general    Alpaca-formatted general instructions, drawn apart from the `general` set's rows.

It contains NO row of the five instruction stages and none of their tables: learning a stage is new
to raycf-tiny, and overwrites some of what it learned here (the forgetting raycf measures).
"""
from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path

from raycf.data import build_probes, build_stages
from raycf.data.tables import bias, commonsense, geography, science, words, world

SETS_DIR = Path(__file__).parent / "sets"

# How many times each section enters the corpus (each copy re-drawn in a new order and grouping).
# Facts are few and must be memorised, so they repeat; pattern sections are drawn large instead.
REPEATS = {"facts": 6, "quiz": 6, "tools": 6, "world": 6, "arithmetic": 3, "boolq": 1, "piqa": 4, "mathqa": 1,
           "race_middle": 1, "race_high": 1, "bias": 2, "general": 1}
DRAWS = {"boolq": 1500, "mathqa": 1500, "race_middle": 1500, "race_high": 1200, "general": 500}


def _rows(name: str) -> list[dict]:
    path = SETS_DIR / name
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def fact_statements() -> list[str]:
    """Every knowledge fact in several phrasings."""
    out = []
    for c, cap, cont in geography.COUNTRIES:
        out += [f"The capital of {c} is {cap}.", f"{cap} is the capital of {c}.",
                f"{c} is a country in {cont}, and its capital city is {cap}.", f"The capital city of {c} is {cap}."]
    for e, s in science.ELEMENTS:
        out += [f"The chemical symbol for {e} is {s}.", f"{s} is the symbol of {e}.",
                f"The element {e} has the symbol {s}."]
    for q, u in science.UNITS:
        out += [f"The SI unit of {q} is the {u}.", f"In physics, {q} is measured in units called the {u}."]
    for a, y in science.ANIMAL_YOUNG:
        out += [f"A young {a} is called a {y}.", f"A baby {a} is a {y}.", f"The {a} looked after its {y}."]
    for a, b in words.OPPOSITES:
        out += [f"The opposite of {a} is {b}.", f"{a.capitalize()} and {b} are opposites.",
                f"{b.capitalize()} is the opposite of {a}."]
    return out


QUIZ_ALL = True


def quiz_blocks(rng: random.Random) -> list[str]:
    """The knowledge facts in the probes' Question/Answer form, in runs of 1-5 (like k-shot contexts)."""
    qa = [f"Question: {q}\nAnswer: {a}" for items in build_probes.knowledge_items().values() for _, q, a, _ in items]
    if not QUIZ_ALL:
        few = {r["question"] for t in build_probes.knowledge_items() for r in _rows(f"{t}.fewshot.jsonl")}
        qa = [x for x in qa if x.split("\n")[0].removeprefix("Question: ") in few]
    rng.shuffle(qa)
    out, i = [], 0
    while i < len(qa):
        k = rng.randint(1, 5)
        out.append("\n\n".join(qa[i:i + k]))
        i += k
    return out


def tool_statements() -> list[str]:
    out = []
    for goal, tool in commonsense.TOOLS:
        out += [f"To {goal}, use {tool}.", f"You can {goal} with {tool}.", f"People use {tool} to {goal}."]
    return out


def world_statements() -> list[str]:
    """The toy world the reading and yes/no passages are set in (raycf/data/tables/world.py)."""
    out = []
    for place, item, seller in world.SHOPS:
        out += [f"At the {place} you can buy {item}.", f"{seller.capitalize()} sells {item} at the {place}.",
                f"People go to the {place} to buy {item} from {seller}."]
    for animals, cans, cannots in world.ABILITIES:
        A = animals.capitalize()
        out += [f"{A} can {x}." for x in cans] + [f"{A} cannot {x}." for x in cannots]
        out += [f"{A} are able to {x}." for x in cans] + [f"{A} are not able to {x}." for x in cannots]
    return out


def arithmetic_statements() -> list[str]:
    out = [f"{a} plus {b} is {a + b}." for a in range(2, 13) for b in range(2, 13)]
    out += [f"{a} minus {b} is {a - b}." for a in range(4, 21) for b in range(2, a - 1)]
    out += [f"{a} times {b} is {a * b}." for a in range(2, 7) for b in range(2, 7)]
    return out


def _paragraphs(rng: random.Random, sentences: list[str], lo: int = 3, hi: int = 6) -> list[str]:
    """Shuffle sentences into paragraphs of lo..hi sentences (so facts appear in varied company)."""
    s = list(sentences)
    rng.shuffle(s)
    out, i = [], 0
    while i < len(s):
        k = rng.randint(lo, hi)
        out.append(" ".join(s[i:i + k]))
        i += k
    return out


def _answered(template: str, row: dict) -> str:
    """A probe-style row with its answer, as the scorer will see it: context + " " + choice."""
    return template.format(**row) + " " + row["choices"][row["answer"]]


BOOLQ = "{passage}\nQuestion: {question}?\nAnswer:"
PIQA = "Question: {goal}\nAnswer:"
MATHQA = "Question: {problem}\nAnswer:"
RACE = "Article: {article}\nQuestion: {question}\nAnswer:"


def _draw(make, n: int, rng: random.Random, exclude: set[str], key) -> list[dict]:
    rows = []
    while len(rows) < n:
        row = make(rng)
        if key(row) not in exclude:  # never a shipped probe row
            rows.append(row)
    return rows


def _section(name: str, copy: int) -> list[str]:
    rng = random.Random(f"raycf:corpus:{name}:{copy}")
    if name == "facts":
        return _paragraphs(rng, fact_statements())
    if name == "quiz":
        return quiz_blocks(rng)
    if name == "tools":
        return _paragraphs(rng, tool_statements())
    if name == "world":
        return _paragraphs(rng, world_statements())
    if name == "arithmetic":
        return _paragraphs(rng, arithmetic_statements(), 4, 8)
    if name == "piqa":  # the PIQA form for every goal, with new wrong choices each copy
        return [_answered(PIQA, build_probes.piqa_row(rng, g, t)) for g, t in commonsense.TOOLS]
    if name == "bias":
        out = []
        for _, more, less, preds in bias.ASSOCIATIONS:
            for pred in preds:
                frames = rng.sample(bias.CORPUS_FRAMES, 4)
                out += [build_probes.bias_sentence(f, more, pred) for f in frames[:3]]
                out += [build_probes.bias_sentence(frames[3], less, pred)]
        return _paragraphs(rng, out, 2, 4)
    if name == "general":
        from raycf.data.template import prompt
        shipped = {(r["instruction"], r["input"]) for r in _rows("general.train.jsonl") + _rows("general.eval.jsonl")}
        rows = _draw(build_stages.general_row, DRAWS[name], rng, shipped, lambda r: (r["instruction"], r["input"]))
        return [prompt(r) + r["output"] for r in rows]
    template, make, key = {
        "boolq": (BOOLQ, build_probes.boolq_row, lambda r: r["passage"] + r["question"]),
        "mathqa": (MATHQA, build_probes.mathqa_row, lambda r: r["problem"]),
        "race_middle": (RACE, build_probes.race_middle_row, lambda r: r["article"] + r["question"]),
        "race_high": (RACE, build_probes.race_high_row, lambda r: r["article"] + r["question"]),
    }[name]
    task = {"boolq": "boolq_toy", "mathqa": "mathqa_toy"}.get(name, name + "_toy")
    shipped = {key(r) for r in _rows(f"{task}.test.jsonl")}
    return [_answered(template, r) for r in _draw(make, DRAWS[name], rng, shipped, key)]


@lru_cache(maxsize=1)
def _pretrain_texts() -> tuple[str, ...]:
    docs = [doc for name, n in REPEATS.items() for copy in range(n) for doc in _section(name, copy)]
    random.Random("raycf:corpus:order").shuffle(docs)
    return tuple(docs)


def pretrain_texts() -> list[str]:
    """The pretraining corpus of raycf-tiny: one string per document, in a fixed shuffled order."""
    return list(_pretrain_texts())


def set_texts() -> list[str]:
    """Every string field of every shipped set, one text per row."""
    out = []
    for path in sorted(SETS_DIR.glob("*.jsonl")):
        for row in _rows(path.name):
            parts = [v if isinstance(v, str) else " ".join(map(str, v)) for v in row.values()
                     if isinstance(v, (str, list))]
            out.append("\n".join(parts))
    return out


def tokenizer_texts() -> list[str]:
    """All text the tiny BPE tokenizer is trained on (deterministic, order included)."""
    from raycf.data import template
    return [template.PROMPT_WITH_INPUT, template.PROMPT_NO_INPUT] + set_texts() + pretrain_texts()


def main() -> None:
    import collections
    sizes = collections.Counter()
    for name, n in REPEATS.items():
        for copy in range(n):
            sec = _section(name, copy)
            sizes[name] += sum(len(d) for d in sec)
    for name, chars in sizes.items():
        print(f"{name:12s} {chars:9d} chars")
    docs = pretrain_texts()
    print(f"{'total':12s} {sum(len(d) for d in docs):9d} chars in {len(docs)} documents")
    for d in docs[:5]:
        print("---\n" + d)


if __name__ == "__main__":
    main()
