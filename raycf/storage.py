"""storage_path: where a sweep's durable files live, a local folder or a cloud URI that pyarrow opens.

    python -m raycf.storage check s3://bucket/raycf_runs    # can this machine write and read there?
    python -m raycf.storage ls s3://bucket/raycf_runs/cache/stages

Ray Train and Tune take the same URIs (s3://, gs://, abfs://, hdfs://, file://, with query parameters such as
`?endpoint_override=host:port&scheme=http` for an S3-compatible store), so every node of a cluster reaches one
storage without a shared disk. raycf keeps its own files there too: the stage cache (raycf.cache), the sweep's
records, the MLflow outage spool. What a process must open from its own disk (a checkpoint to load, an adapter
to probe) is copied into a node-local mirror: $RAYCF_LOCAL_DIR, default <RAYCF_CACHE>/storage/<hash of the URI>
(a `{pid}` in RAYCF_LOCAL_DIR gives every process a mirror of its own: tests use it to prove that nothing
relies on a disk shared between processes). A local storage_path is used in place, with no mirror.

Credentials belong in the environment (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, ...), which Ray passes to its
workers; a URI with a user:secret part is never printed or logged unredacted.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sys
import uuid
from pathlib import Path

from raycf.errors import ConfigError, cli, parser
from raycf.redact import redact_uri


def default_cache_dir() -> Path:
    """Where this process keeps files on its own disk (built models, the node-local mirror of a URI storage_path):
    $RAYCF_CACHE or ~/.cache/raycf."""
    return Path(os.environ.get("RAYCF_CACHE", Path.home() / ".cache" / "raycf"))


def is_uri(root: str) -> bool:
    return "://" in str(root)


def job_home() -> Path | None:
    """Inside a submitted Ray job, where relative output paths go: $RAYCF_JOB_HOME, else ~/raycf on the node that
    runs the job's driver (the head). Not the job's working directory: Ray unpacks that into its session temp
    folder, a new one per submission, and may delete it, so results there would be lost and --resume would find
    nothing. None outside a job (Ray's job supervisor gives the driver RAY_JOB_CONFIG_JSON_ENV_VAR)."""
    if not os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
        return None
    return Path(os.environ.get("RAYCF_JOB_HOME") or Path.home() / "raycf").expanduser()


def output_base() -> Path:
    """What a relative storage_path, cache_dir or sqlite tracking URI is relative to: the working directory of
    the command, or job_home() inside a Ray job."""
    return job_home() or Path.cwd()


def where_results_go(root: str, uri: str) -> str:
    """A command's first line: where its results live (and why there, inside a Ray job)."""
    job = job_home()
    why = (f" (inside a Ray job relative paths are under {job}, which outlives the job; set storage_path and "
           f"tracking.uri, or RAYCF_JOB_HOME, to put them elsewhere)") if job else ""
    return f"[raycf] results: stage cache and sweep records in {redact_uri(root)}, MLflow {redact_uri(uri)}{why}"


def resolve(root: str) -> str:
    """A URI as given; a local path made absolute against output_base() (trials run in other working
    directories)."""
    return str(root) if is_uri(root) else str((output_base() / Path(root).expanduser()).resolve())


def join(root: str, *parts: str) -> str:
    """`root`/part/part, keeping a URI's query string (?endpoint_override=...) at the end."""
    if not is_uri(root):
        return str(Path(root, *parts))
    base, _, query = str(root).partition("?")
    path = "/".join([base.rstrip("/")] + [p.strip("/") for p in parts if p])
    return f"{path}?{query}" if query else path


def name(location: str) -> str:
    """The last part of a location (file or folder name)."""
    return str(location).partition("?")[0].rstrip("/").rsplit("/", 1)[-1]


@functools.lru_cache(maxsize=32)
def _filesystem(base: str):
    """pyarrow's filesystem for scheme://netloc?query, made once per process (for S3 it may ask the bucket's
    region over the network)."""
    import pyarrow.fs
    return pyarrow.fs.FileSystem.from_uri(base)


def _fs(location: str):
    """(pyarrow filesystem, path in it) of a location."""
    import pyarrow.fs
    if not is_uri(location):
        return pyarrow.fs.LocalFileSystem(), str(Path(location).expanduser().resolve())
    base, _, query = str(location).partition("?")
    scheme, _, rest = base.partition("://")
    if scheme == "file":
        return pyarrow.fs.LocalFileSystem(), "/" + rest.lstrip("/")
    netloc, _, sub = rest.partition("/")
    fs, top = _filesystem(f"{scheme}://{netloc}" + (f"?{query}" if query else ""))
    return fs, (top.rstrip("/") + "/" + sub.strip("/")) if sub.strip("/") else top


def exists(location: str) -> bool:
    import pyarrow.fs
    if not is_uri(location):
        return Path(location).exists()
    fs, path = _fs(location)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def read_bytes(location: str) -> bytes:
    if not is_uri(location):
        return Path(location).read_bytes()
    fs, path = _fs(location)
    with fs.open_input_stream(path) as f:
        return f.readall()


def read_text(location: str) -> str:
    return read_bytes(location).decode()


def write_bytes(location: str, data: bytes) -> None:
    """Whole-file write: readers see the old file or the new one (local: rename; object stores: one PUT)."""
    if not is_uri(location):
        path = Path(location)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return
    fs, path = _fs(location)
    if fs.type_name not in ("s3", "gcs"):  # object stores have no folders to make
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(data)


def write_text(location: str, text: str) -> None:
    write_bytes(location, text.encode())


def delete(location: str) -> None:
    """Remove a file or a folder; nothing there is fine."""
    import shutil
    import pyarrow.fs
    if not is_uri(location):
        p = Path(location)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        return
    fs, path = _fs(location)
    info = fs.get_file_info(path)
    if info.type == pyarrow.fs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type == pyarrow.fs.FileType.File:
        fs.delete_file(path)


def listdir(location: str) -> list[str]:
    """Names directly under a folder (empty if there is none)."""
    import pyarrow.fs
    if not is_uri(location):
        p = Path(location)
        return sorted(c.name for c in p.iterdir()) if p.is_dir() else []
    fs, path = _fs(location)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
        return []
    infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    return sorted(i.base_name for i in infos)


def upload(local_dir: Path, location: str, names: list[str]) -> None:
    """Copy the files `names` (relative paths under local_dir) to the folder `location`, in that order (the
    manifest last: its presence tells readers the entry is whole)."""
    for rel in names:
        write_bytes(join(location, *rel.split("/")), (Path(local_dir) / rel).read_bytes())


def download(location: str, local_dir: Path, names: list[str]) -> None:
    for rel in names:
        target = Path(local_dir) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(read_bytes(join(location, *rel.split("/"))))


def local_root(root: str) -> Path:
    """Where this process reads and writes `root`'s files on its own disk: the folder itself for a local
    storage_path, the node-local mirror for a URI."""
    if not is_uri(root):
        return Path(root)
    base = os.environ.get("RAYCF_LOCAL_DIR") or str(default_cache_dir() / "storage")
    digest = hashlib.sha256(redact_uri(str(root)).encode()).hexdigest()[:16]
    return Path(base.replace("{pid}", str(os.getpid()))) / digest


CHECK_S = 30.0  # how long check() waits for the store: an unreachable one may retry for many minutes


def check(root: str) -> None:
    """Raise ConfigError (one line) unless this machine can write, read and delete a file under `root`: a local
    folder (created if missing) or a URI, the latter within CHECK_S seconds."""
    if not str(root).strip():
        raise ConfigError(["storage_path: empty; give a folder (e.g. raycf_runs) or a cloud URI (s3://bucket/path)"])
    if not is_uri(root):
        return check_local(Path(resolve(root)))
    import threading
    folder = join(root, f".raycf-check-{uuid.uuid4().hex[:12]}")
    probe = join(folder, "probe")
    outcome: list = []

    def attempt() -> None:
        try:
            write_text(probe, "ok")
            outcome.append(read_text(probe) == "ok")
            delete(folder)
        except Exception as e:  # noqa: BLE001 - any failure means the same thing to the user
            outcome.append(e)
    # a daemon thread: a store that never answers must not keep this process from exiting with the error
    worker = threading.Thread(target=attempt, name="raycf-storage-check", daemon=True)
    worker.start()
    worker.join(CHECK_S)
    if not outcome:
        raise ConfigError([f"storage_path: {redact_uri(root)} did not answer within {CHECK_S:g} s; check the URI, "
                           f"the network and the credentials in the environment, or use a local folder"])
    if isinstance(outcome[0], Exception):
        e = outcome[0]
        raise ConfigError([f"storage_path: {redact_uri(root)} cannot be written and read from this machine "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); check the URI, "
                           f"the bucket and the credentials in the environment, or use a local folder"])
    if not outcome[0]:
        raise ConfigError([f"storage_path: {redact_uri(root)} returned other bytes than were written; check the "
                           f"store's consistency settings"])


def check_or_list(args) -> int:
    if args.command == "check":
        check(args.location)
        print("ok: written, read and deleted")
    else:
        for n in listdir(args.location):
            print(n)
    return 0


def check_local(folder: Path) -> None:
    """Write, read and delete a file in `folder`; the folders made for it are removed again."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError([f"storage_path: {folder} is a file; give a folder"])
    made = [p for p in [folder, *folder.parents] if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".raycf-check-{uuid.uuid4().hex[:12]}"
        probe.write_text("ok")
        same = probe.read_text() == "ok"
        probe.unlink()
    except OSError as e:
        raise ConfigError([f"storage_path: {folder} cannot be written and read here ({e.strerror or e}); give a "
                           f"folder this user can write"]) from None
    finally:
        for p in made:  # deepest first
            with contextlib.suppress(OSError):
                p.rmdir()
    if not same:
        raise ConfigError([f"storage_path: {folder} returned other bytes than were written; check the disk"])


def main(argv=None) -> int:
    p = parser("raycf.storage", __doc__.splitlines()[0])
    p.add_argument("command", choices=["check", "ls"], help="check: write, read and delete a file there; ls: list")
    p.add_argument("location", help="a storage_path, or a folder under one")
    return cli(p, check_or_list, argv)


if __name__ == "__main__":
    sys.exit(main())
