"""raycf.storage: storage_path as a cloud URI. A real S3 API (moto's server on loopback) stands for the bucket;
every process gets a local mirror of its own (RAYCF_LOCAL_DIR with {pid}), so nothing can pass through a disk
shared between processes unseen."""
import json
import os
import socket

import pytest

from raycf import cache, storage, tracking

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A loopback S3 server with the bucket `raycf`; returns the bucket's URI (each test works under a folder
    of its own: storage.join(s3, name))."""
    pytest.importorskip("moto.server", reason="the test extra installs moto")
    import logging
    from moto.server import ThreadedMotoServer
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)  # Ray workers started afterwards inherit them
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    query = f"endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    import pyarrow.fs
    pyarrow.fs.FileSystem.from_uri(f"s3://raycf?{query}&allow_bucket_creation=true")[0].create_dir("raycf")
    yield f"s3://raycf?{query}"
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def node(monkeypatch, tmp_path, name: str) -> None:
    """Make this process look like another node: a local mirror of its own."""
    monkeypatch.setenv("RAYCF_LOCAL_DIR", str(tmp_path / name))


def test_join_keeps_the_query_string_and_local_paths_stay_paths(tmp_path):
    root = "s3://b/runs?endpoint_override=h:9000&scheme=http"
    assert storage.join(root, "cache", "stages", "k") == "s3://b/runs/cache/stages/k?endpoint_override=h:9000&scheme=http"
    assert storage.name(storage.join(root, "cache", "stages", "k")) == "k"
    assert storage.join(str(tmp_path), "a", "b") == str(tmp_path / "a" / "b")
    assert storage.resolve("rel/dir") == str((os.path.realpath(".") + "/rel/dir"))
    assert storage.local_root(str(tmp_path)) == tmp_path  # a local storage_path is used in place


def test_local_mirror_is_per_uri_without_credentials_and_per_process_with_pid(monkeypatch, tmp_path):
    monkeypatch.setenv("RAYCF_LOCAL_DIR", str(tmp_path / "m-{pid}"))
    a = storage.local_root("s3://me:secret@b/runs")
    assert a == storage.local_root("s3://me:other@b/runs")  # the same bucket whatever the credentials
    assert a != storage.local_root("s3://b/other")
    assert a.parent == tmp_path / f"m-{os.getpid()}" and "secret" not in str(a)


def test_an_entry_written_on_one_node_is_read_on_another_and_verified(s3, monkeypatch, tmp_path):
    node(monkeypatch, tmp_path, "a")
    entry = cache.Entry(storage.join(s3, "read-elsewhere"), "stages", "k1")
    with cache.writing(entry) as tmp:
        (tmp / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 40)
        (tmp / "result.json").write_text(json.dumps({"stage": 1, "train/loss": 1.25}))
    assert storage.listdir(entry.location) == ["adapter_model.safetensors", "manifest.json", "result.json"]
    node(monkeypatch, tmp_path, "b")  # another disk: nothing there yet
    assert not entry.path.exists() and cache.published(entry)
    assert cache.lookup(entry) == entry.path and str(entry.path).startswith(str(tmp_path / "b"))
    assert cache.read_json(entry.path) == {"stage": 1, "train/loss": 1.25}
    assert (entry.path / "adapter_model.safetensors").read_bytes() == bytes(range(256)) * 40


def test_a_damaged_entry_in_storage_is_missing_and_the_next_writer_replaces_it(s3, monkeypatch, tmp_path):
    node(monkeypatch, tmp_path, "a")
    entry = cache.Entry(storage.join(s3, "damaged"), "probes", "k2")
    with cache.writing(entry) as tmp:
        (tmp / "result.json").write_text('{"scores": 1}')
    storage.write_text(storage.join(entry.location, "result.json"), '{"scores": 2}')  # changed in storage
    node(monkeypatch, tmp_path, "b")
    assert cache.lookup(entry) is None and not entry.path.exists()
    assert not cache.published(entry)  # its manifest is gone
    with cache.writing(entry) as tmp:  # recomputed on node b: uploaded again, manifest last
        (tmp / "result.json").write_text('{"scores": 1}')
    node(monkeypatch, tmp_path, "c")
    assert cache.read_json(cache.lookup(entry)) == {"scores": 1}


def test_an_entry_storage_has_is_not_uploaded_again(s3, monkeypatch, tmp_path):
    node(monkeypatch, tmp_path, "a")
    entry = cache.Entry(storage.join(s3, "race"), "warm", "k3")
    with cache.writing(entry) as tmp:
        (tmp / "result.json").write_text('"first"')
    node(monkeypatch, tmp_path, "b")
    with cache.writing(entry) as tmp:  # the same key computed on another node at the same time
        (tmp / "result.json").write_text('"second"')
    node(monkeypatch, tmp_path, "c")
    assert cache.read_json(cache.lookup(entry)) == "first"


def test_the_outage_spool_lives_in_storage(s3, monkeypatch, tmp_path):
    spool = storage.join(s3, "outage", "spool")
    down = "http://127.0.0.1:9"  # nothing listens: every operation is kept
    art = tmp_path / "figure.png"
    art.write_bytes(b"png")
    tracking.log_metrics(down, "run1", {"a": 1.0}, step=1, spool=spool)
    tracking.log_artifact(down, "run1", art, spool=spool)
    art.unlink()
    assert [op["op"] for op in tracking.pending(spool, "run1")] == ["metrics", "artifact"]
    assert storage.listdir(spool) == ["files", "run1.jsonl"]
    (kept,) = storage.listdir(storage.join(spool, "files"))
    assert storage.read_bytes(storage.join(spool, "files", kept)) == b"png"
    assert tracking.flush(down, spool) == 2


def test_an_unwritable_storage_uri_is_one_line_before_anything_starts(s3):
    from raycf.config import ConfigError
    bad = storage.join(s3.replace("s3://raycf", "s3://no-such-bucket"), "runs")
    with pytest.raises(ConfigError) as e:
        storage.check(bad)
    (line,) = e.value.problems
    assert line.startswith("storage_path: s3://no-such-bucket/runs") and "credentials" in line


def test_a_store_that_never_answers_is_one_line_after_check_s(monkeypatch):
    """A loopback port that takes connections and never replies stands for an unreachable store (offline, GCS
    retries for many minutes): the check gives up after CHECK_S with one line."""
    import time
    from raycf.config import ConfigError
    monkeypatch.setattr(storage, "CHECK_S", 1.0)
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    try:
        t0 = time.monotonic()
        with pytest.raises(ConfigError) as e:
            storage.check(f"s3://raycf/runs?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1")
        assert time.monotonic() - t0 < 5
    finally:
        silent.close()
    (line,) = e.value.problems
    assert line == ("storage_path: s3://raycf/runs?endpoint_override=127.0.0.1:%d&scheme=http&region=us-east-1 did "
                    "not answer within 1 s; check the URI, the network and the credentials in the environment, or "
                    "use a local folder" % port)


def test_inside_a_ray_job_relative_outputs_go_to_the_durable_job_home(tmp_path, monkeypatch):
    """A submitted job's driver runs in its unpacked working directory (Ray's session temp folder, new per
    submission): relative storage_path, cache_dir and sqlite URIs resolve under ~/raycf instead, or RAYCF_JOB_HOME."""
    from raycf import storage, tracking
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAYCF_JOB_HOME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert storage.job_home() is None
    assert storage.resolve("raycf_runs") == str(tmp_path / "raycf_runs")
    assert tracking.resolve_uri(None) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert tracking.resolve_uri("sqlite:///runs/m.db") == f"sqlite:///{tmp_path / 'runs/m.db'}"
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", '{"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip"}}')
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert storage.job_home() == tmp_path / "home" / "raycf"
    assert storage.resolve("raycf_runs") == str(tmp_path / "home" / "raycf" / "raycf_runs")
    assert storage.resolve("/abs/runs") == "/abs/runs" and storage.resolve("s3://b/r") == "s3://b/r"
    assert tracking.resolve_uri(None) == f"sqlite:///{tmp_path / 'home' / 'raycf' / 'mlflow.db'}"
    assert tracking.resolve_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert tracking.resolve_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    monkeypatch.setenv("RAYCF_JOB_HOME", str(tmp_path / "elsewhere"))
    assert storage.resolve("raycf_runs") == str(tmp_path / "elsewhere" / "raycf_runs")
    assert "which outlives the job" in storage.where_results_go(storage.resolve("raycf_runs"), tracking.resolve_uri(None))
