"""What a Ray cluster holds now and what its autoscaler can grow it to: the resources a sweep is sized for.

    python -c 'import ray; ray.init("auto"); from raycf import cluster; print(cluster.view().describe())'

Sized only from what it holds when it starts, a sweep on an autoscaling cluster with no worker nodes yet would
refuse ("the cluster has 0 CPUs") or run one trial at a time. The autoscaler's node types and their maximums come
from the GCS where an autoscaler publishes them (Ray 2.60's v1 autoscaler does not), else from the
`--autoscaling-config` file its monitor was started with on this node: the cluster launcher's head and Ray's
local fake_multinode cluster, where a job's driver runs. Neither known (a KubeRay v1 autoscaler in its own
container, a Ray Client driver): the sweep is sized from what the cluster holds now, and
`ray.autoscaler.sdk.request_resources` before the sweep still grows it first (clusters/README.md).

The sweep asks the autoscaler for nothing itself: trials that wait for resources are the demand it scales up
for, so a sweep without the worker pool lets nodes go as trials end.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

UNLIMITED_NODES = 10_000  # a node type with no maximum (-1): as good as any sweep can use


@dataclass(frozen=True)
class NodeType:
    """A kind of worker node the autoscaler may start: its resources per node and how many at most."""
    name: str
    resources: dict
    max_count: int


@dataclass(frozen=True)
class ClusterView:
    now: dict                                 # ray.cluster_resources()
    head: dict = field(default_factory=dict)  # the head node's own resources
    nodes: tuple = ()                         # each live node's resources (the head's too)
    types: tuple = ()                         # NodeType the autoscaler may add; () = it cannot grow (or unknown)
    max_workers: int | None = None            # the autoscaler's cap on worker nodes of all types together
    source: str = ""                          # where the node types were read

    @property
    def grows(self) -> bool:
        return any(t.max_count != 0 for t in self.types)

    def most(self) -> dict:
        """Resources when grown to the maximum (what is there now, if more)."""
        out = dict(self.now)
        for key in {k for t in self.types for k in t.resources} | {"CPU", "GPU"}:
            grown = self.head.get(key, 0.0) + most_of(self.types, key, self.max_workers)
            out[key] = max(self.now.get(key, 0.0), grown)
        return out

    def largest_node(self, key: str) -> float:
        """The most of `key` one node has or can have: a live node's, or a node type's the autoscaler may add."""
        return max([n.get(key, 0.0) for n in self.nodes] + [self.head.get(key, 0.0)] +
                   [t.resources.get(key, 0.0) for t in self.types if t.max_count])

    def describe(self) -> str:
        if not self.grows:
            return f"cluster: {amounts(self.now)} (no autoscaler node types seen)"
        kinds = ", ".join(f"{t.name} {amounts(t.resources)} x {'any' if t.max_count < 0 else t.max_count}"
                          for t in self.types if t.max_count)
        cap = f", at most {self.max_workers} worker nodes" if self.max_workers is not None else ""
        return (f"autoscaling cluster: {amounts(self.now)} now, up to {amounts(self.most())} ({kinds}{cap}; "
                f"from {self.source}); the sweep is sized for the grown cluster")


def amounts(resources: dict) -> str:
    shown = [f"{resources.get(k, 0.0):g} {k}" for k in ("CPU", "GPU") if k == "CPU" or resources.get(k)]
    return " + ".join(shown)


def most_of(types, key: str, max_workers: int | None) -> float:
    """The most of `key` the worker nodes can add: the richest types first, within the cap on worker nodes."""
    left = UNLIMITED_NODES if max_workers is None else max_workers
    total = 0.0
    for t in sorted(types, key=lambda t: -t.resources.get(key, 0.0)):
        n = min(left, UNLIMITED_NODES if t.max_count < 0 else t.max_count)
        total += n * t.resources.get(key, 0.0)
        left -= n
    return total


def view() -> ClusterView:
    """The connected cluster's view (ray.init first)."""
    import ray
    now = {k: float(v) for k, v in ray.cluster_resources().items()}
    nodes = [{k: float(v) for k, v in n["Resources"].items()} for n in ray.nodes() if n["Alive"]]
    head = next((n for n in nodes if "node:__internal_head__" in n), {})
    types, cap, source = from_gcs()
    if not types:
        types, cap, source = from_monitor(ray.get_runtime_context().gcs_address)
    return ClusterView(now, head, tuple(nodes), tuple(types), cap, source)


def from_gcs() -> tuple[list[NodeType], int | None, str]:
    """Node types an autoscaler published in the GCS's cluster config (Ray 2.60's v1 autoscaler publishes none)."""
    import ray._private.state
    try:
        config = ray._private.state.state.get_cluster_config()
    except Exception:  # noqa: BLE001 - an older GCS without it: fall back to the monitor's file
        return [], None, ""
    if config is None or not config.node_group_configs:
        return [], None, ""
    types = [NodeType(g.name, {k: float(v) for k, v in g.resources.items()}, int(g.max_count))
             for g in config.node_group_configs]
    return types, None, "the GCS's cluster config"


def from_monitor(gcs_address: str) -> tuple[list[NodeType], int | None, str]:
    """Node types from the --autoscaling-config file of this cluster's autoscaler monitor on this node."""
    path = monitor_config_path(gcs_address)
    if path is None:
        return [], None, ""
    try:
        import yaml
        with open(path) as f:
            config = yaml.safe_load(f)
    except (OSError, ValueError):
        return [], None, ""
    types, cap = launcher_node_types(config)
    return types, cap, path


def monitor_config_path(gcs_address: str) -> str | None:
    """The autoscaling config of the monitor process serving `gcs_address`, if it runs on this node."""
    import psutil
    for proc in psutil.process_iter(["cmdline"]):
        args = proc.info.get("cmdline") or []
        if not any(a.endswith(os.path.join("autoscaler", "_private", "monitor.py")) for a in args):
            continue
        flags = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
        if flags.get("gcs-address") == gcs_address and flags.get("autoscaling-config"):
            return os.path.expanduser(flags["autoscaling-config"])
    return None


def launcher_node_types(config: dict) -> tuple[list[NodeType], int | None]:
    """A cluster-launcher config's worker node types (not the head's) and its cap on worker nodes."""
    if not isinstance(config, dict) or not isinstance(config.get("available_node_types"), dict):
        return [], None
    head = config.get("head_node_type")
    types = []
    for name, spec in config["available_node_types"].items():
        if name == head or not isinstance(spec, dict):
            continue
        resources = spec.get("resources") or {}
        if isinstance(resources, str):  # the launcher also takes resources as a JSON string
            resources = json.loads(resources)
        types.append(NodeType(name, {k: float(v) for k, v in resources.items()}, int(spec.get("max_workers", 0))))
    cap = config.get("max_workers")
    return types, int(cap) if cap is not None else None
