"""Conversation rows (messages, ShareGPT) and chat-template training rows: the loss mask token by token on a tiny
byte-level tokenizer given a ChatML-like template (raycf.data.chat, raycf.train.encode_row)."""
import json

import pytest

from raycf.data import DataError, load_rows
from raycf.data import chat
from raycf.train import IGNORE, encode, encode_row

TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
TURNS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "the quick fox"},
         {"role": "assistant", "content": "a lazy dog"}, {"role": "user", "content": "near the river"},
         {"role": "assistant", "content": "bank today"}]


@pytest.fixture
def tok(toy_tokenizer):
    toy_tokenizer.chat_template = TEMPLATE
    yield toy_tokenizer
    toy_tokenizer.chat_template = None


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_a_multi_turn_conversation_has_the_loss_on_every_assistant_turn_token_by_token(tok):
    pieces = [("<|system|>\nBe brief.</s>\n<|user|>\nthe quick fox</s>\n<|assistant|>\n", False),
              ("a lazy dog</s>\n", True), ("<|user|>\nnear the river</s>\n<|assistant|>\n", False),
              ("bank today</s>\n", True)]  # the template's text, cut by hand at the assistant turns
    want_ids = [t for text, _ in pieces for t in ids(tok, text)]
    want_labels = [t if target else IGNORE for text, target in pieces for t in ids(tok, text)]
    ex = encode_row({"messages": TURNS}, tok, "causal", "chat")
    assert (ex.input_ids, ex.labels) == (want_ids, want_labels)
    assert "".join(p for p, _ in pieces) == tok.apply_chat_template(TURNS, tokenize=False)
    assert ex.targets == len(ids(tok, "a lazy dog</s>\n")) + len(ids(tok, "bank today</s>\n"))
    sharegpt = {"conversations": [{"from": {"user": "human", "assistant": "gpt"}.get(t["role"], t["role"]),
                                   "value": t["content"]} for t in TURNS]}
    assert encode_row(sharegpt, tok, "causal", "chat") == ex  # the same conversation in ShareGPT's keys


def test_an_instruction_row_in_the_chat_template_is_one_exchange_after_the_system_prompt(tok):
    row = {"instruction": "Repeat the input.", "input": "the quick fox", "output": "the quick fox"}
    ex = encode_row(row, tok, "causal", "chat", system="Be brief.")
    context = "<|system|>\nBe brief.</s>\n<|user|>\nRepeat the input.\n\nthe quick fox</s>\n<|assistant|>\n"
    answer = "the quick fox</s>\n"
    assert ex.input_ids == ids(tok, context) + ids(tok, answer)
    assert ex.labels == [IGNORE] * len(ids(tok, context)) + ids(tok, answer)
    # without an input: the instruction alone; a conversation's own system turn wins over data.system_prompt
    assert encode_row({**row, "input": ""}, tok, "causal", "chat").input_ids[:len(ids(tok, "<|user|>\nRepeat"))] \
        == ids(tok, "<|user|>\nRepeat")
    assert encode_row({"messages": TURNS}, tok, "causal", "chat", system="Other.") == \
        encode_row({"messages": TURNS}, tok, "causal", "chat")


def test_conversation_rows_are_checked_row_by_row(tmp_path):
    bad = [{"messages": [{"role": "user", "content": "hi"}]},
           {"messages": [{"role": "bot", "content": "hi"}]},
           {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": 3}]},
           {"messages": []},
           {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                         {"role": "user", "content": "c"}]},
           {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "s"},
                         {"role": "assistant", "content": "b"}]},
           {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}]
    f = tmp_path / "conv.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in bad))
    with pytest.raises(DataError) as e:
        load_rows(f, "generation")
    assert str(e.value).splitlines() == [
        f"{f}:1: 'messages' has no assistant turn: nothing to train on; add the assistant's answer",
        f"{f}:2: 'messages'[0].role is 'bot'; give one of system, user, assistant",
        f"{f}:3: 'conversations'[1].value must be a string, got int",
        f"{f}:4: 'messages' must be a non-empty list of turns, e.g. [{{\"role\": ..., \"content\": ...}}]",
        f"{f}:5: 'messages' ends with a user turn; end the conversation with the assistant's answer",
        f"{f}:6: 'messages': a system turn after the first; put the system prompt first"]
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(bad[-1]) + "\n")
    assert load_rows(good) == [bad[-1]]  # the type is inferred: a generation (training) row


def test_conversations_need_the_chat_template_and_a_tokenizer_that_has_one(toy_tokenizer, tok):
    with pytest.raises(DataError, match=r"^conversation rows \(messages, conversations\) train in a chat template; "
                                        r"set data.template: chat$"):
        encode_row({"messages": TURNS}, tok, "causal")
    tok.chat_template = None
    with pytest.raises(DataError, match=r"^simplification: data.template is chat, but this tokenizer has no chat "
                                        r"template; use an instruct model's tokenizer"):
        encode([{"messages": TURNS}], toy_tokenizer, "causal", 512, source="simplification", template="chat")
    with pytest.raises(DataError, match="for causal models"):
        tok.chat_template = TEMPLATE
        encode_row({"messages": TURNS}, tok, "seq2seq", "chat")


def test_a_template_that_rewrites_earlier_turns_is_refused(tok):
    tok.chat_template = ("{% for m in messages %}{{ m['content'] }}{% if loop.last %} [{{ messages|length }}]"
                         "{% endif %}\n{% endfor %}{% if add_generation_prompt %}>{% endif %}")
    with pytest.raises(DataError, match="a shorter one is not a prefix of a longer one"):
        chat.encode(tok, TURNS)


def test_generation_probes_prompt_in_the_chat_template_as_training_does(tok):
    from raycf.data.registry import Task
    from raycf.models.tiny import tiny_model
    from raycf.data.template import PROMPT_WITH_INPUT
    from raycf.probe import tasks as probe_tasks
    from raycf.probe.run import generation_prompts, probe_task
    rows = [{"instruction": "Repeat the input.", "input": w, "output": w} for w in ("the quick fox", "a lazy dog")]
    task = Task(name="mine", category="tasks", type="generation", template=PROMPT_WITH_INPUT, shots=0,
                metric=("rouge1",), version=1, rows=rows, fewshot_rows=[], source="test")
    model = tiny_model("causal", tok, seed=0)
    by_hand = [f"<|system|>\nBe brief.</s>\n<|user|>\nRepeat the input.\n\n{r['input']}</s>\n<|assistant|>\n"
               for r in rows]
    assert generation_prompts(task, rows, tok, "Be brief.") == by_hand
    assert generation_prompts(task, rows)[1] == PROMPT_WITH_INPUT.format(instruction="Repeat the input.",
                                                                         input="a lazy dog")
    want = probe_tasks.generation_metrics(("rouge1",), rows, probe_tasks.generate(model, tok, by_hand,
                                                                                 max_new_tokens=6))
    got = probe_task(model, tok, task, max_new_tokens=6, chat_system="Be brief.").metrics
    alpaca = probe_task(model, tok, task, max_new_tokens=6).metrics
    assert got == want and set(got) == {"rouge1"}
    print(f"chat {got}, alpaca {alpaca}")


SMOL_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


@pytest.mark.slow
def test_smollm2s_own_template_puts_the_loss_on_its_assistant_turns_and_training_lowers_hfs_loss(
        smollm2_tokenizer_dir):
    """SmolLM2-135M-Instruct's tokenizer and ChatML template (which adds its own system turn when a conversation
    has none): a two-exchange conversation cut by hand at the assistant turns gives encode_row's ids and labels
    token by token; a tiny LLaMA of SmolLM2's vocabulary trained by raycf.train on such rows has, before and after,
    the loss that HF computes from the hand-cut labels, and training lowers it; a generation probe's prompt is
    the hand-written ChatML up to the assistant's turn."""
    import torch
    from transformers import AutoTokenizer
    from raycf import train as T
    from raycf.data.registry import Task
    from raycf.data.template import PROMPT_WITH_INPUT
    from raycf.models.tiny import tiny_model
    from raycf.probe.run import generation_prompts
    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    words = ["the quick fox", "a lazy dog", "near the river", "bank today", "over the hill", "under a tree"]

    def conversation(i):
        a, b, c, d = (words[(i + j) % len(words)] for j in range(4))
        turns = [{"role": "user", "content": a}, {"role": "assistant", "content": b},
                 {"role": "user", "content": c}, {"role": "assistant", "content": d}]
        pieces = [(f"{SMOL_SYSTEM}<|im_start|>user\n{a}<|im_end|>\n<|im_start|>assistant\n", False),
                  (f"{b}<|im_end|>\n", True), (f"<|im_start|>user\n{c}<|im_end|>\n<|im_start|>assistant\n", False),
                  (f"{d}<|im_end|>\n", True)]
        return turns, pieces

    rows, hand = [], []
    for i in range(6):
        turns, pieces = conversation(i)
        assert "".join(p for p, _ in pieces) == tok.apply_chat_template(turns, tokenize=False)
        ids_ = [t for text, _ in pieces for t in ids(tok, text)]
        labels = [t if target else IGNORE for text, target in pieces for t in ids(tok, text)]
        rows.append({"messages": turns})
        hand.append((ids_, labels))
    ex = [encode_row(r, tok, "causal", "chat") for r in rows]
    assert [(e.input_ids, e.labels) for e in ex] == hand  # token by token
    assert ids(tok, "<|im_start|>user") == [tok.convert_tokens_to_ids("<|im_start|>"), ids(tok, "user")[0]]

    model = tiny_model("causal", tok, seed=0)

    def hf_loss():  # HF's own masked mean over the hand-cut labels, one row at a time, token-weighted
        model.eval()
        with torch.no_grad():
            parts = [(float(model(input_ids=torch.tensor([i]), labels=torch.tensor([lab])).loss),
                      sum(x != IGNORE for x in lab[1:])) for i, lab in hand]
        return sum(loss * n for loss, n in parts) / sum(n for _, n in parts)

    before = hf_loss()
    assert T.eval_loss(model, ex, "causal", tok.pad_token_id) == pytest.approx(before, abs=1e-5)
    T.train_stage(model, ex, kind="causal", pad_id=tok.pad_token_id, batch_size=3, steps=8, grad_accum=1, lr=1e-2,
                  weight_decay=0.0, schedule="constant", warmup=0, max_grad_norm=1.0, seed=0)
    after = hf_loss()
    assert T.eval_loss(model, ex, "causal", tok.pad_token_id) == pytest.approx(after, abs=1e-5)
    assert after < before - 1.0, (before, after)
    print(f"SmolLM2 template, assistant-turn loss: {before:.3f} -> {after:.3f} in 8 steps")

    task = Task(name="mine", category="tasks", type="generation", template=PROMPT_WITH_INPUT, shots=0,
                metric=("rouge1",), version=1, rows=[{"instruction": "Repeat.", "input": "a lazy dog", "output": ""}],
                fewshot_rows=[], source="test")
    assert generation_prompts(task, task.rows, tok, "Be brief.") == [
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nRepeat.\n\na lazy dog<|im_end|>\n"
        "<|im_start|>assistant\n"]


def test_a_template_given_in_the_config_makes_a_tokenizer_without_one_train_and_probe_in_it(toy_tokenizer, capsys,
                                                                                          monkeypatch, cache_dir):
    """data.chat_template (a .jinja file, read into the trial's tokenizer): a tiny model without a template of its
    own passes the dry run under data.template chat, encodes rows as the template renders them, and keys its
    stages and probes on the template's text (a changed template is new work; none given: the keys as before)."""
    from pathlib import Path
    from raycf import config
    from raycf.sweep import __main__ as sweep_cli
    from raycf.config.checks import given_template
    from raycf.trial.plan import make_plan
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    jinja = "tests/data/chatml_like.jinja"
    argv = ["--space", "tests/bad_inputs/base.yaml", "--set", "data.template=chat", "--dry-run"]
    assert sweep_cli.main(argv + ["--set", f"data.chat_template={jinja}"]) == 0
    assert sweep_cli.main(argv) == 2  # without it: tiny-causal's tokenizer has none
    assert "no chat template" in capsys.readouterr().err
    over = {"model.name": "tiny-causal", "stages": ["simplification"], "data.template": "chat"}
    cfg = config.load(None, {**over, "data.chat_template": jinja})
    assert cfg.data.chat_template == str(root / jinja)  # absolute: trials run elsewhere
    toy_tokenizer.chat_template = None
    try:
        tok = given_template(cfg, toy_tokenizer)
        assert tok.chat_template == (root / jinja).read_text()
        assert encode_row({"messages": TURNS}, tok, "causal", "chat").input_ids == \
            ids(tok, tok.apply_chat_template(TURNS, tokenize=False))
    finally:
        toy_tokenizer.chat_template = None
    model_dir = Path(cache_dir) / "x"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "config.json").write_text('{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}')
    plans = [make_plan(config.load(None, o), model_dir) for o in
             ({**over, "data.chat_template": jinja}, {**over, "data.chat_template": "{{ messages }}"}, over,
              {**over, "data.template": "alpaca"}, {k: v for k, v in over.items() if k != "data.template"})]
    keys = [(p.stage_keys[0], p.probe_keys[1]) for p in plans]
    assert len(set(keys[:4])) == 4 and keys[3] == keys[4]  # each template its own work; alpaca unchanged by it
