"""raycf.sweep --resume after the sweep driver is killed (own module: it stops the Ray it started)."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_sweep import FAULT_POINT, ROOT, assert_equals_clean_run, children, second_trial_in_stage, small

pytestmark = pytest.mark.slow


def test_killed_driver_resumes_without_duplicate_runs_and_with_a_clean_runs_results(tmp_path, cache_dir, clean_runs):
    """Kill the sweep driver and the Ray it started (the machine goes down) in the middle of the second trial's
    stage 2; --resume leaves the first trial alone, trains only stages 2 and 3 of the second, and ends with the
    numbers of a clean run."""
    # the fault tests' point (tests/test_sweep.py): the second trial's is theirs, so their clean run is shared
    over = small(tmp_path, name="resume", search={"optim.lr": {"grid": [1e-3, 2e-3]}}, **FAULT_POINT)
    sets = [f"--set={k}={json.dumps(v)}" for k, v in over.items()]
    cmd = [sys.executable, "-m", "raycf.sweep", *sets]
    beats = tmp_path / "heartbeat"
    beats.mkdir()
    env = {**os.environ, "RAYCF_CACHE": cache_dir, "RAYCF_HEARTBEAT_DIR": str(beats)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    records = tmp_path / "runs" / "sweeps" / "resume" / "runs"
    second, beat = second_trial_in_stage(records, beats, 2)
    if beat.get("pid"):
        os.kill(beat["pid"], signal.SIGKILL)  # the Train worker first: it would otherwise finish the stage
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything in its process group
    proc.wait()
    assert beat.get("stage") == 2, "the second trial was never seen in its stage 2"
    subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True)
    r = subprocess.run(cmd + ["--resume"], cwd=ROOT, env={**env, "RAYCF_HEARTBEAT_DIR": ""}, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    c, parents, kids = children(over["tracking.uri"], "sweep-test")
    assert len(parents) == 1 and len(kids) == 2
    assert all(k.info.status == "FINISHED" for k in kids), [k.info.status for k in kids]
    assert len({k.data.tags["raycf.trial_id"] for k in kids}) == 2
    # every stage logged once per trial: the finished trial was not rerun, the cut one went on from stage 1
    for k in kids:
        assert sorted(m.step for m in c.get_metric_history(k.info.run_id, "train/loss")) == [1, 2, 3]
    (cut,) = [k for k in kids if k.data.tags["raycf.trial_id"] == second]
    # counted over both runs of the sweep: stage 1 before the crash, stages 2 and 3 after it (stage 1 not again)
    assert c.get_metric_history(cut.info.run_id, "work/stage_trainings")[-1].value == 3
    assert_equals_clean_run(cut.data.metrics, over, float(cut.data.params["optim.lr"]), tmp_path, clean_runs)
