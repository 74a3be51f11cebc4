"""What a finished sweep prints: trials ranked by its metric with their searched values and forgetting figures,
the effect of each searched parameter, the shared-work counts, and where to compare the runs."""
from __future__ import annotations

import math
import re

from raycf import tracking
from raycf.config.schema import ExperimentConfig, SweepConfig
from raycf.pareto import pareto_set
from raycf.redact import redact_uri
from raycf.sweep import pbt
from raycf.seeds import CONFIDENCE, SEED, Verdict, by_setting, matched, short, spread, verdicts


def summarize(uri: str, parent_run_id: str, sc: SweepConfig) -> list[dict]:
    c = tracking.client(uri)
    exp = c.get_run(parent_run_id).info.experiment_id
    rows = []
    for r in c.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_run_id}'"):
        rows.append({"run": r.info.run_name, "status": r.info.status, "params": r.data.params,
                     "metrics": r.data.metrics, "run_id": r.info.run_id,
                     "stages_done": int(r.data.tags.get("raycf.stages_done", 0)), "tags": r.data.tags})
    return rows


def work_counts(rows: list[dict], points, sc: SweepConfig) -> dict:
    trained = sum(r["metrics"].get("work/stage_trainings", 0) for r in rows)
    probed = sum(r["metrics"].get("work/probe_passes", 0) for r in rows)
    naive = sum(len(p.stages) for p in points) * sc.num_samples
    return {"stage_trainings": trained, "stage_trainings_naive": naive,
            "probe_passes": probed, "probe_passes_naive": naive + len(points) * sc.num_samples}


def param_col(key: str) -> str:
    return short(key)


# The headline figures, each in units where it means something: FG (%) only from accuracies; the stereotype
# score's change and the learned tasks' gain in their own units.
COLUMNS = ("headline/mean_FG", "vs_base/mean_FG", "headline/knowledge_FG", "headline/reasoning_FG",
           "headline/reading_FG", "headline/stereotype_change", "warm_start/knowledge_change_pct",
           "headline/tasks_gain", "headline/tasks_BWT")
HEAD = {"headline/stereotype_change": "stereotype_chg", "warm_start/knowledge_change_pct": "ws_knowl_%",
        "vs_base/mean_FG": "base_mean_FG"}
# Which figure a warm-start verdict compares: both trials measured from the same base model.
LIKE_WITH_LIKE = "vs_base/mean_FG"


def col_name(c: str) -> str:
    return HEAD.get(c, c.removeprefix("headline/"))


def ranked_table(rows: list[dict], sc: SweepConfig, searched: list[str]) -> str:
    """Trials best first by the sweep's metric, with the searched parameters and the headline figures."""
    params = ["task_order" if k == "stages" else k for k in searched]
    sign = 1 if sc.mode == "min" else -1
    rows = sorted(rows, key=lambda r: sign * r["metrics"].get(sc.metric, float("inf") * sign))
    width = {k: max([len(param_col(k))] + [len(r["params"].get(k, "-")) for r in rows]) for k in params}
    head = f"{'rank':4s} {'trial':28s} {'status':8s} " + " ".join(f"{param_col(k):>{width[k]}s}" for k in params) + \
        f" {'stage':>5s} " + " ".join(f"{col_name(c):>14s}" for c in COLUMNS)
    lines = [head]
    for i, r in enumerate(rows, 1):
        m, p = r["metrics"], r["params"]
        vals = " ".join(f"{m[c]:14.2f}" if c in m else f"{'-':>14s}" for c in COLUMNS)
        lines.append(f"{i:<4d} {r['run'][:28]:28s} {r['status'][:8]:8s} " +
                     " ".join(f"{p.get(k, '-'):>{width[k]}s}" for k in params) +
                     f" {r.get('stages_done', 0):5d} {vals}")
    return "\n".join(lines)


SETTING_FIGURES = ("headline/mean_FG", "vs_base/mean_FG", "warm_start/knowledge_change_pct",
                   "headline/tasks_gain")


def settings_table(rows: list[dict], searched: list[str]) -> list[str]:
    """One line per setting: each headline figure's mean ± sd [t interval] over its seeds."""
    params = ["task_order" if k == "stages" else k for k in searched]
    per = {f: by_setting(rows, params, f) for f in SETTING_FIGURES}
    names = sorted({n for f in per.values() for n in f}, key=lambda n: per["headline/mean_FG"].get(n, spread([])).mean
                   if not math.isnan(per["headline/mean_FG"].get(n, spread([])).mean) else math.inf)
    lines = [f"per setting, mean ± sd [{CONFIDENCE:.0%} t interval] over seeds:"]
    for n in names:
        lines.append(f"  {n}: " + "; ".join(f"{col_name(f)} {per[f][n].text()}" for f in SETTING_FIGURES
                                             if n in per[f]))
    return lines


def effects(rows: list[dict], searched: list[str], metric: str = "headline/mean_FG") -> list[str]:
    """One line per searched parameter: `metric` over the trials at each of its values (mean, spread, interval);
    then the verdicts on matched pairs (same other values, same seed), the warm start's measured from the base
    model (like with like), each saying whether it holds in every pair and on the interval."""
    params = ["task_order" if k == "stages" else k for k in searched]
    done = [r for r in rows if metric in r["metrics"]]
    lines = []
    for k in (k for k in params if k != SEED):
        groups: dict[str, list[float]] = {}
        for r in done:
            groups.setdefault(r["params"].get(k, "-"), []).append(r["metrics"][metric])
        if len(groups) < 2:
            continue
        lines.append(f"{metric} by {k}: " + ", ".join(f"{v} {spread(x).text('trial')}" for v, x in groups.items()))
    for v in verdicts(rows, params, metric, skip=("warm_start.kind",)):
        lines.append(f"verdict on {metric}: {v.text()}")
    if "warm_start.kind" in params:
        lines += warm_start_verdict(rows, params)
    return lines


def warm_start_verdict(rows: list[dict], params: list[str]) -> list[str]:
    """general vs none, the study's finding, on the figure measured from the base model when the trials report
    it (like with like), else on the study's FG; said either way, with every pair and the interval."""
    metric = LIKE_WITH_LIKE if any(LIKE_WITH_LIKE in r["metrics"] for r in rows) else "headline/mean_FG"
    diffs = matched(rows, params, "warm_start.kind", metric, "general", "none")  # none - general
    if not diffs:
        return []
    v = Verdict("warm_start.kind", "general", "none", diffs, metric)
    wins = sum(d > 0 for d in diffs)
    verdict = ("general forgets less than none, as the study found" if wins == len(diffs) and
               (len(diffs) < 2 or v.on_interval) else
               "general does NOT forget less than none here, unlike the study" if wins == 0 else
               f"not shown: general forgets less in {wins} of {len(diffs)} matched pairs"
               + ("" if len(diffs) < 2 else f", and the interval {'excludes' if v.on_interval else 'includes'} 0"))
    study = matched(rows, params, "warm_start.kind", "headline/mean_FG", "general", "none")
    also = f" (the study's FG from each start: none - general {spread(study).mean:.2f})" \
        if metric != "headline/mean_FG" and study else ""
    how = "both measured from the base model" if metric == LIKE_WITH_LIKE else "the study's FG, each from its start"
    return [f"warm start, on {metric} ({how}): none - general = {v.spread.text('pair')}; in every pair: {'yes' if v.every_seed else 'no'}; on the interval: "
            f"{'yes' if v.on_interval else 'no'}; {verdict}{also}"]


def searched_keys(cfg: ExperimentConfig) -> list[str]:
    """The searched keys as trials' params name them, the seed among them when sweep.seeds runs several."""
    return list(cfg.search) + ([SEED] if cfg.sweep.seeds > 1 and SEED not in cfg.search else [])


def pareto_rows(rows: list[dict], objectives: dict) -> list[dict]:
    """The finished trials no other finished trial beats on every objective of sweep.objectives ({} -> none)."""
    done = [r for r in rows if r["status"] == "FINISHED" and all(m in r["metrics"] for m in objectives)]
    if not objectives:
        return []
    points = [tuple(r["metrics"][m] for m in objectives) for r in done]
    return [done[i] for i in pareto_set(points, list(objectives.values()))]


def pareto_lines(rows: list[dict], objectives: dict) -> list[str]:
    """The Pareto set of sweep.objectives, best first by the first objective."""
    if not objectives:
        return []
    front = pareto_rows(rows, objectives)
    first, mode = next(iter(objectives.items()))
    front.sort(key=lambda r: r["metrics"][first] * (1 if mode == "min" else -1))
    done = sum(r["status"] == "FINISHED" for r in rows)
    said = " and ".join(f"{m} ({v})" for m, v in objectives.items())
    lines = [f"Pareto set of {said}: {len(front)} of {done} finished trials"]
    lines += ["  " + r["run"] + ": " + ", ".join(f"{m.removeprefix('headline/')} {r['metrics'][m]:.4g}"
                                                for m in objectives) for r in front]
    return lines


def findings(cfg: ExperimentConfig, rows: list[dict]) -> list[str]:
    """The per-setting figures over seeds and the verdicts: what the summary prints and the parent run keeps.
    A PBT population's trials exchange weights: no verdict compares them, the best trial's schedule is shown."""
    searched = searched_keys(cfg)
    if pbt.is_pbt(cfg):
        return pbt_lines(cfg, rows)
    return settings_table(rows, searched) + effects(rows, searched) + pareto_lines(rows, cfg.sweep.objectives)


def pbt_lines(cfg: ExperimentConfig, rows: list[dict]) -> list[str]:
    """The best finished trial's per-stage schedule and the population's exploits."""
    done = [r for r in rows if r["status"] == "FINISHED" and cfg.sweep.metric in r["metrics"]]
    exploits = sum(int(r.get("tags", {}).get("raycf.pbt.exploits", 0)) for r in rows)
    lines = [f"{cfg.sweep.scheduler}: {exploits} exploit(s) in a population of {len(rows)}; the searched values above "
             f"are where each trial started (they exchanged weights, so no verdict compares them)"]
    if done:
        sign = 1 if cfg.sweep.mode == "min" else -1
        best = min(done, key=lambda r: sign * r["metrics"][cfg.sweep.metric])
        table = best.get("tags", {}).get(pbt.SCHEDULE_TAG, "")
        lines += [f"the schedule of the best trial, {best['run']} ({cfg.sweep.metric} "
                  f"{best['metrics'][cfg.sweep.metric]:.4g}):", *table.splitlines()]
    return lines


def verdict_metrics(cfg: ExperimentConfig, rows: list[dict]) -> dict[str, float]:
    """The verdicts as parent-run metrics: `verdict/<key>/<worse>-<better>/{mean,ci_low,ci_high,every_pair}`."""
    if pbt.is_pbt(cfg):  # the population exchanged weights: no two trials are independent samples
        return {}
    params = ["task_order" if k == "stages" else k for k in searched_keys(cfg)]
    found = verdicts(rows, params, "headline/mean_FG", skip=("warm_start.kind",))
    if "warm_start.kind" in params:
        metric = LIKE_WITH_LIKE if any(LIKE_WITH_LIKE in r["metrics"] for r in rows) else "headline/mean_FG"
        diffs = matched(rows, params, "warm_start.kind", metric, "general", "none")
        found += [Verdict("warm_start.kind", "general", "none", diffs, metric)] if diffs else []
    m = {}
    for v in found:  # MLflow keys take letters, digits, _ - . space : / (a task order's " > " does not)
        s, p = v.spread, f"verdict/{short(v.key)}/" + re.sub(r"[^A-Za-z0-9_.\-]+", "_", f"{v.worse}-{v.better}")
        m |= {f"{p}/mean": s.mean, f"{p}/ci_low": s.low, f"{p}/ci_high": s.high, f"{p}/every_pair": float(v.every_seed)}
    return {k: x for k, x in m.items() if not math.isnan(x)}


def print_summary(cfg: ExperimentConfig, sc: SweepConfig, rows: list[dict], stats: dict, uri: str,
                  parent_run_id: str | None = None) -> list[str]:
    """The ranked table, the figures per setting over seeds, the verdicts, the shared-work counts, and where to
    compare (the URL of the runs table); returns the findings' lines (for the parent run)."""
    print(ranked_table(rows, sc, searched_keys(cfg)))
    lines = findings(cfg, rows)
    for line in lines:
        print(line)
    print(f"stage trainings: {stats['stage_trainings']:g} run (naive: {stats['stage_trainings_naive']:g}); "
          f"probe passes: {stats['probe_passes']:g} run (naive: {stats['probe_passes_naive']:g})")
    print(f"stage cache and sweep records: {redact_uri(cfg.storage_path)}")
    exp = tracking.client(uri).get_run(parent_run_id).info.experiment_id if parent_run_id else None
    table = f"#/experiments/{exp}/runs?workflowType=machine_learning" if exp else ""  # not the GenAI overview
    if uri.startswith(("http://", "https://")):
        print(f"compare runs:  {redact_uri(uri).rstrip('/')}/{table}")
    else:
        print(f"compare runs:  mlflow ui --backend-store-uri {redact_uri(uri)}, then open "
              f"http://127.0.0.1:5000/{table}")
    return lines
