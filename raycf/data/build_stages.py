"""Generators of raycf's offline instruction stages and the `general` instruction set (templates and word
lists in raycf/data/tables/instructions.py); raycf.data.build writes them."""
from __future__ import annotations

import random

from raycf.data.build_probes import seeded_rng
from raycf.data.tables import commonsense, geography, instructions as ins, science, words


def _lower_first(s: str) -> str:
    return s[0].lower() + s[1:]


def simplification_rows() -> list[dict]:
    rng = seeded_rng("simplification")
    rows = []
    for subj, simple_subj in ins.SIMPLIFY_SUBJECTS:
        be = "were" if subj.endswith("s") else "was"
        for pred, simple_preds in ins.SIMPLIFY_PREDICATES:
            refs = [f"{simple_subj} {p.format(be=be)}." for p in simple_preds]
            rows.append({"instruction": rng.choice(ins.SIMPLIFY_INSTRUCTIONS), "input": f"{subj} {pred.format(be=be)}.",
                         "output": refs[0], "references": refs})
    return rows


def empathetic_dialogue_rows() -> list[dict]:
    rng = seeded_rng("empathetic_dialogue")
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
    rng = seeded_rng("question_generation")
    rows = []
    for statement, question in ins.CURIOSITIES:
        for wrapper in ins.CURIOSITY_WRAPPERS:
            rows.append({"instruction": rng.choice(ins.QUESTION_INSTRUCTIONS),
                         "input": wrapper.format(s=statement, l=_lower_first(statement)), "output": question})
    return rows


def explanation_rows() -> list[dict]:
    rng = seeded_rng("explanation")
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
    rng = seeded_rng("headline")
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
    rng = seeded_rng("general")
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
    seeded_rng(name, 1).shuffle(rows)
    n_train = N_TRAIN.get(name, 480)
    train, eval_ = rows[N_EVAL:N_EVAL + n_train], rows[:N_EVAL]
    for r in train:
        r.pop("references", None)  # references are for SARI on the eval split only
    return train, eval_
