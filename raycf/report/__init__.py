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

Modules: trials (the runs MLflow holds, as Trial objects with their accuracy matrices), tables (the study table,
CSV, Markdown, HTML), plots (the figures), page (report.html and the files beside it), __main__ (the command).
"""
