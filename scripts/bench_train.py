"""Stage-training throughput: raycf's trainer vs Hugging Face Trainer + PEFT, same model, data and steps.

    python scripts/bench_train.py                       # tiny-causal and SmolLM2-135M (if converted), LoRA
    python scripts/bench_train.py --model tiny-causal --steps 40
    python scripts/bench_train.py --precision bf16      # one precision only (default: fp32 and bf16)
    python scripts/bench_train.py --device cuda --model smollm2-135m   # on a GPU (scripts/gpu_check.sh): + MFU

Each side runs in its own subprocess (so peak memory is its own), --repeat times alternating with the other
side (medians reported: a 2-core machine shared with other work is noisy), single process, 2 threads, LoRA on
every linear layer, the same encoded examples (Alpaca prompt, loss on the response only) from all five
offline instruction stages (variable length), the same global batch, lr and number of optimizer steps.
tokens/s counts the tokens of the training examples each side trains on (each example's full length, no
padding) over the training loop's wall time; both sides take the same gradient on the same batch.
Peer settings are the Trainer's defaults for this job (random sampler, pad to the longest in a batch,
full-vocabulary logits, PEFT's LoRA forward), the way a user would first write it. raycf's side is
raycf.train as a trial runs it: length-sorted batches, the template preamble shared by a microbatch's
examples computed once (train.pack_shared_prefix), logits at target positions only, LoRA layers as one
autograd op (raycf.lora).

bf16: each side's own CPU mixed precision. raycf as a trial with resources.mixed_precision bf16 trains (bf16
autocast, the frozen base weights cast once per stage); HF Trainer with bf16=True (its CPU autocast). Both keep
fp32 master weights; the loss lines show how far bf16 moves each side's loss from its fp32 run.

MFU (with --device cuda): model FLOPs per second over the GPU's peak dense bf16 rate (PEAK_TFLOPS). Model FLOPs
per trained token: 2N forward + 2N for the input gradients (LoRA: the frozen weights get no weight gradient,
the adapter's are negligible), N the model's parameters, plus attention's 4·layers·hidden·length forward and
twice that backward, length the mean example length.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def examples(model_dir: str, max_length: int):
    from raycf import data
    from raycf.models.folder import model_kind
    from raycf.models.load import load_model
    from raycf.train import encode
    _, tok = load_model(model_dir)
    rows = [r for s in data.STAGES for r in data.load_stage(s)]
    return encode(rows, tok, model_kind(model_dir), max_length), tok


PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0}  # dense bf16


def rss_mb(device: str = "cpu") -> float:
    """Peak memory: the process's resident set on CPU, the allocator's peak on a GPU."""
    if device != "cpu":
        import torch
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def model_flops_per_token(model, mean_length: float) -> float:
    cfg = model.config
    n = sum(p.numel() for p in model.parameters())
    attention = 4 * cfg.num_hidden_layers * cfg.hidden_size * mean_length
    return 4 * n + 3 * attention


def run_raycf(model_dir: str, steps: int, batch: int, lr: float, rank: int, bf16: bool, device: str) -> dict:
    import torch
    from raycf.models.load import add_lora, load_model
    from raycf.train import train_stage
    exs, tok = examples(model_dir, 512)
    model, _ = load_model(model_dir)
    flops = model_flops_per_token(model, sum(e.length for e in exs) / len(exs))
    model = add_lora(model, rank, 2 * rank, 0.0, "auto").to(device)
    before = rss_mb(device)
    stats = train_stage(model, exs, kind="causal", pad_id=tok.pad_token_id, batch_size=batch, steps=steps,
                        grad_accum=1, lr=lr, weight_decay=0.0, schedule="constant", warmup=0, max_grad_norm=1.0,
                        seed=0, device=torch.device(device), autocast_dtype=torch.bfloat16 if bf16 else None)
    return {"tokens_per_s": stats.seen_tokens / stats.seconds, "seconds": stats.seconds, "flops_per_token": flops,
            "tokens": stats.seen_tokens, "loss": stats.loss, "peak_rss_mb": rss_mb(device), "rss_before_mb": before}


def run_hf(model_dir: str, steps: int, batch: int, lr: float, rank: int, bf16: bool, device: str) -> dict:
    import tempfile
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments
    from raycf.models.load import add_lora, load_model
    exs, tok = examples(model_dir, 512)
    model, _ = load_model(model_dir)
    flops = model_flops_per_token(model, sum(e.length for e in exs) / len(exs))
    model = add_lora(model, rank, 2 * rank, 0.0, "auto", fused=False)  # PEFT's own forward
    ds = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids), "labels": e.labels} for e in exs]
    seen = {"tokens": 0}

    collate = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)

    def counting(features):  # count the tokens the model is fed, as raycf does
        out = collate(features)
        seen["tokens"] += int(out["attention_mask"].sum())
        return out
    with tempfile.TemporaryDirectory() as out_dir:
        args = TrainingArguments(output_dir=out_dir, per_device_train_batch_size=batch, max_steps=steps,
                                 learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                                 max_grad_norm=1.0, logging_strategy="no", save_strategy="no", report_to=[],
                                 use_cpu=device == "cpu", seed=0, dataloader_num_workers=0, disable_tqdm=True,
                                 bf16=bf16)
        trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=counting)
        before = rss_mb(device)
        t0 = time.perf_counter()
        result = trainer.train()
        if device != "cpu":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    return {"tokens_per_s": seen["tokens"] / seconds, "seconds": seconds, "tokens": seen["tokens"],
            "flops_per_token": flops, "loss": result.training_loss, "peak_rss_mb": rss_mb(device),
            "rss_before_mb": before}


def child(args) -> None:
    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fn = run_raycf if args.side == "raycf" else run_hf
    print("RESULT " + json.dumps(fn(args.model_dir, args.steps, args.batch, args.lr, args.rank,
                                    args.child_precision == "bf16", args.device)))


def measure(side: str, precision: str, model_dir: str, a) -> dict:
    cmd = [sys.executable, __file__, "--child", side, "--child-precision", precision, "--model-dir", model_dir,
           "--steps", str(a.steps),
           "--batch", str(a.batch), "--lr", str(a.lr), "--device", a.device, "--rank", str(a.rank),
           "--threads", str(a.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode or not line:
        sys.exit(f"{side} {precision} failed:\n{out.stderr[-3000:]}")
    return json.loads(line[-1][7:])


def mfu(m: dict, device: str) -> str:
    if device == "cpu":
        return ""
    import torch
    gpu = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in gpu), None)
    achieved = m["tokens_per_s"] * m["flops_per_token"] / 1e12
    return f"  {achieved:.1f} TFLOP/s" + (f", MFU {achieved / peak:.1%} of {gpu}'s {peak:.0f}" if peak else
                                          f" ({gpu}: peak unknown)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", help="tiny-causal | raycf-tiny | smollm2-135m | folder")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3, help="runs per side, alternating; medians are reported")
    p.add_argument("--precision", action="append", choices=["fp32", "bf16"], help="default: both")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--child", choices=["raycf", "hf"])
    p.add_argument("--child-precision", choices=["fp32", "bf16"])
    p.add_argument("--model-dir")
    a = p.parse_args()
    if a.child:
        a.side = a.child
        return child(a)
    from raycf.errors import ModelError
    from raycf.models.resolve import resolve_model_dir
    names, precisions = a.model or ["tiny-causal", "smollm2-135m"], a.precision or ["fp32", "bf16"]
    print(f"{'model':14s} {'side':6s} {'prec':4s} {'tokens/s':>9s} {'seconds':>8s} {'tokens':>8s} {'loss':>7s} "
          f"{'peak MB':>8s}")
    for name in names:
        try:
            model_dir = str(resolve_model_dir(name))
        except ModelError as e:
            print(f"{name}: skipped ({e})")
            continue
        runs = {(side, prec): [] for prec in precisions for side in ("raycf", "hf")}
        for _ in range(a.repeat):  # alternate, so a burst of load elsewhere hits every setting alike
            for side, prec in runs:
                runs[side, prec].append(measure(side, prec, model_dir, a))
        med = {k: sorted(ms, key=lambda m: m["tokens_per_s"])[len(ms) // 2] for k, ms in runs.items()}
        for (side, prec), m in med.items():
            print(f"{name:14s} {side:6s} {prec:4s} {m['tokens_per_s']:9.1f} {m['seconds']:8.2f} {m['tokens']:8d} "
                  f"{m['loss']:7.4f} {m['peak_rss_mb']:8.0f}{mfu(m, a.device)}")

        def ratio(x, y, what):
            r, h = med[x], med[y]
            spread = "; ".join(f"{k[0]} {k[1]} " + ", ".join(f"{m['tokens_per_s']:.0f}" for m in runs[k])
                               for k in (x, y))
            print(f"{name:14s} ratio  {what} tokens/s = {r['tokens_per_s'] / h['tokens_per_s']:.2f}x (medians of "
                  f"{a.repeat}: {spread}), peak memory {r['peak_rss_mb']:.0f} MB vs {h['peak_rss_mb']:.0f} MB")
        for prec in precisions:
            ratio(("raycf", prec), ("hf", prec), f"raycf/HF Trainer {prec}")
        if len(precisions) == 2:
            ratio(("raycf", "bf16"), ("raycf", "fp32"), "raycf bf16/raycf fp32")
            ratio(("hf", "bf16"), ("hf", "fp32"), "HF bf16/HF fp32")
            for side in ("raycf", "hf"):
                moved = med[side, "bf16"]["loss"] - med[side, "fp32"]["loss"]
                print(f"{name:14s} loss   {side} bf16 - fp32 = {moved:+.4f}"
                      f" (mean loss over {a.steps} steps, {med[side, 'fp32']['loss']:.4f} in fp32)")


if __name__ == "__main__":
    main()
