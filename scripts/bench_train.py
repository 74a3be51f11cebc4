"""Stage-training throughput: raycf's trainer vs Hugging Face Trainer + PEFT, same model, data and steps.

    python scripts/bench_train.py                       # tiny-causal and SmolLM2-135M (if converted), LoRA
    python scripts/bench_train.py --model tiny-causal --steps 40

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


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_raycf(model_dir: str, steps: int, batch: int, lr: float, rank: int) -> dict:
    import torch
    from raycf.models.load import add_lora, load_model
    from raycf.train import train_stage
    exs, tok = examples(model_dir, 512)
    model, _ = load_model(model_dir)
    model = add_lora(model, rank, 2 * rank, 0.0, "auto")
    before = rss_mb()
    stats = train_stage(model, exs, kind="causal", pad_id=tok.pad_token_id, batch_size=batch, steps=steps,
                        grad_accum=1, lr=lr, weight_decay=0.0, schedule="constant", warmup=0, max_grad_norm=1.0,
                        seed=0)
    del torch
    return {"tokens_per_s": stats.seen_tokens / stats.seconds, "seconds": stats.seconds,
            "tokens": stats.seen_tokens, "loss": stats.loss, "peak_rss_mb": rss_mb(), "rss_before_mb": before}


def run_hf(model_dir: str, steps: int, batch: int, lr: float, rank: int) -> dict:
    import tempfile
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments
    from raycf.models.load import add_lora, load_model
    exs, tok = examples(model_dir, 512)
    model, _ = load_model(model_dir)
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
                                 use_cpu=True, seed=0, dataloader_num_workers=0, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=counting)
        before = rss_mb()
        t0 = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - t0
    del torch
    return {"tokens_per_s": seen["tokens"] / seconds, "seconds": seconds, "tokens": seen["tokens"],
            "loss": result.training_loss, "peak_rss_mb": rss_mb(), "rss_before_mb": before}


def child(args) -> None:
    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fn = run_raycf if args.side == "raycf" else run_hf
    print("RESULT " + json.dumps(fn(args.model_dir, args.steps, args.batch, args.lr, args.rank)))


def measure(side: str, model_dir: str, a) -> dict:
    cmd = [sys.executable, __file__, "--child", side, "--model-dir", model_dir, "--steps", str(a.steps),
           "--batch", str(a.batch), "--lr", str(a.lr), "--rank", str(a.rank), "--threads", str(a.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode or not line:
        sys.exit(f"{side} failed:\n{out.stderr[-3000:]}")
    return json.loads(line[-1][7:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", help="tiny-causal | raycf-tiny | smollm2-135m | folder")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3, help="runs per side, alternating; medians are reported")
    p.add_argument("--child", choices=["raycf", "hf"])
    p.add_argument("--model-dir")
    a = p.parse_args()
    if a.child:
        a.side = a.child
        return child(a)
    from raycf.errors import ModelError
    from raycf.models.resolve import resolve_model_dir
    names = a.model or ["tiny-causal", "smollm2-135m"]
    print(f"{'model':14s} {'side':6s} {'tokens/s':>9s} {'seconds':>8s} {'tokens':>8s} {'loss':>7s} {'peak MB':>8s}")
    for name in names:
        try:
            model_dir = str(resolve_model_dir(name))
        except ModelError as e:
            print(f"{name}: skipped ({e})")
            continue
        runs = {"raycf": [], "hf": []}
        for _ in range(a.repeat):  # alternate, so a burst of load elsewhere hits both sides alike
            for side in runs:
                runs[side].append(measure(side, model_dir, a))
        r, h = (sorted(runs[side], key=lambda m: m["tokens_per_s"])[len(runs[side]) // 2] for side in runs)
        for side, m in (("raycf", r), ("hf", h)):
            print(f"{name:14s} {side:6s} {m['tokens_per_s']:9.1f} {m['seconds']:8.2f} {m['tokens']:8d} "
                  f"{m['loss']:7.4f} {m['peak_rss_mb']:8.0f}")
        spread = {side: ", ".join(f"{m['tokens_per_s']:.0f}" for m in ms) for side, ms in runs.items()}
        print(f"{name:14s} ratio  raycf/HF Trainer tokens/s = {r['tokens_per_s'] / h['tokens_per_s']:.2f}x (medians of "
              f"{a.repeat}; raycf {spread['raycf']}, hf {spread['hf']}), peak memory {r['peak_rss_mb']:.0f} MB vs "
              f"{h['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
