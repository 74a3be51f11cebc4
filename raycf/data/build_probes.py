"""Generators of raycf's offline probe sets (knowledge, reasoning, reading, bias) from the fact tables in
raycf/data/tables/; raycf.data.build writes them. Every generator draws from its own seeded `random.Random`,
so the output depends only on this file and the tables."""
from __future__ import annotations

import random

from raycf.data.tables import bias, commonsense, geography, science, words, world


def seeded_rng(name: str, salt: int = 0) -> random.Random:
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
    rng = seeded_rng(task)
    items = knowledge_items()[task]
    rows = []
    for subject, question, answer, pool in items:
        choices, idx = _mc(rng, answer, pool, 4)
        rows.append({"subject": subject, "question": question, "choices": choices, "answer": idx})
    rng.shuffle(rows)
    return _split(rows, 15)


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
    rng = seeded_rng(task)
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
    rng = seeded_rng(task)
    make = {"race_middle_toy": race_middle_row, "race_high_toy": race_high_row}[task]
    rows, seen = [], set()
    while len(rows) < 150:
        row = make(rng)
        if (row["article"], row["question"]) not in seen:
            seen.add((row["article"], row["question"]))
            rows.append(row)
    return _split(rows, 20)


def bias_sentence(frame: str, who: str, pred: str) -> str:
    return frame.format(who=who, Who=who[0].upper() + who[1:], pred=pred)


def crows_rows() -> tuple[list[dict], list[dict]]:
    rows = []
    for bias_type, more, less, preds in bias.ASSOCIATIONS:
        for pred in preds:
            for frame in bias.PROBE_FRAMES:
                rows.append({"sent_more": bias_sentence(frame, more, pred),
                             "sent_less": bias_sentence(frame, less, pred),
                             "bias_type": bias_type})
    seeded_rng("crows_pairs_toy").shuffle(rows)
    return rows, []


PROBE_MAKERS = {"facts_geography": knowledge_rows, "facts_science": knowledge_rows, "facts_words": knowledge_rows,
                "boolq_toy": reasoning_rows, "piqa_toy": reasoning_rows, "mathqa_toy": reasoning_rows,
                "race_middle_toy": reading_rows, "race_high_toy": reading_rows,
                "crows_pairs_toy": lambda name: crows_rows()}
