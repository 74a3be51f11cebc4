"""Rebuild raycf-tiny, the shipped offline base model (how it was made: raycf.models.pretrain).

    python -m raycf.pretrain [--cache-dir DIR]     # rebuild it in the cache, print the folder and probe accuracy
    python -m raycf.pretrain --ship                # ... and replace the copy shipped in raycf/weights/raycf-tiny
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from raycf.data import CATEGORIES, task_names
from raycf.errors import cli, parser
from raycf.models.pretrain import SHIPPED, PretrainConfig, build_key, pretrained_tiny_dir


def rebuild(args) -> int:
    t0 = time.time()
    folder = pretrained_tiny_dir(args.cache_dir)
    print(folder)
    print(f"ready in {time.time() - t0:.0f}s")
    if args.ship:
        shutil.rmtree(SHIPPED, ignore_errors=True)
        shutil.copytree(folder, SHIPPED)
        (SHIPPED / "pretrain.json").write_text(json.dumps(
            {"key": build_key(args.cache_dir), "config": asdict(PretrainConfig())}, indent=1) + "\n")
        print(f"shipped to {SHIPPED}")
    if not args.no_probe:
        print_probe_scores(folder)
    return 0


def print_probe_scores(folder: Path) -> None:
    """The general-ability probes of the model in `folder` (the generation tasks are what raycf-tiny has not
    learned yet)."""
    import torch
    from raycf.models.load import load_model
    from raycf.probe.run import run_probes
    torch.set_num_threads(2)
    model, tok = load_model(folder)
    for cat in CATEGORIES[:4]:
        res = run_probes(model, tok, task_names(cat))
        for name, m in res.items():
            key = "pct_stereotype" if "pct_stereotype" in m else "acc"
            print(f"{cat:10s} {name:18s} {key} {m[key]:.3f}")
        if cat != "bias":
            print(f"{cat:10s} {'mean':18s} acc {sum(m['acc'] for m in res.values()) / len(res):.3f}")


def main(argv=None) -> int:
    p = parser("raycf.pretrain", "rebuild raycf-tiny, the shipped offline base model, and probe it")
    p.add_argument("--cache-dir", type=Path, default=None, help="where the model is built (default: $RAYCF_CACHE)")
    p.add_argument("--no-probe", action="store_true", help="only build (or find) the folder")
    p.add_argument("--ship", action="store_true", help=f"copy the result to {SHIPPED} (with pretrain.json)")
    return cli(p, rebuild, argv)


if __name__ == "__main__":
    sys.exit(main())
