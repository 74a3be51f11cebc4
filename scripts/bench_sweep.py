"""Where a sweep's wall time goes: useful work (training, probing) vs Ray / process overhead.

    python scripts/bench_sweep.py                   # the default sweep, fresh storage and MLflow store
    python scripts/bench_sweep.py --set search.optim.lr='{grid: [1e-3]}'

Runs the sweep once (cold caches for stages and probes, the base model already built), then reads
every trial's MLflow run: its wall time (run start to end) against the seconds its workers spent in
stage training and probing. Prints per trial and in total:
  useful fraction  = (training + probing seconds) / sweep wall time
  fixed overhead   = trial wall time - its training and probing seconds (process start, imports,
                     worker group, checkpoints, tracking)
The peer is the same work with no Ray at all: the sum of the useful seconds is what a single plain
process would spend, so 1 / useful-fraction is the slowdown Ray and tracking cost this sweep.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="search_spaces/default.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    a = p.parse_args()
    from raycf import config, sweep, tracking
    from raycf.models import resolve_model_dir
    work = Path(tempfile.mkdtemp(prefix="raycf-bench-"))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    over = config.parse_overrides(a.set)
    over.update({"storage_path": str(work / "runs"), "tracking.uri": uri, "name": "bench"})
    cfg = config.load(a.space, over)
    resolve_model_dir(cfg.model.name)  # built once per machine; not part of a sweep's cost
    t0 = time.perf_counter()
    rc = sweep.run(cfg)
    wall = time.perf_counter() - t0
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(cfg.tracking.experiment)
    runs = [r for r in c.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    print(f"\n{'trial':30s} {'wall s':>8s} {'train s':>8s} {'probe s':>8s} {'overhead s':>10s}")
    useful_total, overheads = 0.0, []
    for r in sorted(runs, key=lambda r: r.info.start_time):
        train = sum(m.value for m in c.get_metric_history(r.info.run_id, "work/train_seconds"))
        probe = sum(m.value for m in c.get_metric_history(r.info.run_id, "work/probe_seconds"))
        trial_wall = (r.info.end_time - r.info.start_time) / 1000
        overheads.append(trial_wall - train - probe)
        useful_total += train + probe
        print(f"{r.info.run_name[:30]:30s} {trial_wall:8.1f} {train:8.1f} {probe:8.1f} {overheads[-1]:10.1f}")
    parent = [r for r in c.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags][0]
    print(f"\nsweep wall {wall:.1f} s (exit {rc}); useful work {useful_total:.1f} s = "
          f"{100 * useful_total / wall:.0f}% of wall time (target > 60%)")
    print(f"fixed overhead per trial: mean {sum(overheads) / len(overheads):.1f} s, max {max(overheads):.1f} s "
          f"(target < 10 s); prepare jobs: {parent.data.metrics.get('prepare_jobs', 0):g}")
    print(f"ratio vs the peer (the same useful work in one plain process): {wall / useful_total:.2f}x slower")
    sys.exit(rc)


if __name__ == "__main__":
    main()
