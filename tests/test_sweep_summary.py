"""The sweep's closing summary on hand-made trial rows (no Ray)."""
from raycf.config import SweepConfig
from raycf.sweep.summary import effects, ranked_table


def row(name, warm, lr, fg, status="FINISHED"):
    return {"run": name, "status": status, "params": {"warm_start.kind": warm, "optim.lr": lr},
            "metrics": {"forgetting/mean_FG": fg, "objective": fg, "stage": 3}}


def test_effects_mean_per_value_and_an_honest_warm_start_verdict():
    rows = [row("a", "none", "0.001", 10.0), row("b", "general", "0.001", 4.0),
            row("c", "none", "0.01", 20.0), row("d", "general", "0.01", 30.0)]
    lines = effects(rows, ["warm_start.kind", "optim.lr"])
    assert lines[0] == "forgetting/mean_FG by warm_start.kind: none 15.00 (2 trials), general 17.00 (2 trials)"
    assert lines[1] == "forgetting/mean_FG by optim.lr: 0.001 7.00 (2 trials), 0.01 25.00 (2 trials)"
    assert lines[2].startswith("warm start: mean FG general 17.00 vs none 15.00 over 2 matched settings; mixed: "
                               "general forgets less in 1 of 2")
    rows[3] = row("d", "general", "0.01", 12.0)
    assert effects(rows, ["warm_start.kind", "optim.lr"])[2].endswith("general forgets less than none, as the "
                                                                     "study found")
    rows = [row("a", "none", "0.001", 1.0), row("b", "general", "0.001", 4.0)]
    assert effects(rows, ["warm_start.kind"])[-1].endswith("general does NOT forget less than none here, "
                                                           "unlike the study")


def test_ranked_table_orders_by_the_metric_and_shows_searched_params_and_status():
    rows = [row("worse", "none", "0.01", 9.0), row("best", "general", "0.001", 1.0),
            row("stopped", "none", "0.001", 5.0, status="KILLED")]
    lines = ranked_table(rows, SweepConfig(metric="objective", mode="min"), ["warm_start.kind", "optim.lr"])
    assert lines.splitlines()[0].split()[:6] == ["rank", "trial", "status", "warm_start", "lr", "stage"]
    assert [ln.split()[1] for ln in lines.splitlines()[1:]] == ["best", "stopped", "worse"]
    assert lines.splitlines()[2].split()[2:5] == ["KILLED", "none", "0.001"]
