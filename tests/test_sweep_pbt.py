"""A population-based-training sweep across stage boundaries, with a sweep-driver kill and --resume (own module: it
stops the Ray it started). The unit parts: tests/test_pbt.py."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raycf import cache
from tests.ray_procs import OwnRay
from tests.test_sweep import ROOT, children, small

pytestmark = pytest.mark.slow

LRS = [5e-4, 1e-3, 2e-3, 4e-3]


def manifest_sha(root: Path, key: str) -> str:
    return hashlib.sha256((cache.entry_dir(root, "stages", key) / cache.MANIFEST).read_text().encode()).hexdigest()


def tune_checkpoints(sweep_dir: Path) -> dict:
    """(trial id, stage) -> the lineage of every Tune checkpoint the sweep kept."""
    out = {}
    for path in (sweep_dir / "tune").glob("*/checkpoint_*/lineage.json"):
        lineage = json.loads(path.read_text())
        out[lineage["trial"], lineage["stage"]] = lineage
    return out


def exploited(sweep_dir: Path) -> bool:
    """An exploit is recorded: a trial's exploits file (<sweep>/pbt/<trial>.json) lists one."""
    for path in (sweep_dir / "pbt").glob("*.json"):
        try:
            if json.loads(path.read_text()):
                return True
        except (OSError, ValueError):  # being written
            pass
    return False


def donor_checkpoint(kept: dict, donor: str, s: int) -> dict | None:
    """The donor's Tune checkpoint that holds its own stage s: that of stage s, else a later one made before the
    donor itself exploited at stage s or after. None where the kill took both: a trial whose Tune state the kill
    left behind its stage-1 checkpoint restarts its checkpoint numbering on --resume, and its next checkpoint
    (checkpoint_000000 again) replaces that one; the trial's lineage and the stage cache keep what it held."""
    for (trial, stage), lineage in sorted(kept.items()):
        if trial == donor and stage >= s and all(e["stage"] < s for e in lineage["exploits"]):
            return lineage
    return None


def test_pbt_exploits_at_stage_boundaries_and_a_killed_driver_resumes_it(tmp_path, cache_dir, request):
    """4 trials x 3 stages: after stage 1 the worst trial takes the best one's stage-1 checkpoint (the same cache
    entry, byte for byte) and goes on with a neighbouring lr; its MLflow run keeps the lineage. The sweep driver
    is killed once the first exploit is recorded; --resume finishes every trial, nothing left RUNNING, each
    stage of each run logged once."""
    over = small(tmp_path, name="pbt", stages=["simplification", "headline", "explanation"],
                 **{"optim.steps_per_stage": 4, "search": {"optim.lr": {"grid": LRS}}, "sweep.scheduler": "pbt",
                    # one Train worker: PBT's logic is under test, not FSDP (tests/test_sweep.py); fewer processes
                    # to start beside the population's four trial actors
                    "resources.workers": 1, "resources.cpus_per_worker": 1.5})
    cmd = [sys.executable, "-m", "raycf.sweep", *[f"--set={k}={json.dumps(v)}" for k, v in over.items()]]
    own = OwnRay()
    request.addfinalizer(own.remove)
    env = {**os.environ, "RAYCF_CACHE": cache_dir, **own.env}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    sweep_dir = tmp_path / "runs" / "sweeps" / "pbt"
    deadline = time.monotonic() + 420
    while not exploited(sweep_dir) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep ended before an exploit was recorded:\n" + proc.stdout.read()[-3000:]
    assert exploited(sweep_dir), "no exploit within 7 minutes"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, its Ray and the pool's workers
    proc.wait()
    own.stop()  # the Ray it started (its GCS and raylet are in process groups of their own)
    log = tmp_path / "resume.log"
    with log.open("w") as out:
        r = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=300)
    printed = log.read_text()
    assert r.returncode == 0, printed[-5000:]
    assert "exploit(s) in a population of 4" in printed and "the schedule of the best trial" in printed

    c, parents, kids = children(over["tracking.uri"], "sweep-test")
    assert [p.info.status for p in parents] == ["FINISHED"] and len(kids) == 4
    assert all(k.info.status == "FINISHED" for k in kids), [k.info.status for k in kids]
    for k in kids:  # each stage logged once: none again after the restore, none skipped
        assert sorted(m.step for m in c.get_metric_history(k.info.run_id, "train/loss")) == [1, 2, 3]
        assert k.data.tags["raycf.pbt.schedule"].startswith("stage  task")
    by_trial = {k.data.tags["raycf.trial_id"]: k for k in kids}
    kept = tune_checkpoints(sweep_dir)
    receivers = [k for k in kids if int(k.data.tags.get("raycf.pbt.exploits", 0)) > 0]
    assert receivers, "no trial exploited another"
    for k in receivers:
        lineage = json.loads(Path(c.download_artifacts(k.info.run_id, "pbt/lineage.json", str(tmp_path))).read_text())
        assert lineage["stage"] == 3 and [r["stage"] for r in lineage["stages"]] == [1, 2, 3]
        for event in lineage["exploits"]:
            s, donor = event["stage"], event["donor"]
            assert s in (1, 2) and donor in by_trial and donor != lineage["trial"]
            # the donor's own Tune checkpoint of that stage names the same cache entry, with the same manifest
            given = donor_checkpoint(kept, donor, s)
            assert event["digest"] == manifest_sha(tmp_path / "runs", event["key"])
            if given is not None:
                assert given["stage_keys"][s - 1] == event["key"]
                assert given["stages"][s - 1]["digest"] == event["digest"]
            # the stage after it was trained by this trial, at the value it went on with
            lr = {m.step: m.value for m in c.get_metric_history(k.info.run_id, "pbt/optim.lr")}[s + 1]
            assert lr == pytest.approx(event["values"]["optim.lr"]) and lr in LRS
        last = lineage["exploits"][-1]  # the stages up to it are the donor's, the rest this trial's own
        assert lineage["stages"][last["stage"] - 1]["key"] == last["key"]
        assert all(r["trial"] == lineage["trial"] and r["values"] == last["values"]
                   for r in lineage["stages"][last["stage"]:])
