"""Where a trial's wall time goes: `<epoch s> <pid> <event>` lines in $RAYCF_TIMELINE, when it is set
(scripts/bench_sweep.py --timeline reads them)."""
from __future__ import annotations

import os
import time


def mark(event: str) -> None:
    """Append `<epoch s> <pid> <event>` to $RAYCF_TIMELINE, if set: where a trial's wall time goes
    (scripts/bench_sweep.py --timeline reads it)."""
    path = os.environ.get("RAYCF_TIMELINE")
    if path:
        with open(path, "a") as f:
            f.write(f"{time.time():.3f} {os.getpid()} {event}\n")
