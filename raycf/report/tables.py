"""The study table: one row per trial (or per value of --group-by) with initial score, final score and FG of every
general category, mean FG, the learned-task average and the Pareto front; as CSV, Markdown and HTML."""
from __future__ import annotations

import csv
import html
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from raycf import layout
from raycf.forgetting import mean
from raycf.layout import LEARNED_AVERAGE, MEAN_FG
from raycf.report.trials import CATEGORIES, LOWER_IS_BETTER_SCORE, Trial
from raycf.pareto import pareto_set


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
    """Per general category: initial and final score, FG % (bias: the stereotype score's change instead), the
    warm start's cost for knowledge; then mean FG from the start and from the base model, the learned tasks."""
    columns = []
    for c in CATEGORIES:
        figure = layout.STEREOTYPE_CHANGE if c in LOWER_IS_BETTER_SCORE else layout.category_fg(c)
        if not any(k in t.metrics for t in trials for k in (f"score_initial/{c}", f"score_final/{c}", figure)):
            continue
        score = "min" if c in LOWER_IS_BETTER_SCORE else "max"
        columns += [Column(f"score_initial/{c}", "initial", "", c), Column(f"score_final/{c}", "final", score, c)]
        if c in LOWER_IS_BETTER_SCORE:  # the stereotype score: its change, > 0 = more stereotyped
            columns.append(Column(figure, "stereotype change", "min", c))
        else:
            columns.append(Column(figure, "FG %", "min", c))
    optional = [Column(layout.FROM_BASE_MEAN_FG, "mean FG % from base", "min"),
                Column(layout.warm_start_change("knowledge", pct=True), "warm start: knowledge %"),  # no "best"
                Column(layout.LEARNED_GAIN, "learned-task gain", "max"),
                Column(layout.LEARNED_BWT, "learned-task BWT", "max"),
                Column(f"task_forgetting/{layout.MEAN}", "learned-task forgetting", "min"),
                Column(f"task_FWT/{layout.MEAN}", "learned-task FWT", "max")]
    return columns + [Column(layout.MEAN_FG, "mean FG %", "min"),
                      Column(layout.LEARNED_AVERAGE, "learned-task average", "max")] + \
        [c for c in optional if any(c.key in t.metrics for t in trials)]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (forgetting x, learning y) that no other point beats: x no higher and y no
    lower, better in one. Identical points are all on the front."""
    return pareto_set(points, ["min", "max"])


def on_front(trials: list[Trial]) -> set[int]:
    """Numbers of the finished trials on the Pareto front of mean FG against the learned-task average."""
    ready = [t for t in trials if t.finished and MEAN_FG in t.metrics and LEARNED_AVERAGE in t.metrics]
    front = pareto_front([(t.metrics[MEAN_FG], t.metrics[LEARNED_AVERAGE]) for t in ready])
    return {ready[i].number for i in front}


def objectives_front(trials: list[Trial]) -> set[int] | None:
    """Numbers of the finished trials in the Pareto set of the sweep's own sweep.objectives; None without them."""
    objectives = trials[0].objectives if trials else {}
    if not objectives:
        return None
    ready = [t for t in trials if t.finished and all(m in t.metrics for m in objectives)]
    front = pareto_set([tuple(t.metrics[m] for m in objectives) for t in ready], list(objectives.values()))
    return {ready[i].number for i in front}


def study_table(trials: list[Trial], searched: list[str], group_by: str | None = None) -> Table:
    """One row per trial, or per value of `group_by` (see group_table). With sweep.objectives, a column marks
    the Pareto set of those objectives too."""
    if group_by:
        return group_table(trials, group_by)
    metrics = metric_columns(trials)
    front, own = on_front(trials), objectives_front(trials)
    said = " / ".join(f"{m.removeprefix('headline/')} {v}" for m, v in (trials[0].objectives if trials else {}).items())
    columns = [Column("trial", "#"), Column("run_name", "run"), Column("status", "status"),
               Column("stages_done", "stages done")] + [Column(p, p) for p in searched] + metrics + \
        [Column("pareto", "Pareto front")] + ([Column("objectives_pareto", f"Pareto set ({said})")] if own is not None
                                             else [])
    rows = [{"trial": f"#{t.number}", "run_name": t.name, "status": t.status,
             "stages_done": t.progress,
             **{p: t.params.get(p, "-") for p in searched},
             **{c.key: t.metrics.get(c.key) for c in metrics},
             "pareto": "yes" if t.number in front else "",
             **({"objectives_pareto": "yes" if t.number in own else ""} if own is not None else {})} for t in trials]
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


def to_html(table: Table, links: dict[str, str] | None = None) -> str:
    """The table; a run name in `links` (name -> URL) becomes a link to its run."""
    best = table.best()
    top, sub = [], []
    for c in table.columns:  # categories span their three columns in a first header row
        if not c.group:
            top.append(f'<th rowspan="2">{html.escape(c.label)}</th>')
        elif not sub or sub[-1][0] != c.group:
            top.append(f'<th colspan="{sum(x.group == c.group for x in table.columns)}">{html.escape(c.group)}</th>')
        if c.group:
            sub.append((c.group, f"<th>{html.escape(c.label)}</th>"))
    body = ["<tr>" + "".join(_td(row.get(c.key), c, i in best.get(c.key, ()), (links or {}).get(row.get(c.key))
                                 if c.key == "run_name" else None) for c in table.columns) + "</tr>"
            for i, row in enumerate(table.rows)]
    return (f'<table class="study"><thead><tr>{"".join(top)}</tr><tr>{"".join(s for _, s in sub)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _td(value, column: Column, best: bool, url: str | None = None) -> str:
    cls = ["best"] * best + ["num"] * bool(column.better)
    if column.key == "status" and " " not in str(value):  # one trial's status (a group's is a count list)
        cls.append(f"status-{str(value).lower()}")
    attr = f' class="{" ".join(cls)}"' if cls else ""
    text = html.escape(fmt(value))
    return f'<td{attr}><a href="{html.escape(url)}">{text}</a></td>' if url else f"<td{attr}>{text}</td>"
