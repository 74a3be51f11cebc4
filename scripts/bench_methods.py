"""Which continual method forgets least at the default setting? Every method against naive, over seeds.

    python scripts/bench_methods.py                       # search_spaces/methods.yaml at lr 1e-3, seeds 0 1 2
    python scripts/bench_methods.py --set finetune.method=lora --methods naive o_lora merge ewc

Runs one sweep over continual.method (x sweep.seeds seeds; fresh storage and MLflow store in a temporary
folder), then prints per method: FG per category (percent, PAPER.md Eq. 1) as mean +- sd over the seeds with
the min..max range, the learned tasks' final average score and its gain, and the mean training seconds of a
stage against naive's. Trials run two at a time (the space's resources), so a stage time is a ratio measured
under the same load, not an absolute speed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from raycf.sweep import driver as sweep_driver

CATEGORIES = ("knowledge", "reasoning", "reading")
METHODS = ("naive", "replay", "general_mix", "ewc", "lwf", "average")  # o_lora, merge: LoRA only


def spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):+6.2f} +- {sd:4.2f} [{min(values):+6.2f}, {max(values):+6.2f}]"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="search_spaces/methods.yaml")
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3, help="the higher lr of the default space, where naive forgets")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    a = p.parse_args()
    from raycf import config, tracking
    work = Path(tempfile.mkdtemp(prefix="raycf-methods-"))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    over = {"optim.lr": a.lr, **config.parse_overrides(a.set),
            "search": {"continual.method": {"grid": a.methods}}, "sweep.seeds": a.seeds,
            "sweep.log_best_model": False, "storage_path": str(work / "runs"), "tracking.uri": uri,
            "name": "bench-methods", "tracking.experiment": "raycf-bench-methods"}
    cfg = config.load(a.space, over)
    rc = sweep_driver.run(cfg)
    c = tracking.client(uri)
    runs = [r for r in c.search_runs([c.get_experiment_by_name("raycf-bench-methods").experiment_id])
            if "mlflow.parentRunId" in r.data.tags and r.info.status == "FINISHED"]
    by = {m: [r for r in runs if r.data.params.get("continual.method") == m] for m in a.methods}
    stage_s = {m: statistics.mean(train_seconds(c, r) for r in rs) for m, rs in by.items() if rs}
    print(f"\n{cfg.model.name}, finetune {cfg.finetune.method}, lr {a.lr:g}, stages {', '.join(cfg.stages)}; "
          f"seeds {cfg.seed}..{cfg.seed + a.seeds - 1}; FG in points (> 0 = forgot), mean +- sd [min, max]")
    cols = [*(f"{x}_FG" for x in CATEGORIES), "mean_FG", "tasks_average", "tasks_gain"]
    print(f"{'method':12s} {'n':>2s} " + " ".join(f"{x:>31s}" for x in cols) + f" {'stage s':>8s} {'vs naive':>8s}")
    for m, rs in by.items():
        if not rs:
            print(f"{m:12s}  0 (no finished trial)")
            continue
        cells = []
        for col in cols:
            vals = [r.data.metrics[f"headline/{col}"] for r in rs if f"headline/{col}" in r.data.metrics]
            cells.append(f"{spread(vals):>31s}" if vals else f"{'-':>31s}")
        ratio = stage_s[m] / stage_s["naive"] if "naive" in stage_s else float("nan")
        print(f"{m:12s} {len(rs):2d} " + " ".join(cells) + f" {stage_s[m]:8.2f} {ratio:7.2f}x")
    return rc


def train_seconds(c, run) -> float:
    """Mean training seconds of the run's stages (MLflow's train/seconds, one value per stage)."""
    hist = c.get_metric_history(run.info.run_id, "train/seconds")
    return statistics.mean(m.value for m in hist)


if __name__ == "__main__":
    sys.exit(main())
