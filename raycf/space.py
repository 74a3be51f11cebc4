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

import dataclasses
import difflib
import itertools
import json
import math
import random

from raycf.config.checks import MAX_INT
from raycf.config.files import flat_params
from raycf.config.dotted import get_dotted
from raycf.config.schema import ExperimentConfig
from raycf.data.registry import GENERAL, STAGES
from raycf.errors import ConfigError, did_you_mean
from raycf.sweep import pbt

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


MAX_ORDERS = 5040  # 7! task orders; more is no sweep that finishes


def stage_orders(arg, stages: list[str], seed: int, key: str, problems: list[str]) -> list[list[str]]:
    """The task orders an `orders` domain names."""
    if arg == "all":
        n = math.factorial(len(stages))
        if n > MAX_ORDERS:
            problems.append(f"search.{key}: orders: all over {len(stages)} stages is {n:,} orders (at most "
                            f"{MAX_ORDERS:,} are run); use {{orders: {{random: N}}}} for N random orders")
            return []
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


def repeat_problem(key: str, domain: str, values: list) -> str | None:
    """A grid or orders list that holds a value twice (1e-3 and 0.001 are one value) runs the same trials twice
    and counts the copies as settings of their own: the line that says so, or None."""
    seen = set()
    for v in values:
        text = json.dumps(v, sort_keys=True, default=str)
        if text in seen:
            return (f"search.{key}: {domain} lists {v!r} more than once (each copy runs the same trials again); "
                    f"give each {'order' if domain == 'orders' else 'value'} once, and sweep.seeds for repeats")
        seen.add(text)
    return None


def resolve(cfg: ExperimentConfig) -> dict:
    """{dotted key: (domain, values or bounds)} with every problem gathered into one ConfigError."""
    problems: list[str] = []
    out = {}
    for key, spec in cfg.search.items():
        try:
            current = get_dotted(cfg, key)
        except (AttributeError, KeyError, TypeError):
            keys = [k for k in flat_params(cfg) if difflib.get_close_matches(key, [k], cutoff=0.6)]
            top = [f for f in cfg.to_dict() if f not in ("search", "sweep")]
            hint = did_you_mean(key, keys) if keys else did_you_mean(key.split('.')[0], top)
            problems.append(f"search.{key}: not a config key{hint}")
            continue
        if dataclasses.is_dataclass(current):
            fields = [f.name for f in dataclasses.fields(current)]
            problems.append(f"search.{key}: is a section, not a key; search keys inside it, e.g. search.{key}."
                            f"{fields[0]}: {{grid: [...]}} (keys: {', '.join(fields)})")
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
                if problem := repeat_problem(key, "orders", values):
                    problems.append(problem)
                    continue
            check_values(cfg, key, values, problems)
            out[key] = ("grid", values)
        elif name in ("grid", "choice"):
            if not isinstance(arg, list) or not arg:
                problems.append(f"search.{key}: {name} needs a non-empty list of values (it gives zero trials)")
                continue
            if key == "stages":
                check_orders(cfg, key, arg, problems)
            check_values(cfg, key, arg, problems)
            if name == "grid" and (problem := repeat_problem(key, "grid", arg)):
                problems.append(problem)
                continue
            out[key] = (name, arg)
        else:
            bounds = sampled_bounds(cfg, key, name, arg, problems)
            if bounds is not None:
                out[key] = (name, bounds)
    if cfg.sweep.seeds > 1:
        if "seed" in out:
            problems.append("search.seed: sweep.seeds already runs every setting with several seeds; drop one of "
                            "the two")
        last = cfg.seed + cfg.sweep.seeds - 1
        if last > MAX_INT:
            problems.append(f"sweep.seeds: {cfg.sweep.seeds} seeds from seed {cfg.seed} end at {last}, above "
                            f"{MAX_INT}; lower seed or sweep.seeds")
        out["seed"] = ("grid", [cfg.seed + i for i in range(cfg.sweep.seeds)])
    if cfg.sweep.search_alg == "optuna":
        problems += optuna_problems(out)
    if pbt.is_pbt(cfg):
        problems += pbt.problems(cfg, out)
    if problems:
        raise ConfigError(problems)
    return out


def optuna_problems(resolved: dict) -> list[str]:
    """Optuna samples every dimension: none may be a grid (sweep.seeds runs its seeds as one); and it must be
    installed."""
    problems = []
    grids = [k for k, (name, _) in resolved.items() if name == "grid"]
    if grids:
        why = " (sweep.seeds > 1 makes seed one)" if "seed" in grids else ""
        problems.append(f"search.{grids[0]}: a grid, but sweep.search_alg optuna samples every dimension{why}; "
                        f"use choice for a list of values, sweep.seeds=1, or sweep.search_alg=basic")
    try:
        import optuna  # noqa: F401
    except ImportError:
        problems.append("sweep.search_alg: optuna is not installed; pip install 'raycf[optuna]' (optuna>=4)")
    return problems


def sampled_bounds(cfg: ExperimentConfig, key: str, name: str, arg, problems: list[str]) -> list | None:
    """[low, high] of a uniform, loguniform or randint domain, checked like values of the key: both bounds make a
    valid config, the domain gives the key's type (an int key takes randint), low < high (> 0 for loguniform)."""
    if isinstance(arg, list):  # YAML 1.1 reads 1e-4 (no dot) as a string
        arg = [float(x) if isinstance(x, str) and _is_number(x) else x for x in arg]
    if not (isinstance(arg, list) and len(arg) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                             and math.isfinite(x) for x in arg)):
        problems.append(f"search.{key}: {name} needs [low, high], two finite numbers, got {arg!r}")
        return None
    if arg[0] >= arg[1] or (name == "loguniform" and arg[0] <= 0):
        problems.append(f"search.{key}: {name} needs [low, high] with low < high"
                        f"{' and low > 0' if name == 'loguniform' else ''}, got {arg!r}")
        return None
    kind = annotation(cfg, key)
    if kind in ("int", "int|None") and name != "randint":
        problems.append(f"search.{key}: {name} samples floats, but {key} is an integer; use {{randint: "
                        f"[{int(arg[0])}, {int(arg[1])}]}} (both ends included) or {{grid: [...]}}")
        return None
    if name == "randint" and not all(float(x).is_integer() for x in arg):
        problems.append(f"search.{key}: randint needs integer bounds, got {arg!r}")
        return None
    if kind not in ("int", "int|None", "float"):
        problems.append(f"search.{key}: {name} samples numbers, but {key} takes {kind}; use {{grid: [...]}} or "
                        f"{{choice: [...]}}")
        return None
    bounds = [int(x) for x in arg] if name == "randint" else [float(x) for x in arg]
    check_values(cfg, key, bounds, problems)
    return bounds


def annotation(cfg: ExperimentConfig, key: str) -> str:
    """The declared type of a dotted config key, e.g. 'float' or 'int|None'."""
    section, _, leaf = key.rpartition(".")
    parent = get_dotted(cfg, section) if section else cfg
    return {f.name: str(f.type) for f in dataclasses.fields(parent)}[leaf].replace(" ", "")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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
