"""MLflow tracking: where runs go, one run per trial (nested under a sweep's parent), stage-indexed metrics.

The tracking URI is always passed explicitly to Ray workers (env vars do not reach them by themselves).
Default: a sqlite file in the working directory. A server outage during a sweep loses nothing: see send().
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from pathlib import Path

from raycf import storage
from raycf.config.checks import tracking_uri_problem
from raycf.errors import TrackingUnreachable, UserError, cli, parser
from raycf.redact import redact_uri


def resolve_uri(uri: str | None) -> str:
    """The tracking URI: the config's, else $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db; a sqlite file
    made absolute against storage.output_base() (the working directory, or the durable job home inside a Ray
    job), since Ray workers and Tune trials run in other working directories."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///")).expanduser()
        return f"sqlite:///{storage.output_base() / path}"
    return uri


@functools.lru_cache(maxsize=8)
def client(uri: str):
    """One client per URI and process: building one checks the store's schema (about a second on sqlite)."""
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=uri)


def check_reachable(uri: str) -> None:
    """Fail at start, not after training: an http(s) server must answer. Credentials in the URI
    (http://user:password@host) go in an Authorization header and never into a message."""
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if path.is_dir() or (path.exists() and path.stat().st_size > 0 and not _is_sqlite(path)):
            raise TrackingUnreachable(f"tracking.uri {redact_uri(uri)}: {path} is not an SQLite database (a folder or "
                                      f"another file); give a new file name or an MLflow store")
    if not uri.startswith(("http://", "https://")):
        return
    import base64
    import urllib.request
    from urllib.parse import unquote, urlsplit
    parts = urlsplit(uri)
    host = parts.netloc.rsplit("@", 1)[-1]
    request = urllib.request.Request(parts._replace(netloc=host).geturl().rstrip("/") + "/health")
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
    try:
        urllib.request.urlopen(request, timeout=5).read()
    except Exception as e:  # noqa: BLE001 - any failure means the same thing to the user
        raise TrackingUnreachable(f"tracking.uri {redact_uri(uri)} does not answer ({e.__class__.__name__}); start the "
                              f"server (scripts/mlflow_server.sh) or fix tracking.uri") from None


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


def experiment_id(c, name: str) -> str:
    """The experiment's id, created if new: described, and tagged as model development (`mlflow.experimentKind`;
    MLflow 3.17's UI still opens an experiment on its GenAI overview: the sweep prints the runs table's URL)."""
    exp = c.get_experiment_by_name(name)
    if exp:
        return exp.experiment_id
    return c.create_experiment(name, tags={
        "mlflow.experimentKind": "custom_model_development",
        "mlflow.note.content": "raycf: continual fine-tuning trials, one run per trial under its sweep's run. "
                               "Each run's description gives its headline figures; metric step = stage "
                               "(0 = before training)."})


@functools.lru_cache(maxsize=1)
def provenance() -> dict[str, str]:
    """Where a run came from, as MLflow's own tags (its UI shows them): the entry point, the user, the git commit
    of the working directory when it is a git checkout, and raycf's version."""
    import getpass
    import subprocess
    import sys
    from importlib.metadata import PackageNotFoundError, version
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)  # `python -m raycf.sweep`: raycf.sweep.__main__
    entry = f"python -m {spec.name.removesuffix('.__main__')}" if spec else f"python {Path(sys.argv[0]).name}"
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": entry}
    try:
        tags["mlflow.user"] = getpass.getuser()
    except (KeyError, OSError):
        pass
    try:
        tags["raycf.version"] = version("raycf")
    except PackageNotFoundError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode == 0:
            tags["mlflow.source.git.commit"] = commit.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return tags


def start_run(uri: str, experiment: str, run_name: str, *, parent_run_id: str | None = None,
              tags: dict | None = None) -> str:
    """Create a run (RUNNING) and return its id; nested under `parent_run_id` when given."""
    c = client(uri)
    all_tags = dict(tags or {})
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = c.create_run(experiment_id(c, experiment), run_name=run_name, tags=all_tags)
    return run.info.run_id


def log_params(uri: str, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param
    c = client(uri)
    existing = c.get_run(run_id).data.params
    new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
    for i in range(0, len(new), 100):
        c.log_batch(run_id, params=new[i:i + 100])


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int, *, spool: str | Path | None = None,
                timestamp: int | None = None) -> None:
    """Finite numeric metrics at `step`. With `spool`, an unreachable server does not lose them (see send)."""
    if spool is not None:
        return send(uri, run_id, {"op": "metrics", "metrics": metrics, "step": step,
                                  "timestamp": int(time.time() * 1000)}, spool)
    import math
    from mlflow.entities import Metric
    ts = timestamp or int(time.time() * 1000)
    rows = [Metric(k, float(v), ts, step) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    c = client(uri)
    for i in range(0, len(rows), 500):
        c.log_batch(run_id, metrics=rows[i:i + 500])


def log_artifact(uri: str, run_id: str, path: str | Path, artifact_path: str | None = None, *,
                 spool: str | Path | None = None) -> None:
    if spool is not None:  # keep a copy: the original may be a temporary file
        keep = storage.join(str(spool), "files", f"{run_id}-{time.time_ns()}-{Path(path).name}")
        storage.write_bytes(keep, Path(path).read_bytes())
        return send(uri, run_id, {"op": "artifact", "path": keep, "artifact_path": artifact_path,
                                  "name": Path(path).name}, spool)
    client(uri).log_artifact(run_id, str(path), artifact_path)


def log_text(uri: str, run_id: str, file_name: str, text: str) -> None:
    """`text` as the artifact `file_name` of the run (`folder/name`: the file name in that artifact folder)."""
    import tempfile
    folder, _, name = file_name.rpartition("/")
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / name).write_text(text)
        log_artifact(uri, run_id, Path(d) / name, folder or None)


def end_run(uri: str, run_id: str, status: str = "FINISHED", *, spool: str | Path | None = None) -> None:
    """status: FINISHED | FAILED | KILLED."""
    if spool is not None:
        return send(uri, run_id, {"op": "end", "status": status}, spool)
    client(uri).set_terminated(run_id, status=status)


# ----------------------------------------------------------------------------- outages
# A trial must not fail, nor lose what it measured, because the tracking server is down for a while.
# Calls made with a spool folder (<storage_path>/spool, a local folder or a URI: raycf.storage) go through
# send(): each operation is tried after
# the ones this run already has waiting; if the server does not answer, it is appended to
# <spool>/<run_id>.jsonl and replayed, in order and with its original timestamp, by the next call that
# gets through or by flush() (the trial's and the sweep's last step). A sweep whose server is still down
# at the end says so and names the folder; `python -m raycf.tracking flush --storage DIR` sends it later.

def _unreachable(e: Exception) -> bool:
    """Server down or overloaded (kept for later); anything else (a bad request) is a real error."""
    from mlflow.exceptions import MlflowException
    if isinstance(e, (ConnectionError, OSError, TimeoutError)):
        return True
    if isinstance(e, MlflowException):
        text = str(e)
        return any(w in text for w in ("Max retries", "Connection", "connection", "timed out", "503", "502",
                                       "504", "database is locked"))
    return type(e).__module__.startswith(("requests", "urllib3"))


def _apply(uri: str, run_id: str, op: dict) -> None:
    if op["op"] == "metrics":
        log_metrics(uri, run_id, op["metrics"], op["step"], timestamp=op["timestamp"])
    elif op["op"] == "artifact":
        import tempfile
        with tempfile.TemporaryDirectory() as d:  # upload under the original file name
            (Path(d) / op["name"]).write_bytes(storage.read_bytes(op["path"]))
            log_artifact(uri, run_id, Path(d) / op["name"], op.get("artifact_path"))
    elif op["op"] == "tags":
        for k, v in op["tags"].items():
            client(uri).set_tag(run_id, k, v)
    elif op["op"] == "end":
        end_run(uri, run_id, op["status"])


def _replay(uri: str, run_id: str, ops: list[dict], spool: str | Path) -> list[dict]:
    """Apply ops in order; return those not applied (the server went away again)."""
    for i, op in enumerate(ops):
        try:
            _apply(uri, run_id, op)
        except Exception as e:  # noqa: BLE001 - sorted by _unreachable
            if not _unreachable(e):
                raise
            return ops[i:]
        if op["op"] == "artifact":
            storage.delete(op["path"])
    return []


def _write_pending(spool: str | Path, run_id: str, ops: list[dict]) -> None:
    location = storage.join(str(spool), f"{run_id}.jsonl")
    if not ops:
        storage.delete(location)
        return
    storage.write_text(location, "".join(json.dumps(op) + "\n" for op in ops))


def pending(spool: str | Path, run_id: str) -> list[dict]:
    location = storage.join(str(spool), f"{run_id}.jsonl")
    if not storage.exists(location):
        return []
    return [json.loads(line) for line in storage.read_text(location).splitlines() if line]


def send(uri: str, run_id: str, op: dict, spool: str | Path) -> None:
    """Apply `op` after this run's waiting operations, or keep it (and them) in the spool."""
    with quick_failures():
        left = _replay(uri, run_id, pending(spool, run_id) + [op], spool)
    if left:
        print(f"[raycf] MLflow at {redact_uri(uri)} does not answer; {len(left)} operation(s) of run {run_id} "
              f"kept in {spool} and sent when it does", flush=True)
    _write_pending(spool, run_id, left)


def flush(uri: str, spool: str | Path, *, run_id: str | None = None, wait_s: float = 0.0) -> int:
    """Send the waiting operations of `run_id` (default: every run) in `spool`, trying again for up to
    `wait_s` seconds while the server is away; returns how many still wait."""
    deadline = time.monotonic() + wait_s
    while True:
        left = 0
        runs = [n.removesuffix(".jsonl") for n in storage.listdir(str(spool)) if n.endswith(".jsonl")]
        for run in [r for r in runs if run_id is None or r == run_id]:
            with quick_failures():
                rest = _replay(uri, run, pending(spool, run), spool)
            _write_pending(spool, run, rest)
            left += len(rest)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(2.0)


@contextlib.contextmanager
def quick_failures():
    """MLflow's HTTP client retries for minutes by default; while a spool can keep the data, give up in
    seconds (the user's own settings win)."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    saved = {k: os.environ.get(k) for k in keys}
    for k, v in keys.items():
        os.environ.setdefault(k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)


def flush_spool(args) -> int:
    line = tracking_uri_problem(args.tracking_uri, "--tracking-uri") if args.tracking_uri is not None else None
    if line:
        raise UserError([line])
    if not storage.is_uri(args.storage) and not Path(args.storage).is_dir():
        raise UserError([f"--storage {args.storage}: no such folder; give the sweep's storage_path (its spool/ "
                         f"holds what an outage kept back)"])
    left = flush(resolve_uri(args.tracking_uri), storage.join(args.storage, "spool"))
    print(f"{left} operation(s) still waiting" if left else "nothing waiting")
    return 1 if left else 0


def main(argv=None) -> int:
    p = parser("raycf.tracking", "send to MLflow what an outage kept back in a sweep's spool")
    p.add_argument("command", choices=["flush"], help="flush: send the waiting operations")
    p.add_argument("--storage", required=True, help="the sweep's storage_path, a folder or URI (its spool/ is read)")
    p.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db")
    return cli(p, flush_spool, argv)


if __name__ == "__main__":
    import sys
    sys.exit(main())
