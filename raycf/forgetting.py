"""Accuracy matrix -> forgetting: the study's FG (Eq. 1) and the usual continual-learning metrics.

    python -m raycf.forgetting R.csv [--png R.png]     # print the table (and draw the heatmap)

The accuracy matrix R has one row per checkpoint (row 0 = before continual training, row m = after
stage m, m = 1..N) and one column per probe task. Each column has a category: a general ability
(knowledge, reasoning, reading, bias) or `tasks`, the instruction tasks learned in the stages.
A `tasks` column is named after the stage that trains it, so the task learned at stage i is the
column named `stages[i-1]`, whatever the column order (task orders are a sweep dimension).

Stages not run yet are NaN rows: every number below is "so far", over the stages measured.

Definitions (k = last stage measured, s(i) = stage that learns task i, y = score oriented so that
higher is better, i.e. y = -R for a task with higher_is_better False):
  FG_e        (1/k) sum_{m=1..k} (y_o - y_m) / |R_o| * 100, over the measured m (PAPER.md Eq. 1), for an
              accuracy (RELATIVE_METRICS) whose R_o is at least FG_FLOOR. Not for generation scores (BLEU,
              SARI, ROUGE: a baseline near 0 makes a percentage of it meaningless) and not below the floor:
              there FG is undefined (with a `reason`) and `drop` is the figure.
  FG_E        mean of FG_e over the tasks of category E whose FG_e is defined.
  drop_e      (1/k) sum (y_o - y_m): the same average drop in the score's own units (BLEU points, accuracy).
  bias        pct_stereotype is no accuracy: its figure is `stereotype_change` = R_k - R_o (the share of
              pairs where the stereotyped sentence is preferred; > 0 = more stereotyped), never an FG.
  BWT         mean over learned i with s(i) < k of y_{k,i} - y_{s(i),i}  (GEM; TRACE divides the
              same sum by N instead of N-1).
  forgetting  per task y_{s(i),i} - y_{k,i} (Avalanche: just after learning minus last); the
              aggregate is its mean over s(i) < k, so it equals -BWT when every cell is measured.
  max_forgetting  per task max_{s(i) <= m < k} y_{m,i} - y_{k,i} (Chaudhry et al. 2018); mean.
  FWT         mean over learned i with s(i) >= 2 of y_{s(i)-1,i} - y_{0,i}: the score on task i
              just before its stage minus its score before continual training. GEM subtracts a
              randomly initialised model's score; here the baseline is the model we start from.
  average     mean of R_{k,i} over the tasks learned so far (GEM's ACC after the last stage).

A task whose FG is undefined (a generation score, R_o below the floor or not measured) has FG = NaN
with a `reason`; its category FG averages the remaining tasks; `drop` is still given (in MLflow: the run's
forgetting_by_probe.csv says why; raycf.layout names the metrics).

From the base model (base=): the same figures with row 0 replaced by the base model's scores (a trial
that starts from a warm start is then measured from where the base model was, like a trial without one),
and the warm start's own cost per category, base -> start of continual tuning (raycf.baseline).

NaN in MLflow: mlflow 3.17 accepts NaN metrics (the sqlite store keeps an is_nan flag), but NaN
sorts and compares badly in the UI and in search_runs filters, so raycf.layout leaves NaN out:
a missing key means "not defined (yet)".
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from raycf.errors import DataError, cli, did_you_mean, parser

LEARNED = "tasks"
# Bias is reported but kept out of mean_FG: its FG > 0 means less stereotyping, not lost ability.
MEAN_FG_CATEGORIES = ("knowledge", "reasoning", "reading")
# Names become MLflow key parts, so they may not hold "/" (the key separator) or other symbols.
HEADER = re.compile(r"([^()]+) \(([^()/]+)(?:/([^()/]+))?\)")  # `task (category/metric)`: one CSV header
NAME = re.compile(r"^[A-Za-z0-9_.\- ]+$")
TASK_NAME = re.compile(r"^[A-Za-z0-9_.\- ]+(:[A-Za-z0-9_.\-]+)?$")  # lm_eval:TASK too (raycf.data.lm_eval_tasks)
RESERVED_ROWS = ("before", "category", "metric")
# Scores a relative FG (Eq. 1) may divide: accuracies in [0, 1], and only from FG_FLOOR up.
RELATIVE_METRICS = ("acc", "acc_norm")
FG_FLOOR = 0.1
BIAS = "bias"


@dataclass
class AccuracyMatrix:
    """scores[m, j]: score of probe task j after stage m (row 0 = before), NaN = not measured.

    metrics: each column's score (`acc`, `bleu`, `pct_stereotype`, ...); empty = all accuracies (a
    hand-made matrix). CSV layout (to_csv/from_csv): one header row `stage,<task> (<category>/<metric>),...`
    (`<task> (<category>)` for an accuracy), then one row per checkpoint, first cell `before` or the stage name;
    also read: a header of three rows `stage,<task1>,...` / `category,<cat1>,...` / `metric,<metric1>,...` (the
    last optional). Cells are Python float reprs (exact round trip), empty is NaN.
    """

    scores: np.ndarray
    tasks: list[str]
    categories: list[str]
    stages: list[str]
    metrics: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.scores = np.asarray(self.scores, dtype=float)
        self.tasks, self.categories, self.stages = list(self.tasks), list(self.categories), list(self.stages)
        self.metrics = list(self.metrics)
        problems = matrix_problems(self)
        if problems:
            raise ValueError("invalid accuracy matrix:\n  " + "\n  ".join(problems))

    def metric(self, j: int) -> str:  # column j's score name; `acc` in a matrix made without metric names
        return self.metrics[j] if self.metrics else "acc"

    def to_csv(self, path: str | Path) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["stage", *(f"{t} ({c}/{self.metric(j)})" if self.metrics else f"{t} ({c})"
                                        for j, (t, c) in enumerate(zip(self.tasks, self.categories)))])
            for name, row in zip(["before", *self.stages], self.scores):
                writer.writerow([name, *("" if math.isnan(x) else repr(float(x)) for x in row)])

    @classmethod
    def from_csv(cls, path: str | Path) -> AccuracyMatrix:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        heads = [HEADER.fullmatch(h) for h in rows[0][1:]] if rows and rows[0][:1] == ["stage"] else [None]
        if all(heads) and (len(rows) < 2 or rows[1][:1] != ["category"]):  # one header row
            columns = [m.groups() for m in heads]
            metrics = [m or "acc" for _, _, m in columns] if any(m for _, _, m in columns) else []
            rows = [["stage", *(t for t, _, _ in columns)], ["category", *(c for _, c, _ in columns)],
                    *([["metric", *metrics]] if metrics else []), *rows[1:]]
        if len(rows) < 3 or [r[0] for r in rows[:2]] != ["stage", "category"] or rows[2][0] not in ("before",
                                                                                                  "metric"):
            raise ValueError(f"{path}: expected rows starting with stage, category, [metric,] before "
                             f"(see AccuracyMatrix)")
        if any(len(r) != len(rows[0]) for r in rows):
            raise ValueError(f"{path}: every row must have {len(rows[0])} cells like the header")
        metrics = rows.pop(2)[1:] if rows[2][0] == "metric" else []
        if len(rows) < 3 or rows[2][0] != "before":
            raise ValueError(f"{path}: expected a `before` row after the header rows (see AccuracyMatrix)")
        try:
            scores = [[float(x) if x else math.nan for x in r[1:]] for r in rows[2:]]
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        return cls(np.array(scores), rows[0][1:], rows[1][1:], [r[0] for r in rows[3:]], metrics)

    def heatmap_png(self, path: str | Path) -> None:
        """Checkpoints (rows) x probe tasks (columns), each cell its score (2 decimals) coloured by its change from
        the row before tuning, column by column in the column's own units (blue: higher, red: lower); the
        general probes and the learned tasks (the continual-learning view) in panels of their own."""
        from matplotlib.figure import Figure  # no pyplot: no global backend, renders with Agg

        panels = [[j for j, c in enumerate(self.categories) if c != LEARNED],
                  [j for j, c in enumerate(self.categories) if c == LEARNED]]
        panels = [cols for cols in panels if cols]
        n_rows = self.scores.shape[0]
        fig = Figure(figsize=(2.5 + 0.95 * self.scores.shape[1], 1.6 + 0.45 * n_rows), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False, width_ratios=[len(c) for c in panels])[0]
        for ax, cols in zip(axes, panels):
            scores = self.scores[:, cols]
            change = scores - scores[0]
            scale = np.nanmax(np.abs(change), axis=0, initial=0.0)
            shade = np.divide(change, scale, out=np.zeros_like(change), where=scale > 0)
            image = ax.imshow(np.ma.masked_invalid(np.where(np.isnan(scores), np.nan, shade)), cmap="RdBu",
                              vmin=-1, vmax=1, aspect="auto")
            for (i, j), value in np.ndenumerate(scores):
                if not math.isnan(value):
                    text = f"{value:.2f}" if i == 0 or math.isnan(change[i, j]) else \
                        f"{value:.2f}\n{change[i, j]:+.2f}"
                    ax.text(j, i, text, ha="center", va="center", fontsize=6.5,
                            color="w" if abs(shade[i, j]) > 0.6 else "k")
            ax.set_xticks(range(len(cols)), [f"{self.tasks[j]}\n({self.categories[j]}"
                                             f"{f', {self.metric(j)}' if self.metrics else ''})" for j in cols],
                          rotation=45, ha="right", fontsize=7)
            ax.set_yticks(range(n_rows), ["before", *self.stages], fontsize=8)
            ax.set_title("learned tasks" if self.categories[cols[0]] == LEARNED else "general abilities",
                         fontsize=9)
        axes[0].set_ylabel("after stage")
        fig.colorbar(image, ax=list(axes), shrink=0.8, label="change from before, per column")
        fig.savefig(path, format="png", dpi=100)


def matrix_problems(R: AccuracyMatrix) -> list[str]:
    """Every problem with R, so that one error names them all."""
    problems = []
    want = (len(R.stages) + 1, len(R.tasks))
    if R.scores.shape != want:
        problems.append(f"scores has shape {R.scores.shape}, expected (stages + 1, tasks) = {want}")
    if np.isinf(R.scores).any():
        problems.append("scores contain inf; use NaN for a cell not measured")
    if len(R.categories) != len(R.tasks):
        problems.append(f"{len(R.categories)} categories for {len(R.tasks)} tasks: give one category per task")
    if R.metrics and len(R.metrics) != len(R.tasks):
        problems.append(f"{len(R.metrics)} metrics for {len(R.tasks)} tasks: give one metric per task (or none)")
    for kind, names in (("task", R.tasks), ("stage", R.stages)):
        for name in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"{kind} {name!r} appears twice: names must be unique")
    for kind, names in (("task", R.tasks), ("category", R.categories), ("stage", R.stages)):
        for name in names:
            if not (TASK_NAME if kind == "task" else NAME).match(name):
                problems.append(f"{kind} name {name!r}: use only letters, digits, _ - . and space"
                                + (" (and lm_eval: before an lm-eval task's name)" if kind == "task" else ""))
    for name in set(R.stages) & set(RESERVED_ROWS):
        problems.append(f"stage name {name!r} is reserved for the CSV header; rename the stage")
    for task, category in zip(R.tasks, R.categories):
        if category == LEARNED and task not in R.stages:
            problems.append(f"learned task {task!r} is not a stage name{did_you_mean(task, R.stages)}; "
                            f"a `{LEARNED}` column must be named after the stage that trains it")
    return problems


@dataclass
class TaskForgetting:
    task: str
    category: str
    initial: float  # R_o
    final: float  # R_k, k = last stage measured
    fg: float  # Eq. 1 in %, NaN when undefined (see reason)
    drop: float  # the same average drop in the score's own units
    reason: str | None = None  # why fg is NaN
    metric: str = "acc"


@dataclass
class CategoryForgetting:
    category: str
    initial: float  # mean R_o over the category's tasks
    final: float  # mean R_k over the category's tasks
    fg: float  # mean FG over the tasks whose FG is defined
    drop: float = math.nan  # mean drop over the category's tasks, in their units

    @property
    def change(self) -> float:
        """final - initial in the score's units (bias: the stereotype score's change, > 0 = more stereotyped)."""
        return self.final - self.initial


@dataclass
class LearnedTask:
    task: str
    stage: int  # s(i), 1-based
    right_after: float  # R_{s(i),i}
    final: float  # R_{k,i}, NaN until the task is learned
    forgetting: float  # y_{s,i} - y_{k,i}, NaN unless s < k
    max_forgetting: float  # max_{s <= m < k} y_{m,i} - y_{k,i}
    fwt: float  # y_{s-1,i} - y_{0,i}, NaN for the first stage
    right_before: float = math.nan  # R_{s(i)-1,i}: the score just before the task's own stage

    @property
    def gain(self) -> float:
        """What the task's own stage taught it: y_{s,i} - y_{s-1,i}, in the score's units."""
        return self.right_after - self.right_before


@dataclass
class LearnedSummary:
    bwt: float
    forgetting: float
    max_forgetting: float
    fwt: float
    average: float
    gain: float = math.nan  # mean over the learned tasks of their own stage's gain


@dataclass
class Report:
    stages_done: int  # k
    n_stages: int  # N
    tasks: list[TaskForgetting]
    categories: dict[str, CategoryForgetting]
    learned: list[LearnedTask]
    learned_summary: LearnedSummary | None
    mean_fg: float  # mean FG over MEAN_FG_CATEGORIES present

    def table(self) -> str:
        """Fixed-width text: FG by category (task rows, then the category mean), then learned tasks."""
        width = max([len(t.task) for t in self.tasks] + [len("(mean)"), len("learned task")])
        cat_width = max([len(c) for c in self.categories] + [len("category")])
        lines = [f"forgetting after stage {self.stages_done} of {self.n_stages}", "",
                 f"{'category':<{cat_width}}  {'task':<{width}}  {'initial':>8}  {'final':>8}  {'FG %':>8}"
                 f"  {'drop':>8}"]
        for c in self.categories.values():
            for t in (t for t in self.tasks if t.category == c.category):
                note = f"  ({t.reason})" if t.reason else ""
                lines.append(f"{c.category:<{cat_width}}  {t.task:<{width}}  {num(t.initial)}  {num(t.final)}"
                             f"  {num(t.fg)}  {num(t.drop)}{note}")
            lines.append(f"{c.category:<{cat_width}}  {'(mean)':<{width}}  {num(c.initial)}  {num(c.final)}"
                         f"  {num(c.fg)}  {num(c.drop)}")
            if c.category == BIAS:
                lines.append(f"{c.category:<{cat_width}}  stereotype_change (final - initial, > 0 = more "
                             f"stereotyped): {c.change:+.3f}")
        lines.append(f"mean FG ({', '.join(MEAN_FG_CATEGORIES)}): {num(self.mean_fg).strip()}")
        if self.learned:
            lines += ["", f"{'learned task':<{width}}  {'stage':>5}  {'before':>8}  {'after':>8}  {'gain':>8}"
                          f"  {'final':>8}  {'forget':>8}  {'max_fgt':>8}  {'FWT':>8}"]
            for t in self.learned:
                lines.append(f"{t.task:<{width}}  {t.stage:>5}  {num(t.right_before)}  {num(t.right_after)}"
                             f"  {num(t.gain)}  {num(t.final)}  {num(t.forgetting)}  {num(t.max_forgetting)}"
                             f"  {num(t.fwt)}")
            s = self.learned_summary
            figures = dict(gain=s.gain, BWT=s.bwt, forgetting=s.forgetting, max_forgetting=s.max_forgetting, FWT=s.fwt)
            lines.append("  ".join(f"{k} {num(v).strip()}" for k, v in {**figures, "average": s.average}.items()))
        return "\n".join(lines)


def num(x: float) -> str:
    return f"{'-':>8}" if math.isnan(x) else f"{x:8.2f}"


def mean(values) -> float:
    """Mean of the non-NaN values; NaN (without numpy's empty-slice warning) when there are none."""
    kept = [float(v) for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def forgetting(R: AccuracyMatrix, higher_is_better: dict[str, bool] | None = None) -> Report:
    """FG per task and category plus BWT, forgetting, max-forgetting, FWT and average (module docstring).

    higher_is_better maps a task or category name to False for scores where lower is better
    (a task entry wins over its category's); default True for all, bias included, as in the paper.
    """
    orientation = orientations(R, higher_is_better or {})
    measured = [m for m in range(1, len(R.stages) + 1) if np.isfinite(R.scores[m]).any()]
    k = max(measured, default=0)
    tasks = [task_forgetting(R, j, k, orientation[j]) for j in range(len(R.tasks))]
    categories = {}
    for c in dict.fromkeys(R.categories):
        mine = [t for t in tasks if t.category == c]
        categories[c] = CategoryForgetting(c, mean(t.initial for t in mine), mean(t.final for t in mine),
                                           mean(t.fg for t in mine), mean(t.drop for t in mine))
    learned = [learned_task(R, j, k, orientation[j]) for j, c in enumerate(R.categories) if c == LEARNED]
    summary = None
    if learned:
        summary = LearnedSummary(bwt=mean(-t.forgetting for t in learned),
                                 forgetting=mean(t.forgetting for t in learned),
                                 max_forgetting=mean(t.max_forgetting for t in learned),
                                 fwt=mean(t.fwt for t in learned),
                                 average=mean(t.final for t in learned),
                                 gain=mean(t.gain for t in learned))
    mean_fg = mean(categories[c].fg for c in MEAN_FG_CATEGORIES if c in categories)
    return Report(k, len(R.stages), tasks, categories, learned, summary, mean_fg)


def orientations(R: AccuracyMatrix, higher_is_better: dict[str, bool]) -> list[float]:
    unknown = [name for name in higher_is_better if name not in R.tasks and name not in R.categories]
    if unknown:
        raise ValueError("higher_is_better names no task or category: " + ", ".join(
            f"{n!r}{did_you_mean(n, R.tasks + R.categories)}" for n in unknown))
    return [1.0 if higher_is_better.get(t, higher_is_better.get(c, True)) else -1.0
            for t, c in zip(R.tasks, R.categories)]


def task_forgetting(R: AccuracyMatrix, j: int, k: int, orientation: float) -> TaskForgetting:
    column = R.scores[:, j]
    initial = float(column[0])
    after = [x for x in column[1:k + 1] if not math.isnan(x)]
    drop = orientation * mean(initial - x for x in after)
    metric = R.metric(j)
    fg, reason = math.nan, None
    if metric not in RELATIVE_METRICS:
        reason = f"{metric} is not an accuracy: no relative FG, see drop (in {metric} units)"
    elif math.isnan(initial):
        reason = "initial score not measured"
    elif abs(initial) < FG_FLOOR:
        reason = f"initial {initial:g} is below the floor {FG_FLOOR:g}: no relative FG, see drop"
    elif not after:
        reason = "not measured after any stage yet"
    else:
        fg = drop / abs(initial) * 100
    final = float(column[k]) if k else math.nan
    return TaskForgetting(R.tasks[j], R.categories[j], initial, final, fg, drop, reason, metric)


def learned_task(R: AccuracyMatrix, j: int, k: int, orientation: float) -> LearnedTask:
    s = R.stages.index(R.tasks[j]) + 1
    y = orientation * R.scores[:, j]
    forgot = max_forgot = math.nan
    if s < k:
        forgot = y[s] - y[k]
        earlier = [x for x in y[s:k] if not math.isnan(x)]
        max_forgot = max(earlier) - y[k] if earlier else math.nan
    right_after = float(R.scores[s, j]) if s <= k else math.nan
    final = float(R.scores[k, j]) if s <= k else math.nan
    fwt = float(y[s - 1] - y[0]) if s >= 2 else math.nan
    right_before = float(R.scores[s - 1, j]) if s <= k else math.nan
    return LearnedTask(R.tasks[j], s, right_after, final, float(forgot), float(max_forgot), fwt, right_before)


def print_forgetting(args) -> int:
    try:
        R = AccuracyMatrix.from_csv(args.csv)
    except (OSError, ValueError) as e:
        raise DataError(f"{args.csv}: {e}" if args.csv not in str(e) else str(e)) from None
    print(forgetting(R).table())
    if args.png:
        R.heatmap_png(args.png)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = parser("raycf.forgetting", "forgetting figures (FG, BWT, ...) of an accuracy-matrix CSV")
    p.add_argument("csv", help="accuracy matrix written by AccuracyMatrix.to_csv")
    p.add_argument("--png", help="also draw the heatmap here")
    return cli(p, print_forgetting, argv)


if __name__ == "__main__":
    import sys
    sys.exit(main())
