"""raycf.continual and the rows each method trains on: exact values on hand-made inputs, no Ray."""
from collections import Counter

import pytest
import torch

from raycf import config, continual
from raycf.data.registry import GENERAL
from raycf.data.sources import stage_rows, stage_train_rows

STAGES = ["simplification", "headline", "explanation"]


def cfg(**over):
    return config.load(None, {"model.name": "tiny-causal", "stages": STAGES, "data.examples_per_stage": 30, **over})


def origin(c, rows) -> Counter:
    """Which set each row came from (rows are dicts: compared by content)."""
    sets = {name: [r for r in stage_rows(c, name)] for name in [*STAGES, GENERAL]}
    return Counter(next(name for name, pool in sets.items() if r in pool) for r in rows)


def test_naive_trains_on_its_own_stage_only():
    c = cfg()
    assert origin(c, stage_train_rows(c, 3)) == {"explanation": 30}


def test_replay_adds_its_ratio_of_earlier_rows_uniformly_or_balanced():
    c = cfg(**{"continual.method": "replay", "continual.replay.ratio": 0.25})
    assert origin(c, stage_train_rows(c, 1)) == {"simplification": 30}  # nothing earlier to replay
    rows = stage_train_rows(c, 3)
    assert len(rows) == 40 and origin(c, rows)["explanation"] == 30  # 10 replayed = 25 % of 40
    balanced = cfg(**{"continual.method": "replay", "continual.replay.ratio": 0.25, "continual.replay.balanced": True})
    assert origin(balanced, stage_train_rows(balanced, 3)) == {"explanation": 30, "simplification": 5, "headline": 5}
    odd = cfg(**{"continual.method": "replay", "continual.replay.ratio": 0.5, "continual.replay.balanced": True,
                 "data.examples_per_stage": 31})
    assert origin(odd, stage_train_rows(odd, 3)) == {"explanation": 31, "simplification": 16, "headline": 15}


def test_general_mix_adds_its_ratio_of_general_instruction_rows():
    c = cfg(**{"continual.method": "general_mix", "continual.general_mix.ratio": 0.4})
    assert origin(c, stage_train_rows(c, 2)) == {"headline": 30, GENERAL: 20}  # 20 / 50 = 0.4


def test_average_mixes_exactly_alpha_of_the_weights_before_and_leaves_frozen_ones():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    model[1].weight.requires_grad_(False)
    frozen = model[1].weight.detach().clone()
    before = continual.trained(model)
    assert set(before) == {"0.weight", "0.bias", "1.bias"}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    after = {n: p.detach().clone() for n, p in model.named_parameters()}
    continual.interpolate(model, before, 0.25)
    for name, p in model.named_parameters():
        if name in before:
            torch.testing.assert_close(p, 0.25 * before[name] + 0.75 * after[name], rtol=0, atol=0)
    assert torch.equal(model[1].weight, frozen + 1.0)  # not trained: not averaged


def test_a_method_and_its_strength_key_the_stages_and_unused_strengths_do_not():
    from raycf.models.resolve import resolve_model_dir
    from raycf.trial.plan import make_plan
    model_dir = resolve_model_dir("tiny-causal")
    keys = lambda **over: make_plan(cfg(**over), model_dir).stage_keys  # noqa: E731
    naive = keys()
    assert keys(**{"continual.replay.ratio": 0.4}) == naive  # a section of a method not run is not read
    replay = keys(**{"continual.method": "replay"})
    assert replay != naive and keys(**{"continual.method": "replay", "continual.replay.ratio": 0.4}) != replay
    assert keys(**{"continual.method": "average"}) != naive != keys(**{"continual.method": "general_mix"})
    methods = ["ewc", "lwf", "o_lora", "merge"]
    per_method = [keys(**{"continual.method": m}) for m in methods]
    assert len({k[0] for k in per_method} | {naive[0], replay[0]}) == len(methods) + 2
    assert keys(**{"continual.method": "ewc", "continual.ewc.penalty": 10.0}) != per_method[0]
    assert keys(**{"continual.method": "lwf", "continual.lwf.temperature": 1.0}) != per_method[1]


@pytest.mark.parametrize("over, line", [
    ({"continual.method": "ewc_online"}, "continual.method: 'ewc_online' is not one of naive, replay, general_mix"),
    ({"continual.average.alpha": 1.0}, "continual.average.alpha: 1.0 is outside [0, 1)"),
    ({"continual.general_mix.ratio": 0.0}, "continual.general_mix.ratio: 0.0 is outside (0, 1)"),
    ({"continual.general_mix.balanced": True}, "continual.general_mix.balanced: balanced is a key of "
                                               "continual.replay, not of continual.general_mix"),
    ({"continual.ewc.penalty": -1.0}, "continual.ewc.penalty: -1.0 is outside [0, 1e+12] (EWC's lambda)"),
    ({"continual.ewc.fisher_examples": 0}, "continual.ewc.fisher_examples: 0 is outside [1, 1000000]"),
    ({"continual.lwf.temperature": 0.0}, "continual.lwf.temperature: 0.0 is outside (0, 1000]"),
    ({"continual.o_lora.orth": -0.5}, "continual.o_lora.orth: -0.5 is outside [0, 1e+06]"),
    ({"continual.ewc.temperature": 2.0}, "continual.ewc.temperature: temperature is a key of continual.lwf, not "
                                         "of continual.ewc"),
    ({"continual.method": "merge", "finetune.method": "full"},
     "continual.method: merge works on LoRA adapters, but finetune.method is 'full'; set finetune.method=lora"),
])
def test_each_methods_keys_are_checked_in_one_line(over, line):
    with pytest.raises(config.ConfigError) as e:
        cfg(**over)
    assert any(p.startswith(line) for p in e.value.problems), e.value.problems


def test_ewc_fisher_online_sum_and_penalty_by_hand():
    """y = w . x, loss (y - t)^2 at w = (1, 2): example ((1, 0), 0) has gradient (2, 0), example ((1, 1), 0) has
    (6, 6), so F = ((4 + 36) / 2, 36 / 2) = (20, 18); the penalty at theta* = 0 with lambda = 2 is
    1 x (20 x 1 + 18 x 4) = 92 and its gradient lambda F theta = (40, 72)."""
    from raycf.continual import terms
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    batches = [(torch.tensor([[1.0, 0.0]]), 0.0), (torch.tensor([[1.0, 1.0]]), 0.0)]
    fisher = terms.fisher_diagonal(model, batches, lambda m, b: ((m(b[0]) - b[1]) ** 2).sum())
    assert torch.equal(fisher["weight"], torch.tensor([[20.0, 18.0]]))
    assert torch.equal(terms.online_fisher(fisher["weight"], torch.ones(1, 2), 0.5), torch.tensor([[11.0, 10.0]]))
    assert terms.online_fisher(None, fisher["weight"], 0.5) is fisher["weight"]
    theta = model.weight.detach().clone().requires_grad_(True)
    pen = terms.ewc_penalty(theta, torch.zeros(1, 2), fisher["weight"], 2.0)
    assert float(pen.detach()) == 92.0
    assert torch.equal(torch.autograd.grad(pen, theta)[0], torch.tensor([[40.0, 72.0]]))
    assert model.weight.grad is None  # autograd.grad: nothing accumulated


def test_ewc_method_adds_lambda_f_times_the_distance_to_the_anchor_to_the_grad():
    from raycf.continual import Method
    model = torch.nn.Linear(2, 1, bias=False)
    m = Method(cfg(**{"continual.method": "ewc", "continual.ewc.penalty": 2.0}))
    m.fisher = {"weight": torch.tensor([[20.0, 18.0]])}
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    m._localize(model)  # theta* = (1, 2)
    with torch.no_grad():
        model.weight.add_(torch.tensor([[1.0, -0.5]]))
    model.weight.grad = torch.tensor([[0.5, 0.5]])
    m.penalty_grads(model)
    assert torch.equal(model.weight.grad, torch.tensor([[0.5 + 2 * 20 * 1.0, 0.5 + 2 * 18 * -0.5]]))


def test_lwf_kl_by_hand():
    """Student logits (0, 0): uniform. Teacher (ln 3, 0): (3/4, 1/4). At T = 1 the KL is 3/4 ln(3/2) + 1/4 ln(1/2);
    at T = 2 the teacher is (sqrt 3, 1) / (sqrt 3 + 1) and the KL is multiplied by 4. IGNORE positions count not."""
    import math
    from raycf.continual import terms
    student = torch.zeros(2, 2, requires_grad=True)
    teacher = torch.tensor([[math.log(3.0), 0.0], [5.0, -5.0]])
    targets = torch.tensor([1, -100])
    kl1 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert float(terms.distill_sum(student, teacher, targets, 1.0)) == pytest.approx(kl1, rel=1e-6)
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    kl2 = 4 * (p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p)))
    assert float(terms.distill_sum(student, teacher, targets, 2.0)) == pytest.approx(kl2, rel=1e-6)
    g = torch.autograd.grad(terms.distill_sum(student, teacher, targets, 1.0), student)[0]
    assert torch.allclose(g, torch.tensor([[0.5 - 0.75, 0.5 - 0.25], [0.0, 0.0]]))  # softmax(s) - p_teacher


def test_o_lora_orthogonality_and_l2_by_hand():
    """A = ((1, 2, 0), (0, 0, 3)) against A_1 = ((1, 0, 0)): |A_1 A^T| = (1, 0), and A_2 = ((0, 1, 1)): (2, 3);
    6 in all. Its gradient is sum_i sign(A A_i^T) A_i = ((1, 1, 1), (0, 1, 1)). Rows split like shards add up."""
    from raycf.continual import terms
    a = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]], requires_grad=True)
    earlier = [torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 1.0]])]
    orth = terms.orthogonality(earlier, a)
    assert float(orth) == 6.0
    assert torch.equal(torch.autograd.grad(orth, a)[0], torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]]))
    assert float(terms.orthogonality(earlier, a[:1]) + terms.orthogonality(earlier, a[1:])) == 6.0
    assert float(terms.orthogonality([], a)) == 0.0
    assert float(terms.squared_l2(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))) == 30.0


def _tiny_lora():
    from raycf.models.load import add_lora, load_model
    from raycf.models.resolve import resolve_model_dir
    torch.manual_seed(0)
    model, tok = load_model(resolve_model_dir("tiny-causal"))
    return add_lora(model, 4, 8.0, 0.0, "auto"), tok


def test_merge_adds_scaling_b_a_to_the_base_starts_a_fresh_adapter_and_reloads_bit_for_bit():
    from raycf.continual import Method, lora_layers, restore_weights
    model, tok = _tiny_lora()
    ids = torch.tensor([tok("Write a headline.")["input_ids"]])
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B["default"].weight.normal_()  # a trained adapter: B is no longer 0
    before = {n: (lay.base_layer.weight.clone(), lay.lora_A["default"].weight.clone(),
                  lay.lora_B["default"].weight.clone(), lay.scaling["default"]) for n, lay in lora_layers(model)}
    with torch.no_grad():
        out = model(input_ids=ids).logits
    m = Method(cfg(**{"continual.method": "merge"}))
    m.after_stage(model, 1, [], None, "causal", tok.pad_token_id, torch.device("cpu"))
    assert before and len(m.earlier) == 1
    for n, layer in lora_layers(model):
        w, a, b, s = before[n]
        assert s == 2.0  # lora_alpha 8 / rank 4
        torch.testing.assert_close(layer.base_layer.weight, (w.double() + s * b.double() @ a.double()).float(),
                                   rtol=0, atol=1e-6)
        assert torch.equal(layer.lora_B["default"].weight, torch.zeros_like(b))
        assert not torch.equal(layer.lora_A["default"].weight, a)
    with torch.no_grad():  # the same function: the adapter's work is now in the base weights
        torch.testing.assert_close(model(input_ids=ids).logits, out, rtol=1e-5, atol=1e-5)
    fresh, _ = _tiny_lora()
    restore_weights(fresh, m.state())
    for (_, x), (_, y) in zip(lora_layers(model), lora_layers(fresh)):
        assert torch.equal(x.base_layer.weight, y.base_layer.weight)  # a reload rebuilds the merged weights exactly


METHOD_RUNS = [("ewc", True), ("ewc", False), ("lwf", True), ("lwf", False), ("o_lora", True), ("merge", True),
               ("average", True), ("naive", True), ("naive", False)]


def _plain(model, lora, tok):
    """The model as one process computes it: FSDP2's full state dict in a plain copy (as a trial's probes see it)."""
    from raycf.trial.checkpoint import full_state_dict, is_fsdp
    from tests.test_train import _model
    if not is_fsdp(model):
        return continual.inner(model)
    copy = _model("causal", tok, lora)
    copy.load_state_dict(full_state_dict(model))
    return copy


def _method_losses(strategy: str, method: str, lora: bool) -> list[float]:
    """Two 3-step stages under `method` (each stage's mean loss and method term), then the loss of the weights the
    method left."""
    from raycf import train as T
    from raycf.data.template import prompt
    from raycf.models.tiny import build_tokenizer
    from tests.conftest import toy_rows as rows
    from tests.test_train import HP, _model
    tok = build_tokenizer([prompt(r) + r["output"] for r in rows(200, seed=1)], vocab_size=400)
    model = T.wrap(_model("causal", tok, lora), strategy, torch.device("cpu"), False)
    ex = T.encode(rows(64), tok, "causal", 256)
    # strengths large enough to move a 3-step stage of the tiny model
    m = continual.Method(cfg(**{"continual.method": method, "continual.ewc.penalty": 1e4,
                                "continual.ewc.fisher_examples": 8, "continual.lwf.alpha": 5.0,
                                "finetune.method": "lora" if lora else "full"}))
    out = []
    for k in (1, 2):
        m.before_stage(model)
        out.append(T.train_stage(model, ex, kind="causal", pad_id=tok.pad_token_id,
                                 **{**HP, "steps": 3, "seed": k}, method=m).loss)
        out.append(m.stage_loss() or 0.0)
        m.after_stage(model, k, ex, lambda: _plain(model, lora, tok), "causal", tok.pad_token_id,
                      torch.device("cpu"))
    return out + [T.eval_loss(_plain(model, lora, tok), ex[:8], "causal", tok.pad_token_id)]


def _method_worker(rank, world, out, port):
    import os
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist
    dist.init_process_group("gloo", rank=rank, world_size=world)
    got = {(s, m, lora): _method_losses(s, m, lora) for s in ("fsdp", "ddp") for m, lora in METHOD_RUNS}
    if rank == 0:
        torch.save(got, out)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_every_method_on_fsdp2_and_ddp_gives_the_losses_of_one_process(tmp_path):
    """Each method's two stages on 2 gloo ranks, FSDP2 (anchors, Fisher and adapters sharded) and DDP, give the
    per-stage losses, method terms and the final weights' loss of one process to 1e-4; and every method changes
    them."""
    import torch.multiprocessing as mp
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = {(m, lora): _method_losses("fsdp", m, lora) for m, lora in METHOD_RUNS}
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "losses.pt"
    mp.spawn(_method_worker, args=(2, str(out), 29623), nprocs=2, join=True)
    got = torch.load(out)
    print({k: v for k, v in single.items()})
    for (m, lora), ref in single.items():
        for strategy in ("fsdp", "ddp"):
            assert got[strategy, m, lora] == pytest.approx(ref, abs=1e-4), (strategy, m, lora)
        if m != "naive":  # the method acts: stage 2 and the weights it leaves differ from naive's
            assert ref[2] != pytest.approx(single["naive", lora][2], abs=1e-6), (m, lora)
            assert ref[4] != pytest.approx(single["naive", lora][4], abs=1e-3), (m, lora)
        if m in ("ewc", "o_lora"):  # their penalty starts with stage 2; LwF distils from the start
            assert ref[1] == 0.0 and ref[3] > 0, (m, ref)
        elif m == "lwf":
            assert ref[1] > 0 and ref[3] > 0


def _one_process_trial(tmp_path, method: str, lora: bool = True, **over):
    """A trial's stages in this process, as its one Ray Train worker runs them; each stage's result.json."""
    import json
    from raycf.trial import plan as trial_plan
    from raycf.trial import preflight, stages
    c = config.from_dict({
        "name": "m", "seed": 0, "model": {"name": "tiny-causal"}, "stages": ["simplification", "headline"],
        "finetune": {"method": "lora" if lora else "full", "lora_rank": 4, "lora_alpha": 8},
        "optim": {"lr": 3e-3, "steps_per_stage": 4, "batch_size": 4}, "data": {"examples_per_stage": 32},
        "continual": {"method": method, "ewc": {"penalty": 1e4, "fisher_examples": 8}},
        "warm_start": {"kind": "none"}, "probes": {"suites": ["knowledge"], "limit": 2, "shots": 0},
        "resources": {"workers": 1, "cpus_per_worker": 1},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}, "storage_path": str(tmp_path / "runs")})
    c = c.with_overrides(over) if over else c
    plan = trial_plan.make_plan(c, preflight.check(c))
    stages.run_stages(c, plan, 0, 1, lambda k, metrics, checkpoint: None)
    return plan, [json.loads((plan.stage_dir(k) / "result.json").read_text()) for k in (1, 2)]


@pytest.mark.slow
@pytest.mark.parametrize("method, lora", [("ewc", True), ("ewc", False), ("lwf", True), ("o_lora", True),
                                          ("merge", True), ("average", True)])
def test_a_trial_resumed_after_stage_1_gives_the_clean_runs_stage_2(tmp_path, cache_dir, method, lora):
    """Stage 1's checkpoint (weights, and what the method carries on: EWC's Fisher, the merged adapters) reloads to
    the live loss, and a trial that resumes from it trains stage 2 to the uninterrupted trial's numbers, bit for
    bit."""
    import shutil
    plan, clean = _one_process_trial(tmp_path, method, lora)
    for r in clean:
        assert r["train/reload_loss"] == pytest.approx(r["train/live_loss"], rel=1e-6)
    assert (plan.stage_dir(1) / continual.STATE_FILE).exists() == (method in ("ewc", "o_lora", "merge"))
    shutil.rmtree(plan.stage_dir(2))  # lost: the trial goes on from stage 1
    _, resumed = _one_process_trial(tmp_path, method, lora)
    drop = ("train/seconds", "train/tokens_per_s", "train/method_loss")
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed] == \
        [{k: v for k, v in r.items() if k not in drop} for r in clean]
    # the penalty's value (not its gradient) reads the earlier adapters as reloaded, whose memory layout may pick
    # another BLAS kernel: equal to float32's last digits
    assert ["train/method_loss" in r for r in resumed] == ["train/method_loss" in r for r in clean]
    assert [r.get("train/method_loss", 0.0) for r in resumed] == \
        pytest.approx([r.get("train/method_loss", 0.0) for r in clean], rel=1e-6)
