"""Where a sweep's wall time goes: useful work (training, probing) vs Ray / process overhead.

    python scripts/bench_sweep.py                   # the default sweep, fresh storage and MLflow store
    python scripts/bench_sweep.py --set search.optim.lr='{grid: [1e-3]}'

Runs the sweep once (cold caches for stages and probes, the base model already built), then reads
every trial's MLflow run: its wall time (run start to end) against the seconds its workers spent in
training (the warm start and the stages) and probing. Prints per trial and in total:
  useful fraction  = (training + probing seconds) / sweep wall time
  fixed overhead   = trial wall time - its training and probing seconds (what one more trial costs besides
                     its work: job hand-over, model build, checkpoints and their reload check, tracking)
and the sweep's one-time phases from its timeline (RAYCF_TIMELINE): checks and Ray start, the worker pool's
start-up, the trials, the summary.
The peer is the same work with no Ray at all: the sum of the useful seconds is what a single plain
process would spend, so 1 / useful-fraction is the slowdown Ray and tracking cost this sweep.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from raycf.sweep import driver as sweep_driver


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="search_spaces/default.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    a = p.parse_args()
    from raycf import config, tracking
    from raycf.models.resolve import resolve_model_dir
    work = Path(tempfile.mkdtemp(prefix="raycf-bench-"))
    timeline = work / "timeline.txt"
    os.environ["RAYCF_TIMELINE"] = str(timeline)  # Ray's workers inherit it from this process
    uri = f"sqlite:///{work / 'mlflow.db'}"
    over = config.parse_overrides(a.set)
    over.update({"storage_path": str(work / "runs"), "tracking.uri": uri, "name": "bench"})
    cfg = config.load(a.space, over)
    resolve_model_dir(cfg.model.name)  # built once per machine; not part of a sweep's cost
    t0 = time.perf_counter()
    rc = sweep_driver.run(cfg)
    wall = time.perf_counter() - t0
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(cfg.tracking.experiment)
    runs = [r for r in c.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    marks = read_marks(timeline)
    pool_ready = marks.get("sweep_pool_ready", 0.0)
    print(f"\n{'trial':30s} {'wall s':>8s} {'train s':>8s} {'probe s':>8s} {'pool wait s':>11s} {'overhead s':>10s}")
    useful_total, overheads = 0.0, []
    for r in sorted(runs, key=lambda r: r.info.start_time):
        train = sum(m.value for m in c.get_metric_history(r.info.run_id, "work/train_seconds"))
        probe = sum(m.value for m in c.get_metric_history(r.info.run_id, "work/probe_seconds"))
        trial_wall = (r.info.end_time - r.info.start_time) / 1000
        # the first trials start while the worker pool still starts: that wait is the sweep's one-time cost
        wait = max(0.0, pool_ready - r.info.start_time / 1000)
        overheads.append(trial_wall - train - probe - wait)
        useful_total += train + probe
        print(f"{r.info.run_name[:30]:30s} {trial_wall:8.1f} {train:8.1f} {probe:8.1f} {wait:11.1f} "
              f"{overheads[-1]:10.1f}")
    parent = [r for r in c.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags][0]
    print(f"\nsweep wall {wall:.1f} s (exit {rc}); useful work {useful_total:.1f} s = "
          f"{100 * useful_total / wall:.0f}% of wall time (target > 60%)")
    print(f"fixed overhead per trial: mean {sum(overheads) / len(overheads):.1f} s, max {max(overheads):.1f} s "
          f"(target < 10 s); prepare jobs: {parent.data.metrics.get('sweep/prepare_jobs', 0):g}")
    print(f"ratio vs the peer (the same useful work in one plain process): {wall / useful_total:.2f}x slower")
    print_phases(marks, runs)
    sys.exit(rc)


def read_marks(timeline: Path) -> dict[str, float]:
    """The first time of each event in the sweep's timeline (raycf.trial.mark)."""
    marks: dict[str, float] = {}
    for line in timeline.read_text().splitlines() if timeline.exists() else []:
        t, _, event = line.split(None, 2)
        marks.setdefault(event, float(t))
    return marks


def print_phases(marks: dict[str, float], runs) -> None:
    """One-time costs of the sweep, from the driver's marks and the trials' MLflow run times."""
    if "sweep_start" not in marks:
        return
    first = min(r.info.start_time for r in runs) / 1000
    last = max(r.info.end_time for r in runs) / 1000
    start = marks["sweep_start"]
    ray_ready = marks.get("sweep_ray_ready", start)
    pool_ready = marks.get("sweep_pool_ready", ray_ready)
    print(f"phases: checks + Ray start {ray_ready - start:.1f} s; first trial started {first - ray_ready:.1f} s and "
          f"the worker pool was up {pool_ready - ray_ready:.1f} s after Ray (the two start side by side); trials "
          f"{last - first:.1f} s; after the last trial {marks.get('sweep_trials_done', last) - last:.1f} s + summary")


if __name__ == "__main__":
    main()
