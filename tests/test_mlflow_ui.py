"""What a researcher sees of a sweep in the MLflow UI: a real `mlflow server` on loopback over the shared sweep's
sqlite store, opened in headless Chromium (scripts/mlflow_ui.py): the trials unfolded under their sweep with
names from their searched values, each trial's description and datasets, and its headline chart section first."""
import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def ui_module():
    spec = importlib.util.spec_from_file_location("mlflow_ui", ROOT / "scripts" / "mlflow_ui.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_runs_table_and_a_trials_pages_read_at_first_sight(warm_sweep, tmp_path):
    from raycf import tracking
    ui = ui_module()
    if why := ui.chromium_missing():
        pytest.skip(f"no headless Chromium here: {why}; .ci/run installs it")
    uri, _ = warm_sweep
    c = tracking.client(uri)
    exp = c.get_experiment_by_name("warm-sweep")
    runs = c.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if "raycf.sweep" in r.data.tags]
    kids = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
                  key=lambda r: r.info.run_name)
    assert parent.info.run_name == "w (default.yaml)"
    assert [k.info.run_name for k in kids] == ["ws=general seed=0", "ws=general seed=1", "ws=none seed=0",
                                               "ws=none seed=1"]
    one = kids[0]
    out = Path(os.environ["RAYCF_ARTIFACTS"]) if os.environ.get("RAYCF_ARTIFACTS") else tmp_path
    with ui.serve(uri, tmp_path / "server.log") as url:
        shown = ui.look(url, exp.experiment_id, one.info.run_id, out)
    # the runs table: the sweep, its four trials by name under it, and their training data as datasets
    runs_text = shown["runs"]
    assert "w (default.yaml)" in runs_text and all(k.info.run_name in runs_text for k in kids)
    assert "simplification (" in runs_text and "5 matching runs" in runs_text
    # the trial's overview: its description is its headline figures after the last stage and the step -> stage map
    note = one.data.tags["mlflow.note.content"]
    assert note.startswith("after stage 2/2 (headline): mean FG ")
    assert f"mean FG {one.data.metrics['headline/mean_FG']:.1f} %" in note
    for line in note.split("\n\n"):
        assert line in shown["overview"], line
    assert "steps: 0 start · 1 simplification · 2 headline" in shown["overview"]
    # its charts: the headline section first, one chart per headline figure; each measure a section of its own
    sections = dict(shown["sections"])
    headline = sorted(k for k in one.data.metrics if k.startswith("headline/"))
    assert shown["sections"][0] == ("headline", len(headline)) and len(headline) >= 8
    assert sections["probe"] == 11  # the accuracy matrix's columns: 9 general probes and the 2 learned tasks
    prefixes = {k.rsplit("/", 1)[0] for k in one.data.metrics}
    assert set(sections) - {"Model metrics"} == prefixes and len(prefixes) <= 16
    assert (out / "mlflow_runs.png").stat().st_size > 10_000
