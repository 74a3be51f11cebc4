"""MLflow tracking: where runs go, one run per trial (nested under a sweep's parent), stage-indexed metrics.

The tracking URI is always passed explicitly to Ray workers (env vars do not reach them by themselves).
Default: a sqlite file in the working directory.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from raycf.config import redact_uri


def resolve_uri(uri: str | None) -> str:
    """The tracking URI: the config's, else $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


@functools.lru_cache(maxsize=8)
def client(uri: str):
    """One client per URI and process: building one checks the store's schema (about a second on sqlite)."""
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=uri)


def check_reachable(uri: str) -> None:
    """Fail at start, not after training: an http(s) server must answer. Credentials in the URI
    (http://user:password@host) go in an Authorization header and never into a message."""
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
        raise ConnectionError(f"tracking.uri {redact_uri(uri)} does not answer ({e.__class__.__name__}); start the "
                              f"server (scripts/mlflow_server.sh) or fix tracking.uri") from None


def experiment_id(c, name: str) -> str:
    exp = c.get_experiment_by_name(name)
    return exp.experiment_id if exp else c.create_experiment(name)


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


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int) -> None:
    import math
    import time
    from mlflow.entities import Metric
    ts = int(time.time() * 1000)
    rows = [Metric(k, float(v), ts, step) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    c = client(uri)
    for i in range(0, len(rows), 500):
        c.log_batch(run_id, metrics=rows[i:i + 500])


def log_artifact(uri: str, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    client(uri).log_artifact(run_id, str(path), artifact_path)


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    """status: FINISHED | FAILED | KILLED."""
    client(uri).set_terminated(run_id, status=status)
