"""Print the resolved config of a search space.

    python -m raycf.config --space search_spaces/default.yaml --set optim.lr=3e-4
"""
import sys

from raycf.config.files import load, parse_overrides, to_yaml
from raycf.errors import cli, parser


def main(argv=None) -> int:
    p = parser("raycf.config", "print the resolved config of a search space (every problem, one line each)")
    p.add_argument("--space", default="search_spaces/default.yaml", help="experiment / search-space YAML")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a dotted key")
    return cli(p, lambda a: print(to_yaml(load(a.space, parse_overrides(a.set))), end=""), argv,
               source=lambda a: a.space)


if __name__ == "__main__":
    sys.exit(main())
