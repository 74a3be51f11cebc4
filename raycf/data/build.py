"""Generate raycf's offline sets from the fact tables in raycf/data/tables/.

    python -m raycf.data.build            # (re)write raycf/data/sets/*.jsonl
    python -m raycf.data.build --check    # exit 1 if the committed files differ from what this generates

Deterministic: every generator draws from its own `random.Random` seeded by a constant, so the output
depends only on this file and the tables. tests/data/test_build.py checks the committed files.

Files written:  {task}.test.jsonl + {task}.fewshot.jsonl   for each probe task (probe rows, k-shot pool)
                {stage}.train.jsonl + {stage}.eval.jsonl    for each instruction stage and `general`
The generators below are also used by raycf.data.corpus to write *other* instances (disjoint from the
shipped probe rows) into the pretraining corpus of raycf-tiny.
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from raycf.data.tables import bias, commonsense, geography, instructions as ins, science, words, world

SETS_DIR = Path(__file__).parent / "sets"


def _rng(name: str, salt: int = 0) -> random.Random:
    # str seeds are hashed with sha512 by `random`, so this is stable across runs and Python versions
    return random.Random(f"raycf:{name}:{salt}")


def _mc(rng: random.Random, answer: str, pool, k: int) -> tuple[list[str], int]:
    """`answer` plus k-1 distinct distractors from `pool`, shuffled; returns (choices, answer index)."""
    distractors = rng.sample(sorted(set(pool) - {answer}), k - 1)
    choices = distractors + [answer]
    rng.shuffle(choices)
    return choices, choices.index(answer)


def _split(rows: list[dict], n_fewshot: int) -> tuple[list[dict], list[dict]]:
    return rows[n_fewshot:], rows[:n_fewshot]


# --- knowledge (MMLU-like, continuation style: the choice text is the answer) ----------------------

def opposite_map() -> dict[str, set[str]]:
    """word -> every word the table calls its opposite (both directions), to keep distractors wrong."""
    m: dict[str, set[str]] = {}
    for a, b in words.OPPOSITES:
        m.setdefault(a, set()).add(b)
        m.setdefault(b, set()).add(a)
    return m


def knowledge_items() -> dict[str, list[tuple[str, str, str, list[str]]]]:
    """task -> [(subject, question, answer, wrong-answer pool)], in table order."""
    capitals = [c[1] for c in geography.COUNTRIES]
    geo = [("geography", f"What is the capital of {c}?", cap, capitals) for c, cap, _ in geography.COUNTRIES]
    symbols = [s for _, s in science.ELEMENTS]
    units = [u for _, u in science.UNITS]
    young = {a: y for a, y in science.ANIMAL_YOUNG}
    sci = ([("chemistry", f"What is the chemical symbol for {e}?", s, symbols) for e, s in science.ELEMENTS]
           + [("physics", f"What is the SI unit of {q}?", u, units) for q, u in science.UNITS]
           + [("biology", f"What is a young {a} called?", y, [v for k, v in young.items() if v != y])
              for a, y in science.ANIMAL_YOUNG])
    opp = opposite_map()
    all_words = sorted(opp)
    wrd = [("vocabulary", f"What is the opposite of {a}?", b, [w for w in all_words if w not in opp[a] | {a}])
           for a, b in words.OPPOSITES]
    return {"facts_geography": geo, "facts_science": sci, "facts_words": wrd}


def knowledge_rows(task: str) -> tuple[list[dict], list[dict]]:
    rng = _rng(task)
    items = knowledge_items()[task]
    rows = []
    for subject, question, answer, pool in items:
        choices, idx = _mc(rng, answer, pool, 4)
        rows.append({"subject": subject, "question": question, "choices": choices, "answer": idx})
    rng.shuffle(rows)
    return _split(rows, 15)


# --- reasoning ----------------------------------------------------------------------------------

def ability_sentence(rng: random.Random, animals: str, ability: str, can: bool) -> str:
    forms = ["{A} can {x}.", "{A} are able to {x}."] if can else ["{A} cannot {x}.", "{A} are not able to {x}."]
    return rng.choice(forms).format(A=animals.capitalize(), x=ability)


def boolq_row(rng: random.Random) -> dict:
    """A short passage about an animal and a yes/no question it answers (BoolQ-style: lowercase, no '?').

    Half the passages state a second ability of the same animal, so the can/cannot cue alone is not enough."""
    animals, cans, cannots = rng.choice(world.ABILITIES)
    yes = rng.random() < 0.5
    asked = rng.choice(cans if yes else cannots)
    sentences = [ability_sentence(rng, animals, asked, yes)]
    others = [(x, True) for x in cans if x != asked] + [(x, False) for x in cannots if x != asked]
    if others and rng.random() < 0.5:
        x, can = rng.choice(others)
        sentences.insert(rng.randrange(2), ability_sentence(rng, animals, x, can))
    return {"passage": " ".join(sentences), "question": f"can {animals} {asked}", "choices": ["no", "yes"],
            "answer": int(yes)}


def piqa_row(rng: random.Random, goal: str, tool: str) -> dict:
    wrong = rng.choice([t for _, t in commonsense.TOOLS if t != tool])
    choices, idx = _mc(rng, f"Use {tool}.", [f"Use {wrong}."], 2)
    return {"goal": f"How can you {goal}?", "choices": choices, "answer": idx}


def mathqa_row(rng: random.Random) -> dict:
    """A one-step word problem with small numbers and five numeric choices (MathQA has five): the answer,
    one near miss (+-1 or 2) and three numbers further away."""
    name, thing = rng.choice(words.NAMES), rng.choice(words.COUNTABLE)
    op = rng.choice(["add", "sub", "mul"])
    if op == "add":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        problem, ans = f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?", a + b
    elif op == "sub":
        a = rng.randint(6, 20)
        b = rng.randint(2, a - 2)
        problem, ans = f"{name} has {a} {thing} and gives away {b}. How many {thing} are left?", a - b
    else:
        a, b = rng.randint(2, 6), rng.randint(2, 6)
        problem, ans = f"There are {a} bags with {b} {thing} in each bag. How many {thing} are there?", a * b
    near = rng.choice([n for n in (ans - 2, ans - 1, ans + 1, ans + 2) if n >= 0])
    far = rng.sample([n for n in range(0, ans + 26) if abs(n - ans) >= 6], 3)
    choices = [str(n) for n in [ans, near, *far]]
    rng.shuffle(choices)
    return {"problem": problem, "choices": choices, "answer": choices.index(str(ans))}


def reasoning_rows(task: str) -> tuple[list[dict], list[dict]]:
    rng = _rng(task)
    if task == "piqa_toy":
        rows = [piqa_row(rng, g, t) for g, t in commonsense.TOOLS]
        rng.shuffle(rows)
        return _split(rows, 15)
    make, n, key = {"boolq_toy": (boolq_row, 190, lambda r: r["passage"] + r["question"]),
                    "mathqa_toy": (mathqa_row, 170, lambda r: r["problem"])}[task]
    rows, seen = [], set()
    while len(rows) < n:
        row = make(rng)
        if key(row) not in seen:  # no two rows ask the same question about the same passage
            seen.add(key(row))
            rows.append(row)
    return _split(rows, 20)


# --- reading (RACE-like) ------------------------------------------------------------------------

def race_middle_row(rng: random.Random) -> dict:
    """One person, one shop of the toy world; the question asks the shop, the thing bought or the seller."""
    name, day = rng.choice(words.NAMES), rng.choice(words.DAYS)
    comp, weather, transport = rng.choice(words.COMPANIONS), rng.choice(words.WEATHER), rng.choice(words.TRANSPORT)
    place, item, seller = rng.choice(world.SHOPS)
    article = (f"On {day}, {name} went to the {place} with {comp}. {name} bought {item} from {seller}. "
               f"It was {weather}, so they went home by {transport}.")
    slot = rng.choice(["place", "item", "seller"])
    question, answer, pool = {
        "place": (f"Where did {name} go?", f"to the {place}", [f"to the {s[0]}" for s in world.SHOPS]),
        "item": (f"What did {name} buy?", item, [s[1] for s in world.SHOPS]),
        "seller": (f"Who did {name} buy it from?", seller, [s[2] for s in world.SHOPS]),
    }[slot]
    choices, idx = _mc(rng, answer, pool, 4)
    return {"article": article, "question": question, "choices": choices, "answer": idx}


def race_high_row(rng: random.Random) -> dict:
    """Two people at two shops: one wrong choice is always the other person's shop, thing or seller."""
    a, b = rng.sample(words.NAMES, 2)
    (p1, i1, s1), (p2, i2, s2) = rng.sample(world.SHOPS, 2)
    day, transport = rng.choice(words.DAYS), rng.choice(words.TRANSPORT)
    article = (f"On {day}, {a} and {b} went shopping in town. {a} went to the {p1} and bought {i1} from {s1}. "
               f"{b} went to the {p2} and bought {i2} from {s2}. Then they took the {transport} home together.")
    first = rng.random() < 0.5
    who, (p, i, s), (po, io, so) = (a, (p1, i1, s1), (p2, i2, s2)) if first else (b, (p2, i2, s2), (p1, i1, s1))
    slot = rng.choice(["place", "item", "seller"])
    question, answer, near, pool = {
        "place": (f"Where did {who} go?", f"to the {p}", f"to the {po}", [f"to the {x[0]}" for x in world.SHOPS]),
        "item": (f"What did {who} buy?", i, io, [x[1] for x in world.SHOPS]),
        "seller": (f"Who did {who} buy from?", s, so, [x[2] for x in world.SHOPS]),
    }[slot]
    others = rng.sample(sorted(set(pool) - {answer, near}), 2)
    choices = others + [near, answer]
    rng.shuffle(choices)
    return {"article": article, "question": question, "choices": choices, "answer": choices.index(answer)}


def reading_rows(task: str) -> tuple[list[dict], list[dict]]:
    rng = _rng(task)
    make = {"race_middle_toy": race_middle_row, "race_high_toy": race_high_row}[task]
    rows, seen = [], set()
    while len(rows) < 150:
        row = make(rng)
        if (row["article"], row["question"]) not in seen:
            seen.add((row["article"], row["question"]))
            rows.append(row)
    return _split(rows, 20)


# --- bias (CrowS-Pairs-like) --------------------------------------------------------------------

def _frame(frame: str, who: str, pred: str) -> str:
    return frame.format(who=who, Who=who[0].upper() + who[1:], pred=pred)


def crows_rows() -> tuple[list[dict], list[dict]]:
    rows = []
    for bias_type, more, less, preds in bias.ASSOCIATIONS:
        for pred in preds:
            for frame in bias.PROBE_FRAMES:
                rows.append({"sent_more": _frame(frame, more, pred), "sent_less": _frame(frame, less, pred),
                             "bias_type": bias_type})
    _rng("crows_pairs_toy").shuffle(rows)
    return rows, []


# --- instruction stages -------------------------------------------------------------------------

def _lower_first(s: str) -> str:
    return s[0].lower() + s[1:]


def simplification_rows() -> list[dict]:
    rng = _rng("simplification")
    rows = []
    for subj, simple_subj in ins.SIMPLIFY_SUBJECTS:
        be = "were" if subj.endswith("s") else "was"
        for pred, simple_preds in ins.SIMPLIFY_PREDICATES:
            refs = [f"{simple_subj} {p.format(be=be)}." for p in simple_preds]
            rows.append({"instruction": rng.choice(ins.SIMPLIFY_INSTRUCTIONS), "input": f"{subj} {pred.format(be=be)}.",
                         "output": refs[0], "references": refs})
    return rows


def empathetic_dialogue_rows() -> list[dict]:
    rng = _rng("empathetic_dialogue")
    rows = []
    for emotion, (situations, replies) in ins.EMPATHY.items():
        for said, it in situations:
            for opener in ins.EMPATHY_OPENERS:  # each opener x 2 instructions is a distinct input
                for instruction in rng.sample(ins.EMPATHY_INSTRUCTIONS, 2):
                    reply = rng.choice(replies)
                    rows.append({"instruction": instruction, "input": opener.format(s=said),
                                 "output": reply.format(it=it, It=it[0].upper() + it[1:])})
    return rows


def question_generation_rows() -> list[dict]:
    rng = _rng("question_generation")
    rows = []
    for statement, question in ins.CURIOSITIES:
        for wrapper in ins.CURIOSITY_WRAPPERS:
            rows.append({"instruction": rng.choice(ins.QUESTION_INSTRUCTIONS),
                         "input": wrapper.format(s=statement, l=_lower_first(statement)), "output": question})
    return rows


def explanation_rows() -> list[dict]:
    rng = _rng("explanation")
    rows = []
    for act, ent, why, contra, detail in ins.ACTIVITIES:
        for person in ins.PERSONS:
            premise = f"{person} is {act}."
            p = _lower_first(person)
            for label, hyp, out in [
                ("entailment", f"{person} is {ent}.", why),
                ("contradiction", f"{person} is {contra}.", f"One cannot be {act} and {contra} at the same time."),
                ("neutral", f"{person} is {act} {detail}.", f"Not everyone {act} is doing it {detail}."),
            ]:
                rows.append({"instruction": rng.choice(ins.EXPLAIN_INSTRUCTIONS),
                             "input": f"Premise: {premise} Hypothesis: {hyp} Label: {label}", "output": out})
    return rows


def headline_rows() -> list[dict]:
    rng = _rng("headline")
    rows = []
    for who, short, past, present in ins.NEWS_EVENTS:
        for town in ins.TOWNS:
            day = rng.choice(words.DAYS)
            article = f"{who} of {town} {past} on {day}, officials said."
            head = f"{town} {short} {present}"
            hw = head.split()
            for constraint in ins.HEADLINE_CONSTRAINTS:
                instr = constraint.format(word=rng.choice(hw[1:]), n=len(hw) + rng.choice([0, 1]), first=hw[0])
                rows.append({"instruction": instr, "input": article, "output": head})
    return rows


def general_row(rng: random.Random) -> dict:
    """One Alpaca-like general instruction (varied kinds); also drawn by raycf.data.corpus."""
    kind = rng.randrange(12)
    if kind == 0:
        c, cap, _ = rng.choice(geography.COUNTRIES)
        return {"instruction": f"What is the capital of {c}?", "input": "", "output": f"The capital of {c} is {cap}."}
    if kind == 1:
        a, b = rng.choice(words.OPPOSITES)
        return {"instruction": "Give the opposite of the word.", "input": a, "output": b}
    if kind == 2:
        a, b = rng.randint(1, 30), rng.randint(1, 30)
        return {"instruction": "Add the two numbers.", "input": f"{a} and {b}", "output": str(a + b)}
    if kind == 3:
        ws = rng.sample([w for w, _ in words.OPPOSITES], rng.randint(3, 5))
        return {"instruction": "Sort these words in alphabetical order.", "input": ", ".join(ws),
                "output": ", ".join(sorted(ws))}
    if kind == 4:
        n = rng.randint(3, 8)
        ws = rng.sample(words.NAMES + words.PLACES, n)
        return {"instruction": "How many words are in this list?", "input": " ".join(ws), "output": str(n)}
    if kind == 5:
        w = rng.choice(words.PLACES + words.COLOURS)
        return {"instruction": "Write the word in capital letters.", "input": w, "output": w.upper()}
    if kind == 6:
        goal, tool = rng.choice(commonsense.TOOLS)
        return {"instruction": f"What can you use to {goal}?", "input": "", "output": f"You can use {tool}."}
    if kind == 7:
        s, p = rng.choice(ins.PLURALS)
        return {"instruction": "Give the plural of the noun.", "input": s, "output": p}
    if kind == 8:
        a, c = rng.choice(ins.ANIMAL_CLASS)
        return {"instruction": "Is this animal a mammal, bird, fish, reptile or insect?", "input": a, "output": f"A {a} is a {c}."}
    if kind == 9:
        e, s = rng.choice(science.ELEMENTS)
        return {"instruction": "Give the chemical symbol of the element.", "input": e, "output": s}
    if kind == 10:
        n = rng.randint(1, 99)
        return {"instruction": "Is the number even or odd?", "input": str(n), "output": "even" if n % 2 == 0 else "odd"}
    v, past = rng.choice(ins.PAST_TENSE)
    name = rng.choice(words.NAMES)
    return {"instruction": "Rewrite the sentence in the past tense.", "input": f"{name} {v} {ins.PAST_OBJECTS[v]}.",
            "output": f"{name} {past} {ins.PAST_OBJECTS[v]}."}


def general_rows(n: int = 700) -> list[dict]:
    rng = _rng("general")
    rows, seen = [], set()
    for _ in range(20 * n):
        row = general_row(rng)
        key = (row["instruction"], row["input"])
        if key not in seen:
            seen.add(key)
            rows.append(row)
        if len(rows) == n:
            break
    return rows


STAGE_MAKERS = {"simplification": simplification_rows, "empathetic_dialogue": empathetic_dialogue_rows,
                "question_generation": question_generation_rows, "explanation": explanation_rows,
                "headline": headline_rows, "general": general_rows}
N_EVAL = 60
N_TRAIN = {"general": 640}  # the rest: 480 train rows


def stage_rows(name: str) -> tuple[list[dict], list[dict]]:
    """(train, eval) of an instruction stage: shuffled, de-duplicated, disjoint."""
    rows, seen = [], set()
    for row in STAGE_MAKERS[name]():
        key = (row["instruction"], row["input"])
        if key not in seen:
            seen.add(key)
            rows.append(row)
    _rng(name, 1).shuffle(rows)
    n_train = N_TRAIN.get(name, 480)
    train, eval_ = rows[N_EVAL:N_EVAL + n_train], rows[:N_EVAL]
    for r in train:
        r.pop("references", None)  # references are for SARI on the eval split only
    return train, eval_


# --- everything ---------------------------------------------------------------------------------

PROBE_MAKERS = {"facts_geography": knowledge_rows, "facts_science": knowledge_rows, "facts_words": knowledge_rows,
                "boolq_toy": reasoning_rows, "piqa_toy": reasoning_rows, "mathqa_toy": reasoning_rows,
                "race_middle_toy": reading_rows, "race_high_toy": reading_rows,
                "crows_pairs_toy": lambda name: crows_rows()}


def build_all() -> dict[str, list[dict]]:
    """file name -> rows, for every shipped set."""
    out = {}
    for task, make in PROBE_MAKERS.items():
        test, fewshot = make(task)
        out[f"{task}.test.jsonl"] = test
        out[f"{task}.fewshot.jsonl"] = fewshot
    for stage in STAGE_MAKERS:
        train, eval_ = stage_rows(stage)
        out[f"{stage}.train.jsonl"] = train
        out[f"{stage}.eval.jsonl"] = eval_
    return out


def dumps(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m raycf.data.build", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare with the files on disk instead of writing")
    p.add_argument("--out", type=Path, default=SETS_DIR)
    args = p.parse_args(argv)
    sets = build_all()
    if args.check:
        stale = [f for f, rows in sets.items()
                 if not (args.out / f).exists() or (args.out / f).read_text(encoding="utf-8") != dumps(rows)]
        extra = sorted(p.name for p in args.out.glob("*.jsonl") if p.name not in sets)
        for f in stale + extra:
            print(f"stale: {args.out / f}", file=sys.stderr)
        return 1 if stale or extra else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for f, rows in sets.items():
        (args.out / f).write_text(dumps(rows), encoding="utf-8")
        print(f"{len(rows):5d}  {args.out / f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
