"""raycf.train: response-only loss, batching, and FSDP2 / DDP agreeing with one process."""
import os

import pytest
import torch

from raycf import train as T
from tests.conftest import toy_rows

BF16_TOLERANCE = 5e-3  # bf16 training against fp32: per-stage mean loss, absolute (losses 4-6; seen: 2.2e-3)
HP = dict(batch_size=8, steps=6, grad_accum=1, lr=3e-3, weight_decay=0.0, schedule="constant", warmup=0,
          max_grad_norm=1.0, seed=0)


def _model(kind, tok, lora=False):
    from raycf.models.load import add_lora
    from raycf.models.tiny import tiny_model
    m = tiny_model(kind, tok, seed=0)
    return add_lora(m, 4, 8, 0.0, "auto") if lora else m


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_loss_sum_equals_hf_mean_loss(toy_tokenizer, kind):
    tok = toy_tokenizer
    ex = T.encode(toy_rows(8), tok, kind, 256)
    batch = T.collate(ex, tok.pad_token_id, kind)
    model = _model(kind, tok).eval()
    with torch.no_grad():
        ours = float(T.loss_sum(model, batch, kind)) / sum(e.targets for e in ex)
        ref = float(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          labels=batch["labels"]).loss)
    assert ours == pytest.approx(ref, abs=1e-5)


def test_prompt_tokens_carry_no_loss(toy_tokenizer):
    from raycf.data.template import prompt
    row = toy_rows(1)[0]
    ex = T.encode([row], toy_tokenizer, "causal", 256)[0]
    n_prompt = len(toy_tokenizer(prompt(row))["input_ids"])
    assert ex.labels[:n_prompt] == [T.IGNORE] * n_prompt
    assert ex.labels[n_prompt:] == ex.input_ids[n_prompt:]
    assert ex.labels[-1] == toy_tokenizer.eos_token_id


def test_too_long_rows_are_one_clear_error(toy_tokenizer):
    with pytest.raises(T.DataError, match=r"rows \(first: row 1\) are longer than optim.max_length=8"):
        T.encode(toy_rows(4), toy_tokenizer, "causal", 8, source="mystage")


def test_batch_plan_is_seeded_and_cuts_padding(toy_tokenizer):
    ex = T.encode(toy_rows(256), toy_tokenizer, "causal", 256)
    a, b = T.batch_plan(ex, 8, 20, seed=3), T.batch_plan(ex, 8, 20, seed=3)
    assert a == b and a != T.batch_plan(ex, 8, 20, seed=4)
    assert all(len(x) == 8 for x in a)

    def pad(plan):
        return sum(max(ex[i].length for i in b) * len(b) - sum(ex[i].length for i in b) for b in plan)
    import random
    rng = random.Random(0)
    naive = [rng.sample(range(len(ex)), 8) for _ in range(20)]
    assert pad(a) < 0.5 * pad(naive)


def test_microbatches_partition_the_global_batch(toy_tokenizer):
    ex = T.encode(toy_rows(64), toy_tokenizer, "causal", 256)
    batch = list(range(16))
    parts = [m for r in range(2) for m in T.my_microbatches(batch, ex, 2, r, 2)]
    assert sorted(i for m in parts for i in m) == batch and all(len(m) == 4 for m in parts)


def _ex(ids, n_prompt):
    return T.Example(list(ids), [T.IGNORE] * n_prompt + list(ids[n_prompt:]))


def test_shared_prefix_rows_by_hand():
    """Two examples sharing [5, 6, 7]: one row [5 6 7 | 8 9 | 3 4 2], positions restart after the prefix,
    each position's label is its own example's next target, and each rest sees the prefix and itself only."""
    a, b = _ex([5, 6, 7, 8, 9], 4), _ex([5, 6, 7, 3, 4, 2], 4)  # prompts [5 6 7 8], [5 6 7 3]
    got = T.pack_shared_prefix([a, b], sdpa=True)
    assert got["input_ids"].tolist() == [[5, 6, 7, 8, 9, 3, 4, 2]]
    assert got["position_ids"].tolist() == [[0, 1, 2, 3, 4, 3, 4, 5]]
    I = T.IGNORE
    assert got["labels"].tolist() == [[I, I, I, 9, I, 4, 2, I]]
    allowed = got["attention_mask"][0, 0].int().tolist()
    assert allowed[4] == [1, 1, 1, 1, 1, 0, 0, 0]  # 9 sees the prefix and 8
    assert allowed[6] == [1, 1, 1, 0, 0, 1, 1, 0]  # 4 sees the prefix and 3, not a's rest
    float_mask = T.pack_shared_prefix([a, b], sdpa=False)["attention_mask"][0, 0]
    assert ((float_mask == 0) == got["attention_mask"][0, 0]).all()
    assert T.pack_shared_prefix([a, _ex([1, 6, 7, 8, 9], 4)], sdpa=True) is None  # nothing shared
    assert T.pack_shared_prefix([a], sdpa=True) is None


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_shared_prefix_rows_equal_padded_batch(toy_tokenizer, monkeypatch, attn):
    """Loss and every LoRA gradient on packed rows (three rows here) equal those on the padded batch."""
    monkeypatch.setattr(T, "PACK_ROW_TOKENS", 160)
    tok = toy_tokenizer
    ex = T.encode(toy_rows(12), tok, "causal", 256)
    model = _model("causal", tok, lora=True)
    model.config._attn_implementation = attn
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)  # a live adapter: its gradients all matter
    results = []
    for batch in (T.collate(ex, tok.pad_token_id, "causal"), T.pack_shared_prefix(ex, sdpa=attn == "sdpa")):
        model.zero_grad()
        loss = T.loss_sum(model, batch, "causal")
        loss.backward()
        results.append((float(loss), [p.grad.clone() for p in model.parameters() if p.grad is not None],
                        batch["input_ids"].shape))
    (padded, g_padded, s_padded), (packed, g_packed, s_packed) = results
    assert s_packed[0] == 3 and s_packed[0] * s_packed[1] < 0.8 * s_padded[0] * s_padded[1]
    assert packed == pytest.approx(padded, rel=1e-6)
    assert len(g_packed) == len(g_padded) == 2 * 7 * 2  # A and B of 7 layers in 2 blocks
    for x, y in zip(g_packed, g_padded):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)


def _losses(strategy, kind, lora, bf16=False):
    """Per-stage losses of two 3-step stages; distributed when a process group is up. bf16: as a trial
    with resources.mixed_precision bf16 trains (FSDP2's bf16 policy, bf16 autocast)."""
    from tests.conftest import toy_rows as rows
    from raycf.data.template import prompt
    from raycf.models.tiny import build_tokenizer
    tok = build_tokenizer([prompt(r) + r["output"] for r in rows(200, seed=1)], vocab_size=400)
    model = T.wrap(_model(kind, tok, lora), strategy, torch.device("cpu"), bf16)
    ex = T.encode(rows(64), tok, kind, 256)
    return [T.train_stage(model, ex, kind=kind, pad_id=tok.pad_token_id, **{**HP, "steps": 3, "seed": s},
                          autocast_dtype=torch.bfloat16 if bf16 else None).loss for s in (0, 1)]


def _worker(rank, world, kind, lora, out, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist
    dist.init_process_group("gloo", rank=rank, world_size=world)
    losses = {(strategy, bf16): _losses(strategy, kind, lora, bf16)  # one process group
              for strategy in ("fsdp", "ddp") for bf16 in (False, True)}
    if rank == 0:
        torch.save(losses, out)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("kind,lora", [("causal", True), ("causal", False), ("seq2seq", True)])
def test_fsdp2_and_ddp_match_one_process(tmp_path, monkeypatch, kind, lora):
    """Two stages of 3 steps: per-stage losses of 2-rank FSDP2 and DDP equal a 1-process run to 1e-4.
    The ranks train causal models on shared-prefix packed rows, the single process on padded batches.
    In bf16 (resources.mixed_precision) every strategy's losses stay within BF16_TOLERANCE of fp32's."""
    import torch.multiprocessing as mp
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(T, "MIN_SHARED_FRACTION", float("inf"))  # spawned ranks keep the default
    try:
        single = _losses("fsdp", kind, lora)  # this process, no process group: plain training
        single_bf16 = _losses("fsdp", kind, lora, bf16=True)
    finally:
        torch.set_num_threads(threads)
        monkeypatch.undo()
    out = tmp_path / "losses.pt"
    mp.spawn(_worker, args=(2, kind, lora, str(out), 29611), nprocs=2, join=True)
    got = torch.load(out)
    assert got["fsdp", False] == pytest.approx(single, abs=1e-4)
    assert got["ddp", False] == pytest.approx(single, abs=1e-4)
    print("bf16 - fp32:", [b - a for a, b in zip(single, single_bf16)],
          {k: [b - a for a, b in zip(single, v)] for k, v in got.items() if k[1]})
    for bf16 in (single_bf16, got["fsdp", True], got["ddp", True]):
        assert bf16 != single  # it did run in bf16...
        assert bf16 == pytest.approx(single, abs=BF16_TOLERANCE)  # ...to bf16's precision
    assert single[1] < single[0]  # it learns
