"""Content-addressed cache of work that trials share: warm starts, stage checkpoints, probe rows.

An entry's key hashes everything that determines its content (model, warm start, hyperparameters,
the stages so far, seed), so two trials whose stage prefixes agree reuse one checkpoint, and a
restarted or resumed trial finds its finished stages. Entries are folders published by an atomic
rename with a manifest of SHA-256 checksums; a folder whose files do not match is treated as
missing (and removed), never silently reused.

Layout under <storage_path>/cache/:  warm/<key>/  stages/<key>/  probes/<key>/
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

MANIFEST = "manifest.json"


def key(*parts) -> str:
    """A short stable hash of JSON-serialisable parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def entry_dir(root: str | Path, kind: str, k: str) -> Path:
    return Path(root) / "cache" / kind / k


def lookup(path: Path) -> Path | None:
    """`path` if it is a complete, uncorrupted entry; a corrupted one is removed so it gets recomputed."""
    manifest = path / MANIFEST
    if not manifest.exists():
        return None
    try:
        files = json.loads(manifest.read_text())["files"]
        ok = all((path / name).exists() and _sha256(path / name) == digest for name, digest in files.items())
    except (ValueError, KeyError, OSError):
        ok = False
    if not ok:
        print(f"[raycf] cache entry {path} failed its checksum; recomputing it")
        shutil.rmtree(path, ignore_errors=True)
        return None
    return path


def staging_dir(path: Path) -> Path:
    """A fresh folder beside `path` to write an entry into before publish()."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    return tmp


def disk_full(e: BaseException) -> bool:
    # safetensors reports ENOSPC as its own error type, with the OS message inside
    return (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or \
        any(m in str(e) for m in ("No space left on device", "Disk quota exceeded", "os error 28"))


class StorageFull(OSError):
    """No space left where an entry is being written; the message says what is kept and how to go on."""


@contextlib.contextmanager
def writing(path: Path):
    """Write the entry `path`: yields a staging folder and publishes it when the block ends. On any error the
    staging folder is removed and published entries stay as they were; a full disk (or quota) becomes
    StorageFull with a message a user can act on."""
    tmp = None
    try:
        tmp = staging_dir(path)
        yield tmp
        publish(tmp, path)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if disk_full(e):
            raise StorageFull(f"no space left on the disk of {path.parent} while writing {path.parent.name}/"
                              f"{path.name}; entries written before are intact: free space there or set "
                              f"storage_path to a larger disk, then run again to continue from them") from None
        raise


def publish(tmp: Path, path: Path) -> Path:
    """Write the manifest, fsync, and rename `tmp` to `path`. Losing a race to an equal entry is fine."""
    files = {p.relative_to(tmp).as_posix(): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    with open(tmp / MANIFEST, "w") as f:
        json.dump({"files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, path)
    except OSError:  # already there (another trial computed the same content)
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_json(path: Path, name: str = "result.json") -> dict:
    return json.loads((path / name).read_text())
