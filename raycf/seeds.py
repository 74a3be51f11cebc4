"""Settings run with several seeds (sweep.seeds): mean, spread and a confidence interval per setting and per
searched value, and verdicts that say whether they hold in every seed and on the interval.

A setting is a trial's searched values but its seed. The interval is Student's t at CONFIDENCE over the
seeds (n - 1 degrees of freedom; none for one seed). A verdict compares two values of one searched key on
matched pairs (the same other values and the same seed) and holds "on the interval" when the t interval of
the paired differences excludes 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

CONFIDENCE = 0.95
SEED = "seed"


@dataclass
class Spread:
    n: int
    mean: float
    sd: float    # sample standard deviation (n - 1); NaN for one value
    low: float   # t interval at CONFIDENCE; NaN for one value
    high: float

    def text(self, unit: str = "seed") -> str:
        if self.n == 0:
            return "-"
        if self.n == 1:
            return f"{self.mean:.2f} (1 {unit})"
        return f"{self.mean:.2f} ± {self.sd:.2f} [{self.low:.2f}, {self.high:.2f}] ({self.n} {unit}s)"


def spread(values) -> Spread:
    """Mean, sample sd and the t interval of the non-NaN values."""
    xs = [float(v) for v in values if v is not None and not math.isnan(v)]
    n = len(xs)
    if n == 0:
        return Spread(0, math.nan, math.nan, math.nan, math.nan)
    m = sum(xs) / n
    if n == 1:
        return Spread(1, m, math.nan, math.nan, math.nan)
    from scipy.stats import t
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    half = float(t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / math.sqrt(n)
    return Spread(n, m, sd, m - half, m + half)


def setting(params: dict, keys: list[str]) -> tuple:
    """A trial's setting: its values of the searched keys, the seed left out."""
    return tuple(params.get(k, "-") for k in keys if k != SEED)


def label(params: dict, keys: list[str]) -> str:
    return " ".join(f"{short(k)}={params.get(k, '-')}" for k in keys if k != SEED) or "(one setting)"


def short(key: str) -> str:
    return {"task_order": "order", "warm_start.kind": "warm_start"}.get(key, key.split(".")[-1])


def by_setting(rows: list[dict], keys: list[str], metric: str) -> dict[str, Spread]:
    """Setting label -> spread of `metric` over its seeds (trials that report it)."""
    groups: dict[str, list[float]] = {}
    for r in rows:
        if metric in r["metrics"]:
            groups.setdefault(label(r["params"], keys), []).append(r["metrics"][metric])
    return {k: spread(v) for k, v in groups.items()}


@dataclass
class Verdict:
    key: str
    better: str          # the value with the lower mean
    worse: str
    diffs: list          # metric(worse) - metric(better) per matched pair
    metric: str

    @property
    def spread(self) -> Spread:
        return spread(self.diffs)

    @property
    def every_seed(self) -> bool:
        return bool(self.diffs) and all(d > 0 for d in self.diffs)

    @property
    def on_interval(self) -> bool:
        s = self.spread
        return s.n > 1 and s.low > 0

    def text(self) -> str:
        s, n = self.spread, len(self.diffs)
        wins = sum(d > 0 for d in self.diffs)
        interval = f" [{s.low:.2f}, {s.high:.2f}] ({CONFIDENCE:.0%} t interval)" if n > 1 else ""
        return (f"{short(self.key)}: {self.better} has lower {self.metric} than {self.worse} by {s.mean:.2f}"
                f"{interval} over {n} matched pair(s); in every pair: {'yes' if self.every_seed else 'no'} "
                f"({wins} of {n}); on the interval: {'yes' if self.on_interval else 'no'}")


def matched(rows: list[dict], keys: list[str], key: str, metric: str, a: str, b: str) -> list[float]:
    """metric(b) - metric(a) over pairs of trials equal in every other searched key and the seed."""
    others = [k for k in keys if k != key]
    cells: dict[tuple, dict[str, float]] = {}
    for r in rows:
        if metric in r["metrics"]:
            cells.setdefault(tuple(r["params"].get(k) for k in others), {})[r["params"].get(key)] = \
                r["metrics"][metric]
    return [c[b] - c[a] for c in cells.values() if a in c and b in c]


def verdicts(rows: list[dict], keys: list[str], metric: str, skip: tuple = ()) -> list[Verdict]:
    """For each searched key (not the seed, nor those in skip) with several values: its value of lowest mean
    `metric` against each other value, on matched pairs."""
    out = []
    for key in (k for k in keys if k != SEED and k not in skip):
        values: dict[str, list[float]] = {}
        for r in rows:
            if metric in r["metrics"]:
                values.setdefault(r["params"].get(key), []).append(r["metrics"][metric])
        if len(values) < 2:
            continue
        best = min(values, key=lambda v: sum(values[v]) / len(values[v]))
        for other in (v for v in values if v != best):
            diffs = matched(rows, keys, key, metric, best, other)
            if diffs:
                out.append(Verdict(key, best, other, diffs, metric))
    return out
