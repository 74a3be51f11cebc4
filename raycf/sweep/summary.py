"""What a finished sweep prints: trials ranked by its metric with their searched values and forgetting figures,
the effect of each searched parameter, the shared-work counts, and where to compare the runs."""
from __future__ import annotations

from raycf import tracking
from raycf.config.schema import ExperimentConfig, SweepConfig
from raycf.redact import redact_uri


def summarize(uri: str, parent_run_id: str, sc: SweepConfig) -> list[dict]:
    c = tracking.client(uri)
    exp = c.get_run(parent_run_id).info.experiment_id
    rows = []
    for r in c.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_run_id}'"):
        rows.append({"run": r.info.run_name, "status": r.info.status, "params": r.data.params,
                     "metrics": r.data.metrics, "run_id": r.info.run_id})
    return rows


def work_counts(rows: list[dict], points, sc: SweepConfig) -> dict:
    trained = sum(r["metrics"].get("sweep/stage_trainings", 0) for r in rows)
    probed = sum(r["metrics"].get("sweep/probe_passes", 0) for r in rows)
    naive = sum(len(p.stages) for p in points) * sc.num_samples
    return {"stage_trainings": trained, "stage_trainings_naive": naive,
            "probe_passes": probed, "probe_passes_naive": naive + len(points) * sc.num_samples}


def param_col(key: str) -> str:
    return {"task_order": "order", "warm_start.kind": "warm_start"}.get(key, key.split(".")[-1])


def ranked_table(rows: list[dict], sc: SweepConfig, searched: list[str]) -> str:
    """Trials best first by the sweep's metric, with the searched parameters and the forgetting figures."""
    cols = ["forgetting/mean_FG", "forgetting/knowledge/FG", "forgetting/reasoning/FG", "forgetting/reading/FG",
            "forgetting/bias/FG", "forgetting/tasks/average"]
    params = ["task_order" if k == "stages" else k for k in searched]
    sign = 1 if sc.mode == "min" else -1
    rows = sorted(rows, key=lambda r: sign * r["metrics"].get(sc.metric, float("inf") * sign))
    width = {k: max([len(param_col(k))] + [len(r["params"].get(k, "-")) for r in rows]) for k in params}
    head = f"{'rank':4s} {'trial':28s} {'status':8s} " + " ".join(f"{param_col(k):>{width[k]}s}" for k in params) + \
        f" {'stage':>5s} " + " ".join(f"{c.removeprefix('forgetting/'):>15s}" for c in cols)
    lines = [head]
    for i, r in enumerate(rows, 1):
        m, p = r["metrics"], r["params"]
        vals = " ".join(f"{m[c]:15.2f}" if c in m else f"{'-':>15s}" for c in cols)
        lines.append(f"{i:<4d} {r['run'][:28]:28s} {r['status'][:8]:8s} " +
                     " ".join(f"{p.get(k, '-'):>{width[k]}s}" for k in params) +
                     f" {int(m.get('stage', 0)):5d} {vals}")
    return "\n".join(lines)


def effects(rows: list[dict], searched: list[str], metric: str = "forgetting/mean_FG") -> list[str]:
    """One line per searched parameter: the mean of `metric` over the trials at each of its values; for
    the warm start, whether `general` forgot less than `none` (the study's finding), said either way."""
    params = ["task_order" if k == "stages" else k for k in searched]
    done = [r for r in rows if metric in r["metrics"]]
    lines = []
    for k in params:
        groups: dict[str, list[float]] = {}
        for r in done:
            groups.setdefault(r["params"].get(k, "-"), []).append(r["metrics"][metric])
        if len(groups) < 2:
            continue
        lines.append(f"{metric} by {k}: " + ", ".join(
            f"{v} {sum(x) / len(x):.2f} ({len(x)} trials)" for v, x in groups.items()))
    if "warm_start.kind" in params:
        others = [k for k in params if k != "warm_start.kind"]
        pairs: dict[tuple, dict[str, float]] = {}
        for r in done:
            pairs.setdefault(tuple(r["params"].get(k) for k in others), {})[r["params"]["warm_start.kind"]] = \
                r["metrics"][metric]
        matched = [(p["general"], p["none"]) for p in pairs.values() if {"general", "none"} <= p.keys()]
        if matched:
            wins = sum(g < n for g, n in matched)
            g, n = (sum(x) / len(matched) for x in zip(*matched))
            verdict = ("general forgets less than none, as the study found" if wins == len(matched) else
                       "general does NOT forget less than none here, unlike the study" if wins == 0 else
                       f"mixed: general forgets less in {wins} of {len(matched)} matched settings, "
                       f"so this sweep does not confirm the study's finding everywhere")
            lines.append(f"warm start: mean FG general {g:.2f} vs none {n:.2f} over {len(matched)} matched "
                         f"settings; {verdict}")
    return lines


def print_summary(cfg: ExperimentConfig, sc: SweepConfig, rows: list[dict], stats: dict, uri: str) -> None:
    """The ranked table, the effect of each searched parameter, the shared-work counts, and where to compare."""
    searched = list(cfg.search)
    print(ranked_table(rows, sc, searched))
    for line in effects(rows, searched):
        print(line)
    print(f"stage trainings: {stats['stage_trainings']:g} run (naive: {stats['stage_trainings_naive']:g}); "
          f"probe passes: {stats['probe_passes']:g} run (naive: {stats['probe_passes_naive']:g})")
    print(f"stage cache and sweep records: {redact_uri(cfg.storage_path)}")
    if uri.startswith(("http://", "https://")):
        print(f"compare runs:  open {redact_uri(uri)} (experiment {cfg.tracking.experiment})")
    else:
        print(f"compare runs:  mlflow ui --backend-store-uri {redact_uri(uri)}")
