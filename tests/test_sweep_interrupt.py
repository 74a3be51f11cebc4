"""Ctrl-C, the fault users cause most, on a sweep, and --resume after it (own module: the sweep runs in a process
of its own, with its own Ray, which the test stops). A sweep driver killed outright (SIGKILL) and resumed:
tests/test_sweep_pbt.py; `ray job stop` and a resubmitted job: tests/test_job_submit.py."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ray_procs import OwnRay
from tests.test_sweep import FAULT_POINT, ROOT, assert_equals_clean_run, children, second_trial_in_stage, small

pytestmark = pytest.mark.slow


def test_a_sweep_interrupted_with_ctrl_c_ends_within_seconds_and_its_resume_ends_with_a_clean_runs_numbers(
        tmp_path, cache_dir, clean_runs, request):
    """1. In the middle of the second trial's stage 2, SIGINT (Ctrl-C): the process ends within seconds with exit
       status 130 and raycf's own --resume hint; every MLflow run is ended (the parent KILLED, marked
       interrupted), Ray is stopped.
    2. `--resume`: no duplicate runs, the finished trial not rerun, the cut one trained once per stage, and its
       numbers are a clean run's."""
    over = small(tmp_path, name="faults", search={"optim.lr": {"grid": [1e-3, 2e-3]}}, **FAULT_POINT)
    sets = [f"--set={k}={json.dumps(v)}" for k, v in over.items()]
    cmd = [sys.executable, "-m", "raycf.sweep", *sets]
    beats = tmp_path / "heartbeat"
    beats.mkdir()
    own = OwnRay()  # the sweep's Ray: its processes are found by a marker, none of another test's Ray
    request.addfinalizer(own.remove)
    env = {**os.environ, "RAYCF_CACHE": cache_dir, "RAYCF_HEARTBEAT_DIR": str(beats), **own.env}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    records = tmp_path / "runs" / "sweeps" / "faults" / "runs"
    second, beat = second_trial_in_stage(records, beats, 2, proc)
    assert beat.get("stage") == 2, "the second trial was never seen in its stage 2:\n" + \
        (proc.communicate()[0] if proc.poll() is not None else "")[-3000:]
    t0 = time.time()
    os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends the driver
    out, _ = proc.communicate(timeout=120)
    seconds = time.time() - t0
    assert proc.returncode == 130, out[-3000:]
    assert seconds < 30, f"{seconds:.0f} s to exit after SIGINT"
    last = [x for x in out.splitlines() if x.strip()][-1]
    assert last.startswith("error: interrupted: finished stages and trials are kept in ") and \
        last.endswith("--resume") and "python -m raycf.sweep" in last, last
    assert "Tuner.restore" not in out
    assert "Started a local Ray instance." in out and "View the dashboard" not in out  # no dashboard by default
    c, parents, kids = children(over["tracking.uri"], "sweep-test")
    (parent,) = parents
    assert parent.info.status == "KILLED" and parent.data.tags["raycf.ended"] == "interrupted (SIGINT)"
    assert len(kids) == 2 and not [k for k in kids if k.info.status == "RUNNING"]
    deadline = time.time() + 20
    while own.pids() and time.time() < deadline:
        time.sleep(0.5)
    assert not own.pids(), "Ray is still running after the sweep ended"

    r = subprocess.run(cmd + ["--resume", "--ray-dashboard"], cwd=ROOT, env={**env, "RAYCF_HEARTBEAT_DIR": ""},
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "View the dashboard at" in r.stdout + r.stderr  # --ray-dashboard
    c, parents, kids = children(over["tracking.uri"], "sweep-test")
    assert len(parents) == 1 and len(kids) == 2, [(k.info.run_name, k.info.status) for k in kids]
    assert all(k.info.status == "FINISHED" for k in kids), [k.info.status for k in kids]
    assert len({k.data.tags["raycf.trial_id"] for k in kids}) == 2
    for k in kids:  # every stage logged once: the finished trial not rerun, the cut one on from its last stage
        assert sorted(m.step for m in c.get_metric_history(k.info.run_id, "train/loss")) == [1, 2, 3]
    (cut,) = [k for k in kids if k.data.tags["raycf.trial_id"] == second]
    # counted over the two runs of the sweep: stage 1 before the interruption, not again after it
    assert c.get_metric_history(cut.info.run_id, "work/stage_trainings")[-1].value == 3
    assert_equals_clean_run(cut.data.metrics, over, float(cut.data.params["optim.lr"]), tmp_path, clean_runs)
    assert Path(tmp_path / "runs" / "sweeps" / "faults" / "parent_run.json").exists()
