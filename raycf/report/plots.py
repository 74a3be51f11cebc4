"""The report's figures: category scores over the stages, the learning-vs-forgetting trade-off, the effect of
each searched parameter; as PNG files or data URIs."""
from __future__ import annotations

import base64
import io

from raycf.forgetting import LEARNED, MEAN_FG_CATEGORIES, AccuracyMatrix, mean
from raycf.report.tables import on_front
from raycf import layout
from raycf.layout import LEARNED_AVERAGE, MEAN_FG
from raycf.report.trials import CATEGORIES, Trial


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


def fg_by_stage_png(trials: list[Trial], path) -> None:
    """Every trial's mean FG after each stage, one line per trial labelled by its searched values; unfinished
    trials dashed (their last point is so far)."""
    fig = _figure(7.5, 4.0)
    ax = fig.subplots()
    stages = max((t.stages for t in trials), key=len, default=[])
    for t in (t for t in trials if t.fg_by_stage):
        steps = sorted(k for k in t.fg_by_stage if k > 0)
        ax.plot(steps, [t.fg_by_stage[k] for k in steps], marker="o", label=t.name,
                linestyle="-" if t.finished else "--")
    ax.set_xticks(range(1, len(stages) + 1), stages, rotation=15, ha="right", fontsize=8)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("after stage")
    ax.set_ylabel(f"mean FG % ({', '.join(MEAN_FG_CATEGORIES)}) so far")
    ax.set_title("forgetting after each stage, every trial (lower is better)", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_lines():
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
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
            ax.annotate(t.name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
        else:
            ax.scatter(x, y, s=45, facecolors="none", edgecolors="grey", zorder=3)
            ax.annotate(f"{t.name} ({t.status.lower()}, so far)", (x, y), textcoords="offset points",
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
    keys = [MEAN_FG] + [layout.category_fg(c) for c in CATEGORIES
                        if any(layout.category_fg(c) in t.metrics for t in done)]
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
        ax.set_title(key.removeprefix("headline/").replace("_FG", " FG %"), fontsize=9)
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
