"""Content-addressed cache of work that trials share: warm starts, stage checkpoints, probe rows.

An entry's key hashes everything that determines its content (model, warm start, hyperparameters,
the stages so far, seed), so two trials whose stage prefixes agree reuse one checkpoint, and a
restarted or resumed trial finds its finished stages. Entries are folders published by an atomic
rename with a manifest of SHA-256 checksums; a folder whose files do not match is treated as
missing (and removed), never silently reused.

Layout under <storage_path>/cache/:  warm/<key>/  stages/<key>/  probes/<key>/

storage_path may be a cloud URI (raycf.storage): an entry is then written locally, published in the node's
mirror, and uploaded file by file with its manifest last, so that a reader on any node sees it whole or not
at all; a reader copies it into its own mirror and checks every file against the manifest before using it.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from raycf import storage
from raycf.errors import StorageFull
from raycf.redact import redact_uri

MANIFEST = "manifest.json"


def digest(obj, length: int = 20) -> str:
    """The content hash of raycf: `length` hex digits of the SHA-256 of `obj` as sorted JSON (str() for what JSON
    has no type for)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


def key(*parts) -> str:
    """A cache key: the digest of `parts`."""
    return digest(list(parts))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Entry:
    """One cache entry: `root` is the storage_path (a local folder or a URI), `kind` warm | stages | probes."""
    root: str
    kind: str
    key: str

    @property
    def path(self) -> Path:
        """The entry on this process's disk (for a URI root: in the node-local mirror)."""
        return storage.local_root(self.root) / "cache" / self.kind / self.key

    @property
    def location(self) -> str:
        """The entry in storage (for a local root, the same folder as path)."""
        return storage.join(self.root, "cache", self.kind, self.key)

    @property
    def remote(self) -> bool:
        return storage.is_uri(self.root)


def entry_dir(root: str | Path, kind: str, k: str) -> Path:
    return Entry(str(root), kind, k).path


def _verified(path: Path) -> bool:
    """Every file the manifest names is there with its checksum."""
    try:
        files = json.loads((path / MANIFEST).read_text())["files"]
        return all((path / name).exists() and _sha256(path / name) == digest for name, digest in files.items())
    except (ValueError, KeyError, OSError):
        return False


def lookup(entry: Entry | Path) -> Path | None:
    """The entry's local folder if it is complete and uncorrupted (for a URI root, fetched from storage into
    this node's mirror first), else None. A corrupted entry is removed so that it gets recomputed."""
    path = entry.path if isinstance(entry, Entry) else Path(entry)
    if (path / MANIFEST).exists():
        if _verified(path):
            return path
        print(f"[raycf] cache entry {path} failed its checksum; recomputing it")
        shutil.rmtree(path, ignore_errors=True)
    if isinstance(entry, Entry) and entry.remote:
        return _fetch(entry)
    return None


def published(entry: Entry) -> bool:
    """Whether the entry exists, without copying it here: a verified local copy, or a manifest in storage."""
    if _verified(entry.path):
        return True
    return entry.remote and storage.exists(storage.join(entry.location, MANIFEST))


def _fetch(entry: Entry) -> Path | None:
    """Copy a published entry from storage into the local mirror, verified; None if storage has none."""
    manifest = storage.join(entry.location, MANIFEST)
    if not storage.exists(manifest):
        return None
    tmp = staging_dir(entry.path)
    try:
        try:
            files = json.loads(storage.read_text(manifest))["files"]
            storage.download(entry.location, tmp, sorted(files) + [MANIFEST])
            whole = _verified(tmp)
        except (ValueError, KeyError, OSError):  # a damaged manifest, or a file it names is gone
            whole = False
        if not whole:
            # a damaged entry: without its manifest it is missing, and the next writer's upload replaces it
            print(f"[raycf] cache entry {redact_uri(entry.location)} failed its checksum; recomputing it")
            storage.delete(manifest)
            return None
        try:
            os.rename(tmp, entry.path)  # what was just verified
        except OSError:  # another process of this node fetched it first
            return entry.path if _verified(entry.path) else None
        return entry.path
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def staging_dir(path: Path) -> Path:
    """A fresh folder beside `path` to write an entry into before publish()."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    return tmp


def disk_full(e: BaseException) -> bool:
    # safetensors reports ENOSPC as its own error type, with the OS message inside
    return (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or \
        any(m in str(e) for m in ("No space left on device", "Disk quota exceeded", "os error 28"))


@contextlib.contextmanager
def writing(entry: Entry | Path):
    """Write an entry: yields a staging folder and publishes it when the block ends (for a URI root, also
    uploads it, manifest last). On any error the staging folder is removed and published entries stay as they
    were; a full disk (or quota) becomes StorageFull with a message a user can act on."""
    path = entry.path if isinstance(entry, Entry) else Path(entry)
    tmp = None
    try:
        tmp = staging_dir(path)
        yield tmp
        publish(tmp, path)
        if isinstance(entry, Entry) and entry.remote:
            upload(entry)
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


def upload(entry: Entry) -> None:
    """Copy the published local entry to storage, its manifest last; nothing to do if storage has it."""
    if storage.exists(storage.join(entry.location, MANIFEST)):
        return  # another trial published the same content first
    files = json.loads((entry.path / MANIFEST).read_text())["files"]
    storage.upload(entry.path, entry.location, sorted(files) + [MANIFEST])


def read_json(path: Path, name: str = "result.json") -> dict:
    return json.loads((path / name).read_text())
