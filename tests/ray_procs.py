"""A Ray head of a test's own (`ray start --head --block`: own temp dir, ports and token), its job API, and the
clean-up of every process it started. tests/test_job_submit.py and tests/test_autoscaling.py use it. OwnRay: the
same marking and clean-up for the local Ray that a test's `python -m raycf.sweep` subprocess starts.

Every process the head starts carries a marker variable in its environment (Ray's workers, and the worker nodes
an autoscaler starts, inherit it) or holds a log file in the cluster's own temp dir (Ray's agents, whose process
title overwrites their environment); at the end the head is stopped by its pid, then any such process left is
ended by its pid (TERM, then KILL). `ray stop` is not used: it would stop every Ray cluster on the machine.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def cli(name: str) -> str | None:
    """The venv's own CLI first (the one that matches this Python), else PATH."""
    return shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def pids_with(needle: bytes, under: Path | None = None) -> list[int]:
    """Pids of live processes whose environment holds the entry `needle` (b"NAME=value"), or that hold a file open
    under `under` (a cluster's Ray temp dir: Ray's agents set their process title over their environment)."""
    pids = []
    prefix = str(under) if under else None
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0") or \
                    (prefix and any(os.readlink(fd).startswith(prefix) for fd in (entry / "fd").iterdir())):
                pids.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return [p for p in pids if p != os.getpid()]


def end_pids(pids: list[int], grace_s: float, signals=(signal.SIGTERM, signal.SIGKILL)) -> None:
    for sig in signals:
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace_s
        while time.time() < deadline and any(alive(p) for p in pids):
            time.sleep(0.5)
        pids = [p for p in pids if alive(p)]
        if not pids:
            return


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():  # a zombie waits for its parent's wait(), it runs nothing
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False
    return True


class OwnRay:
    """What a test's subprocess needs for its local Ray to be found and stopped without touching any other Ray on
    the machine (tests run two at a time): `env`, a marker its processes inherit and a Ray temp dir of its own
    (RAY_TMPDIR, short: Ray's socket paths must stay under 108 bytes); `pids()` its live processes; `stop()` ends
    them (TERM, then KILL), what `ray stop --force` did for every Ray on the machine."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="rcf", dir="/tmp"))
        mark = secrets.token_hex(8)
        self.needle = f"RAYCF_TEST_RAY_MARK={mark}".encode()
        self.env = {"RAY_TMPDIR": str(self.dir), "RAYCF_TEST_RAY_MARK": mark}

    def pids(self) -> list[int]:
        return [p for p in pids_with(self.needle, self.dir) if alive(p)]

    def stop(self, grace_s: float = 3) -> None:
        end_pids(self.pids(), grace_s=grace_s)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def get(url: str, token: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def post(url: str, token: str, timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=b"", method="POST", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def job(url: str, env: dict, command: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`ray job COMMAND --address URL ARGS...`"""
    return subprocess.run([cli("ray"), "job", command, "--address", url, *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


@contextlib.contextmanager
def ray_head(workdir: Path, cache_dir: str, head_args, env_extra: dict | None = None, env_base: dict | None = None):
    """A local Ray head with token auth, started with `head_args` (a list, or a function of the GCS port giving
    one) on top of its own ports and temp dir, in `env_base` (default os.environ) plus `env_extra`; yields
    (dashboard URL, token, env for CLI calls, GCS port). Every process of it is ended on the way out."""
    ray_cli = cli("ray")
    if ray_cli is None:
        pytest.skip("the `ray` CLI is not installed (pip install 'ray[default]')")
    if not Path("/proc/self/environ").exists():
        pytest.skip("needs /proc to find and end every process it starts")
    marker = f"RAYCF_TEST_RAY_MARK={secrets.token_hex(8)}"
    ray_dir = workdir / "ray"  # this cluster's temp dir: its processes hold their logs open there
    token = secrets.token_hex(32)
    token_file = workdir / "auth_token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    base = os.environ if env_base is None else env_base
    env = {k: v for k, v in base.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_file),
        "RAYCF_CACHE": cache_dir,
        "RAY_USAGE_STATS_ENABLED": "0",
        marker.split("=")[0]: marker.split("=")[1],
        **(env_extra or {}),
    })
    gcs, dash, client, agent, metrics = free_ports(5)
    head_args = head_args(gcs) if callable(head_args) else head_args
    log = open(workdir / "ray-head.log", "wb")
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dash}",
         f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
         f"--metrics-export-port={metrics}", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--temp-dir={ray_dir}", "--disable-usage-stats", *head_args],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 180
        while True:
            if head.poll() is not None:
                pytest.fail(f"ray start exited {head.returncode}:\n{(workdir / 'ray-head.log').read_text()[-3000:]}")
            try:
                status, _ = get(f"{url}/api/version", token, timeout=2)
                if status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"dashboard {url} not up in 180 s:\n{(workdir / 'ray-head.log').read_text()[-3000:]}")
            time.sleep(1)
        yield url, token, env, gcs
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` ends the processes it started
        try:
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        needle = marker.encode()
        end_pids([head.pid] + pids_with(needle, ray_dir), grace_s=3)
        if head.poll() is None:
            head.wait(timeout=5)
        log.close()
        left = [p for p in pids_with(needle, ray_dir) if alive(p)]
        assert not left, f"processes of this test's Ray cluster still running: {left}"
