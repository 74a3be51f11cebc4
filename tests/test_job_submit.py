"""A real sweep submitted as a Ray job, the way clusters/README.md submits one to a cloud cluster.

    python -m pytest tests/test_job_submit.py -q -m slow        # a few minutes on 2 CPUs

A local head (`ray start --head --block`, own temp dir and ports, token auth on), then `ray job submit
--working-dir <repo> -- python -m raycf.sweep ...` with a two-stage sweep of the tiny model, stopped with `ray job
stop` mid stage 2 and submitted again with --resume. The tracking URI reaches the job only through the job's
runtime env (MLFLOW_TRACKING_URI, a relative sqlite file), so runs found in that file under the durable job home
prove both the env and the home got there. The sweep's parent and child runs are read back from that store.

Token auth: the head and the submitting CLI run with RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH pointing to a
token made for this test, so ~/.ray/auth_token is neither read nor written; the test also checks that the job
API refuses a request without the token.

Cleanup: tests/ray_procs.py ends every process the head started, by pid (`ray stop` would stop every Ray cluster on
the machine, not only this one).
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.ray_procs import get, job, post, ray_head

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
JOB_TIMEOUT_S = 480


@pytest.fixture(scope="module")
def workdir():
    # short and under /tmp: Ray's unix sockets live under the temp dir and their paths must stay < 108 bytes
    path = Path(tempfile.mkdtemp(prefix="rcfjob-", dir="/tmp" if Path("/tmp").is_dir() else None))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def kept_after_ray_stop():
    """Paths the tests register that must still exist once this module's Ray cluster is stopped: set up before
    `cluster` (which requests it), so torn down after it."""
    paths: list[Path] = []
    yield paths
    gone = [p for p in paths if not p.exists()]
    assert not gone, f"gone after the Ray cluster stopped: {gone}"


@pytest.fixture(scope="module")
def cluster(workdir, cache_dir, kept_after_ray_stop):
    """A local Ray head with token auth; yields (dashboard URL, token, env for CLI calls)."""
    with ray_head(workdir, cache_dir, ["--num-cpus=2"]) as (url, token, env, _):
        yield url, token, env


def test_job_api_refuses_a_request_without_the_token(cluster):
    url, token, _ = cluster
    assert get(f"{url}/api/jobs/", token)[0] == 200
    assert get(f"{url}/api/jobs/")[0] in (401, 403)
    assert get(f"{url}/api/jobs/", "not-the-token")[0] in (401, 403)


def test_a_stopped_jobs_results_outlive_it_and_a_resubmitted_job_finishes_its_nested_runs(cluster, workdir,
                                                                                            kept_after_ray_stop):
    """A sweep submitted with the default storage_path and a relative sqlite MLFLOW_TRACKING_URI in its runtime env
    keeps its results in the durable job home (RAYCF_JOB_HOME, by default ~/raycf), not in the job's unpacked
    working directory, and says so in its first and last lines. `ray job stop` mid-trial ends every MLflow run
    (nothing RUNNING, the parent KILLED); a second submission with --resume (a new working directory) finds the
    first job's work, trains no finished stage again, and leaves one parent run named after the sweep and its
    space with a FINISHED child that logged each stage once."""
    url, _, env = cluster
    home = workdir / "jobhome"
    beats = workdir / "beats"  # each Train worker's stage and step (raycf.trial.stages.on_step)
    beats.mkdir()
    tracking = {"MLFLOW_TRACKING_URI": "sqlite:///jobs.db"}  # relative: under the job home, not the package
    runtime_env = json.dumps({"env_vars": {"RAYCF_JOB_HOME": str(home), "RAYCF_HEARTBEAT_DIR": str(beats),
                                           **tracking}})
    stages = ["simplification", "headline"]
    sweep = ["python", "-m", "raycf.sweep", "--space", "search_spaces/default.yaml",
             "--set", "search={}", "--set", "sweep.seeds=1", "--set", "sweep.log_best_model=false",
             "--set", "tracking.system_metrics=false", "--set", "finetune.method=lora",
             "--set", "optim.stage_steps=[2,100]",  # stage 2 long enough to stop it midway
             "--set", "probes.limit=4",
             "--set", "probes.suites=[knowledge]", "--set", "resources.workers=1", "--set", "name=stopped",
             "--set", f"stages=[{','.join(stages)}]", "--set", "model.name=tiny-causal"]
    r = job(url, env, "submit", "--no-wait", "--working-dir", str(REPO), "--runtime-env-json", runtime_env,
             "--submission-id", "raycf-stop-1", "--", *sweep)
    assert r.returncode == 0, r.stdout + r.stderr
    from mlflow.tracking import MlflowClient
    db = home / "jobs.db"
    deadline, beat = time.time() + JOB_TIMEOUT_S, {}
    while time.time() < deadline and beat.get("stage") != 2:  # stop the job in the middle of stage 2
        time.sleep(0.1)
        try:
            beat = json.loads((beats / "rank0.json").read_text())
        except (OSError, ValueError):
            beat = {}
    assert beat.get("stage") == 2, "no stage 2 within the time limit:\n" + job(url, env, "logs", "raycf-stop-1").stdout
    # the stop over the job API (what `ray job stop` sends), so it lands within ~0.1 s of the beat, mid stage 2
    status, body = post(f"{url}/api/jobs/raycf-stop-1/stop", cluster[1])
    assert status == 200 and json.loads(body).get("stopped") is True, (status, body)
    deadline = time.time() + 60
    while time.time() < deadline and json.loads(get(f"{url}/api/jobs/raycf-stop-1", cluster[1])[1]).get(
            "status") != "STOPPED":
        time.sleep(0.5)
    assert time.time() < deadline, "the job never reached STOPPED"
    logs = json.loads(get(f"{url}/api/jobs/raycf-stop-1/logs", cluster[1])[1])["logs"]
    first = next(x for x in logs.splitlines() if x.startswith("[raycf] results:"))
    assert f"in {home / 'raycf_runs'}, MLflow sqlite:///{db}" in first and "outlives the job" in first, first
    c = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = c.search_runs([c.get_experiment_by_name("raycf-default").experiment_id])
    assert runs and not [x for x in runs if x.info.status == "RUNNING"], [(x.info.run_name, x.info.status)
                                                                          for x in runs]
    (parent,) = [x for x in runs if x.data.tags.get("raycf.sweep") == "stopped"]
    # the job's driver gets SIGTERM, then SIGKILL 3 s later (Ray's RAY_JOB_STOP_WAIT_TIME_S): an interruption,
    # never a failure, and the parent ends within those 3 s whatever the driver was doing (even closing its pool)
    assert parent.info.status == "KILLED" and parent.data.tags.get("raycf.ended", "").startswith("interrupted ("), \
        (parent.info.status, logs[-4000:])
    assert list((home / "raycf_runs" / "cache" / "stages").iterdir()), "no stage checkpoint kept"
    assert not list((workdir / "ray").glob("**/_ray_pkg_*/*.db")), "MLflow store written into the job's package"

    resumed_env = json.dumps({"env_vars": {"RAYCF_JOB_HOME": str(home), **tracking}})
    r = job(url, env, "submit", "--working-dir", str(REPO), "--runtime-env-json", resumed_env,
             "--submission-id", "raycf-stop-2", "--", *sweep, "--resume", timeout=JOB_TIMEOUT_S)
    assert r.returncode == 0 and "Job 'raycf-stop-2' succeeded" in r.stdout, (r.stdout + r.stderr)[-4000:]
    sweep_lines = [x for x in r.stdout.splitlines() if x.strip() and " cli.py:" not in x]  # less `ray job`'s own
    assert sweep_lines[-1] == (f"compare runs:  mlflow ui --backend-store-uri sqlite:///{db}, then open "
                               f"http://127.0.0.1:5000/#/experiments/{parent.info.experiment_id}/runs"
                               f"?workflowType=machine_learning"), sweep_lines[-3:]
    assert sweep_lines[-2] == f"stage cache and sweep records: {home / 'raycf_runs'}"
    runs = c.search_runs([c.get_experiment_by_name("raycf-default").experiment_id])
    (parent,) = [x for x in runs if x.data.tags.get("raycf.sweep") == "stopped"]
    assert parent.info.run_name == "stopped (default.yaml)" and parent.info.status == "FINISHED"
    kids = [x for x in runs if "mlflow.parentRunId" in x.data.tags]
    assert len(kids) == 1 and kids[0].info.status == "FINISHED"
    assert kids[0].data.tags["mlflow.parentRunId"] == parent.info.run_id
    steps = {key: sorted(m.step for m in c.get_metric_history(kids[0].info.run_id, key)) for key in kids[0].data.metrics}
    assert [k for k, v in steps.items() if v == [0, 1, 2]], steps  # the probes: before any training, after each stage
    assert sorted(m.step for m in c.get_metric_history(kids[0].info.run_id, "train/loss")) == [1, 2]
    # stage 1 trained once, before the stop: the resumed job took it from the first job's stage cache
    assert c.get_metric_history(kids[0].info.run_id, "work/stage_trainings")[-1].value == 2
    kept_after_ray_stop += [db, *(home / "raycf_runs" / "cache" / "stages").iterdir()]
