"""raycf.cluster: the resources a sweep is sized for on a cluster that can grow, from the autoscaler's node types
(hand-computed values; tests/test_autoscaling.py runs sweeps on a real local autoscaling cluster)."""
import sys
from pathlib import Path

import pytest
import yaml

from raycf.cluster import ClusterView, NodeType, launcher_node_types, most_of
from raycf.errors import ConfigError
from raycf.sweep.driver import fit_resources, node_problem
from tests.test_sweep import load, small

REPO = Path(__file__).resolve().parents[1]
AWS = yaml.safe_load((REPO / "clusters" / "aws.yaml").read_text())


def test_the_launcher_yaml_gives_its_worker_node_types_and_its_cap():
    types, cap = launcher_node_types(AWS)
    assert types == [NodeType("ray.worker.gpu", {"CPU": 4.0, "GPU": 1.0}, 4),
                     NodeType("ray.worker.gpu_spot", {"CPU": 4.0, "GPU": 1.0}, 0)]
    assert cap == 10
    assert launcher_node_types({"available_node_types": {"w": {"resources": '{"CPU": 2}', "max_workers": 3}},
                                "head_node_type": "h"}) == ([NodeType("w", {"CPU": 2.0}, 3)], None)
    assert launcher_node_types({"provider": {}}) == ([], None)


def test_an_empty_aws_cluster_is_sized_for_four_gpu_workers():
    types, cap = launcher_node_types(AWS)
    seen = ClusterView(now={"CPU": 0.0}, head={"CPU": 0.0}, nodes=({"CPU": 0.0},), types=tuple(types),
                       max_workers=cap, source="f.yaml")
    assert seen.grows and seen.most() == {"CPU": 16.0, "GPU": 4.0}
    assert seen.largest_node("CPU") == 4.0 and seen.largest_node("GPU") == 1.0
    assert seen.describe() == ("autoscaling cluster: 0 CPU now, up to 16 CPU + 4 GPU (ray.worker.gpu 4 CPU + 1 GPU "
                               "x 4, at most 10 worker nodes; from f.yaml); the sweep is sized for the grown cluster")
    # the clusters/README.md sweep: one worker of 3 CPUs and a GPU, a 0.1 CPU trial driver -> 4 trials at once
    cfg = load(small(Path("/tmp"), **{"resources.workers": 1, "resources.cpus_per_worker": 3,
                                      "resources.gpus_per_worker": 1}))
    fitted, fits = fit_resources(cfg, cfg.sweep, seen.most())
    assert fits == 4 and fitted.resources.cpus_per_worker == 3
    node_problem(fitted, seen)  # a worker fits a node
    too_big = load(small(Path("/tmp"), **{"resources.workers": 1, "resources.cpus_per_worker": 6}))
    with pytest.raises(ConfigError) as e:
        node_problem(too_big, seen)
    assert e.value.problems == ["resources.cpus_per_worker: one worker needs 6 CPU, the largest node of this cluster "
                                "has 4 (node types from f.yaml); lower resources.cpus_per_worker or add larger nodes"]


def test_the_richest_node_types_first_within_the_cap_on_worker_nodes():
    types = [NodeType("small", {"CPU": 4.0}, 5), NodeType("big", {"CPU": 8.0}, 5), NodeType("any", {"CPU": 2.0}, -1)]
    assert most_of(types, "CPU", 6) == 5 * 8 + 1 * 4
    assert most_of(types, "CPU", 12) == 5 * 8 + 5 * 4 + 2 * 2
    assert most_of(types, "GPU", 6) == 0
    # what is there now counts when it is more (a node the autoscaler does not manage)
    seen = ClusterView(now={"CPU": 50.0}, head={"CPU": 2.0}, types=tuple(types), max_workers=1)
    assert seen.most()["CPU"] == 50.0
    assert ClusterView(now={"CPU": 2.0}, head={"CPU": 2.0}, types=tuple(types), max_workers=1).most()["CPU"] == 10.0


def test_a_cluster_without_node_types_is_what_it_holds_now():
    seen = ClusterView(now={"CPU": 3.0, "GPU": 0.0}, head={"CPU": 3.0}, nodes=({"CPU": 3.0},))
    assert not seen.grows and seen.most() == {"CPU": 3.0, "GPU": 0.0}
    assert seen.describe() == "cluster: 3 CPU (no autoscaler node types seen)"
    # two workers of 2 CPUs on a 3-CPU node: the total says no (preflight's line), not node_problem
    node_problem(load(small(Path("/tmp"), **{"resources.cpus_per_worker": 2})), seen)


def test_the_local_cluster_keeps_the_launcher_yaml_node_types_scaled_down():
    sys.path.insert(0, str(REPO / "scripts"))
    import local_cluster
    config = local_cluster.fake_config(AWS, gcs_address="10.0.0.1:7000")
    assert config["provider"]["module"] == "local_cluster.LosableNodeProvider"
    assert config["provider"]["gcs_address"] == "10.0.0.1:7000"
    assert config["available_node_types"] == {
        "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
        "ray.worker.gpu": {"resources": {"CPU": 1.0}, "node_config": {}, "min_workers": 0, "max_workers": 2},
        "ray.worker.gpu_spot": {"resources": {"CPU": 1.0}, "node_config": {}, "min_workers": 0, "max_workers": 0}}
    assert (config["max_workers"], config["idle_timeout_minutes"]) == (2, 0.1)
    # what raycf reads back from that file is the scaled cluster: 2 nodes of 1 CPU
    types, cap = launcher_node_types(config)
    assert ClusterView(now={}, head={"CPU": 0.0}, types=tuple(types), max_workers=cap).most() == {"CPU": 2.0,
                                                                                                  "GPU": 0.0}
