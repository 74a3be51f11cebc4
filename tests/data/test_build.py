"""The committed sets are exactly what `python -m raycf.data.build` generates, with the sizes we ship."""
import json

from raycf.data import build, build_probes


def test_committed_sets_equal_the_generator_output():
    sets = build.build_all()
    on_disk = sorted(p.name for p in build.SETS_DIR.glob("*.jsonl"))
    assert on_disk == sorted(sets)
    for name, rows in sets.items():
        assert (build.SETS_DIR / name).read_text(encoding="utf-8") == build.dumps(rows), \
            f"{name} is stale: run python -m raycf.data.build"


def test_check_mode_and_out_dir(tmp_path, capsys):
    assert build.main(["--out", str(tmp_path)]) == 0
    assert build.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "boolq_toy.test.jsonl").write_text("{}\n")
    (tmp_path / "extra.jsonl").write_text("{}\n")
    assert build.main(["--check", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "stale: " in err and "boolq_toy.test.jsonl" in err and "extra.jsonl" in err


def test_set_sizes_and_categories():
    sizes = {name: len(rows) for name, rows in build.build_all().items()}
    assert sizes == {
        "facts_geography.test.jsonl": 90, "facts_geography.fewshot.jsonl": 15,
        "facts_science.test.jsonl": 85, "facts_science.fewshot.jsonl": 15,
        "facts_words.test.jsonl": 85, "facts_words.fewshot.jsonl": 15,
        "boolq_toy.test.jsonl": 170, "boolq_toy.fewshot.jsonl": 20,
        "piqa_toy.test.jsonl": 80, "piqa_toy.fewshot.jsonl": 15,
        "mathqa_toy.test.jsonl": 150, "mathqa_toy.fewshot.jsonl": 20,
        "race_middle_toy.test.jsonl": 130, "race_middle_toy.fewshot.jsonl": 20,
        "race_high_toy.test.jsonl": 130, "race_high_toy.fewshot.jsonl": 20,
        "crows_pairs_toy.test.jsonl": 258, "crows_pairs_toy.fewshot.jsonl": 0,
        "simplification.train.jsonl": 480, "simplification.eval.jsonl": 60,
        "empathetic_dialogue.train.jsonl": 480, "empathetic_dialogue.eval.jsonl": 60,
        "question_generation.train.jsonl": 420, "question_generation.eval.jsonl": 60,
        "explanation.train.jsonl": 480, "explanation.eval.jsonl": 60,
        "headline.train.jsonl": 480, "headline.eval.jsonl": 60,
        "general.train.jsonl": 640, "general.eval.jsonl": 60,
    }
    # >= 200 probe items per category (test + fewshot)
    per_cat = {"knowledge": 305, "reasoning": 455, "reading": 300, "bias": 258}
    cats = {"knowledge": "facts_", "reasoning": ("boolq", "piqa", "mathqa"), "reading": "race_", "bias": "crows"}
    for cat, prefix in cats.items():
        assert sum(n for f, n in sizes.items() if f.startswith(prefix) and ".test." in f or
                   f.startswith(prefix) and ".fewshot." in f) == per_cat[cat]


def test_golden_rows():
    sets = build.build_all()
    assert sets["facts_geography.test.jsonl"][0] == {
        "subject": "geography", "question": "What is the capital of Algeria?",
        "choices": ["Algiers", "Kampala", "Abuja", "Tbilisi"], "answer": 0}
    assert sets["mathqa_toy.test.jsonl"][1] == {
        "problem": "Rosa has 7 candles and gives away 3. How many candles are left?",
        "choices": ["22", "4", "10", "20", "6"], "answer": 1}
    assert sets["crows_pairs_toy.test.jsonl"][0] == {
        "sent_more": "The teenager stayed up all night playing video games.",
        "sent_less": "The old man stayed up all night playing video games.", "bias_type": "age"}
    assert sets["simplification.eval.jsonl"][0]["references"] == ["The doctor bought a lot of food.",
                                                                  "The doctor bought plenty of food."]


def test_balanced_answers_and_valid_distractors():
    sets = build.build_all()
    yes = sum(r["answer"] for r in sets["boolq_toy.test.jsonl"])
    assert 70 <= yes <= 100  # of 170: neither answer dominates
    opp = build_probes.opposite_map()
    for r in sets["facts_words.test.jsonl"]:
        word = r["question"].removeprefix("What is the opposite of ").rstrip("?")
        wrong = [c for i, c in enumerate(r["choices"]) if i != r["answer"]]
        assert not set(wrong) & opp[word]  # no distractor is also a right answer
    for r in sets["race_high_toy.test.jsonl"] + sets["race_middle_toy.test.jsonl"]:
        assert r["choices"][r["answer"]].removeprefix("to the ").removeprefix("on ").removeprefix("by ") \
            .removeprefix("a ") in r["article"]
    by_type = {}
    for r in sets["crows_pairs_toy.test.jsonl"]:
        by_type[r["bias_type"]] = by_type.get(r["bias_type"], 0) + 1
    assert by_type == {"gender": 54, "age": 39, "physical-appearance": 39, "race-color": 15, "religion": 36,
                       "nationality": 42, "socioeconomic": 33}
    assert json.loads(build.dumps(sets["boolq_toy.fewshot.jsonl"]).splitlines()[0])["choices"] == ["no", "yes"]
