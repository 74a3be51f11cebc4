"""Run a sweep: Ray Tune explores a search space of continual fine-tuning trials; MLflow compares them.

    python -m raycf.sweep                                   # offline default sweep (search_spaces/default.yaml)
    python -m raycf.sweep --space search_spaces/X.yaml --set optim.lr=3e-4 --dry-run
    python -m raycf.sweep --resume                          # continue an interrupted sweep
    ray job submit --working-dir . -- python -m raycf.sweep # the same on a Ray cluster
"""
import sys

from raycf.config.files import load, parse_overrides
from raycf.errors import Interrupted, cli, parser
from raycf.storage import resolve
from raycf.redact import redact_uri
from raycf.sweep.driver import run


def run_sweep(args) -> int:
    cfg = load(args.space, parse_overrides(args.set))
    try:
        return run(cfg, resume=args.resume, dry=args.dry_run, space_file=args.space, dashboard=args.ray_dashboard)
    except KeyboardInterrupt:
        again = " ".join(["python -m raycf.sweep", "--space", args.space, *[f"--set {s}" for s in args.set],
                          "--resume"])
        kept = redact_uri(resolve(cfg.storage_path))
        raise Interrupted(f"interrupted: finished stages and trials are kept in {kept} and MLflow (unfinished runs "
                          f"marked KILLED); continue with: {again}") from None


def main(argv=None) -> int:
    p = parser("raycf.sweep", "run a sweep of continual fine-tuning trials (Ray Tune), tracked in MLflow")
    p.add_argument("--space", default="search_spaces/default.yaml", help="search-space YAML")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a dotted key")
    p.add_argument("--dry-run", action="store_true", help="resolve, validate and count; train nothing")
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep of the same name")
    p.add_argument("--ray-dashboard", action="store_true",
                   help="start Ray's dashboard (127.0.0.1:8265) with the local Ray; off by default: its ten processes "
                        "slow every start on a small machine (a minimal sweep on 2 CPUs: 52 s with it, 45-49 s "
                        "without; scripts/bench_sweep.py)")
    return cli(p, run_sweep, argv, source=lambda a: a.space)


if __name__ == "__main__":
    sys.exit(main())
