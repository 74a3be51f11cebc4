"""Generate raycf's offline sets from the fact tables in raycf/data/tables/.

    python -m raycf.data.build            # (re)write raycf/data/sets/*.jsonl
    python -m raycf.data.build --check    # exit 1 if the committed files differ from what this generates

Deterministic: every generator draws from its own `random.Random` seeded by a constant, so the output
depends only on this file and the tables. tests/data/test_build.py checks the committed files.

Files written:  {task}.test.jsonl + {task}.fewshot.jsonl   for each probe task (probe rows, k-shot pool)
                {stage}.train.jsonl + {stage}.eval.jsonl    for each instruction stage and `general`
The generators below are also used by raycf.data.corpus to write *other* instances (disjoint from the
shipped probe rows) into the pretraining corpus of raycf-tiny.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from raycf.data.build_probes import PROBE_MAKERS
from raycf.data.build_stages import STAGE_MAKERS, stage_rows
from raycf.errors import cli, parser


SETS_DIR = Path(__file__).parent / "sets"


def build_all() -> dict[str, list[dict]]:
    """file name -> rows, for every shipped set."""
    out = {}
    for task, make in PROBE_MAKERS.items():
        test, fewshot = make(task)
        out[f"{task}.test.jsonl"] = test
        out[f"{task}.fewshot.jsonl"] = fewshot
    for stage in STAGE_MAKERS:
        train, eval_ = stage_rows(stage)
        out[f"{stage}.train.jsonl"] = train
        out[f"{stage}.eval.jsonl"] = eval_
    return out


def dumps(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_or_check(args) -> int:
    sets = build_all()
    if args.check:
        stale = [f for f, rows in sets.items()
                 if not (args.out / f).exists() or (args.out / f).read_text(encoding="utf-8") != dumps(rows)]
        extra = sorted(p.name for p in args.out.glob("*.jsonl") if p.name not in sets)
        for f in stale + extra:
            print(f"stale: {args.out / f}", file=sys.stderr)
        return 1 if stale or extra else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for f, rows in sets.items():
        (args.out / f).write_text(dumps(rows), encoding="utf-8")
        print(f"{len(rows):5d}  {args.out / f}")
    return 0


def main(argv=None) -> int:
    p = parser("raycf.data.build", __doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare with the files on disk instead of writing")
    p.add_argument("--out", type=Path, default=SETS_DIR, help=f"folder of the sets (default: {SETS_DIR})")
    return cli(p, write_or_check, argv)


if __name__ == "__main__":
    sys.exit(main())
