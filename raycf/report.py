"""The study's report of a sweep, read from MLflow only: tables (HTML, Markdown, CSV) and figures.

    python -m raycf.report --experiment raycf-default [--tracking-uri URI] [--out DIR] [--group-by PARAM]

Works on any tracking server and on a sweep still running: it needs nothing but the runs. The trials
are the child runs of the experiment's latest sweep (`--sweep NAME` picks another), or the single-trial
runs of an experiment without sweeps. Writes DIR/report.html (self-contained: figures are embedded PNG
data URIs, it opens offline), DIR/table.csv and DIR/table.md (the study table).

- Study table: one row per trial (or per value of `--group-by`, means over its trials) with the initial
  score, final score and FG of every general category, mean FG, the learned-task average, and whether the
  trial is on the Pareto front. Cells are the trial's latest logged metrics (its last stage so far); the
  CSV holds them exactly, under their MLflow names.
- Per trial: the accuracy matrix (checkpoint x probe task, from the metric history of
  `probe/<category>/<task>/<metric>`, step = stage) and each category's score over the stages.
- Effect of each searched param (params that differ between the trials) on FG, bars = min..max over
  repeats (seeds, samples) where there are some; the trade-off of learning the new tasks against
  forgetting, Pareto front marked. Both use finished trials only: an unfinished trial's FG is "so far".
"""
from __future__ import annotations

import argparse
import base64
import csv
import functools
import html
import io
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raycf.forgetting import LEARNED, MEAN_FG_CATEGORIES, AccuracyMatrix, did_you_mean, mean

CATEGORIES = ("knowledge", "reasoning", "reading", "bias")
MEAN_FG = "forgetting/mean_FG"
LEARNED_AVERAGE = f"forgetting/{LEARNED}/average"
# Which way is better. A bias score is a stereotype preference: lower is better, so its FG (> 0 = the
# preference went down) is better when higher, unlike the abilities' FG.
LOWER_IS_BETTER_SCORE = {"bias"}


class ReportError(Exception):
    """Bad input from the user (unknown experiment, no trials, unknown param): one line, exit status 2."""


@dataclass
class Trial:
    """One trial run as MLflow holds it. metrics: latest value per key (the last stage logged so far)."""
    number: int                  # 1-based label in tables and figures (#1, #2, ...)
    run_id: str
    name: str
    status: str                  # RUNNING | FINISHED | KILLED | FAILED | SCHEDULED
    params: dict
    metrics: dict
    matrix: AccuracyMatrix | None = None   # from the metric history; NaN rows for stages not run yet

    @property
    def stages(self) -> list[str]:
        return [s for s in self.params.get("stages", "").split(" > ") if s]

    @property
    def progress(self) -> str:
        """Stages logged / stages of the trial, e.g. 1/3."""
        return f"{int(self.metrics.get('stage', 0))}/{len(self.stages) or '?'}"

    @property
    def finished(self) -> bool:
        return self.status == "FINISHED"


# ----------------------------------------------------------------------------- reading MLflow

def load_trials(client, experiment: str, sweep: str | None = None) -> tuple[str, list[Trial]]:
    """The trials to report (see the module docstring) and a label saying which runs they are."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise ReportError(f"no experiment named {experiment!r} at this tracking URI{_did_you_mean(experiment, names)}")
    runs = _all_runs(client, exp.experiment_id)
    sweeps = sorted((r for r in runs if "raycf.sweep" in r.data.tags), key=lambda r: r.info.start_time)
    if sweep is not None and sweep not in [r.info.run_name for r in sweeps]:
        raise ReportError(f"--sweep {sweep!r}: experiment {experiment!r} has no such sweep"
                          f"{_did_you_mean(sweep, [r.info.run_name for r in sweeps])}")
    if sweeps:
        parent = [r for r in sweeps if r.info.run_name == sweep][-1] if sweep else sweeps[-1]
        label = f"sweep {parent.info.run_name!r} ({parent.info.status})"
        chosen = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    else:
        label = "single-trial runs"
        chosen = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    if not chosen:
        raise ReportError(f"experiment {experiment!r} has no trial runs yet" + (f" in {label}" if sweeps else ""))
    chosen.sort(key=lambda r: (r.info.start_time, r.info.run_name))
    trials = [Trial(i, r.info.run_id, r.info.run_name, r.info.status, dict(r.data.params), dict(r.data.metrics))
              for i, r in enumerate(chosen, 1)]
    for t in trials:
        t.matrix = accuracy_matrix(client, t)
    return label, trials


def _all_runs(client, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _did_you_mean(name: str, choices: list[str]) -> str:
    """' (did you mean X?)', else the known names; '' when there are none."""
    if not choices:
        return ""
    return did_you_mean(name, choices) or f" (known: {', '.join(sorted(choices))})"


@functools.cache
def primary_metric(task: str, logged: tuple[str, ...]) -> str:
    """The score a task's accuracy-matrix cell holds: the registry's first metric, as the trial's own
    matrix uses; for a task the registry does not know, the alphabetically first logged one."""
    from raycf import data
    try:
        first = data.load_task(task).metric[0]
    except data.DataError:
        first = None
    return first if first in logged else min(logged)


def accuracy_matrix(client, trial: Trial) -> AccuracyMatrix | None:
    """The trial's accuracy matrix from the metric history (step = stage index, 0 = before training)."""
    logged: dict[tuple[str, str], list[str]] = {}
    for key in trial.metrics:
        parts = key.split("/", 3)
        if len(parts) == 4 and parts[0] == "probe" and "/" not in parts[3]:
            logged.setdefault((parts[1], parts[2]), []).append(parts[3])
    if not logged or not trial.stages:
        return None
    order = {c: i for i, c in enumerate((*CATEGORIES, LEARNED))}
    columns = sorted(logged, key=lambda ct: (order.get(ct[0], len(order)), ct[0],
                                             trial.stages.index(ct[1]) if ct[1] in trial.stages else 0, ct[1]))
    scores = np.full((len(trial.stages) + 1, len(columns)), np.nan)
    for j, (category, task) in enumerate(columns):
        metric = primary_metric(task, tuple(logged[category, task]))
        history = sorted(client.get_metric_history(trial.run_id, f"probe/{category}/{task}/{metric}"),
                         key=lambda m: m.timestamp)
        for m in history:  # a resumed run may log a stage again: the later value wins
            if 0 <= m.step < len(scores):
                scores[m.step, j] = m.value
    try:
        return AccuracyMatrix(scores, [t for _, t in columns], [c for c, _ in columns], trial.stages)
    except ValueError:
        return None  # runs logged by something other than raycf.trial: no matrix, the table still shows


def searched_params(trials: list[Trial]) -> list[str]:
    """Params whose value differs between the trials (`stages` is left out when `task_order` says it)."""
    keys = sorted({k for t in trials for k in t.params})
    searched = [k for k in keys if len({t.params.get(k) for t in trials}) > 1]
    return [k for k in searched if not (k == "stages" and "task_order" in searched)]


# ----------------------------------------------------------------------------- tables

@dataclass
class Column:
    key: str            # the CSV header: an MLflow metric or param name, or a fixed name
    label: str          # the Markdown / HTML header
    better: str = ""    # max | min | "" (no best)
    group: str = ""     # HTML header group (a category)


@dataclass
class Table:
    columns: list[Column]
    rows: list[dict]    # column key -> str, float, or None (not logged)

    def best(self) -> dict[str, set[int]]:
        """Column key -> indices of the rows holding that column's best value (ties: all of them)."""
        out = {}
        for col in (c for c in self.columns if c.better):
            values = {i: r[col.key] for i, r in enumerate(self.rows) if isinstance(r.get(col.key), float)
                      and not math.isnan(r[col.key])}
            if len(set(values.values())) > 1:  # a column where every trial ties has no best
                top = (max if col.better == "max" else min)(values.values())
                out[col.key] = {i for i, v in values.items() if v == top}
        return out


def metric_columns(trials: list[Trial]) -> list[Column]:
    columns = []
    for c in CATEGORIES:
        if not any(f"forgetting/{c}/FG" in t.metrics or f"forgetting/{c}/initial" in t.metrics for t in trials):
            continue
        score = "min" if c in LOWER_IS_BETTER_SCORE else "max"
        fg = "max" if c in LOWER_IS_BETTER_SCORE else "min"
        columns += [Column(f"forgetting/{c}/initial", "initial", score, c),
                    Column(f"forgetting/{c}/final", "final", score, c),
                    Column(f"forgetting/{c}/FG", "FG %", fg, c)]
    return columns + [Column(MEAN_FG, "mean FG %", "min"), Column(LEARNED_AVERAGE, "learned-task average", "max")]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (forgetting x, learning y) that no other point beats: x no higher and y no
    lower, better in one. Identical points are all on the front."""
    return [i for i, (x, y) in enumerate(points)
            if not any(x2 <= x and y2 >= y and (x2, y2) != (x, y) for x2, y2 in points)]


def on_front(trials: list[Trial]) -> set[int]:
    """Numbers of the finished trials on the Pareto front of mean FG against the learned-task average."""
    ready = [t for t in trials if t.finished and MEAN_FG in t.metrics and LEARNED_AVERAGE in t.metrics]
    front = pareto_front([(t.metrics[MEAN_FG], t.metrics[LEARNED_AVERAGE]) for t in ready])
    return {ready[i].number for i in front}


def study_table(trials: list[Trial], searched: list[str], group_by: str | None = None) -> Table:
    """One row per trial, or per value of `group_by` (see group_table)."""
    if group_by:
        return group_table(trials, group_by)
    metrics = metric_columns(trials)
    front = on_front(trials)
    columns = [Column("trial", "#"), Column("run_name", "run"), Column("status", "status"),
               Column("stages_done", "stages done")] + [Column(p, p) for p in searched] + metrics + \
        [Column("pareto", "Pareto front")]
    rows = [{"trial": f"#{t.number}", "run_name": t.name, "status": t.status,
             "stages_done": t.progress,
             **{p: t.params.get(p, "-") for p in searched},
             **{c.key: t.metrics.get(c.key) for c in metrics},
             "pareto": "yes" if t.number in front else ""} for t in trials]
    return Table(columns, rows)


def group_table(trials: list[Trial], group_by: str) -> Table:
    """One row per value of the param `group_by`: its trials, their statuses, and each metric's mean over
    the group's trials that logged it."""
    metrics = metric_columns(trials)
    groups: dict[str, list[Trial]] = {}
    for t in trials:
        groups.setdefault(t.params.get(group_by, "-"), []).append(t)
    rows = [{group_by: value, "trials": " ".join(f"#{t.number}" for t in members),
             "status": ", ".join(f"{n} {s}" for s, n in Counter(t.status for t in members).items()),
             **{c.key: _mean([t.metrics.get(c.key) for t in members]) for c in metrics}}
            for value, members in groups.items()]
    columns = [Column(group_by, group_by), Column("trials", "trials"), Column("status", "status")]
    return Table(columns + metrics, rows)


def _mean(values) -> float | None:
    value = mean(v for v in values if v is not None)
    return None if math.isnan(value) else value


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"
    return str(value)


def write_csv(table: Table, path: Path) -> None:
    """Exact values (Python float repr), empty cell = not logged."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([c.key for c in table.columns])
        for row in table.rows:
            writer.writerow(["" if row.get(c.key) is None else repr(row[c.key]) if isinstance(row[c.key], float)
                             else row[c.key] for c in table.columns])


def to_markdown(table: Table) -> str:
    best = table.best()
    head = [f"{c.group} {c.label}".strip() for c in table.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for i, row in enumerate(table.rows):
        cells = [f"**{fmt(row.get(c.key))}**" if i in best.get(c.key, ()) else fmt(row.get(c.key))
                 for c in table.columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_html(table: Table) -> str:
    best = table.best()
    top, sub = [], []
    for c in table.columns:  # categories span their three columns in a first header row
        if not c.group:
            top.append(f'<th rowspan="2">{html.escape(c.label)}</th>')
        elif not sub or sub[-1][0] != c.group:
            top.append(f'<th colspan="{sum(x.group == c.group for x in table.columns)}">{html.escape(c.group)}</th>')
        if c.group:
            sub.append((c.group, f"<th>{html.escape(c.label)}</th>"))
    body = ["<tr>" + "".join(_td(row.get(c.key), c, i in best.get(c.key, ())) for c in table.columns) + "</tr>"
            for i, row in enumerate(table.rows)]
    return (f'<table class="study"><thead><tr>{"".join(top)}</tr><tr>{"".join(s for _, s in sub)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _td(value, column: Column, best: bool) -> str:
    cls = ["best"] * best + ["num"] * bool(column.better)
    if column.key == "status" and " " not in str(value):  # one trial's status (a group's is a count list)
        cls.append(f"status-{str(value).lower()}")
    attr = f' class="{" ".join(cls)}"' if cls else ""
    return f"<td{attr}>{html.escape(fmt(value))}</td>"


# ----------------------------------------------------------------------------- figures (Agg, no pyplot)

def _figure(width: float, height: float):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), layout="constrained")


def category_lines_png(R: AccuracyMatrix, path) -> None:
    """Left: each general category's mean score over the checkpoints; right: each learned task's score.
    path: a file name or a binary file object."""
    general = [c for c in dict.fromkeys(R.categories) if c != LEARNED]
    learned = [j for j, c in enumerate(R.categories) if c == LEARNED]
    fig = _figure(9 if learned else 5, 3.2)
    axes = fig.subplots(1, 2 if learned else 1, squeeze=False)[0]
    x, ticks = range(len(R.stages) + 1), ["before", *R.stages]
    for c in general:
        cols = R.scores[:, [j for j, cat in enumerate(R.categories) if cat == c]]
        axes[0].plot(x, [mean(row) for row in cols], marker="o", label=c)
    axes[0].set_title("general abilities (mean score of the category's probes)", fontsize=9)
    for j in learned:
        axes[1].plot(x, R.scores[:, j], marker="o", label=R.tasks[j])
    if learned:
        axes[1].set_title("learned tasks (score on each stage's task)", fontsize=9)
    for ax in axes:
        ax.set_xticks(list(x), ticks, rotation=20, ha="right", fontsize=8)
        ax.set_xlabel("after stage")
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=7)
    fig.savefig(path, format="png", dpi=100)


def tradeoff_png(trials: list[Trial], path) -> None:
    """Learned-task average against mean FG; finished trials filled, the Pareto front joined in red,
    unfinished trials hollow (their numbers are so far)."""
    front = on_front(trials)
    fig = _figure(6.5, 4.2)
    ax = fig.subplots()
    for t in (t for t in trials if MEAN_FG in t.metrics and LEARNED_AVERAGE in t.metrics):
        x, y = t.metrics[MEAN_FG], t.metrics[LEARNED_AVERAGE]
        if t.finished:
            ax.scatter(x, y, s=45, color="tab:red" if t.number in front else "tab:blue", zorder=3)
            ax.annotate(f"#{t.number}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        else:
            ax.scatter(x, y, s=45, facecolors="none", edgecolors="grey", zorder=3)
            ax.annotate(f"#{t.number} ({t.status.lower()}, so far)", (x, y), textcoords="offset points",
                        xytext=(5, 4), fontsize=7, color="grey")
    pts = sorted((t.metrics[MEAN_FG], t.metrics[LEARNED_AVERAGE]) for t in trials if t.number in front)
    if pts:
        ax.plot(*zip(*pts), color="tab:red", drawstyle="steps-post", label="Pareto front", zorder=2)
        ax.legend(fontsize=8, loc="best")
    ax.set_xlabel(f"mean FG % ({', '.join(MEAN_FG_CATEGORIES)}): forgetting, lower is better")
    ax.set_ylabel("learned-task average: higher is better")
    ax.set_title("learning the new tasks vs forgetting (better: up and left)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.savefig(path, format="png", dpi=100)


def effect_png(trials: list[Trial], param: str, others: list[str], path) -> None:
    """FG (mean and per category) against one searched param, one line per combination of the other
    searched params; bars span min..max over repeats. Finished trials only."""
    done = [t for t in trials if t.finished and MEAN_FG in t.metrics]
    keys = [MEAN_FG] + [f"forgetting/{c}/FG" for c in CATEGORIES if any(f"forgetting/{c}/FG" in t.metrics for t in done)]
    values = sorted({t.params.get(param, "-") for t in done}, key=_sort_key)
    numeric = all(_as_float(v) is not None for v in values)
    position = {v: (_as_float(v) if numeric else i) for i, v in enumerate(values)}
    series: dict[tuple, list[Trial]] = {}
    for t in done:
        series.setdefault(tuple(t.params.get(o, "-") for o in others), []).append(t)
    if len(series) > 6:  # too many lines to read: one line, the bars then span the other params too
        series = {(): done}
    fig = _figure(min(3.2 * len(keys), 16), 3.2)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys):
        for combo, members in series.items():
            xs, mid, lo, hi = [], [], [], []
            for v in values:
                ys = [t.metrics[key] for t in members if t.params.get(param, "-") == v and key in t.metrics]
                if ys:
                    xs.append(position[v])
                    mid.append(sum(ys) / len(ys))
                    lo.append(mid[-1] - min(ys))
                    hi.append(max(ys) - mid[-1])
            label = ", ".join(f"{o}={c}" for o, c in zip(others, combo)) or None
            ax.errorbar(xs, mid, yerr=[lo, hi], marker="o", capsize=3, label=label)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(key.removeprefix("forgetting/").replace("/FG", " FG %"), fontsize=9)
        ax.set_xlabel(param, fontsize=8)
        if numeric and min(position.values()) > 0 and max(position.values()) >= 10 * min(position.values()):
            ax.set_xscale("log")
        if not numeric or len(values) <= 6:  # the searched values themselves as ticks
            ax.set_xticks([position[v] for v in values], [_wrap(v) for v in values], fontsize=7)
            ax.minorticks_off()
        ax.grid(alpha=0.3)
    if any(combo for combo in series):
        axes[0].legend(fontsize=7)
    fig.savefig(path, format="png", dpi=100)


def _as_float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _sort_key(value: str):
    number = _as_float(value)
    return (0, number, "") if number is not None else (1, 0.0, value)


def _wrap(text: str) -> str:
    return text.replace(" > ", "\n> ")


def data_uri(draw, *args) -> str:
    """An embedded PNG: draw(*args, file) renders into memory."""
    buf = io.BytesIO()
    draw(*args, buf)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# ----------------------------------------------------------------------------- the HTML page

CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1700px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
h3{font-size:14px;margin:16px 0 4px}p.meta,p.note{color:#555;font-size:13px;margin:4px 0}
table.study{border-collapse:collapse;font-size:13px}table.study th,table.study td{border:1px solid #ccc;
padding:3px 5px}table.study th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.best{background:#c8f0c8;font-weight:600}td.status-finished{color:#1a7f37}td.status-running{color:#0969da}
td.status-killed,td.status-failed{color:#cf222e}img{max-width:100%;border:1px solid #eee;margin:4px 0}
div.trial{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}"""


def render_html(experiment: str, uri: str, label: str, trials: list[Trial], table: Table, searched: list[str]) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in Counter(t.status for t in trials).items())
    parts = [f"<h1>raycf report: {html.escape(experiment)}</h1>",
             f'<p class="meta">{html.escape(label)}; {len(trials)} trials ({html.escape(counts)}); tracking URI '
             f'{html.escape(uri)}; generated {time.strftime("%Y-%m-%d %H:%M")}</p>',
             "<h2>Study table</h2>", to_html(table), f'<p class="note">{TABLE_NOTE}</p>']
    if any(MEAN_FG in t.metrics and LEARNED_AVERAGE in t.metrics for t in trials):
        parts += ["<h2>Learning vs forgetting</h2>", _img("trade-off", data_uri(tradeoff_png, trials))]
    parts += effects_html(trials, [p for p in searched if p != "seed"])
    parts.append("<h2>Trials</h2>")
    for t in trials:
        parts += trial_html(t, searched)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>raycf report: '
            f'{html.escape(experiment)}</title><style>{CSS}</style></head><body>{"".join(parts)}</body></html>\n')


TABLE_NOTE = ("Scores are each category's mean over its probes (initial: before training, final: after the last "
              "stage so far). FG % is the study's forgetting (Eq. 1): the average relative drop, lower is better; "
              "for bias it is a drop in stereotype preference, so higher is better. Mean FG averages "
              f"{', '.join(MEAN_FG_CATEGORIES)}. Green: the best in its column.")


def _img(alt: str, src: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{src}">'


def effects_html(trials: list[Trial], dims: list[str]) -> list[str]:
    if not dims:
        return []
    parts = ["<h2>Effect of the searched params on FG</h2>"]
    if not any(t.finished and MEAN_FG in t.metrics for t in trials):
        return parts + ['<p class="note">No finished trial yet.</p>']
    for p in dims:
        parts += [f"<h3>{html.escape(p)}</h3>", _img(f"FG vs {p}", data_uri(effect_png, trials, p,
                                                                           [o for o in dims if o != p]))]
    if unfinished := sum(not t.finished for t in trials):
        parts.append(f'<p class="note">{unfinished} unfinished trials are left out of these plots.</p>')
    return parts


def trial_html(t: Trial, searched: list[str]) -> list[str]:
    params = "; " + ", ".join(f"{p}={t.params.get(p, '-')}" for p in searched) if searched else ""
    head = f"<h3>#{t.number} {html.escape(t.name)}: {t.status}, stage {t.progress}{html.escape(params)}</h3>"
    if t.matrix is None:
        return [head, '<p class="note">No probe scores logged yet.</p>']
    return [head, '<div class="trial">', _img(f"accuracy matrix #{t.number}", data_uri(t.matrix.heatmap_png)),
            _img(f"scores over stages #{t.number}", data_uri(category_lines_png, t.matrix)), "</div>"]


# ----------------------------------------------------------------------------- CLI

def build(uri: str, experiment: str, out: Path, group_by: str | None = None, sweep: str | None = None) -> Path:
    """Write out/report.html, out/table.csv, out/table.md; returns the HTML path."""
    from raycf import tracking
    check_store(uri)
    label, trials = load_trials(tracking.client(uri), experiment, sweep)
    if group_by and not any(group_by in t.params for t in trials):
        params = sorted({k for t in trials for k in t.params})
        raise ReportError(f"--group-by {group_by!r}: no trial has this param{_did_you_mean(group_by, params)}")
    searched = searched_params(trials)
    table = study_table(trials, searched, group_by)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table, out / "table.csv")
    (out / "table.md").write_text(to_markdown(table))
    page = out / "report.html"
    page.write_text(render_html(experiment, uri, label, trials, table, searched))
    return page


def check_store(uri: str) -> None:
    """A report only reads: a sqlite file that is not there is an error, not a new empty store."""
    from raycf import tracking
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise ReportError(f"no MLflow store at {uri} (the file does not exist); pass --tracking-uri")
    tracking.check_reachable(uri)


def main(argv=None) -> int:
    import logging
    from raycf import tracking
    p = argparse.ArgumentParser(prog="python -m raycf.report", description=__doc__.splitlines()[0])
    p.add_argument("--experiment", required=True, help="MLflow experiment name (tracking.experiment)")
    p.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db")
    p.add_argument("--out", help="output folder (default: report-<experiment>)")
    p.add_argument("--group-by", metavar="PARAM", help="one table row per value of this param, e.g. warm_start.kind")
    p.add_argument("--sweep", help="the sweep (parent run name) to report; default: the latest")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # store-opening chatter on stderr
    uri = tracking.resolve_uri(args.tracking_uri)
    try:
        page = build(uri, args.experiment, Path(args.out or f"report-{args.experiment}"), args.group_by, args.sweep)
    except (ReportError, ConnectionError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report: {page}  (tables: {page.parent / 'table.csv'}, {page.parent / 'table.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
