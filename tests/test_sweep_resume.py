"""raycf.sweep --resume after the sweep driver is killed (own module: it stops the Ray it started)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_sweep import ROOT, children, small

pytestmark = pytest.mark.slow


def test_killed_driver_resumes_without_duplicate_runs(tmp_path, cache_dir):
    over = small(tmp_path, name="resume", search={"optim.lr": {"grid": [1e-3, 3e-3]}})
    sets = [f"--set={k}={json.dumps(v)}" for k, v in over.items()]
    cmd = [sys.executable, "-m", "raycf.sweep", *sets]
    env = {**os.environ, "RAYCF_CACHE": cache_dir}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    records = tmp_path / "runs" / "sweeps" / "resume" / "runs"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(records.glob("*.json"))) < 2:  # the second trial has started
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
    proc.wait()
    subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True)
    r = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    c, parents, kids = children(over["tracking.uri"], "sweep-test")
    assert len(parents) == 1 and len(kids) == 2
    assert all(k.info.status == "FINISHED" for k in kids), [k.info.status for k in kids]
    assert len({k.data.tags["raycf.trial_id"] for k in kids}) == 2
    # every stage logged once per trial: the finished trial was not rerun, the cut one went on from its last stage
    for k in kids:
        assert sorted(m.step for m in c.get_metric_history(k.info.run_id, "train/loss")) == [1, 2]
