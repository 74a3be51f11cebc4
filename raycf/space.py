"""Search-space YAML -> Ray Tune param space.

    python -m raycf.sweep --space search_spaces/default.yaml --dry-run   # resolve and count trials

A search space is an experiment config (raycf.config) plus a `search:` section whose keys are dotted
config keys and whose values are Tune domains:

    search:
      optim.lr: {loguniform: [1.0e-4, 1.0e-2]}
      finetune.lora_rank: {grid: [4, 16]}
      warm_start.kind: {grid: [none, general]}
      stages: {orders: all}              # every permutation of `stages`
      # stages: {orders: {random: 4}}    # 4 seeded random permutations
      # stages: {orders: [[a, b, c], [c, b, a]]}

Domains: grid (every value, multiplies the trial count), choice, uniform, loguniform, randint (sampled
`sweep.num_samples` times).
"""
from __future__ import annotations

import difflib
import itertools
import math
import random

from raycf.config.files import flat_params
from raycf.config.schema import ExperimentConfig, get_dotted
from raycf.data.registry import GENERAL, STAGES
from raycf.errors import ConfigError, did_you_mean

DOMAINS = ("grid", "choice", "uniform", "loguniform", "randint", "orders")


def _domain(spec, key: str, problems: list[str]):
    """(name, argument) of one search entry, or None after recording the problem."""
    if not isinstance(spec, dict) or len(spec) != 1:
        problems.append(f"search.{key}: expected one domain like {{grid: [a, b]}}, got {spec!r}")
        return None
    name, arg = next(iter(spec.items()))
    if name not in DOMAINS:
        problems.append(f"search.{key}: unknown domain '{name}'{did_you_mean(str(name), DOMAINS)}")
        return None
    return name, arg


def stage_orders(arg, stages: list[str], seed: int, key: str, problems: list[str]) -> list[list[str]]:
    """The task orders an `orders` domain names."""
    if arg == "all":
        return [list(p) for p in itertools.permutations(stages)]
    if isinstance(arg, dict) and set(arg) == {"random"} and isinstance(arg["random"], int) and arg["random"] > 0:
        perms = [list(p) for p in itertools.permutations(stages)] if len(stages) <= 8 else None
        rng = random.Random(seed)
        if perms is not None:
            return rng.sample(perms, min(arg["random"], len(perms)))
        return [rng.sample(stages, len(stages)) for _ in range(arg["random"])]
    if isinstance(arg, list) and arg and all(isinstance(o, list) for o in arg):
        return arg
    problems.append(f"search.{key}: orders must be 'all', {{random: N}} or a list of task lists, got {arg!r}")
    return []


def check_orders(cfg: ExperimentConfig, key: str, orders: list, problems: list[str]) -> None:
    """Task orders written out in the space may name only stages that exist: shipped or in data.sources."""
    known = [*STAGES, GENERAL, *cfg.data.sources]
    for i, order in enumerate(orders, 1):
        bad = [s for s in order if s not in known] if isinstance(order, list) else []
        if bad:
            problems.append(f"search.{key}: order {i} {order} names unknown stage {bad[0]!r}"
                            f"{did_you_mean(str(bad[0]), known)} (a stage of your own needs data.sources.{bad[0]})")


def check_values(cfg: ExperimentConfig, key: str, values: list, problems: list[str]) -> None:
    """Every value a grid/choice can take must make a valid config."""
    for v in values:
        try:
            cfg.with_overrides({key: v, "search": {}})
        except ConfigError as e:
            problems.extend(f"search.{key}={v!r}: {p}" for p in e.problems)


def resolve(cfg: ExperimentConfig) -> dict:
    """{dotted key: (domain, values or bounds)} with every problem gathered into one ConfigError."""
    problems: list[str] = []
    out = {}
    for key, spec in cfg.search.items():
        try:
            get_dotted(cfg, key)
        except (AttributeError, KeyError, TypeError):
            keys = [k for k in flat_params(cfg) if difflib.get_close_matches(key, [k], cutoff=0.6)]
            top = [f for f in cfg.to_dict() if f not in ("search", "sweep")]
            hint = did_you_mean(key, keys) if keys else did_you_mean(key.split('.')[0], top)
            problems.append(f"search.{key}: not a config key{hint}")
            continue
        d = _domain(spec, key, problems)
        if d is None:
            continue
        name, arg = d
        if name == "orders":
            if key != "stages":
                problems.append(f"search.{key}: the orders domain is for `stages` only")
                continue
            values = stage_orders(arg, list(cfg.stages), cfg.seed, key, problems)
            if isinstance(arg, list):
                check_orders(cfg, key, values, problems)
            check_values(cfg, key, values, problems)
            out[key] = ("grid", values)
        elif name in ("grid", "choice"):
            if not isinstance(arg, list) or not arg:
                problems.append(f"search.{key}: {name} needs a non-empty list of values (it gives zero trials)")
                continue
            if key == "stages":
                check_orders(cfg, key, arg, problems)
            check_values(cfg, key, arg, problems)
            out[key] = (name, arg)
        else:
            ok = isinstance(arg, list) and len(arg) == 2 and all(isinstance(x, (int, float)) for x in arg)
            if not ok or arg[0] >= arg[1] or (name == "loguniform" and arg[0] <= 0):
                problems.append(f"search.{key}: {name} needs [low, high] with low < high"
                                f"{' and low > 0' if name == 'loguniform' else ''}, got {arg!r}")
                continue
            check_values(cfg, key, [arg[0]], problems)
            out[key] = (name, arg)
    if problems:
        raise ConfigError(problems)
    return out


def first_value(spec, key: str):
    """The value a single trial (`python -m raycf.trial`) takes for a searched key."""
    name, arg = next(iter(spec.items()))
    if name == "orders":
        return None  # keep the config's own order
    return arg[0]


def param_space(resolved: dict) -> dict:
    """Tune's param space: {dotted key: tune domain}."""
    from ray import tune
    make = {"grid": tune.grid_search, "choice": tune.choice,
            "uniform": lambda a: tune.uniform(*a), "loguniform": lambda a: tune.loguniform(*a),
            "randint": lambda a: tune.randint(a[0], a[1] + 1)}
    return {key: make[name](arg) for key, (name, arg) in resolved.items()}


def count_trials(resolved: dict, num_samples: int) -> int:
    grid = math.prod(len(arg) for name, arg in resolved.values() if name == "grid")
    return grid * num_samples


def grid_points(resolved: dict) -> list[dict]:
    """Every grid combination (sampled domains left out): used to plan shared work and count stages."""
    keys = [k for k, (name, _) in resolved.items() if name == "grid"]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(resolved[k][1] for k in keys))]
