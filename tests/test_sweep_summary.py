"""The sweep's closing summary on hand-made trial rows (no Ray)."""
from raycf.config import SweepConfig
from raycf.sweep.summary import effects, ranked_table


def row(name, warm, lr, fg, status="FINISHED", seed="0", base_fg=None):
    metrics = {"headline/mean_FG": fg, "objective": fg, "stage": 3}
    if base_fg is not None:
        metrics["vs_base/mean_FG"] = base_fg
    return {"run": name, "status": status, "params": {"warm_start.kind": warm, "optim.lr": lr, "seed": seed},
            "metrics": metrics}


def test_effects_mean_per_value_and_an_honest_warm_start_verdict():
    rows = [row("a", "none", "0.001", 10.0), row("b", "general", "0.001", 4.0),
            row("c", "none", "0.01", 20.0), row("d", "general", "0.01", 30.0)]
    lines = effects(rows, ["warm_start.kind", "optim.lr"])
    # mean ± sd [95% t interval]: none (10, 20) 15 ± 7.07, t(1) 12.706 -> [-48.53, 78.53]
    assert lines[0] == ("headline/mean_FG by warm_start.kind: none 15.00 ± 7.07 [-48.53, 78.53] (2 trials), "
                        "general 17.00 ± 18.38 [-148.18, 182.18] (2 trials)")
    assert lines[1] == ("headline/mean_FG by optim.lr: 0.001 7.00 ± 4.24 [-31.12, 45.12] (2 trials), "
                        "0.01 25.00 ± 7.07 [-38.53, 88.53] (2 trials)")
    # lr: 0.01 - 0.001 = 10 (none) and 26 (general): mean 18, sd 11.31, t(1) 12.706 -> 18 +- 101.65
    assert lines[2] == ("verdict on headline/mean_FG: lr: 0.001 has lower headline/mean_FG than 0.01 by 18.00 "
                        "[-83.65, 119.65] (95% t interval) over 2 matched pair(s); in every pair: yes (2 of 2); "
                        "on the interval: no")
    assert lines[3] == ("warm start, on headline/mean_FG (the study's FG, each from its start): none - general = "
                        "-2.00 ± 11.31 [-103.65, 99.65] (2 pairs); in every pair: no; on the interval: no; not shown: "
                        "general forgets less in 1 of 2 matched pairs, and the interval includes 0")
    rows[3] = row("d", "general", "0.01", 12.0)
    assert "general forgets less than none" not in effects(rows, ["warm_start.kind", "optim.lr"])[3]  # interval
    rows = [row("a", "none", "0.001", 1.0), row("b", "general", "0.001", 4.0)]
    assert effects(rows, ["warm_start.kind"])[-1].endswith("general does NOT forget less than none here, "
                                                           "unlike the study")


def test_warm_start_verdict_uses_the_base_referenced_figure_over_seeds():
    rows = [row(f"{w}{s}", w, "0.001", fg, seed=str(s), base_fg=b)
            for w, s, fg, b in [("none", 0, 5.0, 5.0), ("none", 1, 6.0, 6.0), ("none", 2, 7.0, 7.0),
                                ("general", 0, 1.0, 2.0), ("general", 1, 3.0, 3.0), ("general", 2, 2.0, 3.5)]]
    line = effects(rows, ["warm_start.kind", "seed"])[-1]
    # none - general from the base: 3, 3, 3.5 -> mean 3.1667, sd 0.2887, t(2) 4.3027 -> [2.4495, 3.8838]
    assert line.startswith("warm start, on vs_base/mean_FG (both measured from the base model): none - general = "
                           "3.17 ± 0.29 [2.45, 3.88] (3 pairs); in every pair: yes; on the "
                           "interval: yes; general forgets less than none, as the study found")
    assert line.endswith("(the study's FG from each start: none - general 4.00)")


def test_spread_is_students_t_interval():
    from raycf.seeds import spread
    s = spread([1.0, 2.0, 4.0])  # mean 7/3, sd sqrt(7/3), t(0.975, 2) = 4.302653
    assert (s.n, round(s.mean, 6), round(s.sd, 6)) == (3, 2.333333, 1.527525)
    assert (round(s.low, 4), round(s.high, 4)) == (-1.4612, 6.1279)
    one = spread([3.0, float("nan")])
    assert one.n == 1 and one.text() == "3.00 (1 seed)"


def test_ranked_table_orders_by_the_metric_and_shows_searched_params_and_status():
    rows = [row("worse", "none", "0.01", 9.0), row("best", "general", "0.001", 1.0),
            row("stopped", "none", "0.001", 5.0, status="KILLED")]
    lines = ranked_table(rows, SweepConfig(metric="objective", mode="min"), ["warm_start.kind", "optim.lr"])
    assert lines.splitlines()[0].split()[:6] == ["rank", "trial", "status", "warm_start", "lr", "stage"]
    assert [ln.split()[1] for ln in lines.splitlines()[1:]] == ["best", "stopped", "worse"]
    assert lines.splitlines()[2].split()[2:5] == ["KILLED", "none", "0.001"]
