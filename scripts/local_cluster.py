"""A local autoscaling Ray cluster shaped like a cluster-launcher YAML: try a sweep on a cluster that grows and shrinks.

    python scripts/local_cluster.py up clusters/aws.yaml          # prints the RAY_ADDRESS to use
    export RAY_ADDRESS=<printed> RAY_AUTH_MODE=token                # Ray's token auth: ~/.ray/auth_token
    python -m raycf.sweep --set sweep.worker_pool=false --set resources.workers=1 \
      --set resources.cpus_per_worker=0.9 --set sweep.trial_cpus=0.05
    python scripts/local_cluster.py down                         # `ray stop --force`: every local Ray

Ray's fake_multinode provider starts each worker "node" as a set of Ray processes on this machine, scaled by the
real (v1) autoscaler. The worker node types are the YAML's own (names, min_workers, max_workers), scaled down to
logical resources this machine holds: each type's CPUs in proportion, the largest type `--cpus-per-node`, GPUs
left out (none here), at most `--max-nodes` of each and in all; the head advertises 0 CPUs, as the YAML's does, so
every trial runs on a worker node. Idle nodes go after `--idle-minutes` (the YAML's 10 minutes become 0.1).
tests/test_autoscaling.py runs sweeps on such a cluster.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from ray._private.ray_constants import PROCESS_TYPE_RAYLET as RAYLET
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

# Ray's fake_multinode provider, as LosableNodeProvider below (an external provider: this file, importable by the
# head's autoscaler through head_env's PYTHONPATH)
FAKE_PROVIDER = {"type": "external", "module": "local_cluster.LosableNodeProvider", "use_node_id_as_ip": True,
                 "disable_node_updaters": True, "disable_launch_config_check": True}
NO_COMMANDS = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
               "head_start_ray_commands", "worker_start_ray_commands")
HEAD = "ray.head.default"


class LosableNodeProvider(FakeMultiNodeProvider):
    """Ray's fake_multinode provider, except that a node whose raylet died is terminated: the provider no longer
    lists it, as a cloud no longer lists a machine that went down, and the autoscaler starts a replacement where
    work waits. (Ray's own keeps listing such a node: the v1 autoscaler shows it as "Pending: uninitialized" for
    ever, counts its CPUs as coming and starts nothing.)"""

    def non_terminated_nodes(self, tag_filters):
        with self.lock:
            for node_id, entry in list(self._nodes.items()):
                node = entry.get("node")  # the head has none: it is not this provider's to start or end
                raylets = node.all_processes.get(RAYLET, []) if node is not None else []
                if raylets and all(info.process.poll() is not None for info in raylets):
                    del self._nodes[node_id]
                    node.kill_all_processes(check_alive=False, allow_graceful=False)
        return super().non_terminated_nodes(tag_filters)


def fake_config(launcher: dict, *, cpus_per_node: float = 1.0, max_nodes: int = 2, idle_minutes: float = 0.1,
                gcs_address: str | None = None) -> dict:
    """The fake_multinode autoscaling config for a cluster-launcher config's worker node types."""
    head_type = launcher["head_node_type"]
    workers = {name: spec for name, spec in launcher["available_node_types"].items() if name != head_type}
    largest = max(float(spec.get("resources", {}).get("CPU", 0)) for spec in workers.values()) or 1.0
    types = {HEAD: {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0}}
    for name, spec in workers.items():
        cpus = round(float(spec.get("resources", {}).get("CPU", largest)) * cpus_per_node / largest, 2)
        types[name] = {"resources": {"CPU": cpus}, "node_config": {},
                       "min_workers": min(int(spec.get("min_workers", 0)), max_nodes),
                       "max_workers": min(int(spec.get("max_workers", 0)), max_nodes)}
    provider = {**FAKE_PROVIDER, **({"gcs_address": gcs_address} if gcs_address else {})}
    return {"cluster_name": f"{launcher.get('cluster_name', 'raycf')}-local", "provider": provider,
            "max_workers": min(int(launcher.get("max_workers", max_nodes)), max_nodes),
            "upscaling_speed": float(launcher.get("upscaling_speed", 1.0)), "idle_timeout_minutes": idle_minutes,
            "auth": {"ssh_user": "ubuntu"}, "available_node_types": types, "head_node_type": HEAD,
            "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
            **{key: [] for key in NO_COMMANDS}}


def head_command(config_file: Path, port: int, extra: list[str] = ()) -> list[str]:
    """`ray start --head` with the autoscaler on `config_file`; the head holds no CPU for trials."""
    ray = shutil.which("ray", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return [ray, "start", "--head", f"--port={port}", "--num-cpus=0", f"--autoscaling-config={config_file}",
            "--disable-usage-stats", *extra]


def head_env(base: dict | None = None) -> dict:
    """The environment the head needs: the fake provider's switch, an autoscaler that looks every second, and this
    folder importable (LosableNodeProvider)."""
    base = base if base is not None else os.environ
    path = os.pathsep.join(x for x in (str(Path(__file__).resolve().parent), base.get("PYTHONPATH")) if x)
    return {**base, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", "PYTHONPATH": path}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the head (the autoscaler adds worker nodes as work waits)")
    up.add_argument("launcher", help="a cluster-launcher YAML, e.g. clusters/aws.yaml")
    up.add_argument("--cpus-per-node", type=float, default=1.0)
    up.add_argument("--max-nodes", type=int, default=2)
    up.add_argument("--idle-minutes", type=float, default=0.1)
    up.add_argument("--port", type=int, default=6379)
    sub.add_parser("down", help="ray stop --force (every Ray on this machine)")
    args = ap.parse_args(argv)
    if args.command == "down":
        return subprocess.call([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"])
    bad = [f"--{name.replace('_', '-')} {getattr(args, name)!r}: {why}" for name, ok, why in (
        ("cpus_per_node", 0 < args.cpus_per_node <= 64, "give logical CPUs per node, more than 0 (e.g. 1)"),
        ("max_nodes", 1 <= args.max_nodes <= 16, "give a node count from 1 to 16"),
        ("idle_minutes", 0 <= args.idle_minutes <= 60, "give minutes from 0 to 60"),
        ("port", 1024 <= args.port <= 65535, "give a free port from 1024 to 65535"))
        if not ok]
    if bad:
        print("error: " + "\nerror: ".join(bad), file=sys.stderr)
        return 2
    import ray._private.services
    address = f"{ray._private.services.get_node_ip_address()}:{args.port}"  # where the fake nodes find the GCS
    try:
        launcher = yaml.safe_load(Path(args.launcher).read_text())
        config = fake_config(launcher, cpus_per_node=args.cpus_per_node, max_nodes=args.max_nodes,
                             idle_minutes=args.idle_minutes, gcs_address=address)
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as e:  # one line, exit 2
        print(f"error: {args.launcher}: not a cluster-launcher YAML with head_node_type and available_node_types "
              f"({e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''})", file=sys.stderr)
        return 2
    path = Path(tempfile.mkdtemp(prefix="raycf-local-cluster-")) / "autoscaling.json"
    path.write_text(json.dumps(config, indent=1))
    rc = subprocess.call(head_command(path, args.port), env=head_env())
    if rc == 0:
        kinds = ", ".join(f"{n} {t['resources']['CPU']:g} CPU x {t['max_workers']}"
                          for n, t in config["available_node_types"].items() if n != HEAD)
        print(f"local autoscaling cluster up ({kinds}; config {path}): "
              f"export RAY_ADDRESS={address} RAY_AUTH_MODE=token")
    return rc


if __name__ == "__main__":
    sys.exit(main())
