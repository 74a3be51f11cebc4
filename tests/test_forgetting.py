"""Forgetting metrics on hand-computed accuracy matrices: pytest tests/test_forgetting.py"""
import math
import re

import numpy as np
import pytest

from raycf import layout
from raycf.forgetting import AccuracyMatrix, forgetting, main

nan = math.nan
STAGES = ["simp", "dialog", "eli5"]


def three_stages() -> AccuracyMatrix:
    """N = 3 stages; knowledge (mmlu), reasoning (boolq, piqa) and the three learned tasks."""
    scores = [
        # mmlu boolq piqa simp dialog eli5
        [50, 80, 40, 10, 5, 20],  # before
        [45, 80, 44, 30, 8, 22],  # after simp
        [40, 72, 40, 40, 30, 24],  # after dialog
        [35, 64, 36, 25, 20, 50],  # after eli5
    ]
    return AccuracyMatrix(np.array(scores, float), ["mmlu", "boolq", "piqa", *STAGES],
                          ["knowledge", "reasoning", "reasoning", "tasks", "tasks", "tasks"], STAGES)


def test_fg_by_task_and_category():
    r = forgetting(three_stages())
    fg = {t.task: t.fg for t in r.tasks}
    # mmlu: drops 5, 10, 15 of 50 = 10 %, 20 %, 30 %  -> FG = 60 / 3 = 20
    # boolq: drops 0, 8, 16 of 80 = 0 %, 10 %, 20 %   -> FG = 10
    # piqa: drops -4, 0, 4 of 40 = -10 %, 0 %, 10 %   -> FG = 0
    assert fg["mmlu"] == pytest.approx(20.0)
    assert fg["boolq"] == pytest.approx(10.0)
    assert fg["piqa"] == pytest.approx(0.0)
    reasoning = r.categories["reasoning"]
    assert reasoning.fg == pytest.approx(5.0)  # (10 + 0) / 2
    assert reasoning.initial == pytest.approx(60.0)  # (80 + 40) / 2
    assert reasoning.final == pytest.approx(50.0)  # (64 + 36) / 2
    assert (r.categories["knowledge"].initial, r.categories["knowledge"].final) == (50.0, 35.0)
    assert r.mean_fg == pytest.approx(12.5)  # (20 + 5) / 2; `tasks` is not a general category
    # simp from 10: drops -20, -30, -15 -> -200, -300, -150 % -> -650/3
    assert fg["simp"] == pytest.approx(-650 / 3)
    # dialog from 5: -3, -25, -15 -> -60, -500, -300 % -> -860/3;  eli5 from 20: -10, -20, -150 % -> -60
    assert r.categories["tasks"].fg == pytest.approx((-650 / 3 - 860 / 3 - 60) / 3)
    assert (r.stages_done, r.n_stages) == (3, 3)


def test_learned_task_metrics():
    r = forgetting(three_stages())
    by_task = {t.task: t for t in r.learned}
    simp, dialog, eli5 = by_task["simp"], by_task["dialog"], by_task["eli5"]
    # simp learned at stage 1: 30 just after, best earlier 40 (stage 2), last 25
    assert (simp.stage, simp.right_after, simp.final) == (1, 30.0, 25.0)
    assert (simp.forgetting, simp.max_forgetting) == (5.0, 15.0)
    # dialog learned at stage 2: 30 just after, last 20
    assert (dialog.forgetting, dialog.max_forgetting) == (10.0, 10.0)
    # eli5 is the last stage: nothing to forget yet
    assert math.isnan(eli5.forgetting) and math.isnan(eli5.max_forgetting)
    # FWT: dialog 8 (after stage 1) - 5 (before) = 3; eli5 24 (after stage 2) - 20 = 4; simp has none
    assert math.isnan(simp.fwt) and (dialog.fwt, eli5.fwt) == (3.0, 4.0)
    s = r.learned_summary
    assert s.bwt == pytest.approx(-7.5)  # ((25 - 30) + (20 - 30)) / 2, over i < N
    assert s.forgetting == pytest.approx(7.5)  # (5 + 10) / 2
    assert s.max_forgetting == pytest.approx(12.5)  # (15 + 10) / 2
    assert s.fwt == pytest.approx(3.5)  # (3 + 4) / 2
    assert s.average == pytest.approx(95 / 3)  # (25 + 20 + 50) / 3


def test_zero_initial_score_is_nan_with_a_reason():
    # mathqa starts at 0: relative drop undefined; drop in points = mean(0-5, 0-10, 0-0) = -5
    R = AccuracyMatrix(np.array([[0, 80], [5, 80], [10, 72], [0, 64]], float), ["mathqa", "boolq"],
                       ["reasoning", "reasoning"], STAGES)
    r = forgetting(R)
    mathqa = r.tasks[0]
    assert math.isnan(mathqa.fg) and "below the floor 0.1" in mathqa.reason
    assert mathqa.drop == pytest.approx(-5.0)
    assert r.categories["reasoning"].fg == pytest.approx(10.0)  # boolq only
    rows = {t["task"]: t for t in layout.forgetting_rows(r, "start")}  # the run's forgetting_by_probe.csv
    assert math.isnan(rows["mathqa"]["FG"]) and "below the floor" in rows["mathqa"]["FG_undefined_because"]
    assert rows["mathqa"]["drop"] == -5.0 and rows["boolq"]["FG"] == pytest.approx(10.0)
    assert layout.forgetting_metrics(r)["headline/reasoning_FG"] == pytest.approx(10.0)
    assert "below the floor" in r.table().split("mathqa")[1].splitlines()[0]  # reason on the row


def test_partial_matrix_so_far():
    # only stages 1..2 measured: row 3 is NaN
    scores = np.array(three_stages().scores)
    scores[3] = nan
    r = forgetting(AccuracyMatrix(scores, three_stages().tasks, three_stages().categories, STAGES))
    assert (r.stages_done, r.n_stages) == (2, 3)
    mmlu = r.tasks[0]
    assert mmlu.fg == pytest.approx(15.0)  # (10 % + 20 %) / 2 stages
    assert mmlu.final == 40.0
    by_task = {t.task: t for t in r.learned}
    # simp: 30 just after stage 1, 40 after stage 2 -> forgetting -10, BWT +10, max-forgetting 30 - 40
    assert (by_task["simp"].forgetting, by_task["simp"].max_forgetting) == (-10.0, -10.0)
    assert math.isnan(by_task["eli5"].final)  # not learned yet
    s = r.learned_summary
    assert (s.bwt, s.forgetting) == (10.0, -10.0)
    assert s.fwt == pytest.approx(3.5)  # 24 after stage 2 was already measured for eli5
    assert s.average == pytest.approx(35.0)  # (40 + 30) / 2, tasks learned so far
    assert layout.forgetting_metrics(r)["task_forgetting/_mean"] == -10.0


def test_bias_sign_and_lower_is_better():
    # CrowS-Pairs stereotype %: 60 -> 57, 54, 51 = 5, 10, 15 % -> FG +10 (stereotype went down)
    # ppl (lower is better): 10 -> 12, 11, 10 = +20, +10, 0 % worse -> FG +10
    R = AccuracyMatrix(np.array([[60, 50, 10], [57, 55, 12], [54, 50, 11], [51, 45, 10]], float),
                       ["crows gender", "crows race", "ppl"], ["bias", "bias", "knowledge"], STAGES)
    r = forgetting(R, higher_is_better={"ppl": False})
    fg = {t.task: t.fg for t in r.tasks}
    assert fg["crows gender"] == pytest.approx(10.0)
    assert fg["crows race"] == pytest.approx(0.0)  # -10, 0, +10 %
    assert fg["ppl"] == pytest.approx(10.0)
    assert r.mean_fg == pytest.approx(10.0)  # knowledge only: bias stays out of mean_FG
    with pytest.raises(ValueError, match="did you mean 'ppl'"):
        forgetting(R, higher_is_better={"pll": False})


def test_csv_round_trip_is_exact(tmp_path):
    scores = np.array(three_stages().scores)
    scores[1, 0] = 0.1 + 0.2
    scores[3] = nan
    R = AccuracyMatrix(scores, three_stages().tasks, three_stages().categories, STAGES)
    R.to_csv(tmp_path / "R.csv")
    lines = (tmp_path / "R.csv").read_text().splitlines()
    assert lines[0] == ("stage,mmlu (knowledge),boolq (reasoning),piqa (reasoning),simp (tasks),dialog (tasks),"
                        "eli5 (tasks)")
    assert [line.split(",")[0] for line in lines[1:]] == ["before", *STAGES]
    back = AccuracyMatrix.from_csv(tmp_path / "R.csv")
    np.testing.assert_array_equal(back.scores, R.scores)  # NaN at the same places
    assert (back.tasks, back.categories, back.stages) == (R.tasks, R.categories, R.stages)


def test_heatmap_png(tmp_path):
    three_stages().heatmap_png(tmp_path / "R.png")
    data = (tmp_path / "R.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_metrics_keys_are_mlflow_names_and_values_finite():
    metrics = layout.forgetting_metrics(forgetting(three_stages()))
    for key, value in metrics.items():
        assert re.fullmatch(r"[A-Za-z0-9_\-. /]+", key) and key.count("/") == 1, key  # one MLflow section each
        assert isinstance(value, float) and math.isfinite(value), key
    assert metrics["headline/knowledge_FG"] == 20.0
    assert metrics["headline/mean_FG"] == pytest.approx(12.5)
    assert (metrics["score_initial/knowledge"], metrics["score_final/knowledge"]) == (50.0, 35.0)
    for name in ("tasks_BWT", "tasks_average", "tasks_gain"):
        assert f"headline/{name}" in metrics
    for name in ("forgetting", "max_forgetting", "FWT", "gain"):
        assert f"task_{name}/_mean" in metrics and f"task_{name}/dialog" in metrics
    assert "task_forgetting/eli5" not in metrics  # NaN left out: eli5 is learned at the last stage
    assert {k.split("/")[0] for k in metrics} == {"headline", "score_initial", "score_final", "score_drop",
                                                  "task_forgetting", "task_max_forgetting", "task_FWT", "task_gain"}


def test_invalid_matrix_names_every_problem():
    with pytest.raises(ValueError) as error:
        AccuracyMatrix(np.zeros((3, 2)), ["mmlu", "sim"], ["knowledge", "tasks", "extra"], STAGES)
    message = str(error.value)
    assert "shape (3, 2)" in message and "3 categories for 2 tasks" in message
    assert "did you mean 'simp'" in message
    with pytest.raises(ValueError, match="letters, digits"):
        AccuracyMatrix(np.zeros((4, 1)), ["mmlu/stem"], ["knowledge"], STAGES)


def test_table_and_cli(tmp_path, capsys):
    three_stages().to_csv(tmp_path / "R.csv")
    main([str(tmp_path / "R.csv"), "--png", str(tmp_path / "R.png")])
    out = capsys.readouterr().out
    assert "forgetting after stage 3 of 3" in out
    row = next(line for line in out.splitlines() if line.startswith("knowledge  mmlu"))
    assert row.split()[-4:] == ["50.00", "35.00", "20.00", "10.00"]  # initial, final, FG %, drop
    assert "BWT -7.50" in out and (tmp_path / "R.png").stat().st_size > 0
    assert main([str(tmp_path / "R.csv")]) == 0
    capsys.readouterr()
    assert main([str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.csv" in err and len(err.splitlines()) == 1
    (tmp_path / "bad.csv").write_text("stage,mmlu\ncategory,knowledge\nbefore,abc\n")
    assert main([str(tmp_path / "bad.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.csv: could not convert" in err and len(err.splitlines()) == 1


def study_matrix() -> AccuracyMatrix:
    """Accuracies (knowledge), the stereotype score (bias) and two learned generation tasks, with metric names."""
    scores = [
        # facts  crows  simp(sari) qg(bleu)
        [0.80, 0.60, 40.0, 0.2],  # before (after the warm start)
        [0.70, 0.65, 55.0, 0.1],  # after simp
        [0.60, 0.70, 45.0, 12.2],  # after qg
    ]
    return AccuracyMatrix(np.array(scores), ["facts", "crows", "simp", "qg"], ["knowledge", "bias", "tasks", "tasks"],
                          ["simp", "qg"], ["acc", "pct_stereotype", "sari", "bleu"])


def test_generation_scores_get_drops_in_their_units_never_a_relative_fg():
    r = forgetting(study_matrix())
    simp, qg = r.tasks[2], r.tasks[3]
    assert math.isnan(simp.fg) and "sari is not an accuracy" in simp.reason
    assert math.isnan(qg.fg) and "bleu is not an accuracy" in qg.reason  # 0.2 BLEU: no -6000 %
    assert simp.drop == pytest.approx(-10.0)  # mean(40 - 55, 40 - 45)
    assert qg.drop == pytest.approx(-5.95)  # mean(0.2 - 0.1, 0.2 - 12.2)
    assert math.isnan(r.categories["tasks"].fg) and r.categories["tasks"].drop == pytest.approx(-7.975)
    m = layout.forgetting_metrics(r)
    assert "headline/tasks_FG" not in m and m["score_drop/tasks"] == pytest.approx(-7.975)
    qg_row = [row for row in layout.forgetting_rows(r, "start") if row["task"] == "qg"][0]
    assert math.isnan(qg_row["FG"]) and qg_row["drop"] == pytest.approx(-5.95)
    # the learned tasks' own gains: simp 40 -> 55 at stage 1, qg 0.1 -> 12.2 at stage 2
    gains = {t.task: t.gain for t in r.learned}
    assert gains == {"simp": pytest.approx(15.0), "qg": pytest.approx(12.1)}
    assert m["headline/tasks_gain"] == pytest.approx(13.55) and m["task_gain/simp"] == 15.0
    assert m["headline/tasks_BWT"] == pytest.approx(-10.0)  # simp 55 -> 45, in SARI points


def test_bias_is_the_stereotype_score_and_its_change_never_an_fg():
    r = forgetting(study_matrix())
    m = layout.forgetting_metrics(r)
    assert "headline/bias_FG" not in m
    assert m["headline/stereotype_change"] == pytest.approx(0.10)  # 0.60 -> 0.70: more stereotyped
    crows = [row for row in layout.forgetting_rows(r, "start") if row["task"] == "crows"][0]
    assert crows["stereotype_change"] == pytest.approx(0.10) and math.isnan(crows["FG"])
    assert "stereotype_change (final - initial, > 0 = more stereotyped): +0.100" in r.table()
    assert r.mean_fg == pytest.approx(18.75)  # knowledge only: (0.1 / 0.8 + 0.2 / 0.8) / 2 * 100


def test_floor_applies_to_accuracies_below_it():
    R = AccuracyMatrix(np.array([[0.09, 0.5], [0.05, 0.4]]), ["low", "ok"], ["reasoning"] * 2, ["s"], ["acc"] * 2)
    low, ok = forgetting(R).tasks
    assert math.isnan(low.fg) and "0.09 is below the floor 0.1" in low.reason and low.drop == pytest.approx(0.04)
    assert ok.fg == pytest.approx(20.0)


def test_metric_row_round_trips_and_old_files_still_read(tmp_path):
    R = study_matrix()
    R.to_csv(tmp_path / "R.csv")
    lines = (tmp_path / "R.csv").read_text().splitlines()  # one header row: MLflow's preview shows it as one
    assert lines[0] == ("stage,facts (knowledge/acc),crows (bias/pct_stereotype),simp (tasks/sari),"
                        "qg (tasks/bleu)") and lines[1].startswith("before,")
    back = AccuracyMatrix.from_csv(tmp_path / "R.csv")
    assert back.metrics == R.metrics and np.array_equal(back.scores, R.scores)
    three_stages().to_csv(tmp_path / "plain.csv")  # no metrics: all accuracies
    assert AccuracyMatrix.from_csv(tmp_path / "plain.csv").metrics == []
    old = ["stage,facts,crows", "category,knowledge,bias", "metric,acc,pct_stereotype", "before,0.8,0.6",
           "s1,0.7,0.65"]  # the three-row header of earlier files
    (tmp_path / "old.csv").write_text("\n".join(old) + "\n")
    back = AccuracyMatrix.from_csv(tmp_path / "old.csv")
    assert (back.tasks, back.categories, back.metrics, back.stages) == (["facts", "crows"], ["knowledge", "bias"],
                                                                         ["acc", "pct_stereotype"], ["s1"])
    with pytest.raises(ValueError, match="3 metrics for 4 tasks"):
        AccuracyMatrix(R.scores, R.tasks, R.categories, R.stages, ["acc"] * 3)


def test_from_the_base_model_and_the_warm_starts_own_cost():
    from raycf.baseline import base_metrics, from_base, warm_start_cost
    R, base = study_matrix(), [1.00, 0.50, 38.0, 0.3]
    r = from_base(R, base)
    # facts from the base 1.0: drops 0.3, 0.4 -> 30 %, 40 % -> FG 35 (the study's FG from 0.8 is 18.75)
    assert r.tasks[0].fg == pytest.approx(35.0) and r.mean_fg == pytest.approx(35.0)
    cost = warm_start_cost(R, base)
    assert (cost["knowledge"].base, cost["knowledge"].start) == (1.0, 0.8)
    assert cost["knowledge"].change == pytest.approx(-0.2) and cost["knowledge"].change_pct == pytest.approx(-20.0)
    assert cost["bias"].change == pytest.approx(0.1) and cost["bias"].change_pct == pytest.approx(20.0)
    assert cost["tasks"].change == pytest.approx(((40 - 38) + (0.2 - 0.3)) / 2)
    assert math.isnan(cost["tasks"].change_pct)  # generation scores: no relative change
    m = base_metrics(R, base)
    assert m["vs_base/mean_FG"] == pytest.approx(35.0) and m["vs_base/stereotype_change"] == pytest.approx(0.2)
    assert m["warm_start/knowledge_change_pct"] == pytest.approx(-20.0) and "warm_start/tasks_change_pct" not in m
    assert m["warm_start/stereotype_change"] == pytest.approx(0.1)
    same = base_metrics(R, R.scores[0])  # no warm start: the study's figures, and no cost
    assert same["vs_base/mean_FG"] == forgetting(R).mean_fg and same["warm_start/knowledge_change"] == 0.0
