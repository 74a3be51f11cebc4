"""Choose the `general` warm start's recipe by the warm start's own metrics, never by the study's finding.

    python scripts/warm_start_recipes.py                      # the default space's model, probes and stages
    python scripts/warm_start_recipes.py --space S.yaml --lrs 5e-5 1e-4 3e-4 1e-3 --steps 40 80 --seeds 0 1 2

For each recipe (full fine-tuning on the `general` set at lr x steps, as raycf.trial.warm_start trains it, one
process) and seed: every probe category's score after the warm start against the base model's (relative change,
%), and the learned tasks' scores before stage 1 (in their own units). Rule: among the recipes that keep every
general category (knowledge, reasoning, reading, bias) within --tolerance % of the base model in every seed, the
one whose learned-task scores rise most (mean over seeds); printed last. Minutes on 2 CPUs for raycf-tiny.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raycf.errors import ConfigError, cli, parser  # noqa: E402

GENERAL_CATEGORIES = ("knowledge", "reasoning", "reading", "bias")


def category_scores(cfg, model, tok, tasks) -> dict[str, float]:
    from raycf.probe.run import run_probes
    p = cfg.probes
    s = run_probes(model, tok, tasks, shots=p.shots, limit=p.limit or None, seed=cfg.seed,
                   max_new_tokens=p.max_new_tokens)
    cats: dict[str, list[float]] = {}
    for t in tasks:
        cats.setdefault(t.category, []).append(s[t.name][t.metric[0]])
    return {c: sum(v) / len(v) for c, v in cats.items()}


def recipes(args) -> int:
    import torch
    from raycf.config.files import load
    from raycf.data.registry import GENERAL
    from raycf.data.sources import probe_task, probe_task_names, stage_rows
    from raycf.models.resolve import resolve_model_dir
    from raycf.train import encode, train_stage
    from raycf.trial.checkpoint import load_base
    if args.tolerance < 0 or args.threads < 1:
        raise ConfigError([f"--tolerance {args.tolerance:g} / --threads {args.threads}: give a tolerance >= 0 and "
                           f"at least 1 thread"])
    # every recipe is checked as the config keys it sets (warm_start.lr, .steps, .seed), before any training
    recipes = {(lr, steps, seed): load(args.space, {"search": {}, "warm_start.lr": lr, "warm_start.steps": steps,
                                                    "warm_start.seed": seed})
               for lr in args.lrs for steps in args.steps for seed in args.seeds}
    torch.set_num_threads(args.threads)
    cfg = load(args.space, {"search": {}})
    model_dir = resolve_model_dir(cfg.model.name, allow_download=cfg.model.allow_download)
    tasks = [probe_task(cfg, t) for t in probe_task_names(cfg)]
    model, tok = load_base(cfg, model_dir)
    base = category_scores(cfg, model, tok, tasks)
    print("base model: " + "  ".join(f"{c} {v:.3f}" for c, v in base.items()), flush=True)
    examples = encode(stage_rows(cfg, GENERAL), tok, "causal", cfg.optim.max_length, source=GENERAL)
    cats = [c for c in GENERAL_CATEGORIES if c in base]
    print(f"{'lr':>8} {'steps':>5} {'seed':>4} {'loss':>6} " + " ".join(f"{c[:9] + ' %':>11}" for c in cats) +
          f" {'tasks':>8} {'tasks +':>8} {'s':>5}")
    results: dict[tuple, list[dict]] = {}
    for (lr, steps, seed), recipe in recipes.items():
        ws = recipe.warm_start
        t0 = time.perf_counter()
        model, tok = load_base(cfg, model_dir)
        stats = train_stage(model, examples, kind="causal", pad_id=tok.pad_token_id, batch_size=ws.batch_size,
                            steps=ws.steps, grad_accum=1, lr=ws.lr, weight_decay=0.0, schedule="constant", warmup=0,
                            max_grad_norm=cfg.optim.max_grad_norm, seed=ws.seed)
        after = category_scores(cfg, model, tok, tasks)
        rel = {c: (after[c] - base[c]) / abs(base[c]) * 100 for c in cats}
        rise = after.get("tasks", float("nan")) - base.get("tasks", float("nan"))
        results.setdefault((lr, steps), []).append({"rel": rel, "rise": rise})
        print(f"{lr:8.0e} {steps:5d} {seed:4d} {stats.loss:6.3f} " + " ".join(f"{rel[c]:+11.2f}" for c in cats) +
              f" {after.get('tasks', float('nan')):8.3f} {rise:+8.3f} {time.perf_counter() - t0:5.1f}", flush=True)
    kept = {k: v for k, v in results.items() if all(abs(r["rel"][c]) <= args.tolerance for r in v for c in cats)}
    if not kept:
        print(f"no recipe keeps every category within {args.tolerance:g}% of the base model in every seed")
        return 1
    best = max(kept, key=lambda k: sum(r["rise"] for r in kept[k]) / len(kept[k]))
    worst = max(abs(r["rel"][c]) for r in kept[best] for c in cats)
    print(f"chosen: lr {best[0]:g}, {best[1]} steps: learned tasks +{sum(r['rise'] for r in kept[best]) / len(kept[best]):.3f}"
          f" on average over {len(kept[best])} seeds, every category within {worst:.2f}% of the base model "
          f"({len(kept)} of {len(results)} recipes kept every category within {args.tolerance:g}%)")
    return 0


def main(argv=None) -> int:
    p = parser("scripts/warm_start_recipes.py", "choose the general warm start by its own metrics")
    p.add_argument("--space", default=str(Path(__file__).resolve().parents[1] / "search_spaces" / "default.yaml"))
    p.add_argument("--lrs", type=float, nargs="+", default=[5e-5, 1e-4, 2e-4, 1e-3])
    p.add_argument("--steps", type=int, nargs="+", default=[40, 80])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tolerance", type=float, default=5.0, help="allowed |relative change| per category, %%")
    p.add_argument("--threads", type=int, default=2)
    return cli(p, recipes, argv)


if __name__ == "__main__":
    sys.exit(main())
