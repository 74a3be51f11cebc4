"""Build (or find) a model folder and print its path.

    python -m raycf.models smollm2-135m [--cache-dir DIR]   # convert the offline SmolLM2-135M once
    python -m raycf.models tiny-causal                       # build (or find) a tiny model folder
"""
import sys
from pathlib import Path

from raycf.errors import cli, parser
from raycf.models.resolve import resolve_model_dir


def main(argv=None) -> int:
    p = parser("raycf.models", "build (or find) a model folder and print its path")
    p.add_argument("name", help="built-in name (tiny-causal, tiny-seq2seq, raycf-tiny, smollm2-135m) or folder")
    p.add_argument("--cache-dir", type=Path, default=None, help="where built models go (default: $RAYCF_CACHE)")
    p.add_argument("--allow-download", action="store_true", help="let NAME be a hub name (org/name), downloaded")
    return cli(p, lambda a: print(resolve_model_dir(a.name, cache_dir=a.cache_dir, allow_download=a.allow_download,
                                                    key="NAME", download_flag="--allow-download")), argv)


if __name__ == "__main__":
    sys.exit(main())
