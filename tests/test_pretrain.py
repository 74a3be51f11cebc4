"""raycf-tiny: packing, determinism, the shipped copy is what raycf.pretrain makes of today's corpus, and
(slow) that it is well above chance on every probe category and then forgets when fine-tuned on a stage.

The scorer here is a few lines of lm-eval-style log-likelihood multiple choice, independent of
raycf.probe: context = template.format(**row) (k-shot rows first), continuation = " " + choice.
"""
import random
from pathlib import Path

import pytest
import torch

from raycf.data import load_stage, load_task, task_names
from raycf.models.pretrain import SHIPPED, PretrainConfig, batches, build_key, pretrain


def test_batches_cover_every_document_once_within_the_token_budget():
    import random
    docs = [[0] * n for n in (3, 9, 4, 4, 12, 1, 7, 7, 2, 5)]
    plan = batches(docs, tokens=16, rng=random.Random(0))
    assert sorted(i for b in plan for i in b) == list(range(10))
    assert all(len(b) * max(len(docs[i]) for i in b) <= 16 for b in plan)
    assert plan == batches(docs, tokens=16, rng=random.Random(0))  # seeded
    assert plan == GOLDEN_PLAN


GOLDEN_PLAN = [[1], [5, 8, 0, 3], [4], [2, 9], [7, 6]]


def test_pretraining_is_deterministic(tmp_path):
    from raycf.models.tiny import tiny_tokenizer
    tok = tiny_tokenizer(tmp_path)
    cfg = PretrainConfig(steps=3, batch_tokens=256,
                         shape=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                    num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128))
    a, b = (pretrain(tok, cfg, log=lambda s: None).state_dict() for _ in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- a tiny independent scorer ----------------------------------------------------------------------

@torch.no_grad()
def loglik(model, tok, pairs, batch=32):
    """Sum of log p(continuation | context) per (context, continuation) pair."""
    out = []
    for i in range(0, len(pairs), batch):
        enc = [(tok(c, add_special_tokens=False)["input_ids"], tok(c + x, add_special_tokens=False)["input_ids"])
               for c, x in pairs[i:i + batch]]
        width = max(len(w) for _, w in enc)
        ids = torch.tensor([w + [tok.pad_token_id] * (width - len(w)) for _, w in enc])
        logp = torch.log_softmax(model(input_ids=ids).logits.float(), -1)
        for j, (c, w) in enumerate(enc):
            n = max(len(c), 1)  # an empty context is scored from the second token on
            out.append(logp[j, n - 1:len(w) - 1].gather(1, torch.tensor(w[n:])[:, None]).sum().item())
    return out


def probe(model, tok, names):
    """name -> accuracy (multiple choice) or stereotype preference (pairs), at each task's default k."""
    model.eval()
    res = {}
    for name in names:
        t = load_task(name)
        if t.type == "pairs":
            # lm-eval's empty context is the BOS token
            ll = loglik(model, tok, [(tok.bos_token, s) for r in t.rows for s in (r["sent_more"], r["sent_less"])])
            res[name] = sum(ll[2 * i] > ll[2 * i + 1] for i in range(len(t.rows))) / len(t.rows)
            continue
        shots = "".join(t.template.format(**r) + " " + r["choices"][r["answer"]] + "\n\n"
                        for r in random.Random(0).sample(t.fewshot_rows, t.shots))  # as raycf.probe draws them
        ll = loglik(model, tok, [(shots + t.template.format(**r), " " + c) for r in t.rows for c in r["choices"]])
        correct, i = 0, 0
        for r in t.rows:
            scores = ll[i:i + len(r["choices"])]
            i += len(r["choices"])
            correct += scores.index(max(scores)) == r["answer"]
        res[name] = correct / len(t.rows)
    return res


def chance(name):
    t = load_task(name)
    return sum(1 / len(r["choices"]) for r in t.rows) / len(t.rows)


def finetune(model, tok, stage, steps=50, lr=1e-3, batch=8):
    """Plain loop, Alpaca prompt, loss on the response tokens only."""
    from raycf.data.template import prompt
    rows, rng = load_stage(stage), random.Random(0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        seqs = []
        for r in rng.sample(rows, batch):
            c = tok(prompt(r), add_special_tokens=False)["input_ids"]
            o = tok(r["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            seqs.append((c + o, [-100] * len(c) + o))
        width = max(len(s) for s, _ in seqs)
        ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s, _ in seqs])
        labels = torch.tensor([l + [-100] * (width - len(l)) for _, l in seqs])
        model(input_ids=ids, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return model


# Measured on 2 CPU cores with this file's scorer; tolerance covers BLAS differences across CPUs.
MEASURED = {"facts_geography": 0.5222, "facts_science": 0.5176, "facts_words": 0.7176, "boolq_toy": 0.6706,
            "mathqa_toy": 0.5133, "piqa_toy": 0.8875, "race_high_toy": 0.5154, "race_middle_toy": 1.0,
            "crows_pairs_toy": 0.7248}
MEASURED_AFTER_SIMPLIFICATION = {"facts_geography": 0.2556, "facts_science": 0.3294, "facts_words": 0.4471,
                                 "boolq_toy": 0.7118, "mathqa_toy": 0.5, "piqa_toy": 0.6375, "race_high_toy": 0.5231,
                                 "race_middle_toy": 0.9615, "crows_pairs_toy": 0.6318}


def test_shipped_raycf_tiny_matches_todays_corpus_tokenizer_and_settings(tmp_path):
    """The shipped weights were pretrained on exactly what the package would pretrain on today; a change to
    the corpus, the shipped sets (the tokenizer's texts) or PretrainConfig needs `python -m raycf.pretrain --ship`."""
    import json
    from raycf.models.resolve import resolve_model_dir
    from raycf.models.tiny import tiny_tokenizer
    assert resolve_model_dir("raycf-tiny") == SHIPPED
    shipped = json.loads((SHIPPED / "pretrain.json").read_text())
    assert build_key(tmp_path) == shipped["key"]
    tok = tiny_tokenizer(tmp_path)
    assert (SHIPPED / "tokenizer.json").read_text() == (Path(tok.name_or_path) / "tokenizer.json").read_text()


@pytest.mark.slow
def test_raycf_tiny_is_well_above_chance_then_forgets():
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model, tok = AutoModelForCausalLM.from_pretrained(SHIPPED), AutoTokenizer.from_pretrained(SHIPPED)
    torch.set_num_threads(2)
    names = [n for n in task_names() if load_task(n).type != "generation"]
    acc = probe(model, tok, names)
    print({k: round(v, 4) for k, v in acc.items()})
    for name in names:
        if name != "crows_pairs_toy":
            assert acc[name] >= chance(name) + 0.15, (name, acc[name], chance(name))
        assert acc[name] == pytest.approx(MEASURED[name], abs=0.03), name
    after = probe(finetune(model, tok, "simplification"), tok, names)
    print("after 50 steps of simplification", {k: round(v, 4) for k, v in after.items()})
    for name in names:
        assert after[name] == pytest.approx(MEASURED_AFTER_SIMPLIFICATION[name], abs=0.08), name
    drops = [acc[n] - after[n] for n in names if n != "crows_pairs_toy"]
    assert sum(drops) / len(drops) > 0.1  # forgetting is visible: measured 0.12
