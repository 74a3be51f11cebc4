"""The sweep: Ray Tune explores a search space of continual fine-tuning trials; MLflow compares them.

    python -m raycf.sweep [--space S.yaml] [--set k=v] [--dry-run] [--resume]

Modules: driver (checks, resources, shared work, the Tuner, the parent MLflow run), trainable (one Tune trial),
progress (the Tune callback that ends each trial's run), summary (the ranked table and the verdicts).
From Python: `from raycf.sweep.driver import run, start_pool`.
"""
