"""raycf.report: table and Pareto logic on hand-made trials; a hand-made MLflow store (partial sweep, bad
input); a real sweep (Ray + MLflow sqlite) whose report must equal what MLflow holds, rendered in Chromium."""
import base64
import csv
import json
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


from raycf.forgetting import AccuracyMatrix, forgetting
from raycf.report.trials import Trial
from raycf.report import __main__ as report_cli
from raycf.report import page as report_page
from raycf.report import plots as report_plots
from raycf.report import tables as report_tables
from raycf.report import trials as report_trials

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def csv_rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def make_trial(number, status="FINISHED", params=None, **metrics) -> Trial:
    named = {k.replace("__", "/"): v for k, v in metrics.items()}
    return Trial(number, f"run{number}", f"trial{number}", status, params or {}, named)


# ----------------------------------------------------------------------------- logic, no Ray, no MLflow

def test_pareto_front_of_four_points_keeps_the_undominated():
    # (forgetting, learned): C is beaten by B (less forgetting, more learned); D forgets least
    points = [(1.0, 10.0), (2.0, 20.0), (3.0, 15.0), (0.5, 5.0)]
    assert report_tables.pareto_front(points) == [0, 1, 3]


def test_pareto_front_keeps_ties_and_drops_a_point_equal_in_one_and_worse_in_the_other():
    assert report_tables.pareto_front([(1.0, 5.0), (1.0, 5.0), (1.0, 4.0), (2.0, 5.0)]) == [0, 1]


def test_front_counts_only_finished_trials():
    trials = [make_trial(1, headline__mean_FG=5.0, headline__tasks_average=20.0),
              make_trial(2, headline__mean_FG=1.0, headline__tasks_average=30.0, status="KILLED"),
              make_trial(3, headline__mean_FG=8.0, headline__tasks_average=25.0)]
    assert report_tables.on_front(trials) == {1, 3}


def test_best_cells_follow_each_column_direction_ignore_missing_and_skip_all_ties():
    trials = [make_trial(1, headline__knowledge_FG=3.0, headline__stereotype_change=0.05,
                         score_final__bias=0.6, headline__mean_FG=3.0),
              make_trial(2, headline__knowledge_FG=1.0, headline__stereotype_change=-0.1,
                         score_final__bias=0.5, headline__mean_FG=3.0),
              make_trial(3, status="RUNNING")]
    table = report_tables.study_table(trials, [])
    best = table.best()
    assert best["headline/knowledge_FG"] == {1}      # least forgetting
    assert best["headline/stereotype_change"] == {1}  # the stereotype score fell: lower is better
    assert "headline/bias_FG" not in [c.key for c in table.columns]  # no FG of a stereotype score
    assert best["score_final/bias"] == {1}        # lower stereotype preference
    assert "headline/mean_FG" not in best            # every trial that has it ties
    assert table.rows[2]["status"] == "RUNNING" and table.rows[2]["headline/knowledge_FG"] is None
    assert "**1.00**" in report_tables.to_markdown(table)


def test_group_by_averages_the_group_and_lists_its_trials_and_statuses():
    trials = [make_trial(1, params={"warm_start.kind": "none"}, headline__mean_FG=2.0),
              make_trial(2, params={"warm_start.kind": "none"}, headline__mean_FG=4.0, status="KILLED"),
              make_trial(3, params={"warm_start.kind": "general"}, headline__mean_FG=1.0)]
    table = report_tables.study_table(trials, ["warm_start.kind"], group_by="warm_start.kind")
    assert [(r["warm_start.kind"], r["trials"], r["status"], r["headline/mean_FG"]) for r in table.rows] == \
        [("none", "#1 #2", "1 FINISHED, 1 KILLED", 3.0), ("general", "#3", "1 FINISHED", 1.0)]


def test_searched_params_are_those_that_differ_and_task_order_stands_for_stages():
    a = {"optim.lr": "0.001", "seed": "0", "stages": "a > b", "task_order": "a > b", "model.name": "m"}
    b = {**a, "optim.lr": "0.003", "stages": "b > a", "task_order": "b > a"}
    assert report_trials.searched_params([make_trial(1, params=a), make_trial(2, params=b)]) == ["optim.lr", "task_order"]


def test_csv_holds_exact_values_and_empty_cells_for_missing(tmp_path):
    third = 1 / 3
    table = report_tables.study_table([make_trial(1, headline__mean_FG=third), make_trial(2, status="FAILED")], [])
    report_tables.write_csv(table, tmp_path / "t.csv")
    rows = csv_rows(tmp_path / "t.csv")
    assert float(rows[0]["headline/mean_FG"]) == third
    assert rows[1]["headline/mean_FG"] == "" and rows[1]["status"] == "FAILED"


def test_category_lines_figure_is_a_png_of_a_partial_matrix(tmp_path):
    R = AccuracyMatrix(np.array([[0.5, 0.6, 10.0], [0.4, 0.6, 30.0], [np.nan] * 3]),
                       ["facts_words", "boolq_toy", "simplification"], ["knowledge", "reasoning", "tasks"],
                       ["simplification", "headline"])
    report_plots.category_lines_png(R, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes().startswith(PNG)


# ----------------------------------------------------------------------------- a hand-made MLflow store, no Ray

STAGES = ["simplification", "headline"]
TASKS = [("knowledge", "facts_geography", "acc"), ("reasoning", "boolq_toy", "acc"),
         ("reading", "race_high_toy", "acc"), ("bias", "crows_pairs_toy", "pct_stereotype"),
         ("tasks", "simplification", "sari"), ("tasks", "headline", "rouge1")]
SCORES = np.array([[0.50, 0.60, 0.40, 0.55, 20.0, 5.0],
                   [0.40, 0.60, 0.40, 0.50, 35.0, 6.0],
                   [0.30, 0.50, 0.30, 0.50, 30.0, 25.0]])


def log_trial(uri, parent, name, status, lr, stages_done):
    """A child run logged as raycf.trial logs one: probe scores and forgetting so far, step = stage."""
    from raycf import layout, tracking
    probes = json.dumps([[t, c, m] for c, t, m in TASKS])
    run_id = tracking.start_run(uri, "hand", name, parent_run_id=parent, tags={layout.PROBES_TAG: probes})
    tracking.log_params(uri, run_id, {"optim.lr": lr, "stages": " > ".join(STAGES), "task_order": " > ".join(STAGES)})
    scores = SCORES * (1 + float(lr))  # trials differ a little
    for k in range(stages_done + 1):
        metrics = {layout.probe(t): scores[k, j] for j, (c, t, m) in enumerate(TASKS)}
        if k:
            seen = np.where(np.arange(len(scores))[:, None] <= k, scores, np.nan)
            R = AccuracyMatrix(seen, [t for _, t, _ in TASKS], [c for c, _, _ in TASKS], STAGES,
                               [m for _, _, m in TASKS])
            metrics |= layout.forgetting_metrics(forgetting(R))
        tracking.log_metrics(uri, run_id, metrics, step=k)
        tracking.client(uri).set_tag(run_id, "raycf.stages_done", str(k))
    if status != "RUNNING":
        tracking.end_run(uri, run_id, status)
    return run_id


@pytest.fixture(scope="module")
def hand_store(tmp_path_factory):
    """Experiment `hand`: a sweep still running with 4 trials (finished, running at stage 0, killed after
    stage 1, failed before logging anything); experiment `empty` has no runs."""
    from raycf import tracking
    uri = f"sqlite:///{tmp_path_factory.mktemp('hand') / 'mlflow.db'}"
    parent = tracking.start_run(uri, "hand", "sweep-a", tags={"raycf.sweep": "sweep-a"})
    log_trial(uri, parent, "t-finished", "FINISHED", "0.001", 2)
    log_trial(uri, parent, "t-running", "RUNNING", "0.002", 0)
    log_trial(uri, parent, "t-killed", "KILLED", "0.003", 1)
    failed = tracking.start_run(uri, "hand", "t-failed", parent_run_id=parent)
    tracking.end_run(uri, failed, "FAILED")
    tracking.experiment_id(tracking.client(uri), "empty")
    return uri


def test_partial_sweep_shows_every_trial_with_its_status(hand_store, tmp_path):
    page = report_page.build(hand_store, "hand", tmp_path)
    rows = csv_rows(tmp_path / "table.csv")
    assert [(r["run_name"], r["status"], r["stages_done"]) for r in rows] == [
        ("t-finished", "FINISHED", "2/2"), ("t-running", "RUNNING", "0/2"), ("t-killed", "KILLED", "1/2"),
        ("t-failed", "FAILED", "0/?")]
    assert [r["pareto"] for r in rows] == ["yes", "", "", ""]  # unfinished numbers are "so far": off the front
    assert rows[1]["headline/knowledge_FG"] == "" and rows[3]["headline/mean_FG"] == ""
    # the killed trial's FG is the one after its stage 1: (0.5 - 0.4) / 0.5 * 100 = 20 % for knowledge
    assert float(rows[2]["headline/knowledge_FG"]) == pytest.approx(20.0)
    text = page.read_text()
    assert re.search(r't-running</a>: RUNNING, stage 0/2', text) and "No probe scores logged yet" in text
    assert "3 unfinished trials are left out" in text


def test_a_pbt_population_gets_its_schedules_and_no_verdict_by_starting_values(tmp_path):
    """PBT trials exchange weights: the report shows each one's schedule and compares none by its searched
    (starting) values, as the sweep's summary does."""
    from raycf import tracking
    from raycf.sweep.pbt import SCHEDULE_TAG
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = tracking.start_run(uri, "hand", "sweep-pbt", tags={"raycf.sweep": "sweep-pbt"})
    for name, lr, exploits in [("lr=1e-3", "0.001", "0"), ("lr=2e-3", "0.002", "1")]:
        run_id = log_trial(uri, parent, name, "FINISHED", lr, 2)
        table = f"stage  task  trained by  optim.lr\n1  simplification  {name}  {lr}"
        tracking.client(uri).set_tag(run_id, SCHEDULE_TAG, table)
        tracking.client(uri).set_tag(run_id, "raycf.pbt.exploits", exploits)
    text = report_page.build(uri, "hand", tmp_path / "out").read_text()
    assert "1 exploit(s) in a population of 2" in text and text.count("each stage as it was trained") == 2
    assert "simplification  lr=2e-3  0.002" in text
    assert "Settings over seeds" not in text and "verdict on" not in text
    assert "Effect of the searched params" not in text


def test_matrix_from_the_metric_history_has_nan_rows_for_stages_not_run(hand_store):
    from raycf import tracking
    _, trials = report_trials.load_trials(tracking.client(hand_store), "hand")
    killed = next(t for t in trials if t.status == "KILLED")
    assert killed.matrix.tasks == [t for _, t, _ in TASKS]
    np.testing.assert_allclose(killed.matrix.scores[:2], SCORES[:2] * 1.003)
    assert np.isnan(killed.matrix.scores[2]).all()


def test_group_by_from_the_command_line(hand_store, tmp_path, capsys):
    assert report_cli.main(["--experiment", "hand", "--tracking-uri", hand_store, "--out", str(tmp_path),
                        "--group-by", "optim.lr"]) == 0
    rows = csv_rows(tmp_path / "table.csv")
    assert [(r["optim.lr"], r["status"]) for r in rows] == [("0.001", "1 FINISHED"), ("0.002", "1 RUNNING"),
                                                            ("0.003", "1 KILLED"), ("-", "1 FAILED")]


@pytest.mark.parametrize("args, message", [
    (["--experiment", "empty"], "error: experiment 'empty' has no trial runs yet"),
    (["--experiment", "hand", "--sweep", "sweep-b"],
     "error: --sweep 'sweep-b': experiment 'hand' has no such sweep; did you mean 'sweep-a'?"),
    (["--experiment", "hand", "--group-by", "optim.rl"],
     "error: --group-by 'optim.rl': no trial has this param; did you mean 'optim.lr'?"),
])
def test_bad_input_is_one_line_and_exit_status_2(hand_store, tmp_path, capsys, args, message):
    assert report_cli.main([*args, "--tracking-uri", hand_store, "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [message]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "raycf.report", *args], capture_output=True, text=True, check=False,
                          cwd=ROOT, timeout=300)


def test_an_unknown_experiment_is_one_line_from_a_fresh_process(hand_store, tmp_path):
    p = cli("--experiment", "hnad", "--tracking-uri", hand_store, "--out", str(tmp_path))
    assert (p.returncode, p.stderr.splitlines()) == \
        (2, ["error: no experiment named 'hnad' at this tracking URI; did you mean 'hand'?"])


def test_a_missing_sqlite_store_is_an_error_and_not_created(tmp_path, capsys):
    assert report_cli.main(["--experiment", "x", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert capsys.readouterr().err.splitlines() == \
        [f"error: no MLflow store at sqlite:///{tmp_path / 'none.db'} (the file does not exist); pass --tracking-uri"]
    assert not (tmp_path / "none.db").exists()


# ----------------------------------------------------------------------------- a real sweep, real Ray and MLflow

def screenshot_module():
    spec = importlib.util.spec_from_file_location("report_screenshot", ROOT / "scripts/report_screenshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sweep_report(warm_sweep):
    """The report of conftest's small real sweep: 4 trials (warm start none, general x 2 seeds) x 2 stages of tiny-causal,
    every probe suite, 4 rows per probe."""
    uri, d = warm_sweep
    return uri, report_page.build(uri, "warm-sweep", d / "report")


@pytest.mark.slow
def test_report_tables_equal_the_metrics_in_mlflow(sweep_report):
    from raycf import tracking
    uri, page = sweep_report
    c = tracking.client(uri)
    runs = c.search_runs([c.get_experiment_by_name("warm-sweep").experiment_id])
    (parent,) = [r for r in runs if "raycf.sweep" in r.data.tags]
    kids = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    rows = csv_rows(page.parent / "table.csv")
    assert len(rows) == len(kids) == 4
    checked = 0
    for row in rows:
        run = kids[row["run_name"]]
        assert (row["status"], row["stages_done"]) == (run.info.status, "2/2") == ("FINISHED", "2/2")
        assert row["warm_start.kind"] == run.data.params["warm_start.kind"]
        for key in (k for k in row if "/" in k):  # every figure column is an MLflow metric, its value exact
            assert key in run.data.metrics and float(row[key]) == run.data.metrics[key], key
            checked += 1
    # 4 categories x (initial, final, FG or stereotype change); mean FG from the start and from the base model; the
    # warm start's knowledge cost; the learned tasks' average, gain, BWT, forgetting and FWT
    assert checked == 4 * (4 * 3 + 8)
    # Pareto front, by definition: no other trial forgets no more and learns no less, better in one
    pts = {r["run_name"]: (float(r["headline/mean_FG"]), float(r["headline/tasks_average"])) for r in rows}
    for row in rows:
        x, y = pts[row["run_name"]]
        beaten = any(x2 <= x and y2 >= y and (x2, y2) != (x, y) for x2, y2 in pts.values())
        assert (row["pareto"] == "yes") == (not beaten)
    # the sweep's own objectives (sweep.objectives: mean FG min, learned-task gain max): the same definition
    own = {r["run_name"]: (float(r["headline/mean_FG"]), float(r["headline/tasks_gain"])) for r in rows}
    front = {n for n, (x, y) in own.items()
             if not any(x2 <= x and y2 >= y and (x2, y2) != (x, y) for x2, y2 in own.values())}
    assert {r["run_name"] for r in rows if r["objectives_pareto"] == "yes"} == front
    assert set(json.loads(parent.data.tags["raycf.pareto"])) == {kids[n].info.run_id for n in front}
    md = (page.parent / "table.md").read_text()
    assert all(row["run_name"] in md for row in rows)


@pytest.mark.slow
def test_sweep_logs_figures_and_the_report_matrix_equals_the_trials_own(sweep_report, tmp_path):
    from raycf import tracking
    uri, page = sweep_report
    page_text = page.read_text()
    c = tracking.client(uri)
    label, trials = report_trials.load_trials(c, "warm-sweep")
    assert label == "sweep 'w' (FINISHED)"
    for t in trials:
        names = {a.path for a in c.list_artifacts(t.run_id)}
        assert {"accuracy_matrix.csv", "accuracy_matrix.png", "category_scores.png"} <= names
        own = AccuracyMatrix.from_csv(c.download_artifacts(t.run_id, "accuracy_matrix.csv", str(tmp_path)))
        assert sorted(own.tasks) == sorted(t.matrix.tasks) and len(own.tasks) == 11
        for j, task in enumerate(own.tasks):
            np.testing.assert_array_equal(t.matrix.scores[:, t.matrix.tasks.index(task)], own.scores[:, j])
        # MLflow's compare view lines trials up: same parent, probe metrics with step = stage
        steps = [m.step for m in c.get_metric_history(t.run_id, "probe/facts_geography")]
        assert sorted(steps) == [0, 1, 2]
        # the cross-trial figure of FG per stage plots MLflow's history; the trial links to its run there
        fg = {m.step: m.value for m in c.get_metric_history(t.run_id, "headline/mean_FG")}
        assert t.fg_by_stage == fg and sorted(fg) == [1, 2] and fg[2] == t.metrics["headline/mean_FG"]
        assert f'href="http://127.0.0.1:5000/#/experiments/{t.experiment_id}/runs/{t.run_id}"' in page_text


@pytest.mark.slow
def test_every_image_is_an_embedded_png(sweep_report):
    _, page = sweep_report
    sources = re.findall(r'<img [^>]*src="([^"]*)"', page.read_text())
    # trade-off, FG per stage, FG vs warm_start.kind, and per trial the accuracy matrix and the category lines
    assert len(sources) == 1 + 1 + 1 + 4 * 2
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.removeprefix("data:image/png;base64,"), validate=True)
        assert data.startswith(PNG) and len(data) > 1000


@pytest.mark.slow
def test_report_renders_in_headless_chromium(sweep_report, tmp_path, capsys):
    shot = screenshot_module()
    if why := shot.chromium_missing():
        pytest.skip(f"no headless Chromium here: {why}; .ci/run installs it")
    _, page = sweep_report
    png = Path(os.environ.get("RAYCF_ARTIFACTS") or tmp_path) / "report_screenshot.png"
    shown = shot.render(page, png, full_page=True)
    with capsys.disabled():
        print(f"\n[report] screenshot: {png}")
    assert shown["errors"] == []
    assert (shown["tables"], shown["rows"]) == (1, 4)
    assert len(shown["images"]) == 11 and all(w > 100 for w in shown["images"])
    assert png.read_bytes().startswith(PNG)
