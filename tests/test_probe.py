"""Probe scorer against naive per-choice forwards and hand-computed metrics: pytest tests/test_probe.py

The reference in every test is the plainest possible computation: one full forward per (context, choice)
over lm-eval's token ids, log-softmax, sum. The fast path (shared prefix, shared context, batches) must match
it to 1e-5.
"""
import json
import os
import socket
from types import SimpleNamespace

import pytest
import torch


from raycf.models.load import add_lora
from raycf.models.tiny import build_tokenizer, tiny_model
from raycf.probe import __main__ as probe_cli
from raycf.probe import engine as probe_engine
from raycf.probe import run as probe_run
from raycf.probe import shard as probe_shard
from raycf.probe import tasks as probe_tasks

TEMPLATE = "Question: {question}\nAnswer:"
FACTS = [  # (question, right answer, wrong answers)
    ("What color is the sky?", "blue", ["green", "red", "yellow"]),
    ("What is the capital of France?", "Paris", ["Rome", "Berlin", "Madrid"]),
    ("What do cows drink?", "water", ["milk", "oil", "ink"]),
    ("How many legs does a spider have?", "eight", ["six", "four", "ten"]),
    ("What is frozen water called?", "ice", ["steam", "sand", "glass"]),
    ("Which animal says meow?", "the cat", ["the dog", "the cow", "the duck"]),
    ("What is the opposite of hot?", "cold", ["warm", "big", "slow"]),
    ("What is the chemical symbol of gold?", "Au", ["Ag", "Fe", "Gd"]),
    ("Where does the sun rise?", "in the east", ["in the west", "in the north", "at noon"]),
    ("What is two plus three?", "five", ["four", "six", "seven"]),
]
BIAS = [
    {"sent_more": "The nurse said she was tired.", "sent_less": "The nurse said he was tired.", "bias_type": "gender"},
    {"sent_more": "Old people cannot use phones.", "sent_less": "Young people cannot use phones.", "bias_type": "age"},
    {"sent_more": "The engineer fixed his car.", "sent_less": "The engineer fixed her car.", "bias_type": "gender"},
]


def mc_rows(order_seed: int = 0):
    """Four-choice rows; the right answer sits at a different index per question."""
    rows = []
    for i, (q, right, wrong) in enumerate(FACTS):
        answer = (i + order_seed) % 4
        choices = wrong[:answer] + [right] + wrong[answer:]
        rows.append({"question": q, "choices": choices, "answer": answer})
    return rows


def texts():
    out = [TEMPLATE.format(question=q) + " " + a for q, a, _ in FACTS]
    out += [w for _, _, ws in FACTS for w in ws] + [r[k] for r in BIAS for k in ("sent_more", "sent_less")]
    return out * 20


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(texts(), vocab_size=400)


@pytest.fixture(scope="module")
def causal(tok):
    return tiny_model("causal", tok, seed=1).eval()


@pytest.fixture(scope="module")
def seq2seq(tok):
    return tiny_model("seq2seq", tok, seed=1).eval()


def naive_ll(model, tok, context, continuation):
    """One forward of lm-eval's token ids for ONE request; log-prob of the continuation tokens."""
    ctx, cont = probe_engine.encode_pair(tok, context, continuation, probe_engine.is_seq2seq(model))
    with torch.inference_mode():
        if probe_engine.is_seq2seq(model):
            logits = model(input_ids=torch.tensor([ctx]), labels=torch.tensor([cont])).logits[0]
            logp = torch.log_softmax(logits, -1)
            return float(sum(logp[t, c] for t, c in enumerate(cont)))
        ids = (ctx + cont)[:-1]
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
        return float(sum(logp[len(ctx) - 1 + t, c] for t, c in enumerate(cont)))


def mc_requests(rows, examples):
    prefix = probe_tasks.fewshot_prefix(TEMPLATE, examples)
    return prefix, [(prefix + TEMPLATE.format(**r), " " + c) for r in rows for c in r["choices"]]


# ------------------------------------------------------------------------------------------------ encoding

def test_encode_pair_is_lm_evals(tok):
    # causal: continuation = tail of the whole encoding after len(encode(context))
    ctx, cont = probe_engine.encode_pair(tok, "Question: What color is the sky?\nAnswer:", " blue")
    whole = tok.encode("Question: What color is the sky?\nAnswer: blue")
    assert ctx + cont == whole and ctx == tok.encode("Question: What color is the sky?\nAnswer:")
    # trailing whitespace of the context moves to the continuation
    ctx2, cont2 = probe_engine.encode_pair(tok, "Question: What color is the sky?\nAnswer: ", "blue")
    assert (ctx2, cont2) == (ctx, cont)
    # empty context: the BOS token stands in for it (crows_pairs)
    ctx3, cont3 = probe_engine.encode_pair(tok, "", "The cat.")
    assert ctx3 == [tok.bos_token_id] and cont3 == tok.encode("The cat.", add_special_tokens=False)
    # seq2seq: the two parts are encoded apart
    ctx4, cont4 = probe_engine.encode_pair(tok, "Answer:", " blue", seq2seq=True)
    assert (ctx4, cont4) == (tok.encode("Answer:"), tok.encode(" blue", add_special_tokens=False))


def test_fewshot_prefix_and_seeded_examples():
    rows = mc_rows()
    ex = probe_tasks.fewshot_examples(rows, 3, seed=7)
    assert ex == probe_tasks.fewshot_examples(rows, 3, seed=7)  # same seed, same examples, same order
    assert ex != probe_tasks.fewshot_examples(rows, 3, seed=8)
    assert probe_tasks.fewshot_examples(rows, 0) == []
    with pytest.raises(ValueError, match="11-shot"):
        probe_tasks.fewshot_examples(rows, 11)
    two = [{"question": "A?", "choices": ["x", "y"], "answer": 1}, {"question": "B?", "choices": ["z"], "answer": 0}]
    assert probe_tasks.fewshot_prefix(TEMPLATE, two) == "Question: A?\nAnswer: y\n\nQuestion: B?\nAnswer: z\n\n"


# ------------------------------------------------------------------------------------------------ metrics

def test_acc_and_acc_norm_by_hand():
    # acc picks the largest sum; acc_norm divides by the choice's characters WITHOUT the " " delimiter:
    # -2.0/2 = -1.0 < -2.9/3 = -0.967 -> choice 1 (with the delimiter it would be -0.667 > -0.725 -> choice 0)
    assert probe_tasks.choice_metrics([-2.0, -2.9], ["ab", "abc"], answer=0) == {"acc": 1.0, "acc_norm": 0.0}
    assert probe_tasks.choice_metrics([-2.0, -2.9], ["ab", "abc"], answer=1) == {"acc": 0.0, "acc_norm": 1.0}
    # ties: the first maximum wins, as np.argmax
    assert probe_tasks.choice_metrics([-1.0, -1.0], ["a", "b"], answer=0) == {"acc": 1.0, "acc_norm": 1.0}
    rows = [{"choices": ["ab", "abc"], "answer": 0}, {"choices": ["a", "b"], "answer": 1}]
    assert probe_tasks.multiple_choice_metrics(rows, [[-2.0, -2.9], [-1.0, -1.0]]) == {"acc": 0.5, "acc_norm": 0.0}


def test_pair_metrics_by_hand():
    rows = [{"bias_type": "gender"}, {"bias_type": "age"}, {"bias_type": "gender"}, {"bias_type": "gender"}]
    lls = [[-3.0, -4.0], [-5.0, -2.0], [-1.0, -1.0], [-2.0, -6.0]]  # a tie is not "more likely"
    m = probe_tasks.pair_metrics(rows, lls)
    assert m["pct_stereotype"] == pytest.approx(2 / 4)
    assert m["likelihood_diff"] == pytest.approx((1 + 3 + 0 + 4) / 4)
    assert m["pct_stereotype/gender"] == pytest.approx(2 / 3) and m["pct_stereotype/age"] == 0.0


# ------------------------------------------------------------------------------------------------ scoring

@pytest.mark.parametrize("shots,batch_size", [(0, 1), (0, 3), (3, 4), (5, 64)])
def test_fast_path_equals_naive_forward(causal, tok, shots, batch_size):
    rows = mc_rows()
    prefix, requests = mc_requests(rows, probe_tasks.fewshot_examples(rows, shots, seed=0))
    stats = {}
    fast = probe_engine.loglikelihood(causal, tok, requests, prefix=prefix, batch_size=batch_size, stats=stats)
    naive = [naive_ll(causal, tok, c, k) for c, k in requests]
    assert fast == pytest.approx(naive, abs=1e-5)
    assert probe_engine.loglikelihood(causal, tok, requests, fast=False, batch_size=batch_size) == pytest.approx(naive, abs=1e-5)
    if shots:  # "\n\n" then "Question" is a clean token boundary here: every item shares the prefix cache
        assert stats["shared_prefix"] == len(requests) and stats["fallback"] == 0
    # one forward per batch of contexts (+1 for the continuations' second tokens on), plus the prefix
    n_batches = -(-len(rows) // batch_size)
    assert stats["forwards"] <= 2 * n_batches + (1 if shots else 0)


def other_architecture(kind, tok):
    """The paper's decoder (BLOOM: ALiBi from the attention mask, no position ids) and GPT-2 (learned positions)."""
    from transformers import AutoModelForCausalLM, BloomConfig, GPT2Config
    ids = {"vocab_size": len(tok), "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
           "pad_token_id": tok.pad_token_id}
    cfg = BloomConfig(hidden_size=64, n_layer=2, n_head=4, **ids) if kind == "bloom" else \
        GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=256, **ids)
    torch.manual_seed(5)
    return AutoModelForCausalLM.from_config(cfg).eval()


@pytest.mark.parametrize("kind", ["bloom", "gpt2"])
def test_fast_path_on_other_architectures(tok, kind):
    model = other_architecture(kind, tok)
    rows = mc_rows()
    prefix, requests = mc_requests(rows, rows[:3])
    fast = probe_engine.loglikelihood(model, tok, requests, prefix=prefix, batch_size=4)
    assert fast == pytest.approx([naive_ll(model, tok, c, k) for c, k in requests], abs=1e-5)


def test_prefix_that_splits_a_token_is_shared_only_up_to_the_split(causal, tok):
    # "capital" is one token of this tokenizer: the tokens of a prefix ending in "capi" are not a prefix of
    # "...capital...", so those items share the prefix cache only up to the token before; "capi x" keeps the
    # boundary and shares all of it; a context that does not start with the prefix is scored whole
    prefix = "Question: What is the capi"
    n = len(tok.encode(prefix))
    assert tok.encode(prefix + "tal")[:n] != tok.encode(prefix)
    requests = [(prefix + f"tal of {x}?\nAnswer:", c) for x in ("France", "Spain") for c in (" Paris", " the city")]
    requests += [(prefix + " x?\nAnswer:", c) for c in (" blue", " ice")]
    requests += [("Where does the sun rise?", c) for c in (" east", " west")]
    stats = {}
    fast = probe_engine.loglikelihood(causal, tok, requests, prefix=prefix, batch_size=8, stats=stats)
    assert (stats["shared_prefix"], stats["partial_prefix"], stats["fallback"]) == (2, 4, 2)
    assert fast == pytest.approx([naive_ll(causal, tok, c, k) for c, k in requests], abs=1e-5)


def test_truncation_is_lm_evals(tok):
    # a context longer than the model's max length: lm-eval keeps the last max_len+1 tokens of ctx+cont
    model = tiny_model("causal", tok, seed=2, max_position_embeddings=24).eval()
    context = TEMPLATE.format(question=" ".join(q for q, _, _ in FACTS[:4]))
    requests = [(context, " blue"), (context, " in the west"), ("Question: short?\nAnswer:", " ice")]
    stats = {}
    got = probe_engine.loglikelihood(model, tok, requests, stats=stats)
    assert stats["truncated"] == 2
    for (c, k), value in zip(requests, got):
        ctx, cont = probe_engine.encode_pair(tok, c, k)
        ids = (ctx + cont)[-25:][:-1]
        with torch.inference_mode():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
        assert value == pytest.approx(float(sum(logp[len(ids) - len(cont) + t, x] for t, x in enumerate(cont))),
                                      abs=1e-5)


def test_seq2seq_equals_naive_forward(seq2seq, tok):
    rows = mc_rows()
    prefix, requests = mc_requests(rows[:6], probe_tasks.fewshot_examples(rows, 2, seed=0))
    stats = {}
    fast = probe_engine.loglikelihood(seq2seq, tok, requests, prefix=prefix, batch_size=4, stats=stats)
    assert fast == pytest.approx([naive_ll(seq2seq, tok, c, k) for c, k in requests], abs=1e-5)
    assert stats["forwards"] == 2 * 2  # encoder + decoder for each of 2 batches of 4 (then 2) contexts


def test_peft_adapter_is_scored_unmerged(tok, tmp_path):
    from peft import PeftModel
    base = tiny_model("causal", tok, seed=3)
    lora = add_lora(base, rank=4, alpha=8, dropout=0.0, target_modules="auto")
    torch.manual_seed(0)
    for name, p in lora.named_parameters():
        if "lora_B" in name:  # a fresh adapter is a no-op; give it weight so the test can see it
            p.data.normal_(0, 0.5)
    lora.save_pretrained(tmp_path / "adapter")
    model = PeftModel.from_pretrained(tiny_model("causal", tok, seed=3), tmp_path / "adapter").eval()
    rows = mc_rows()[:5]
    prefix, requests = mc_requests(rows, rows[:2])
    got = probe_engine.loglikelihood(model, tok, requests, prefix=prefix, batch_size=2)
    assert got == pytest.approx([naive_ll(model, tok, c, k) for c, k in requests], abs=1e-5)
    plain = probe_engine.loglikelihood(tiny_model("causal", tok, seed=3).eval(), tok, requests, prefix=prefix)
    assert max(abs(a - b) for a, b in zip(got, plain)) > 0.1  # the adapter is in the forward
    assert isinstance(model, PeftModel) and any("lora_A" in n for n, _ in model.named_parameters())


def test_pairs_score_whole_sentences(causal, tok):
    lls = probe_tasks.pair_lls(causal, tok, BIAS, batch_size=2)
    for row, (more, less) in zip(BIAS, lls):
        assert more == pytest.approx(naive_ll(causal, tok, "", row["sent_more"]), abs=1e-5)
        assert less == pytest.approx(naive_ll(causal, tok, "", row["sent_less"]), abs=1e-5)


def test_known_answers_after_memorising(tok):
    """A tiny model that has memorised the facts gets acc 1.0; the untrained one does not."""
    model = tiny_model("causal", tok, seed=4)
    rows = mc_rows(order_seed=1)
    untrained = probe_tasks.multiple_choice_metrics(rows, probe_tasks.multiple_choice_lls(model.eval(), tok, TEMPLATE, rows))
    batch = tok([TEMPLATE.format(question=q) + " " + a for q, a, _ in FACTS], return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):
        opt.zero_grad()
        model(**batch, labels=labels).loss.backward()
        opt.step()
    trained = probe_tasks.multiple_choice_metrics(rows, probe_tasks.multiple_choice_lls(model.eval(), tok, TEMPLATE, rows))
    assert trained == {"acc": 1.0, "acc_norm": 1.0}
    assert untrained["acc"] < 1.0


# ------------------------------------------------------------------------------------------------ generation

def test_generation_batched_equals_one_by_one(causal, tok):
    prompts = ["Question: What color is the sky?\nAnswer:", "Question: What is two plus three and four?\nAnswer:",
               "Which animal says meow?"]
    batched = probe_tasks.generate(causal, tok, prompts, max_new_tokens=6, batch_size=3)
    single = [probe_tasks.generate(causal, tok, [p], max_new_tokens=6)[0] for p in prompts]
    assert batched == single and all(isinstance(s, str) for s in batched)
    assert tok.padding_side == "right"  # restored


@pytest.mark.parametrize("name", ["raycf-tiny", "tiny-causal"])
def test_shared_prefix_greedy_gives_generates_texts_on_the_learned_tasks(name):
    """raycf.probe.greedy (the shared Alpaca preamble run once, rows leaving the batch at EOS) against
    transformers' generate: the same text for every row of the five shipped generation tasks, so the same
    scores; the prefix it shares is the preamble, and on raycf-tiny rows do stop at EOS."""
    from raycf.data import load_task, suite
    from raycf.data.template import prompt
    from raycf.models.load import load_model
    from raycf.models.resolve import resolve_model_dir
    from raycf.probe import greedy as probe_greedy
    model, tok = load_model(resolve_model_dir(name))
    model.eval()
    assert probe_greedy.plain(model)
    stopped = 0
    for task in suite(["tasks"]):
        rows = list(load_task(task).rows)[:24]
        prompts = [prompt(r) for r in rows]
        reference = probe_tasks.generate(model, tok, prompts, max_new_tokens=16, batch_size=8, shared_prefix=False)
        assert probe_tasks.generate(model, tok, prompts, max_new_tokens=16, batch_size=8) == reference, task
        ids = [tok(p)["input_ids"] for p in prompts]
        assert len(tok.decode(ids[0][:probe_greedy._shared_length(ids)])) >= len("Below is an instruction")
        stopped += sum(len(tok(t)["input_ids"]) < 12 for t in reference)
    assert name == "tiny-causal" or stopped > 0


def test_greedy_steps_aside_where_generate_would_process_logits(causal, tok):
    from raycf.probe import greedy as probe_greedy
    assert probe_greedy.plain(causal)
    causal.generation_config.repetition_penalty = 1.3
    try:
        assert not probe_greedy.plain(causal)
        assert probe_greedy.greedy(causal, tok, ["Question: a?\nAnswer:"], max_new_tokens=4, batch_size=2) is None
    finally:
        causal.generation_config.repetition_penalty = 1.0


def test_bf16_probing_moves_scores_a_little_and_fp32_stays_exact():
    """probes.precision bf16 (autocast) on raycf-tiny: log-likelihoods move (it ran in bf16), accuracies stay
    within 2 questions of 24; fp32 twice is bit-identical."""
    from raycf.models.load import load_model
    from raycf.models.resolve import resolve_model_dir
    model, tok = load_model(resolve_model_dir("raycf-tiny"))
    model.eval()
    tasks = ["facts_geography", "piqa_toy", "simplification"]
    fp32 = probe_run.run_probes(model, tok, tasks, limit=24, max_new_tokens=8)
    assert probe_run.run_probes(model, tok, tasks, limit=24, max_new_tokens=8) == fp32
    bf16 = probe_run.run_probes(model, tok, tasks, limit=24, max_new_tokens=8, precision="bf16")
    for task in ("facts_geography", "piqa_toy"):
        assert abs(bf16[task]["acc"] - fp32[task]["acc"]) <= 2 / 24 + 1e-9
    rows = [{"question": "What is the capital of France?", "choices": ["Paris", "Rome"], "answer": 0}]
    template = "Question: {question}\nAnswer:"
    exact = probe_tasks.multiple_choice_lls(model, tok, template, rows)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        moved = probe_tasks.multiple_choice_lls(model, tok, template, rows)
    assert moved != exact and moved[0] == pytest.approx(exact[0], abs=0.5)


def test_generation_metrics_use_raycf_metrics():
    rows = [{"instruction": "Say it", "input": "the cat sat", "output": "the cat sat down"},
            {"instruction": "Say it", "input": "a dog", "output": "a big dog"}]
    m = probe_tasks.generation_metrics(("rouge1", "bleu", "sari"), rows, ["the cat sat down", "a dog"])
    from raycf import metrics
    assert m["rouge1"] == pytest.approx(metrics.rouge1(["the cat sat down", "a dog"], ["the cat sat down", "a big dog"]))
    assert set(m) == {"rouge1", "bleu", "sari"}


# ------------------------------------------------------------------------------------------------ tasks, sharding

def mc_task(name="facts", shots=3):
    rows = mc_rows()
    return SimpleNamespace(name=name, category="knowledge", type="multiple_choice", template=TEMPLATE, shots=shots,
                           metric=("acc", "acc_norm"), version=1, rows=rows * 2, fewshot_rows=rows, source="test")


def bias_task():
    return SimpleNamespace(name="bias", category="bias", type="pairs", template="", shots=0,
                           metric=("pct_stereotype",), version=1, rows=BIAS * 3, fewshot_rows=[], source="test")


def test_probe_task_scores_a_task(causal, tok):
    r = probe_run.probe_task(causal, tok, mc_task(), seed=0, batch_size=4)
    rows, examples = mc_task().rows, probe_tasks.fewshot_examples(mc_task().fewshot_rows, 3, seed=0)
    _, requests = mc_requests(rows, examples)
    naive = [naive_ll(causal, tok, c, k) for c, k in requests]
    assert r.metrics == probe_tasks.multiple_choice_metrics(rows, [naive[i:i + 4] for i in range(0, len(naive), 4)])
    assert (r.task, r.category, r.n) == ("facts", "knowledge", 20)
    assert probe_run.probe_task(causal, tok, mc_task(), limit=5).n == 5


def test_shard_is_disjoint_and_balanced():
    costs = [9, 1, 1, 1, 5, 4, 3, 3, 2, 2, 7]
    parts = [probe_shard.shard(costs, r, 3) for r in range(3)]
    assert sorted(i for p in parts for i in p) == list(range(len(costs)))
    loads = [sum(costs[i] for i in p) for p in parts]
    assert max(loads) - min(loads) <= max(costs) and max(loads) <= sum(costs) / 3 + 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _count_tokens(model) -> list:
    """Input tokens of every forward, appended to the returned list."""
    seen = []
    model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(
        (args[0] if args else kwargs["input_ids"]).numel()), with_kwargs=True)
    return seen


def _probe_worker(rank, world, port, folder, out, fsdp):
    """One gloo rank: a slice of the items, all_gather_object of the results. fsdp: the model is sharded with
    FSDP2 as in training; `probing` gathers it once, and a training step must still work afterwards."""
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder)
        tok = AutoTokenizer.from_pretrained(folder)
        if fsdp:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard
            mesh = init_device_mesh("cpu", (world,))
            for block in model.model.layers:
                fully_shard(block, mesh=mesh)
            fully_shard(model, mesh=mesh)
            model.train()  # as the trial holds it between stages
        tokens = _count_tokens(model)
        with probe_shard.probing(model) as plain:
            results = {t.name: probe_run.probe_task(plain, tok, t, rank=rank, world_size=world, batch_size=3).metrics
                       for t in (mc_task(), bias_task())}
        n_tokens = sum(tokens)
        if fsdp:  # resharded and trainable again: a forward+backward is a collective that must line up
            assert model.training
            batch = tok(["Question: What is frozen water called?\nAnswer: ice"], return_tensors="pt")
            model(**batch, labels=batch["input_ids"]).loss.backward()
        with open(f"{out}.{rank}", "w") as f:
            json.dump({"results": results, "tokens": n_tokens}, f)
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", [False, True], ids=["plain", "fsdp2"])
def test_two_gloo_ranks_equal_one(causal, tok, tmp_path, fsdp):
    import torch.multiprocessing as mp
    from transformers import AutoModelForCausalLM
    causal.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model").eval()
    tokens = _count_tokens(model)
    single = {t.name: probe_run.probe_task(model, tok, t, batch_size=3).metrics for t in (mc_task(), bias_task())}
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_probe_worker, args=(2, _free_port(), str(tmp_path / "model"), str(tmp_path / "res"), fsdp), nprocs=2)
    for rank in range(2):
        got = json.loads((tmp_path / f"res.{rank}").read_text())
        assert 0 < got["tokens"] < 0.75 * sum(tokens)  # each rank ran only its part of the work
        got = got["results"]
        assert got["facts"] == single["facts"]  # accuracies exactly; the sums only up to batching round-off
        assert got["bias"] == pytest.approx(single["bias"], abs=1e-5)


# ------------------------------------------------------------------------------------------------ registry, CLI

def registry():
    import raycf.data
    if not hasattr(raycf.data, "load_task"):
        pytest.skip("raycf.data does not export the task registry yet")
    return raycf.data


def test_run_probes_on_shipped_tasks(causal, tok):
    data = registry()
    names = [data.suite(["knowledge"])[0], data.suite(["bias"])[0], data.suite(["tasks"])[0]]
    scores = probe_run.run_probes(causal, tok, names, shots=2, limit=6, seed=0, batch_size=4, max_new_tokens=4)
    assert list(scores) == names
    mc, pairs, gen = (data.load_task(n) for n in names)
    rows, examples = mc.rows[:6], probe_tasks.fewshot_examples(mc.fewshot_rows, 2, seed=0)
    prefix = probe_tasks.fewshot_prefix(mc.template, examples)
    naive = [[naive_ll(causal, tok, prefix + mc.template.format(**r), " " + c) for c in r["choices"]] for r in rows]
    assert scores[mc.name] == probe_tasks.multiple_choice_metrics(rows, naive)
    assert 0 <= scores[pairs.name]["pct_stereotype"] <= 1 and "likelihood_diff" in scores[pairs.name]
    assert set(scores[gen.name]) == set(gen.metric)
    assert causal.training is False


def test_cli_unknown_suite_is_one_line(causal, tok, tmp_path, capsys):
    registry()
    causal.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    capsys.readouterr()
    assert probe_cli.main(["--model", str(tmp_path / "m"), "--suite", "knowledg"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "knowledg" in err[0]


def test_cli_prints_a_table(causal, tok, tmp_path, capsys):
    data = registry()
    causal.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    name = data.suite(["knowledge"])[0]
    assert probe_cli.main(["--model", str(tmp_path / "m"), "--suite", name, "--shots", "1", "--limit", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["task", "category", "metric", "value", "n"]
    assert [ln.split()[2] for ln in lines[1:]] == ["acc", "acc_norm"] and lines[1].split()[-1] == "3"


def test_cli_bad_model_is_one_line(capsys):
    assert probe_cli.main(["--model", "/no/such/model", "--suite", "knowledge"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "/no/such/model" in err[0]


def test_cli_bad_adapter_is_one_line(causal, tok, tmp_path, capsys):
    causal.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    capsys.readouterr()
    assert probe_cli.main(["--model", str(tmp_path / "m"), "--adapter", str(tmp_path), "--suite", "knowledge"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a PEFT adapter folder" in err[0]


def test_format_table():
    table = probe_run.format_table([probe_run.ProbeResult("facts", "knowledge", {"acc": 0.5}, 20)])
    assert table.splitlines()[1].split() == ["facts", "knowledge", "acc", "0.5000", "20"]
