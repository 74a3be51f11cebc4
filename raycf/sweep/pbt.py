"""Population-based training across stage boundaries (sweep.scheduler pbt | pb2): which keys it may perturb, the
checks of its section, and a trial's lineage.

A continual trial's stage boundaries are where PBT acts: after every `sweep.pbt.interval`-th stage the worst
`quantile` of the population take the stage checkpoint of one of the best (Tune hands them its Tune checkpoint,
a small lineage.json that names the stage-cache entries; the weights travel through the stage cache, verified
like every entry and pinned to the donor's manifest) and go on with perturbed values of the keys that may change
between stages. What a stage trained with, and by whom, is the trial's lineage: a per-stage table in its MLflow
run (pbt/schedule.txt, pbt/lineage.json, the pbt/<key> metrics) and in the report.

The scheduler itself (Tune's PBT or PB2 with a stage-boundary gate on the worker pool) is raycf.sweep.schedulers.
"""
from __future__ import annotations

import hashlib
import json

from raycf import storage

# keys whose value may change between two stages of one trial: the optimizer's and the continual method's
# strengths. Not the model, its LoRA shape, the method, the task order or the seed: the weights a stage hands on
# would not fit, or the trial would no longer be one experiment
MAY_CHANGE = ("optim.lr", "optim.warmup_steps", "optim.weight_decay", "optim.epochs", "optim.steps_per_stage",
              "optim.max_grad_norm", "optim.schedule", "optim.stage_lr_decay")
PBT_SCHEDULERS = ("pbt", "pb2")
LINEAGE_FILE = "lineage.json"
SCHEDULE_TAG = "raycf.pbt.schedule"   # a trial run's per-stage table (what the report and the summary show)


def may_change(key: str) -> bool:
    parts = key.split(".")
    return key in MAY_CHANGE or (len(parts) == 3 and parts[0] == "continual")


def is_pbt(cfg) -> bool:
    return cfg.sweep.scheduler in PBT_SCHEDULERS


def perturbed_keys(cfg) -> list[str]:
    """The keys PBT perturbs: sweep.pbt.keys, or every searched key that may change between stages."""
    return list(cfg.sweep.pbt.keys) or [k for k in cfg.search if may_change(k)]


def problems(cfg, resolved: dict) -> list[str]:
    """sweep.pbt against the search space and the rest of the sweep, one line each."""
    sc, out = cfg.sweep, []
    keys = cfg.sweep.pbt.keys
    mutable = [k for k in cfg.search if may_change(k)]
    for i, k in enumerate(keys):
        if not isinstance(k, str):
            out.append(f"sweep.pbt.keys[{i}]: {k!r} is not a dotted config key, e.g. optim.lr")
        elif not may_change(k):
            out.append(f"sweep.pbt.keys: {k} cannot change between two stages of a trial; PBT may perturb "
                       f"{', '.join(MAY_CHANGE)} and continual.<method>.<strength>")
        elif k not in resolved:
            out.append(f"sweep.pbt.keys: {k} is not searched; give its domain under search, e.g. "
                       f"search.{k}: {{loguniform: [1.0e-4, 1.0e-2]}}")
    if not keys and not mutable:
        out.append(f"sweep.scheduler: {sc.scheduler} perturbs searched keys that may change between stages, and "
                   f"none is searched; search e.g. optim.lr or continual.replay.ratio, or use sweep.scheduler=fifo")
    n_stages = len(cfg.stages) if isinstance(cfg.stages, list) else 0
    if isinstance(sc.pbt.interval, int) and sc.pbt.interval >= n_stages:
        out.append(f"sweep.pbt.interval: {sc.pbt.interval}, but a trial has {n_stages} stage(s): PBT would never "
                   f"act before the last; use an interval below {n_stages}")
    if sc.objectives:
        out.append(f"sweep.objectives: {sc.scheduler} exploits by one metric (sweep.metric); with several "
                   f"objectives use sweep.scheduler=fifo")
    if sc.search_alg != "basic":
        out.append(f"sweep.search_alg: {sc.search_alg} proposes trials one by one, {sc.scheduler} needs its "
                   f"population at once; use sweep.search_alg=basic with {sc.scheduler}")
    if not sc.worker_pool:
        out.append(f"sweep.worker_pool: {sc.scheduler} holds each trial at its stage boundaries on the worker pool; "
                   f"set sweep.worker_pool=true")
    grid = 1
    for name, arg in resolved.values():
        grid *= len(arg) if name == "grid" else 1
    if isinstance(sc.num_samples, int) and grid * sc.num_samples < 2:
        out.append(f"sweep.num_samples: a population of {grid * sc.num_samples} trial; {sc.scheduler} needs two "
                   f"or more (e.g. sweep.num_samples=4)")
    if sc.scheduler == "pb2":
        for k in keys or mutable:
            name, arg = resolved.get(k, ("grid", [0]))
            values = arg if name in ("grid", "choice") else []
            if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in values):
                out.append(f"search.{k}: pb2 explores numbers between bounds; {k} takes {values!r}: use "
                           f"sweep.scheduler=pbt, or a numeric domain")
        try:
            import GPy  # noqa: F401
            import sklearn  # noqa: F401
        except ImportError:
            out.append("sweep.scheduler: pb2 needs GPy and scikit-learn; pip install 'raycf[pb2]', or use "
                       "sweep.scheduler=pbt")
    return out


def bounds(resolved: dict, key: str) -> tuple[float, float]:
    """The range a perturbed value stays in: its domain's bounds, or its grid's or choice's smallest and largest."""
    name, arg = resolved[key]
    if name in ("grid", "choice"):
        return min(arg), max(arg)
    return arg[0], arg[1]


def clipped(config: dict, resolved: dict, keys: list[str], kinds: dict) -> dict:
    """A perturbed config put back inside the search space: numbers clipped to their key's bounds, integers
    rounded (PBT multiplies by 0.8 or 1.2, which leaves both)."""
    out = dict(config)
    for k in keys:
        v = out.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and resolved[k][0] not in ("grid", "choice"):
            low, high = bounds(resolved, k)
            v = min(max(v, low), high)
            out[k] = int(round(v)) if kinds.get(k) == "int" else float(v)
    return out


def manifest_digest(location: str) -> str:
    """The SHA-256 of a stage-cache entry's manifest (it lists every file's SHA-256: it pins the whole entry)."""
    from raycf import cache
    return hashlib.sha256(storage.read_text(storage.join(str(location), cache.MANIFEST)).encode()).hexdigest()


def values(cfg) -> dict:
    """The perturbed keys' values in `cfg`."""
    from raycf.config.dotted import get_dotted
    return {k: get_dotted(cfg, k) for k in perturbed_keys(cfg)}


def stage_record(k: int, trial: str, run_id: str, name: str, key: str, digest: str, values: dict) -> dict:
    return {"stage": k, "trial": trial, "run_id": run_id, "name": name, "key": key, "digest": digest,
            "values": values}


def read_lineage(folder) -> dict | None:
    """The lineage a Tune checkpoint carries (None for one of another kind)."""
    from pathlib import Path
    path = Path(folder) / LINEAGE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def plan_prefix(lineage: dict, keys_of) -> list[str]:
    """The stage keys a trial restored from `lineage` takes as given. keys_of(prefix): this trial's stage keys on
    that prefix. The trial's config reproduces the lineage's last segment (its own checkpoint, or a donor whose
    perturbed values came out the same): it goes on with that segment, sharing its later stages; else a new
    segment starts after the checkpoint's stage."""
    k, fixed, given = lineage["stage"], lineage["fixed"], lineage["stage_keys"]
    if keys_of(given[:fixed])[:k] == given[:k]:
        return given[:fixed]
    return given[:k]


def schedule_table(records: list[dict], stages: list[str]) -> str:
    """The per-stage table of a lineage: stage, task, the trial whose run trained it, and the values it used."""
    keys = sorted({k for r in records for k in r["values"]})
    head = ["stage", "task", "trained by", *keys]
    rows = [[str(r["stage"]), stages[r["stage"] - 1] if r["stage"] <= len(stages) else "?", r["name"],
             *(short(r["values"].get(k)) for k in keys)] for r in records]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip() for line in [head, *rows])


def short(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return "-" if v is None else str(v)


class Lineage:
    """One PBT trial's lineage as its Tune trial driver keeps it: the stages it holds (who trained each, with
    which values, the entry and its manifest digest) and the exploits it made. Written into each stage's Tune
    checkpoint (what a trial exploiting this one starts from), into the trial's MLflow run, and to
    `<sweep>/pbt/lineage/<trial>.json` before Tune hears of the stage: a killed sweep's saved Tune state may be
    a stage or an exploit behind, the trial's own file is not. `<sweep>/pbt/<trial>.json`: its exploits."""

    def __init__(self, cfg, trial: str, run_id: str, name: str, uri: str, sweep_dir: str):
        self.cfg, self.trial, self.run_id, self.name, self.uri = cfg, trial, run_id, name, uri
        self.events_file = storage.join(sweep_dir, "pbt", f"{trial}.json")
        self.own_file = storage.join(sweep_dir, "pbt", "lineage", f"{trial}.json")
        self.events: list[dict] = []
        self.records: list[dict] = []
        self.restored: dict | None = None

    def values(self) -> dict:
        return values(self.cfg)

    def restore(self, given: dict | None) -> dict:
        """Where the trial starts: `given`, the lineage of the Tune checkpoint Tune restores it from (a donor's
        after an exploit, else its own), or the trial's own latest lineage where Tune's is older. Returns the
        values it goes on with where they are not Tune's (its own lineage's, when Tune's state is behind)."""
        own = json.loads(storage.read_text(self.own_file)) if storage.exists(self.own_file) else None
        known = own is not None and given is not None and any(
            e["stage"] == given["stage"] and e["donor"] == given["trial"] for e in own["exploits"])
        if given is not None and given["trial"] != self.trial and not known:  # an exploit: the donor's stages
            k = given["stage"]
            self.restored, self.records = given, [r for r in given["stages"] if r["stage"] <= k]
            self.events = [e for e in (own["exploits"] if own else []) if e["stage"] < k] + [{
                "stage": k, "donor": given["trial"], "donor_run": given["run_id"], "donor_name": given["name"],
                "key": given["stage_keys"][k - 1], "digest": self.records[-1]["digest"], "values": self.values()}]
            self.publish_events()
            # the trial's own file holds the exploit before any stage follows it: a sweep killed after the next
            # stage is logged and before Tune saves its state resumes from here, not from the stage before
            storage.write_text(self.own_file, json.dumps({**given, "trial": self.trial, "run_id": self.run_id,
                                                          "name": self.name, "stages": self.records,
                                                          "exploits": self.events}))
            return {}
        if own is not None and (given is None or own["stage"] >= given["stage"]):
            given = own
        if given is None:
            return {}
        self.restored, self.records, self.events = given, given["stages"], given["exploits"]
        self.publish_events()
        if self.events and self.events[-1]["stage"] == self.records[-1]["stage"]:  # an exploit, nothing since
            return self.events[-1]["values"]
        return {} if not self.records or self.records[-1]["trial"] != self.trial else self.records[-1]["values"]

    def publish_events(self) -> None:
        storage.write_text(self.events_file, json.dumps(self.events))
        from raycf import tracking
        tracking.client(self.uri).set_tag(self.run_id, "raycf.pbt.exploits", str(len(self.events)))

    def plan(self, make) -> "object":
        """The trial's plan: make(prefix) -> TrialPlan, on the restored lineage's stages where there is one,
        with their manifests pinned."""
        from dataclasses import replace
        if self.restored is None:
            return make(None)
        prefix = plan_prefix(self.restored, lambda p: make(p).stage_keys)
        return replace(make(prefix), pinned={r["stage"]: r["digest"] for r in self.records})

    def stage_done(self, k: int, plan, location: str) -> dict:
        """Stage k came from the pool (or, where its MLflow run holds it already, from the stage cache): its
        record, and the lineage a Tune checkpoint of stage k carries, kept in the trial's own file first."""
        self.records = [r for r in self.records if r["stage"] < k] + [stage_record(
            k, self.trial, self.run_id, self.name, plan.stage_keys[k - 1], manifest_digest(location), self.values())]
        state = self.state(plan)
        storage.write_text(self.own_file, json.dumps(state))
        return state

    def state(self, plan) -> dict:
        """The lineage as of the last stage it holds (what a Tune checkpoint of that stage carries)."""
        return {"stage": self.records[-1]["stage"], "fixed": plan.fixed, "stage_keys": plan.stage_keys,
                "stages": self.records, "trial": self.trial, "run_id": self.run_id, "name": self.name,
                "exploits": self.events}

    def catch_up(self, plan) -> dict | None:
        """Stages the trial's MLflow run holds beyond its lineage (the sweep was killed between the two): the
        pool does not report them again, so their records come from the plan and the stage cache."""
        held = self.records[-1]["stage"] if self.records else 0
        state = None
        for k in range(held + 1, plan.logged + 1):
            state = self.stage_done(k, plan, plan.stage_entry(k).location)
        return state

    def log(self, lineage: dict) -> None:
        """The lineage and its per-stage table as artifacts of the trial's MLflow run."""
        from raycf import tracking
        tracking.log_text(self.uri, self.run_id, "pbt/lineage.json", json.dumps(lineage, indent=1))
        table = schedule_table(self.records, list(self.cfg.stages))
        exploits = "\n".join(f"after stage {e['stage']}: took the weights of {e['donor_name']} and went on with "
                             f"{', '.join(f'{k}={short(v)}' for k, v in e['values'].items())}" for e in self.events)
        tracking.log_text(self.uri, self.run_id, "pbt/schedule.txt", table + "\n\n" + (exploits or "no exploit") + "\n")
        tracking.client(self.uri).set_tag(self.run_id, SCHEDULE_TAG, table[:5000])
