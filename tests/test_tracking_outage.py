"""An MLflow server that goes away and comes back: nothing logged meanwhile is lost (a real server behind a loopback
gate that refuses connections while it is "down", as a stopped server does; no Ray).

The Ray-level case (the real server stopped in the middle of a trial) is in tests/test_trial.py.
"""
import time

import pytest

from raycf import tracking

pytestmark = pytest.mark.slow  # the session's MLflow server


def test_an_outage_keeps_operations_in_order_and_sends_them_when_the_server_is_back(mlflow_gate, tmp_path):
    url, spool = mlflow_gate.url, tmp_path / "spool"
    run_id = tracking.start_run(url, "outage", "r")
    tracking.log_metrics(url, run_id, {"a": 1.0}, step=0, spool=spool)
    assert tracking.pending(spool, run_id) == []
    mlflow_gate.close()
    t0 = time.monotonic()
    tracking.log_metrics(url, run_id, {"a": 2.0, "b": 5.0}, step=1, spool=spool)
    art = tmp_path / "matrix.csv"
    art.write_text("stage,acc\n0,0.5\n")
    tracking.log_artifact(url, run_id, art, spool=spool)
    art.unlink()  # the spool holds its own copy
    assert time.monotonic() - t0 < 30  # gives up in seconds (MLflow's own retries take minutes)
    assert [op["op"] for op in tracking.pending(spool, run_id)] == ["metrics", "artifact"]
    mlflow_gate.open()
    tracking.log_metrics(url, run_id, {"a": 3.0}, step=2, spool=spool)  # sends what waited, then itself
    assert tracking.pending(spool, run_id) == []
    mlflow_gate.close()
    tracking.end_run(url, run_id, "FINISHED", spool=spool)
    assert [op["op"] for op in tracking.pending(spool, run_id)] == ["end"]
    assert tracking.flush(url, spool) == 1  # still down: kept
    mlflow_gate.open()
    assert tracking.flush(url, spool) == 0
    assert list(spool.glob("*.jsonl")) == [] and list((spool / "files").iterdir()) == []

    c = tracking.client(url)
    a = c.get_metric_history(run_id, "a")
    assert [(m.step, m.value) for m in a] == [(0, 1.0), (1, 2.0), (2, 3.0)]
    assert a[1].timestamp < a[2].timestamp  # logged with the time it was measured, not the time it was sent
    assert [(m.step, m.value) for m in c.get_metric_history(run_id, "b")] == [(1, 5.0)]
    assert [f.path for f in c.list_artifacts(run_id)] == ["matrix.csv"]
    assert c.get_run(run_id).info.status == "FINISHED"


def test_a_bad_request_is_an_error_not_an_outage(mlflow_server, tmp_path):
    from mlflow.exceptions import MlflowException
    with pytest.raises(MlflowException):
        tracking.log_metrics(mlflow_server.url, "0" * 32, {"a": 1.0}, step=0, spool=tmp_path / "spool")
    assert not list((tmp_path / "spool").glob("*.jsonl"))
