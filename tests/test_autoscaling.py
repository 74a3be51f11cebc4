"""raycf sweeps on Ray's local autoscaling cluster: the cluster grows for the trials that wait, runs them on its
worker nodes with no shared disk, survives losing a node mid-stage, and shrinks when they end.

    python -m pytest tests/test_autoscaling.py -q -s       # about 3 minutes on 2 CPUs

The cluster is scripts/local_cluster.py's, from clusters/aws.yaml: its worker node types (ray.worker.gpu: 4 CPUs
-> 1 logical CPU, max_workers 4 -> 2; the spot type stays at 0) under Ray's real v1 autoscaler with the
fake_multinode provider (LosableNodeProvider; each worker node is a set of Ray processes on this machine), the head with 0 CPUs like
aws.yaml's, idle nodes removed after 0.1 minutes. The head is started like tests/test_job_submit.py's (own ports,
temp dir and token; every process ended by pid at the end).

Storage: the stage cache, sweep records and Tune/Train state in a bucket on a real S3 API (moto on loopback),
and every process with a disk of its own (RAYCF_LOCAL_DIR with {pid}), as on nodes that share no disk. MLflow:
a sqlite file the test reads back.

1. `ray job submit` of a sweep without the worker pool (what clusters/README.md recommends for autoscaling
   clusters): two trials on the empty cluster, which raycf sizes from the autoscaler's node types (two at once), so
   the autoscaler adds two nodes, one trial on each. In stage 2, the node of a trial's Train worker is lost (every
   process of it SIGKILLed; a node holding that worker only, so its trial's driver and Train controller live on):
   the provider reports it gone (scripts/local_cluster.py's LosableNodeProvider, as a cloud reports a machine that
   went down), Ray Train restarts the worker group on another node (one the autoscaler adds, or the other trial's
   once that one is done), which goes on from the finished stage 1 it reads from the bucket into a disk of its
   own. Every node goes once the trials are done: the controller's request for the lost worker ends with it.
2. The same two trials from a driver on the head (RAY_ADDRESS) with the worker pool: its worker groups hold their
   nodes until the sweep ends, then the cluster shrinks; the same numbers as sweep 1 (the lost node's trial
   included), bit for bit. Everything the sweep keeps is in the bucket, and each pool worker mirrors the stages it
   wrote on a disk of its own.
(A node that also holds a trial's driver and controller: Tune retries that trial, from its finished stages the
same way; Ray Train's request for the lost worker then outlives it for up to 180 s, and the cluster shrinks late.
Seen at stop 31-32 with a third sweep, dropped for the suite's time; clusters/README.md.)
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.ray_procs import end_pids, get, job, pids_with, ray_head
from tests.test_storage import s3  # noqa: F401 - the moto S3 fixture

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import local_cluster  # noqa: E402 - scripts/ is no package

TIMEOUT_S = 420
LRS = [2e-3, 4e-3]
COMPARED = ("probe/", "headline/", "score_final/", "task_")


class Nodes(threading.Thread):
    """Polls the cluster's live worker nodes (the state API) every second: [(time, {node id: node name})]."""

    def __init__(self, url: str, token: str):
        super().__init__(daemon=True)
        self.url, self.token, self.seen, self.done = url, token, [], threading.Event()

    def now(self) -> dict:
        status, body = get(f"{self.url}/api/v0/nodes?limit=100&detail=true", self.token, timeout=10)
        assert status == 200, body[:500]
        rows = json.loads(body)["data"]["result"]["result"]
        return {r["node_id"]: r.get("node_name", "") for r in rows if r["state"] == "ALIVE" and not r["is_head_node"]}

    def run(self):
        while not self.done.is_set():
            try:
                self.seen.append((time.time(), self.now()))
            except (OSError, ValueError, KeyError, AssertionError):
                pass
            self.done.wait(1.0)

    def timeline(self, t0: float) -> str:
        """The worker nodes' changes: 's after t0: node suffixes', one entry per change."""
        out, last = [], None
        for t, nodes in self.seen:
            now = sorted(n[-2:] for n in nodes)
            if now != last:
                out.append(f"{t - t0:.0f}s:{','.join(now) or '-'}")
                last = now
        return " ".join(out)

    def most(self, before: float = float("inf")) -> int:
        """The most worker nodes alive at once (seen before `before`, epoch seconds)."""
        return max((len(n) for t, n in self.seen if t < before), default=0)

    @classmethod
    def on_empty(cls, url: str, token: str) -> "Nodes":
        """Watching, from a cluster with no worker node."""
        watch = cls(url, token)
        assert watch.now() == {}, "the cluster has worker nodes before the sweep"
        watch.start()
        return watch

    def until_empty(self, label: str) -> None:
        """After a sweep: wait until no worker node is left, stop watching, print the node timeline."""
        done = time.time()
        shrink_s = self.wait_empty(120)
        self.done.set()
        t0 = self.seen[0][0]
        print(f"\n[autoscaling] {label}: up to {self.most()} worker nodes, none {shrink_s:.0f} s after it ended; "
              f"nodes {self.timeline(t0)} (ended at {done - t0:.0f}s)")

    def wait_empty(self, timeout_s: float) -> float:
        """Seconds until no worker node is left (fails after timeout_s)."""
        t0 = time.time()
        while self.now():
            assert time.time() - t0 < timeout_s, f"worker nodes still up after {timeout_s} s: {self.now()}"
            time.sleep(1)
        return time.time() - t0


@pytest.fixture(scope="module")
def cluster(s3, cache_dir):  # noqa: F811 - s3 is the imported fixture
    """The local autoscaling cluster (no worker node yet); yields (url, token, env, GCS address, workdir, bucket)."""
    import ray._private.services
    workdir = Path(tempfile.mkdtemp(prefix="rcfas-", dir="/tmp" if Path("/tmp").is_dir() else None))
    launcher = yaml.safe_load((REPO / "clusters" / "aws.yaml").read_text())
    ip = ray._private.services.get_node_ip_address()
    config_file = workdir / "autoscaling.json"
    extra = {"RAYCF_LOCAL_DIR": str(workdir / "disk-{pid}"), "RAYCF_HEARTBEAT_DIR": str(workdir / "beats"),
             # a killed node is seen dead within seconds, and the autoscaler replaces it then, not after 30 s
             "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
             "AUTOSCALER_HEARTBEAT_TIMEOUT_S": "5"}

    def head_args(gcs: int) -> list[str]:
        config = local_cluster.fake_config(launcher, gcs_address=f"{ip}:{gcs}")
        config_file.write_text(json.dumps(config))
        return ["--num-cpus=0", f"--autoscaling-config={config_file}"]

    try:
        with ray_head(workdir, cache_dir, head_args, env_extra=extra,
                      env_base=local_cluster.head_env()) as (url, token, env, gcs):
            yield url, token, env, f"{ip}:{gcs}", workdir, s3
    finally:
        if not os.environ.get("RAYCF_KEEP_TEST_DIRS"):
            shutil.rmtree(workdir, ignore_errors=True)


def storage_path(name: str, bucket: str) -> str:
    """The sweep's storage_path: a folder of its own in the bucket (the query string kept last)."""
    return f"{bucket.split('?')[0]}/{name}?{bucket.split('?')[1]}"


def mirror_name(root: str) -> str:
    """The folder of `root` in a process's mirror ($RAYCF_LOCAL_DIR/<this>, raycf.storage.local_root)."""
    from raycf import storage
    return storage.local_root(root).name


def sweep_args(name: str, bucket: str, db: Path, *more: str, lrs=LRS) -> list[str]:
    """A trial per learning rate, of two stages of the tiny model; stage 2 long enough to lose a node in."""
    sets = {"name": name, "model.name": "tiny-causal", "stages": ["simplification", "headline"],
            "search": {"optim.lr": {"grid": lrs}}, "sweep.seeds": 1, "sweep.log_best_model": False,
            "tracking.system_metrics": False, "tracking.uri": f"sqlite:///{db}", "tracking.experiment": "autoscaling",
            "finetune.method": "lora", "optim.stage_steps": [2, 40], "optim.batch_size": 4,
            "data.examples_per_stage": 32, "probes.suites": ["knowledge"], "probes.limit": 4,
            # one worker of 0.9 CPU: two trials' workers never share a node of 1 CPU (their 0.05 CPU drivers may)
            "resources.workers": 1, "resources.cpus_per_worker": 0.9, "sweep.trial_cpus": 0.05,
            "storage_path": storage_path(name, bucket)}
    return ["python", "-m", "raycf.sweep", "--space", str(REPO / "search_spaces" / "default.yaml"),
            *[f"--set={k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in sets.items()], *more]


def node_of(pid: int) -> str:
    """The fake node a process belongs to: the id the provider gave it, in the environment of its every process."""
    (node,) = [e.split(b"=", 1)[1].decode() for e in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
               if e.startswith(b"RAY_OVERRIDE_NODE_ID_FOR_TESTING=")]
    return node


def actors_on(url: str, token: str, node: str) -> list[str]:
    """The class names of the live actors on `node` (Ray's state API)."""
    status, body = get(f"{url}/api/v0/actors?limit=10000&detail=true", token, timeout=10)
    assert status == 200, body[:500]
    rows = json.loads(body)["data"]["result"]["result"]
    return [r["class_name"] for r in rows if r["state"] == "ALIVE" and r["node_id"] == node]


def kill_lone_worker_node(beats: Path, stage: int, url: str, token: str, timeout_s: float) -> tuple[str, int]:
    """When a trial's rank 0 is in `stage` (step 5 or later, by its heartbeat) on a node that holds Train workers
    and nothing else (its trial's driver and Train controller live on another node, so the trial lives on), SIGKILL
    every process of that node; (the node's id, the rank-0 worker's pid)."""
    deadline, beat, tried = time.time() + timeout_s, {}, set()
    while time.time() < deadline:
        time.sleep(0.1)
        try:
            beat = json.loads((beats / "rank0.json").read_text())
        except (OSError, ValueError):
            continue
        if beat.get("stage") != stage or beat.get("step", 0) < 5 or beat["pid"] in tried:
            continue
        tried.add(beat["pid"])
        try:
            node = node_of(beat["pid"])
        except (OSError, ValueError):  # the worker is gone: its stage ended
            continue
        if set(actors_on(url, token, node)) != {"RayTrainWorker"}:
            continue  # a trial driver or controller is there too: the next heartbeat
        pids = pids_with(f"RAY_OVERRIDE_NODE_ID_FOR_TESTING={node}".encode())
        assert beat["pid"] in pids, (beat, pids)
        end_pids(pids, grace_s=5, signals=(9,))
        return node, beat["pid"]
    raise AssertionError(f"no trial in stage {stage} on a node of Train workers only: last heartbeat {beat}")


def stage_mirrors(workdir: Path, root: str) -> dict:
    """pid -> the stage-cache entries of `root` in that process's own mirror (its disk: workdir/disk-<pid>)."""
    return {d.name.split("-", 1)[1]: {e.name for e in (d / mirror_name(root) / "cache" / "stages").glob("*")}
            for d in workdir.glob("disk-*")}


def trials(db: Path, name: str) -> tuple:
    """The sweep's parent run and its children by learning rate."""
    from mlflow.tracking import MlflowClient
    c = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = c.search_runs([c.get_experiment_by_name("autoscaling").experiment_id], f"tags.raycf.sweep = '{name}'")
    (parent,) = runs
    kids = c.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return c, parent, {float(k.data.params["optim.lr"]): k for k in kids}


def stage_nodes(kid) -> dict:
    return {k: kid.data.tags.get(f"raycf.nodes.stage{k}") for k in (1, 2)}


RESULTS: dict = {}  # sweep 1's trials by learning rate, for the others to compare with


def compared(kids: dict) -> dict:
    return {lr: {k: v for k, v in kid.data.metrics.items() if k.startswith(COMPARED)} for lr, kid in kids.items()}


def test_a_job_without_the_pool_grows_the_cluster_survives_a_lost_node_and_the_cluster_shrinks_after(cluster):
    url, token, env, _, workdir, bucket = cluster
    watch = Nodes.on_empty(url, token)
    db = workdir / "mlflow.db"
    # no --working-dir: the fake nodes share the head's session folder, where one node's runtime-env clean-up can
    # remove the job's unpacked working dir under its driver (seen); raycf is installed in the venv they all use
    r = job(url, env, "submit", "--no-wait", "--submission-id", "nopool", "--",
            *sweep_args("nopool", bucket, db, "--set=sweep.worker_pool=false"))
    assert r.returncode == 0, r.stdout + r.stderr
    killed, victim = kill_lone_worker_node(workdir / "beats", 2, url, token, TIMEOUT_S)
    lost_at = time.time()
    deadline = time.time() + TIMEOUT_S
    while (status := json.loads(get(f"{url}/api/jobs/nopool", token)[1]).get("status")) not in (
            "SUCCEEDED", "FAILED", "STOPPED") and time.time() < deadline:
        time.sleep(1)
    logs = json.loads(get(f"{url}/api/jobs/nopool/logs", token)[1])["logs"]
    assert status == "SUCCEEDED", logs[-5000:]
    # the lost node's trial asked for its worker again through its surviving Train controller, whose request ends
    # with it: the cluster shrinks as promptly as without a loss
    watch.until_empty(f"job, no pool, node ..{killed[-2:]} lost")
    assert "autoscaling cluster: 0 CPU now, up to 2 CPU" in logs and "2 at a time on this cluster" in logs, logs[:3000]
    # both trials at once, each on a node the autoscaler added for it (counted before the loss: the state API
    # lists a killed node as alive for a moment after the provider has dropped it and the autoscaler started the next)
    assert watch.most(before=lost_at) == 2, watch.seen

    c, parent, kids = trials(db, "nopool")
    assert parent.info.status == "FINISHED" and sorted(kids) == LRS
    assert all(k.info.status == "FINISHED" for k in kids.values())
    workers = set().union(*(n for _, n in watch.seen))
    nodes = {lr: stage_nodes(k) for lr, k in kids.items()}
    assert all(n in workers for by_stage in nodes.values() for n in by_stage.values()), (nodes, workers)
    assert nodes[LRS[0]][1] != nodes[LRS[1]][1], nodes  # the two trials on two nodes at once
    # the trial whose node was lost in stage 2 went on from its finished stage 1 on another node: stage 1 trained
    # once and logged once, like stage 2 (its numbers: sweep 2 compares them with its own, bit for bit)
    (lr,) = [lr for lr, by_stage in nodes.items() if by_stage[1] == killed]
    assert nodes[lr][2] not in (killed, None), nodes
    assert c.get_metric_history(kids[lr].info.run_id, "work/stage_trainings")[-1].value == 2
    assert sorted(m.step for m in c.get_metric_history(kids[lr].info.run_id, "train/loss")) == [1, 2]
    # nothing passed through a disk the processes share: the stage the lost node's worker wrote to the bucket is in
    # its own mirror, and in that of the worker that took over (another process, another disk), read from the bucket
    stage1 = stage_mirrors(workdir, storage_path("nopool", bucket))
    mine = stage1[str(victim)]
    assert len(mine) == 1, stage1
    assert [pid for pid, keys in stage1.items() if mine <= keys and pid != str(victim)], stage1
    RESULTS.update(compared(kids))


def test_the_worker_pool_holds_its_nodes_until_the_sweep_ends_and_gives_the_same_numbers(cluster):
    url, token, env, address, workdir, bucket = cluster
    watch = Nodes.on_empty(url, token)
    db = workdir / "mlflow-pool.db"
    r = subprocess.run(sweep_args("pool", bucket, db), cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S,
                       env={**env, "RAY_ADDRESS": address})
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    watch.until_empty("pool")
    c, parent, kids = trials(db, "pool")
    assert parent.info.status == "FINISHED" and sorted(kids) == LRS
    last_end = max(k.info.end_time for k in kids.values()) / 1000
    held = [n for t, n in watch.seen if t <= last_end]
    first_full = next(i for i, n in enumerate(held) if len(n) == 2)
    # the pool's two worker groups kept their two nodes from the moment both were up until the last trial ended
    assert all(n == held[first_full] for n in held[first_full:]), held
    nodes = {lr: stage_nodes(k) for lr, k in kids.items()}
    assert {n for by_stage in nodes.values() for n in by_stage.values()} == set(held[first_full]), nodes
    if RESULTS:
        assert compared(kids) == RESULTS
    # everything the sweep keeps is in the bucket: stage cache, sweep records, Tune's and Train's state, an empty
    # MLflow spool (every tracking operation sent); each pool worker mirrors, on a disk of its own, the stages it
    # wrote there
    from raycf import storage
    root = storage_path("pool", bucket)
    assert set(storage.listdir(root)) <= {"cache", "ray", "sweeps", "spool"}, storage.listdir(root)
    assert not [n for n in storage.listdir(storage.join(root, "spool")) if n.endswith(".jsonl")]
    assert sorted(storage.listdir(storage.join(root, "cache"))) == ["probes", "stages"]
    stages = set(storage.listdir(storage.join(root, "cache", "stages")))
    assert len(stages) == 4  # 2 trials x 2 stages
    assert sorted(storage.listdir(storage.join(root, "sweeps", "pool"))) == ["parent_run.json", "runs",
                                                                             "search_space.yaml", "tune"]
    assert storage.listdir(storage.join(root, "ray"))
    # 4 stages, each trained once, and probed once by the trial; the probe before training, which both share,
    # by one prepare job before the trials (raycf.sweep.driver.prepare_shared)
    m = parent.data.metrics
    assert (m["sweep/stage_trainings"], m["sweep/probe_passes"], m["sweep/prepare_jobs"]) == (4, 4, 1), m
    mirrors = list(stage_mirrors(workdir, root).values())
    assert sorted(len(m) for m in mirrors if m) == [2, 2] and set().union(*mirrors) == stages, mirrors
