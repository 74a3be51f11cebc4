"""report.html (self-contained: figures are embedded PNG data URIs, it opens offline) and the tables beside it."""
from __future__ import annotations

import html
import time
from collections import Counter
from pathlib import Path

from raycf import tracking
from raycf.config.checks import tracking_uri_problem
from raycf.errors import ReportError
from raycf.forgetting import MEAN_FG_CATEGORIES
from raycf.layout import LEARNED_AVERAGE, MEAN_FG
from raycf.redact import redact_uri
from raycf.report.plots import category_lines_png, data_uri, effect_png, fg_by_stage_png, tradeoff_png
from raycf.report.tables import Table, study_table, to_html, to_markdown, write_csv
from raycf.report.trials import Trial, hint, load_trials, searched_params
from raycf.seeds import CONFIDENCE
from raycf.sweep.pbt import SCHEDULE_TAG
from raycf.sweep.summary import effects, settings_table


CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1700px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
h3{font-size:14px;margin:16px 0 4px}p.meta,p.note{color:#555;font-size:13px;margin:4px 0}
table.study{border-collapse:collapse;font-size:13px}table.study th,table.study td{border:1px solid #ccc;
padding:3px 5px}table.study th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.best{background:#c8f0c8;font-weight:600}td.status-finished{color:#1a7f37}td.status-running{color:#0969da}
td.status-killed,td.status-failed{color:#cf222e}img{max-width:100%;border:1px solid #eee;margin:4px 0}
div.trial{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
pre{white-space:pre-wrap;font-size:12px;max-width:1400px}"""


def render_html(experiment: str, uri: str, label: str, trials: list[Trial], table: Table, searched: list[str]) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in Counter(t.status for t in trials).items())
    parts = [f"<h1>raycf report: {html.escape(experiment)}</h1>",
             f'<p class="meta">{html.escape(label)}; {len(trials)} trials ({html.escape(counts)}); tracking URI '
             f'{html.escape(uri)}; generated {time.strftime("%Y-%m-%d %H:%M")}</p>',
             "<h2>Study table</h2>", to_html(table, {t.name: run_url(uri, t) for t in trials}),
             f'<p class="note">{TABLE_NOTE} Run names link to the runs in MLflow{served(uri)}.</p>']
    population = [t for t in trials if SCHEDULE_TAG in t.tags]  # a PBT sweep: its trials exchanged weights
    parts += population_html(population) if population else findings_html(trials, searched)
    if any(MEAN_FG in t.metrics and LEARNED_AVERAGE in t.metrics for t in trials):
        parts += ["<h2>Learning vs forgetting</h2>", _img("trade-off", data_uri(tradeoff_png, trials))]
    if any(t.fg_by_stage for t in trials):
        parts += ["<h2>Forgetting after each stage</h2>", _img("FG per stage", data_uri(fg_by_stage_png, trials))]
    if not population:
        parts += effects_html(trials, [p for p in searched if p != "seed"])
    parts.append("<h2>Trials</h2>")
    for t in trials:
        parts += trial_html(t, searched, run_url(uri, t))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>raycf report: '
            f'{html.escape(experiment)}</title><style>{CSS}</style></head><body>{"".join(parts)}</body></html>\n')


TABLE_NOTE = ("Scores are each category's mean over its probes (initial: where continual tuning starts, final: "
              "after the last stage so far). FG % is the study's forgetting (Eq. 1) from that start: the average "
              "relative drop of an accuracy, lower is better. Bias is the stereotype score (the share of pairs "
              "where the stereotyped sentence is preferred): its change, > 0 = more stereotyped, lower is better; "
              "it gets no FG. Mean FG averages "
              f"{', '.join(MEAN_FG_CATEGORIES)}; 'from base' measures it from the base model, so trials with and "
              "without a warm start compare like with like; the warm start's cost is base -> start. Learned-task "
              "gain, BWT, forgetting and FWT are in the tasks' own units (SARI, BLEU, ROUGE points). Green: the best "
              "in its column.")


def findings_html(trials: list[Trial], searched: list[str]) -> list[str]:
    """Each setting's figures over its seeds (mean ± sd [t interval]) and the verdicts, as the sweep printed them."""
    rows = [{"run": t.name, "status": t.status, "params": t.params, "metrics": t.metrics} for t in trials
            if t.finished]
    keys = ["task_order" if k == "stages" else k for k in searched]
    lines = settings_table(rows, keys) + effects(rows, keys) if rows else []
    if not lines:
        return []
    return ["<h2>Settings over seeds, and verdicts</h2>", f"<pre>{html.escape(chr(10).join(lines))}</pre>",
            f'<p class="note">Finished trials only. A verdict compares matched pairs (the same other values and '
            f'seed); "on the interval" means the {CONFIDENCE:.0%} t interval of the paired differences excludes 0.</p>']


def population_html(population: list[Trial]) -> list[str]:
    """A PBT sweep in place of the verdicts and the per-value effects: its trials are not independent samples
    of their searched values (they are where each trial started), so nothing compares them by those values."""
    exploits = sum(int(t.tags.get("raycf.pbt.exploits", 0)) for t in population)
    return ["<h2>Population-based training</h2>",
            f'<p class="note">{exploits} exploit(s) in a population of {len(population)}: at stage boundaries the '
            f"weakest trials took a strong trial's stage checkpoint and went on with perturbed values. The searched "
            f"values in the study table are where each trial started, so no verdict or per-value effect compares "
            f"the trials by them; each trial's per-stage schedule is under Trials.</p>"]


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


def served(uri: str) -> str:
    """Where the links work: a tracking server already serves them; a sqlite store needs `mlflow ui`."""
    if uri.startswith(("http://", "https://")):
        return ""
    return f" (after `mlflow ui --backend-store-uri {html.escape(redact_uri(uri))}`)"


def run_url(uri: str, t: Trial) -> str:
    """The trial's run in the MLflow UI: on the tracking server, or for a sqlite store where `mlflow ui
    --backend-store-uri URI` serves it by default."""
    base = redact_uri(uri).rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{t.experiment_id}/runs/{t.run_id}"


def trial_html(t: Trial, searched: list[str], url: str = "") -> list[str]:
    params = "; " + ", ".join(f"{p}={t.params.get(p, '-')}" for p in searched) if searched else ""
    name = f'<a href="{html.escape(url)}">{html.escape(t.name)}</a>' if url else html.escape(t.name)
    head = f"<h3>#{t.number} {name}: {t.status}, stage {t.progress}{html.escape(params)}</h3>"
    schedule = t.tags.get(SCHEDULE_TAG)
    if schedule:  # a PBT trial: who trained each stage, with which values (the searched values are its start)
        head += (f'<p class="note">Population-based training: {t.tags.get("raycf.pbt.exploits", "0")} exploit(s); '
                 f'each stage as it was trained:</p><pre>{html.escape(schedule)}</pre>')
    if t.matrix is None:
        return [head, '<p class="note">No probe scores logged yet.</p>']
    return [head, '<div class="trial">', _img(f"accuracy matrix #{t.number}", data_uri(t.matrix.heatmap_png)),
            _img(f"scores over stages #{t.number}", data_uri(category_lines_png, t.matrix)), "</div>"]


def build(uri: str, experiment: str, out: Path, group_by: str | None = None, sweep: str | None = None) -> Path:
    """Write out/report.html, out/table.csv, out/table.md; returns the HTML path."""
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out}: is a file; give a folder (it is created) for report.html and the tables")
    check_store(uri)
    label, trials = load_trials(tracking.client(uri), experiment, sweep)
    if group_by and not any(group_by in t.params for t in trials):
        params = sorted({k for t in trials for k in t.params})
        raise ReportError(f"--group-by {group_by!r}: no trial has this param{hint(group_by, params)}")
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
    line = tracking_uri_problem(uri, "--tracking-uri")
    if line:
        raise ReportError(line)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise ReportError(f"no MLflow store at {uri} (the file does not exist); pass --tracking-uri")
    tracking.check_reachable(uri)
