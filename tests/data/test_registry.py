"""Every shipped task YAML loads; names, categories and suites resolve; unknown names say 'did you mean'."""
import dataclasses

import pytest

from raycf.data import CATEGORIES, GENERAL, STAGES, DataError, Task, load_stage, load_task, suite, task_names
from raycf.data.registry import TASKS_DIR, template_fields

EXPECTED = {  # name: (category, type, rows, fewshot rows, shots, metric)
    "facts_geography": ("knowledge", "multiple_choice", 90, 15, 5, ("acc", "acc_norm")),
    "facts_science": ("knowledge", "multiple_choice", 85, 15, 5, ("acc", "acc_norm")),
    "facts_words": ("knowledge", "multiple_choice", 85, 15, 5, ("acc", "acc_norm")),
    "boolq_toy": ("reasoning", "multiple_choice", 170, 20, 0, ("acc", "acc_norm")),
    "mathqa_toy": ("reasoning", "multiple_choice", 150, 20, 0, ("acc", "acc_norm")),
    "piqa_toy": ("reasoning", "multiple_choice", 80, 15, 0, ("acc", "acc_norm")),
    "race_high_toy": ("reading", "multiple_choice", 130, 20, 0, ("acc", "acc_norm")),
    "race_middle_toy": ("reading", "multiple_choice", 130, 20, 0, ("acc", "acc_norm")),
    "crows_pairs_toy": ("bias", "pairs", 258, 0, 0, ("pct_stereotype",)),
    "simplification": ("tasks", "generation", 60, 50, 0, ("sari",)),
    "empathetic_dialogue": ("tasks", "generation", 60, 50, 0, ("bleu",)),
    "question_generation": ("tasks", "generation", 60, 50, 0, ("bleu",)),
    "explanation": ("tasks", "generation", 60, 50, 0, ("bleu",)),
    "headline": ("tasks", "generation", 60, 50, 0, ("rouge1",)),
}


def test_every_yaml_is_registered_and_loads():
    assert sorted(p.stem for p in TASKS_DIR.glob("*.yaml")) == sorted(EXPECTED)
    for name, (category, type_, n, n_few, shots, metric) in EXPECTED.items():
        t = load_task(name)
        assert isinstance(t, Task) and t.name == name and t.source == "shipped" and t.version == 1
        assert (t.category, t.type, len(t.rows), len(t.fewshot_rows), t.shots, t.metric) == \
            (category, type_, n, n_few, shots, metric)
        for row in t.rows[:3]:
            t.template.format(**row)  # the template only names fields the rows have
        if t.type == "multiple_choice":
            assert all(len(r["choices"]) >= 2 and 0 <= r["answer"] < len(r["choices"]) for r in t.rows)
        ctx = lambda r: t.template.format(**r) + repr(r.get("choices", r.get("output")))
        assert not {ctx(r) for r in t.rows} & {ctx(r) for r in t.fewshot_rows}  # disjoint pools


def test_task_is_frozen_and_has_the_contract_fields():
    t = load_task("boolq_toy")
    assert [f.name for f in dataclasses.fields(Task)] == ["name", "category", "type", "template", "shots", "metric",
                                                          "version", "rows", "fewshot_rows", "source",
                                                          "target_delimiter", "fewshot_in_context", "chat_turns", "lm_eval"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.shots = 3
    assert t.template == "{passage}\nQuestion: {question}?\nAnswer:"
    assert t.rows[0] == {"passage": "Penguins are not able to climb trees. Penguins can swim.",
                         "question": "can penguins climb trees", "choices": ["no", "yes"], "answer": 0}
    assert t.template.format(**t.rows[0]) == ("Penguins are not able to climb trees. Penguins can swim.\n"
                                              "Question: can penguins climb trees?\nAnswer:")


def test_generation_tasks_use_the_alpaca_template():
    from raycf.data.template import prompt
    t = load_task("headline")
    assert template_fields(t.template) == ["instruction", "input"]
    assert all(t.template.format(**r) == prompt(r) for r in t.rows)
    assert t.rows == load_stage("headline", "eval")


def test_task_names_by_category_in_study_order():
    assert CATEGORIES == ("knowledge", "reasoning", "reading", "bias", "tasks")
    assert task_names("knowledge") == ["facts_geography", "facts_science", "facts_words"]
    assert task_names("reasoning") == ["boolq_toy", "mathqa_toy", "piqa_toy"]
    assert task_names("reading") == ["race_high_toy", "race_middle_toy"]
    assert task_names("bias") == ["crows_pairs_toy"]
    assert task_names("tasks") == list(STAGES)
    assert len(task_names()) == 14


def test_suite_expands_categories_keeps_names_and_dedupes():
    assert suite(["knowledge", "boolq_toy"]) == ["facts_geography", "facts_science", "facts_words", "boolq_toy"]
    assert suite(["piqa_toy", "reasoning"]) == ["piqa_toy", "boolq_toy", "mathqa_toy"]
    assert suite("bias") == ["crows_pairs_toy"]


def test_unknown_names_say_did_you_mean():
    with pytest.raises(DataError, match=r"unknown task 'facts_geografy'; did you mean 'facts_geography'"):
        load_task("facts_geografy")
    with pytest.raises(DataError, match=r"'reasonning' is neither a task nor a category; did you mean 'reasoning'"):
        suite(["reasonning"])
    with pytest.raises(DataError, match=r"unknown stage 'simplfication'; did you mean 'simplification'\?"):
        load_stage("simplfication")
    with pytest.raises(DataError, match=r"unknown split 'test' for stage headline"):
        load_stage("headline", "test")
    with pytest.raises(DataError, match=r"unknown category 'bais'; did you mean 'bias'\?"):
        task_names("bais")
    assert issubclass(DataError, ValueError)


def test_stages_sizes_schema_and_disjoint_splits():
    assert STAGES == ("simplification", "empathetic_dialogue", "question_generation", "explanation", "headline")
    assert GENERAL == "general"
    sizes = {s: (len(load_stage(s)), len(load_stage(s, "eval"))) for s in (*STAGES, GENERAL)}
    assert sizes == {"simplification": (480, 60), "empathetic_dialogue": (480, 60), "question_generation": (420, 60),
                     "explanation": (480, 60), "headline": (480, 60), "general": (640, 60)}
    for s in (*STAGES, GENERAL):
        train, eval_ = load_stage(s), load_stage(s, "eval")
        key = lambda r: (r["instruction"], r["input"])
        assert not {key(r) for r in train} & {key(r) for r in eval_}
        assert all(set(r) == {"instruction", "input", "output"} for r in train)
    assert all(len(r["references"]) == 2 and r["output"] == r["references"][0]
               for r in load_stage("simplification", "eval"))
    assert load_stage("headline", limit=2)[0]["instruction"].startswith("Write a headline")
    assert len(load_stage("general", "eval", limit=7)) == 7


def test_stage_rows_are_short_and_vary():
    from raycf.models.tiny import build_tokenizer
    from raycf.data.corpus import tokenizer_texts
    tok = build_tokenizer(tokenizer_texts())
    for s in STAGES:
        n = sorted(len(tok(r["instruction"] + "\n" + r["input"] + "\n" + r["output"])["input_ids"])
                   for r in load_stage(s))
        # measured: medians 33-46, 90th percentiles 39-55, longest 68 (explanation); prompt adds ~43
        assert n[len(n) // 2] <= 46 and n[int(0.9 * len(n))] <= 55 and n[-1] <= 68 and n[-1] - n[0] >= 15, s


def test_user_yaml_and_user_file(tmp_path):
    (tmp_path / "rows.jsonl").write_text('{"q": "2+2?", "choices": ["3", "4"], "answer": 1}\n')
    (tmp_path / "mine.yaml").write_text(
        'name: mine\ncategory: reasoning\ntype: multiple_choice\ntemplate: "Q: {q}\\nA:"\nshots: 0\n'
        'metric: [acc]\nversion: 2\nlicence: mine\nsource: ' + str(tmp_path / "rows.jsonl") + "\n")
    t = load_task(str(tmp_path / "mine.yaml"))
    assert (t.name, t.version, t.rows, t.source) == ("mine", 2, [{"q": "2+2?", "choices": ["3", "4"], "answer": 1}],
                                                      str(tmp_path / "rows.jsonl"))
    with pytest.raises(DataError, match=r"asks for 5 shots but its fewshot pool has 0 rows; name a pool with `fewshot_source: FILE`"):
        load_task("facts_words", source=str(tmp_path / "rows.jsonl"))
    # a file for a shipped task must carry the fields its template names
    with pytest.raises(DataError, match=r"rows.jsonl: the template names field 'question', which no row has \(rows have: answer, choices, q\)"):
        load_task("facts_words", source=str(tmp_path / "rows.jsonl"), shots=0)


def test_bad_task_yaml_reports_every_problem(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: bad\ncategory: reasonin\ntype: multiple_choice\ntemplate: x\nshots: 0\nmetric: [acc]\n"
                 "version: 1\nshot: 3\n")
    with pytest.raises(DataError) as e:
        load_task(str(p))
    msg = str(e.value)
    assert "unknown key 'shot'; did you mean 'shots'?" in msg
    assert "category 'reasonin' is not one of knowledge, reasoning, reading, bias, tasks" in msg


def test_hub_is_never_touched_by_default(monkeypatch):
    import datasets

    def no_network(*a, **k):
        raise AssertionError("load_dataset called")
    monkeypatch.setattr(datasets, "load_dataset", no_network)
    for name in task_names():
        load_task(name)
    for s in (*STAGES, GENERAL):
        load_stage(s)


def test_hub_row_mappings_on_sample_rows():
    from raycf.data import registry as r
    from raycf.data.hub import HUB_MAPS
    assert HUB_MAPS["mathqa"]({"Problem": "p", "options": "a ) 38 , b ) 27.675 , c ) 30 , d ) 15 , e ) 20",
                          "correct": "b"}, None) == {"problem": "p", "choices": ["38", "27.675", "30", "15", "20"],
                                                     "answer": 1}
    assert HUB_MAPS["boolq"]({"passage": "P", "question": "q", "answer": True}, None) == \
        {"passage": "P", "question": "q", "choices": ["no", "yes"], "answer": 1}
    assert HUB_MAPS["race"]({"article": "A", "question": "Q", "options": ["w", "x", "y", "z"], "answer": "C"}, None)["answer"] == 2
    assert HUB_MAPS["piqa"]({"goal": "g", "sol1": "a", "sol2": "b", "label": 1}, None) == \
        {"goal": "g", "choices": ["a", "b"], "answer": 1}
    assert HUB_MAPS["esnli"]({"premise": "p.", "hypothesis": "h.", "label": 2, "explanation_1": "e"}, None)["input"] == \
        "Premise: p. Hypothesis: h. Label: contradiction"
    for name in task_names():  # every hub mapping a YAML names exists
        spec = r._spec(name)
        assert spec["hub"]["map"] in HUB_MAPS and spec["hub"]["path"]


def test_a_task_yaml_names_its_fewshot_pool(tmp_path):
    """`fewshot_source:` in a task YAML of one's own (relative to the YAML): its k-shot examples come from there."""
    import json
    rows = [{"q": f"{i}?", "choices": ["a", "b"], "answer": i % 2} for i in range(4)]
    pool = [{"q": f"p{i}?", "choices": ["a", "b"], "answer": 1} for i in range(3)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
    (tmp_path / "t.yaml").write_text("name: t\ncategory: reasoning\ntype: multiple_choice\ntemplate: 'Q: {q}\\nA:'\n"
                                     "shots: 2\nmetric: [acc]\nversion: 1\nsource: rows.jsonl\n"
                                     "fewshot_source: pool.jsonl\n")
    t = load_task(str(tmp_path / "t.yaml"))
    assert (t.shots, t.rows, t.fewshot_rows) == (2, rows, pool)
    (tmp_path / "t.yaml").write_text((tmp_path / "t.yaml").read_text().replace("shots: 2", "shots: 4"))
    from raycf.data.registry import _spec_from_file
    _spec_from_file.cache_clear()
    with pytest.raises(DataError, match=r"asks for 4 shots but its fewshot pool has 3 rows"):
        load_task(str(tmp_path / "t.yaml"))
