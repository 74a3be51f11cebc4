"""Run one continual fine-tuning trial, no Tune: searched keys take the first value of their domain.

    python -m raycf.trial --space search_spaces/default.yaml [--set optim.lr=3e-4 ...] [--debug]
"""
import sys

from raycf.config.files import load, parse_overrides, to_yaml
from raycf.errors import cli, parser
from raycf.trial.run import first_point, run, summary


def run_trial(args) -> int:
    cfg = first_point(load(args.space, parse_overrides(args.set)))
    print(to_yaml(cfg), end="")
    print(summary(run(cfg, dashboard=args.ray_dashboard)))
    return 0


def main(argv=None) -> int:
    p = parser("raycf.trial", "run one continual fine-tuning trial (searched keys take their first value)")
    p.add_argument("--space", default="search_spaces/default.yaml", help="experiment / search-space YAML")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a dotted key")
    p.add_argument("--ray-dashboard", action="store_true",
                   help="start Ray's dashboard (127.0.0.1:8265) with the local Ray; off by default: its ten processes "
                        "slow every start on a small machine (a minimal sweep on 2 CPUs: 52 s with it, 45-49 s "
                        "without; scripts/bench_sweep.py)")
    return cli(p, run_trial, argv, source=lambda a: a.space)


if __name__ == "__main__":
    sys.exit(main())
