"""The CUDA path (scripts/gpu_check.sh runs these on a GPU machine; without CUDA they skip): bf16 training on the
GPU against fp32, FSDP2 over NCCL with the bf16 policy, packed rows with the boolean mask through CUDA SDPA, and
probe scores on the GPU against the CPU's."""
import os

import pytest
import torch

from raycf import train as T
from tests.conftest import toy_rows

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

HP = dict(batch_size=8, steps=4, grad_accum=1, lr=3e-3, weight_decay=0.0, schedule="constant", warmup=0,
          max_grad_norm=1.0)


def _setup(toy_tokenizer, lora=True):
    from raycf.models.load import add_lora
    from raycf.models.tiny import tiny_model
    model = tiny_model("causal", toy_tokenizer, seed=0)
    if lora:
        torch.manual_seed(0)
        model = add_lora(model, 4, 8, 0.0, "auto")
    return model, T.encode(toy_rows(64), toy_tokenizer, "causal", 256)


def test_bf16_on_cuda_trains_to_fp32s_losses(toy_tokenizer):
    from tests.test_train import BF16_TOLERANCE
    losses = {}
    for bf16 in (False, True):
        model, ex = _setup(toy_tokenizer)
        model.to("cuda")
        stats = T.train_stage(model, ex, kind="causal", pad_id=toy_tokenizer.pad_token_id, seed=0,
                              device=torch.device("cuda"), autocast_dtype=torch.bfloat16 if bf16 else None, **HP)
        losses[bf16] = stats.loss
    assert losses[True] != losses[False]
    assert losses[True] == pytest.approx(losses[False], abs=BF16_TOLERANCE)


def test_packed_rows_with_a_boolean_mask_on_cuda_sdpa_equal_padded_batches(toy_tokenizer):
    model, ex = _setup(toy_tokenizer, lora=False)
    model.to("cuda").train()
    part = ex[:6]
    padded = T.loss_sum(model, {k: v.cuda() for k, v in T.collate(part, toy_tokenizer.pad_token_id, "causal").items()},
                        "causal")
    packed = T.loss_sum(model, {k: v.cuda() for k, v in T.pack_shared_prefix(part, sdpa=True).items()}, "causal")
    assert float(packed) == pytest.approx(float(padded), rel=1e-4)


def test_probe_scores_on_cuda_equal_the_cpus(toy_tokenizer):
    from raycf.models.load import load_model
    from raycf.models.resolve import resolve_model_dir
    from raycf.probe.run import run_probes
    model, tok = load_model(resolve_model_dir("raycf-tiny"))
    tasks = ["facts_geography", "simplification"]
    cpu = run_probes(model.eval(), tok, tasks, limit=16, max_new_tokens=8)
    gpu = run_probes(model.to("cuda").eval(), tok, tasks, limit=16, max_new_tokens=8)
    assert gpu.keys() == cpu.keys()
    for task in cpu:
        for metric, value in cpu[task].items():
            assert gpu[task][metric] == pytest.approx(value, abs=1 / 16 + 1e-9), (task, metric)


def _fsdp_worker(rank, world, out, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch.distributed as dist
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from raycf.models.tiny import build_tokenizer
    from raycf.data.template import prompt
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world)
    tok = build_tokenizer([prompt(r) + r["output"] for r in toy_rows(200, seed=1)], vocab_size=400)
    model, ex = _setup(tok)
    model.to("cuda")
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for block in T.transformer_blocks(model):  # fully_shard directly: T.wrap leaves a 1-rank group alone
        fully_shard(block, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    stats = T.train_stage(model, ex, kind="causal", pad_id=tok.pad_token_id, seed=0, device=torch.device("cuda"),
                          autocast_dtype=torch.bfloat16, **HP)
    if rank == 0:
        torch.save(stats.loss, out)
    dist.destroy_process_group()


def test_fsdp2_over_nccl_in_bf16_trains(tmp_path):
    """FSDP2 with the bf16 policy over NCCL, one rank per GPU (all GPUs, at most 2): the loss falls from the
    untrained model's and is finite."""
    import math
    import torch.multiprocessing as mp
    world = min(2, torch.cuda.device_count())
    out = tmp_path / "loss.pt"
    mp.spawn(_fsdp_worker, args=(world, str(out), 29631), nprocs=world, join=True)
    loss = torch.load(out)
    assert math.isfinite(loss) and loss < math.log(400)  # below a uniform guess over the vocabulary
