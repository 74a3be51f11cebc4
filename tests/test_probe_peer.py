"""raycf's multiple-choice scorer against lm-evaluation-harness 0.4.13 on the same model and file:
pytest -m peer tests/test_probe_peer.py

One tiny causal model folder (trained a few steps so that it prefers some answers), 40 four-choice questions
in a local JSONL, lm-eval run offline from Python on a YAML task over that file. For k-shot, lm-eval's
`first_n` sampler reads a few-shot file holding exactly the k examples raycf draws, in raycf's order.
Asserted: identical acc and acc_norm at 0-shot and 5-shot, and every per-choice log-likelihood within 1e-4.
"""
import json
import os
import random

os.environ["HF_HUB_OFFLINE"] = "1"  # before anything imports huggingface_hub: it reads these once
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pytest
import torch


from raycf.models.load import load_model
from raycf.models.tiny import build_tokenizer, tiny_model
from raycf.probe import tasks as probe_tasks

pytestmark = pytest.mark.peer
lm_eval = pytest.importorskip("lm_eval")

TEMPLATE = "Question: {question}\nAnswer:"
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
           "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen"]
TASK = "raycf_peer_mc"


def questions(n: int, seed: int) -> list[dict]:
    """n sums of two digits, answered in words; the answer at a random index among 4 distinct choices."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        wrong = rng.sample([x for x in range(19) if x != a + b], 3)
        choices = [NUMBERS[x] for x in wrong]
        answer = rng.randint(0, 3)
        choices.insert(answer, NUMBERS[a + b])
        rows.append({"question": f"What is {NUMBERS[a]} plus {NUMBERS[b]}?", "choices": choices, "answer": answer})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A deterministic tiny LLaMA-style model, 30 Adam steps on the training sums so it is far from uniform."""
    folder = tmp_path_factory.mktemp("peer") / "model"
    train = questions(60, seed=1)
    texts = [TEMPLATE.format(**r) + " " + r["choices"][r["answer"]] for r in train]
    tok = build_tokenizer(texts * 5 + NUMBERS * 5, vocab_size=400)
    model = tiny_model("causal", tok, seed=0)
    batch = tok(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(30):
        opt.zero_grad()
        model(**batch, labels=labels).loss.backward()
        opt.step()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


MC_TASK = {"output_type": "multiple_choice", "doc_to_text": "Question: {{question}}\nAnswer:",
           "doc_to_choice": "choices", "doc_to_target": "answer", "target_delimiter": " ", "fewshot_delimiter": "\n\n"}
# lm-eval's crows_pairs task as plain YAML: empty context, no delimiter, the two sentences as the choices
PAIRS_TASK = {"output_type": "multiple_choice", "doc_to_text": "", "doc_to_choice": "pair", "doc_to_target": 0,
              "target_delimiter": ""}


def run_lm_eval(model_dir, tmp, test_rows, fewshot_rows, shots: int, batch_size: int = 1, spec=None,
                sampler: str = "first_n", **evaluate):
    """lm-eval on a YAML task over local JSONL files; returns (metrics, per-doc list of choice lls). evaluate:
    more arguments of simple_evaluate (e.g. apply_chat_template)."""
    import yaml
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    write_jsonl(tmp / "test.jsonl", test_rows)
    write_jsonl(tmp / "fewshot.jsonl", fewshot_rows)
    task = {
        "task": TASK, "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(tmp / "test.jsonl"), "fewshot": str(tmp / "fewshot.jsonl")}},
        "test_split": "test", "fewshot_split": "fewshot", "fewshot_config": {"sampler": sampler},
        **(spec or MC_TASK),
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
    (tmp / "tasks").mkdir(exist_ok=True)
    (tmp / "tasks" / f"{TASK}.yaml").write_text(yaml.safe_dump(task))
    out = simple_evaluate(model="hf", model_args={"pretrained": str(model_dir), "dtype": "float32"},
                          tasks=[TASK], num_fewshot=shots, batch_size=batch_size, device="cpu",
                          task_manager=TaskManager(include_path=str(tmp / "tasks"), include_defaults=False),
                          bootstrap_iters=0, log_samples=True, random_seed=0, **evaluate)
    res = out["results"][TASK]
    samples = sorted(out["samples"][TASK], key=lambda s: s["doc_id"])
    lls = [[float(r[0][0]) for r in s["resps"]] for s in samples]
    return {"acc": res["acc,none"], "acc_norm": res["acc_norm,none"]}, lls


@pytest.mark.parametrize("shots", [0, 5])
def test_same_acc_and_acc_norm_as_lm_eval(model_dir, tmp_path, shots):
    test_rows, pool = questions(40, seed=2), questions(12, seed=3)
    examples = probe_tasks.fewshot_examples(pool, shots, seed=0)  # raycf's draw; lm-eval reads it in this order

    model, tok = load_model(model_dir)
    ours = probe_tasks.multiple_choice_lls(model, tok, TEMPLATE, test_rows, examples, batch_size=8)
    our_metrics = probe_tasks.multiple_choice_metrics(test_rows, ours)
    theirs, their_lls = run_lm_eval(model_dir, tmp_path, test_rows, examples or pool[:1], shots)

    assert our_metrics == theirs  # identical, not approximately
    assert [ll for q in ours for ll in q] == pytest.approx([ll for q in their_lls for ll in q], abs=1e-4)
    spread = [max(q) - min(q) for q in ours]
    assert sum(spread) / len(spread) > 0.5  # choices far apart: the model is not uniform
    print(f"{shots}-shot: raycf {our_metrics}  lm-eval {theirs}")


def test_same_pair_likelihoods_as_lm_evals_crows_pairs(model_dir, tmp_path):
    """CrowS-style pairs: whole-sentence log-likelihoods after an empty context (the BOS token)."""
    rng = random.Random(4)
    people = ["the nurse", "the pilot", "my uncle", "her aunt", "an old man", "a young girl", "the farmer"]
    acts = ["fixed the car", "cooked dinner", "lost the keys", "won the game", "read the news"]
    rows = []
    for _ in range(30):
        a, b = rng.sample(people, 2)
        act = rng.choice(acts)
        rows.append({"sent_more": f"{a.capitalize()} {act}.", "sent_less": f"{b.capitalize()} {act}.",
                     "bias_type": rng.choice(["gender", "age"])})
    model, tok = load_model(model_dir)
    ours = probe_tasks.pair_lls(model, tok, rows, batch_size=8)
    docs = [{**r, "pair": [r["sent_more"], r["sent_less"]]} for r in rows]
    theirs, their_lls = run_lm_eval(model_dir, tmp_path, docs, docs[:1], 0, spec=PAIRS_TASK)
    assert [ll for p in ours for ll in p] == pytest.approx([ll for p in their_lls for ll in p], abs=1e-4)
    # lm-eval's acc here is "sent_more more likely" (crows_pairs' pct_stereotype; ties would go to sent_more)
    assert probe_tasks.pair_metrics(rows, ours)["pct_stereotype"] == theirs["acc"]


@pytest.mark.parametrize("shots,sampler", [(0, "first_n"), (3, "first_n"), (3, "default")])
def test_an_lm_eval_task_as_a_probe_scores_what_simple_evaluate_does(model_dir, tmp_path, shots, sampler):
    """`lm_eval:TASK` from a folder of one's own lm-eval YAMLs (probes.lm_eval_include): lm-eval builds the
    contexts (its few-shot sampler, first_n or its seeded default), raycf scores them: the same acc, acc_norm
    and per-choice log-likelihoods as simple_evaluate on the same YAML."""
    from raycf.data import load_task
    from raycf.probe.run import probe_task

    test_rows, pool = questions(40, seed=2), questions(12, seed=3)
    theirs, their_lls = run_lm_eval(model_dir, tmp_path, test_rows, pool, shots, sampler=sampler)
    task = load_task(f"lm_eval:{TASK}", shots=shots, lm_eval_include=(str(tmp_path / "tasks"),))
    assert (task.name, task.category, task.shots, len(task.rows)) == (f"lm_eval:{TASK}", "lm_eval", shots, 40)
    if shots:  # the k examples are in every context, once
        assert task.rows[0]["context"].count("Answer:") == shots + 1
    model, tok = load_model(model_dir)
    ours = probe_task(model, tok, task, batch_size=8)
    assert ours.metrics == theirs  # identical, not approximately
    lls = probe_tasks.multiple_choice_lls(model, tok, task.template, task.rows, batch_size=8)
    assert [ll for q in lls for ll in q] == pytest.approx([ll for q in their_lls for ll in q], abs=1e-4)


def _lm_eval_yaml(folder, name: str, data, **spec) -> None:
    import yaml
    folder.mkdir(exist_ok=True)
    write_jsonl(folder / f"{name}.jsonl", data)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump({
        "task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(folder / f"{name}.jsonl")}},
        "test_split": "test", **spec, "metadata": {"version": 2.0}}))


def test_an_lm_eval_group_expands_to_its_tasks_and_other_output_types_are_refused_by_name(tmp_path):
    from raycf.data import DataError, load_task, suite
    folder = tmp_path / "tasks"
    _lm_eval_yaml(folder, "peer_a", questions(6, seed=5), **MC_TASK)
    _lm_eval_yaml(folder, "peer_b", questions(4, seed=6), **MC_TASK)
    _lm_eval_yaml(folder, "peer_gen", questions(4, seed=7), output_type="loglikelihood_rolling",
                  doc_to_text="{{question}}", doc_to_target="{{choices[answer]}}")
    import yaml
    (folder / "peer_group.yaml").write_text(yaml.safe_dump({"group": "peer_group", "task": ["peer_a", "peer_b"]}))
    inc = (str(folder),)
    assert suite(["lm_eval:peer_group", "lm_eval:peer_a"], inc) == ["lm_eval:peer_a", "lm_eval:peer_b"]
    b = load_task("lm_eval:peer_b", lm_eval_include=inc)
    assert (b.version, b.shots, [r["answer"] for r in b.rows]) == (2, 0, [r["answer"] for r in questions(4, 6)])
    assert b.rows[0]["context"] == "Question: " + questions(4, 6)[0]["question"] + "\nAnswer:"
    with pytest.raises(DataError, match=r"^lm_eval:peer_gen: output_type 'loglikelihood_rolling' is not probed by "
                                        r"raycf \(multiple_choice and generate_until only\)"):
        load_task("lm_eval:peer_gen", lm_eval_include=inc)
    with pytest.raises(DataError, match=r"^lm_eval:peer_group is a group; name one of its tasks: lm_eval:peer_a, "):
        load_task("lm_eval:peer_group", lm_eval_include=inc)


def test_the_probe_cli_scores_an_lm_eval_task_from_an_include_folder(model_dir, tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    rows = questions(40, seed=2)
    theirs, _ = run_lm_eval(model_dir, tmp_path, rows, questions(12, seed=3), 2)
    r = subprocess.run([sys.executable, "-m", "raycf.probe", "--model", str(model_dir), "--suite", f"lm_eval:{TASK}",
                        "--lm-eval-include", str(tmp_path / "tasks"), "--shots", "2"], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    table = {tuple(line.split()[:3]): float(line.split()[3]) for line in r.stdout.splitlines()[1:]}
    assert table == {(f"lm_eval:{TASK}", "lm_eval", "acc"): round(theirs["acc"], 4),
                     (f"lm_eval:{TASK}", "lm_eval", "acc_norm"): round(theirs["acc_norm"], 4)}
    bad = subprocess.run([sys.executable, "-m", "raycf.probe", "--model", str(model_dir), "--suite", "lm_eval:x",
                          "--lm-eval-include", str(tmp_path / "nope")], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "is not a folder" in bad.stderr, bad.stderr


CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


@pytest.fixture(scope="module", params=["toy", pytest.param("smollm2", marks=pytest.mark.slow)])
def chat_model(request, model_dir, tmp_path_factory):
    """(model folder, how its template opens a system turn and closes a turn): the peer model whose tokenizer is
    given a ChatML-like template, or a tiny random LLaMA with SmolLM2-135M-Instruct's tokenizer and template."""
    import shutil
    from transformers import AutoTokenizer
    folder = tmp_path_factory.mktemp(f"peer-chat-{request.param}") / "model"
    if request.param == "toy":
        shutil.copytree(model_dir, folder)
        tok = AutoTokenizer.from_pretrained(folder)
        tok.chat_template = CHAT_TEMPLATE
        tok.save_pretrained(folder)
        return folder, ("<|system|>\n", "</s>\n", "<|assistant|>\n")
    tok = AutoTokenizer.from_pretrained(request.getfixturevalue("smollm2_tokenizer_dir"))
    tiny_model("causal", tok, seed=0).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, ("<|im_start|>system\n", "<|im_end|>\n", "<|im_start|>assistant\n")


@pytest.mark.parametrize("shots", [0, 3])
def test_under_a_chat_template_own_and_lm_eval_tasks_score_what_simple_evaluate_with_apply_chat_template_does(
        chat_model, tmp_path, shots):
    """probes.apply_chat_template: a task of raycf's own (its k examples as turns) and the same task as
    `lm_eval:TASK` (lm-eval builds the turns) both give simple_evaluate(apply_chat_template=True,
    fewshot_as_multiturn=True, system_instruction=...)'s acc, acc_norm and per-choice log-likelihoods."""
    from raycf.data import Task, load_task
    from raycf.data.lm_eval_tasks import render_turns
    from raycf.probe.run import probe_task

    chat_model_dir, (system_open, end, assistant_open) = chat_model
    system = "Answer with a number word."
    test_rows, pool = questions(40, seed=2), questions(12, seed=3)
    examples = probe_tasks.fewshot_examples(pool, shots, seed=0)  # lm-eval's first_n reads them in this order
    theirs, their_lls = run_lm_eval(chat_model_dir, tmp_path, test_rows, examples or pool[:1], shots,
                                    apply_chat_template=True, fewshot_as_multiturn=True, system_instruction=system)
    model, tok = load_model(chat_model_dir)
    own = Task(name="sums", category="knowledge", type="multiple_choice", template=TEMPLATE, shots=shots,
               metric=("acc", "acc_norm"), version=1, rows=test_rows, fewshot_rows=pool, source="test")
    assert probe_task(model, tok, own, batch_size=8, chat_choices=system).metrics == theirs  # identical
    lm = load_task(f"lm_eval:{TASK}", shots=shots, lm_eval_include=(str(tmp_path / "tasks"),), chat_system=system)
    assert probe_task(model, tok, lm, batch_size=8, chat_choices=system).metrics == theirs
    first = render_turns(tok, lm.rows[0]["context"])
    assert first.startswith(f"{system_open}{system}{end}") and first.endswith(f"\nAnswer:{end}{assistant_open}")
    assert first.count(assistant_open) == shots + 1  # each example an assistant turn, then the generation prompt
    chat = lambda turns, gp: tok.apply_chat_template([{"role": "system", "content": system}, *turns],  # noqa: E731
                                                     tokenize=False, add_generation_prompt=gp)
    ours = probe_tasks.multiple_choice_lls(model, tok, TEMPLATE, test_rows, examples, batch_size=8, chat=chat)
    assert [ll for q in ours for ll in q] == pytest.approx([ll for q in their_lls for ll in q], abs=1e-4)
    print(f"{shots}-shot under the chat template: raycf and lm-eval {theirs}")
    with pytest.raises(Exception, match="loaded with the chat template"):
        probe_task(model, tok, lm, batch_size=8)


GEN_TASK = {"output_type": "generate_until", "doc_to_text": "Question: {{question}}\nAnswer:",
            "doc_to_target": "{{choices[answer]}}", "target_delimiter": " ", "fewshot_delimiter": "\n\n",
            "generation_kwargs": {"until": ["\n", "Question:"], "max_gen_toks": 6, "do_sample": False},
            "filter_list": [{"name": "first-word", "filter": [{"function": "regex", "regex_pattern": "(\\w+)"},
                                                              {"function": "take_first"}]}],
            "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                             "ignore_case": True}]}


@pytest.mark.parametrize("shots", [0, 2])
def test_an_lm_eval_generate_until_task_runs_on_the_model_in_memory_as_simple_evaluate_runs_it(model_dir, tmp_path,
                                                                                                shots):
    """`lm_eval:TASK` of output_type generate_until: lm-eval's own evaluator runs it on the model already loaded
    (its HFLM around it, no reload), its filter and metric named exact_match_first-word; the same number as
    simple_evaluate loading the model folder itself."""
    import yaml
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from raycf.data import load_task
    from raycf.probe.run import probe_task
    folder = tmp_path / "tasks"
    folder.mkdir()
    write_jsonl(folder / "test.jsonl", questions(30, seed=2))
    write_jsonl(folder / "fewshot.jsonl", questions(4, seed=3))
    name = "raycf_peer_gen"
    (folder / f"{name}.yaml").write_text(yaml.safe_dump({
        "task": name, "dataset_path": "json", "test_split": "test", "fewshot_split": "fewshot",
        "dataset_kwargs": {"data_files": {"test": str(folder / "test.jsonl"), "fewshot": str(folder / "fewshot.jsonl")}},
        "fewshot_config": {"sampler": "first_n"}, **GEN_TASK, "metadata": {"version": 1.0}}))
    out = simple_evaluate(model="hf", model_args={"pretrained": str(model_dir), "dtype": "float32"}, tasks=[name],
                          num_fewshot=shots, batch_size=8, device="cpu", bootstrap_iters=0, random_seed=0,
                          task_manager=TaskManager(include_path=str(folder), include_defaults=False))
    theirs = out["results"][name]["exact_match,first-word"]
    task = load_task(f"lm_eval:{name}", shots=shots, lm_eval_include=(str(folder),))
    assert (task.type, task.metric, task.shots, len(task.rows)) == ("generation", ("exact_match_first-word",), shots, 30)
    model, tok = load_model(model_dir)
    ours = probe_task(model, tok, task, batch_size=8)
    assert ours.metrics == {"exact_match_first-word": theirs} and ours.n == 30
    assert probe_task(model, tok, task, batch_size=8, limit=10).n == 10
    print(f"{shots}-shot generate_until: raycf (model in memory) and simple_evaluate: exact_match {theirs}")
