"""Every file in clusters/ is checked offline, in seconds; a new file is picked up by the glob.

    python -m pytest tests/test_clusters.py -q

Ray cluster-launcher YAMLs (a mapping with `provider`):
  - the schema shipped in the installed ray (ray/autoscaler/ray-schema.json, jsonschema draft-07,
    additionalProperties false), on the file as written;
  - Ray's own `prepare_config` (merges the provider's defaults.yaml, setup commands, docker checks, per-type
    min/max workers) then `validate_config` (the schema again on the merged config, head type, sum of
    min_workers), with sockets disabled to prove they stay offline. That is the strongest offline check:
    the next step of `ray up` (`_bootstrap_config`) imports the provider SDK (boto3 / googleapiclient,
    not installed here) and calls the cloud (key pairs, security groups, instance types);
  - what the schema leaves open (provider keys, node_config keys, commands) by hand: allowed keys per
    provider, head advertises no CPU, token auth and the loopback dashboard in the start commands.
KubeRay manifests (documents with apiVersion/kind): no CRD schema ships with ray, so a small hand-written
structure of the allowed keys for every field these files use (the names are KubeRay's CRD and Kubernetes'
core API) catches a typo at any level; rayStartParams are checked against `ray start`'s own options.
All files: nothing binds the wildcard address or opens a port publicly, no credentials, every
`--space search_spaces/...` exists and every `python -m raycf.sweep ... --set k=v` command resolves through
raycf.config.
"""
from __future__ import annotations

import copy
import difflib
import functools
import json
import re
import shlex
import socket
import warnings
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTERS = REPO / "clusters"
FILES = sorted(p for p in CLUSTERS.iterdir() if p.is_file())
YAMLS = [p for p in FILES if p.suffix in (".yaml", ".yml")]


def _docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


LAUNCHERS = [p for p in YAMLS if all(isinstance(d, dict) and "provider" in d for d in _docs(p))]
MANIFESTS = [p for p in YAMLS if all(isinstance(d, dict) and "apiVersion" in d for d in _docs(p))]
ids = [p.name for p in FILES]


def test_every_yaml_is_a_launcher_config_or_a_manifest():
    assert sorted(LAUNCHERS + MANIFESTS) == sorted(YAMLS)
    assert {p.name for p in LAUNCHERS} >= {"aws.yaml", "gcp.yaml"}
    assert {p.name for p in MANIFESTS} >= {"kuberay-raycluster.yaml", "kuberay-rayjob.yaml"}


# ----------------------------------------------------------------------------- Ray cluster launcher

def _schema() -> dict:
    import ray.autoscaler
    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def ray_validate(cfg: dict) -> dict:
    """Ray's own offline checks, as `ray up` runs them before it contacts the cloud; the prepared config."""
    from ray.autoscaler._private.util import prepare_config, validate_config
    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


# what ray-schema.json leaves open (provider: additionalProperties true; node_config: any object)
PROVIDER_KEYS = {
    "aws": {"type", "region", "availability_zone", "cache_stopped_nodes", "security_group", "use_internal_ips",
            "key_pair", "use_external_head_ip", "cloudwatch"},
    "gcp": {"type", "region", "availability_zone", "project_id", "use_internal_ips"},
}
NODE_CONFIG_KEYS = {  # EC2 RunInstances / GCE instances.insert fields these files may use
    "aws": {"InstanceType", "ImageId", "BlockDeviceMappings", "InstanceMarketOptions", "KeyName", "SubnetIds",
            "SecurityGroupIds", "IamInstanceProfile", "TagSpecifications", "Placement"},
    "gcp": {"machineType", "disks", "metadata", "scheduling", "guestAccelerators", "serviceAccounts",
            "networkInterfaces", "labels", "tags"},
}


def _unknown(keys, allowed: set, where: str) -> list[str]:
    out = []
    for k in keys:
        if k not in allowed:
            close = difflib.get_close_matches(str(k), sorted(allowed), n=1)
            out.append(f"{where}.{k}: unknown key" + (f"; did you mean {close[0]!r}?" if close else ""))
    return out


def launcher_problems(cfg: dict) -> list[str]:
    """raycf's rules for a launcher config, beyond Ray's schema. One line per problem."""
    problems = []
    ptype = cfg["provider"]["type"]
    problems += _unknown(cfg["provider"], PROVIDER_KEYS.get(ptype, set()), "provider")
    if cfg["provider"].get("security_group", {}).get("IpPermissions"):
        problems.append("provider.security_group.IpPermissions: adds inbound rules; only Ray's defaults (SSH) allowed")
    for cred in ("aws_credentials", "gcp_credentials"):
        if cred in cfg["provider"]:
            problems.append(f"provider.{cred}: credentials do not belong in a cluster file")
    types = cfg["available_node_types"]
    head = cfg["head_node_type"]
    for name, nt in types.items():
        problems += _unknown(nt["node_config"], NODE_CONFIG_KEYS.get(ptype, set()), f"{name}.node_config")
    if types[head]["resources"].get("CPU") != 0 or types[head]["resources"].get("GPU", 0):
        problems.append(f"{head}.resources: the head advertises CPU 0 and no GPU (runs the driver, no trial)")
    workers = {n: t for n, t in types.items() if n != head}
    gpu = {n: t for n, t in workers.items() if t["resources"].get("GPU", 0) >= 1}
    if not gpu:
        problems.append("available_node_types: no GPU worker type")
    for n, t in workers.items():
        if t.get("min_workers", 0) != 0:
            problems.append(f"{n}.min_workers: must be 0 (autoscale from zero)")
    if not any(_is_spot(t["node_config"]) for t in gpu.values()):
        problems.append("available_node_types: no spot / preemptible GPU worker type")
    if not isinstance(cfg.get("idle_timeout_minutes"), (int, float)):
        problems.append("idle_timeout_minutes: set it, idle GPU nodes cost money")
    head_start = " ".join(cfg["head_start_ray_commands"])
    worker_start = " ".join(cfg["worker_start_ray_commands"])
    for where, cmd in (("head_start_ray_commands", head_start), ("worker_start_ray_commands", worker_start)):
        for need in ("RAY_AUTH_MODE=token", "MLFLOW_TRACKING_URI="):
            if need not in cmd:
                problems.append(f"{where}: missing {need}")
    if "--dashboard-host=127.0.0.1" not in head_start:
        problems.append("head_start_ray_commands: ray start --head needs --dashboard-host=127.0.0.1")
    if cfg.get("file_mounts", {}).get("~/.ray/auth_token") != "~/.ray/auth_token":
        problems.append("file_mounts: copy ~/.ray/auth_token to every node (token auth)")
    return problems


def _is_spot(node_config: dict) -> bool:
    market = node_config.get("InstanceMarketOptions", {}).get("MarketType")
    sched = node_config.get("scheduling", {})
    if isinstance(sched, list):
        sched = {k: v for item in sched for k, v in item.items()}
    return market == "spot" or sched.get("provisioningModel") == "SPOT" or sched.get("preemptible") is True


@pytest.mark.parametrize("path", LAUNCHERS, ids=[p.name for p in LAUNCHERS])
def test_launcher_config_matches_rays_schema(path):
    errors = sorted(jsonschema.Draft7Validator(_schema()).iter_errors(_docs(path)[0]), key=str)
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)


@pytest.mark.parametrize("path", LAUNCHERS, ids=[p.name for p in LAUNCHERS])
def test_launcher_config_passes_rays_prepare_and_validate_offline(path, offline):
    prepared = ray_validate(_docs(path)[0])
    head = prepared["head_node_type"]
    assert prepared["available_node_types"][head]["max_workers"] == 0
    assert prepared["head_setup_commands"][-1].startswith("pip install -q -e ~/raycf")
    assert launcher_problems(prepared) == []


@pytest.mark.parametrize("path", LAUNCHERS, ids=[p.name for p in LAUNCHERS])
@pytest.mark.parametrize("typo, message", [
    ("max_worker", "'max_worker' was unexpected"), ("min_worker", "'min_worker' was unexpected"),
    ("resource", "'resources' is a required property"), ("idle_timeout_minute", "'idle_timeout_minute' was unexpected"),
    ("head_node_typ", "'head_node_typ' was unexpected"), ("setup_command", "'setup_command' was unexpected"),
    ("docker.container_nam", "Must provide a container & image name"),  # prepare_config's docker check
])
def test_a_typo_in_a_launcher_key_fails_rays_validation(path, typo, message):
    cfg = _docs(path)[0]
    worker = next(n for n in cfg["available_node_types"] if n != cfg["head_node_type"])
    if typo in ("max_worker", "min_worker", "resource"):
        node = cfg["available_node_types"][worker]
        node[typo] = node.pop(typo + "s")
    elif typo == "docker.container_nam":
        cfg["docker"]["container_nam"] = cfg["docker"].pop("container_name")
    else:
        cfg[typo] = cfg.get(typo + ("s" if typo.endswith(("minute", "command")) else "e"), 3)
    with pytest.raises((jsonschema.ValidationError, AssertionError)) as err:
        ray_validate(cfg)
    assert message in str(err.value)


@pytest.mark.parametrize("path", LAUNCHERS, ids=[p.name for p in LAUNCHERS])
def test_a_typo_where_rays_schema_is_open_fails_our_checks(path):
    cfg = _docs(path)[0]
    cfg["provider"]["regoin"] = cfg["provider"]["region"]
    worker = next(n for n in cfg["available_node_types"] if n != cfg["head_node_type"])
    nc = cfg["available_node_types"][worker]["node_config"]
    first = next(iter(nc))
    nc[first[:-1]] = nc.pop(first)
    ray_validate(cfg)  # Ray accepts both
    problems = launcher_problems(cfg)
    assert any(p.startswith("provider.regoin: unknown key; did you mean 'region'") for p in problems), problems
    assert any(p.startswith(f"{worker}.node_config.{first[:-1]}: unknown key") for p in problems), problems


# ----------------------------------------------------------------------------- KubeRay manifests

ANY = object()   # any value (not checked further)
MAP = object()   # a mapping with free keys (labels, resource quantities)


def _list(spec):
    return ("list", spec)


METADATA = {"name": ANY, "namespace": ANY, "labels": MAP, "annotations": MAP}
ENV = {"name": ANY, "value": ANY,
       "valueFrom": {"fieldRef": {"fieldPath": ANY}, "secretKeyRef": {"name": ANY, "key": ANY},
                     "configMapKeyRef": {"name": ANY, "key": ANY}}}
PROBE = {"httpGet": {"path": ANY, "port": ANY}, "exec": {"command": ANY}, "tcpSocket": {"port": ANY},
         "initialDelaySeconds": ANY, "periodSeconds": ANY, "timeoutSeconds": ANY, "failureThreshold": ANY,
         "successThreshold": ANY}
CONTAINER = {"name": ANY, "image": ANY, "imagePullPolicy": ANY, "command": ANY, "args": ANY, "workingDir": ANY,
             "env": _list(ENV), "envFrom": ANY,
             "ports": _list({"name": ANY, "containerPort": ANY, "protocol": ANY}),
             "resources": {"requests": MAP, "limits": MAP},
             "volumeMounts": _list({"name": ANY, "mountPath": ANY, "readOnly": ANY, "subPath": ANY}),
             "readinessProbe": PROBE, "livenessProbe": PROBE, "startupProbe": PROBE, "securityContext": ANY,
             "lifecycle": ANY}
VOLUME = {"name": ANY, "persistentVolumeClaim": {"claimName": ANY, "readOnly": ANY},
          "emptyDir": {"medium": ANY, "sizeLimit": ANY}, "configMap": ANY, "secret": ANY}
POD_TEMPLATE = {"metadata": METADATA,
                "spec": {"containers": _list(CONTAINER), "initContainers": _list(CONTAINER),
                         "volumes": _list(VOLUME),
                         "tolerations": _list({"key": ANY, "operator": ANY, "value": ANY, "effect": ANY}),
                         "nodeSelector": MAP, "affinity": ANY, "serviceAccountName": ANY, "securityContext": ANY,
                         "priorityClassName": ANY, "terminationGracePeriodSeconds": ANY, "restartPolicy": ANY}}
RAY_START_PARAMS = "ray-start-params"
HEAD_GROUP = {"serviceType": ANY, "headService": ANY, "enableIngress": ANY, "rayStartParams": RAY_START_PARAMS,
              "template": POD_TEMPLATE}
WORKER_GROUP = {"groupName": ANY, "replicas": ANY, "minReplicas": ANY, "maxReplicas": ANY, "numOfHosts": ANY,
                "idleTimeoutSeconds": ANY, "suspend": ANY, "rayStartParams": RAY_START_PARAMS,
                "template": POD_TEMPLATE, "scaleStrategy": {"workersToDelete": ANY}}
RAYCLUSTER_SPEC = {
    "rayVersion": ANY, "enableInTreeAutoscaling": ANY, "suspend": ANY, "managedBy": ANY,
    "headServiceAnnotations": MAP, "gcsFaultToleranceOptions": ANY, "upgradeStrategy": ANY,
    "authOptions": {"mode": ANY, "secretName": ANY, "enableK8sTokenAuth": ANY},
    "autoscalerOptions": {"resources": ANY, "image": ANY, "imagePullPolicy": ANY, "env": _list(ENV),
                          "envFrom": ANY, "volumeMounts": ANY, "securityContext": ANY,
                          "idleTimeoutSeconds": ANY, "upscalingMode": ANY, "version": ANY},
    "headGroupSpec": HEAD_GROUP, "workerGroupSpecs": _list(WORKER_GROUP)}
RAYJOB_SPEC = {
    "entrypoint": ANY, "runtimeEnvYAML": ANY, "rayClusterSpec": RAYCLUSTER_SPEC, "clusterSelector": MAP,
    "shutdownAfterJobFinishes": ANY, "ttlSecondsAfterFinished": ANY, "activeDeadlineSeconds": ANY,
    "backoffLimit": ANY, "submitterConfig": {"backoffLimit": ANY}, "submitterPodTemplate": POD_TEMPLATE,
    "submissionMode": ANY, "entrypointNumCpus": ANY, "entrypointNumGpus": ANY, "entrypointResources": ANY,
    "metadata": MAP, "jobId": ANY, "suspend": ANY, "deletionStrategy": ANY, "managedBy": ANY}
KINDS = {
    ("ray.io/v1", "RayCluster"): {"spec": RAYCLUSTER_SPEC},
    ("ray.io/v1", "RayJob"): {"spec": RAYJOB_SPEC},
    ("v1", "PersistentVolumeClaim"): {"spec": {"accessModes": ANY, "storageClassName": ANY,
                                               "resources": {"requests": MAP}, "volumeMode": ANY}},
    ("v1", "Service"): {"spec": {"type": ANY, "selector": MAP,
                                 "ports": _list({"name": ANY, "port": ANY, "targetPort": ANY, "protocol": ANY})}},
    ("apps/v1", "Deployment"): {"spec": {"replicas": ANY, "strategy": {"type": ANY},
                                         "selector": {"matchLabels": MAP}, "template": POD_TEMPLATE}},
}
RUNTIME_ENV_KEYS = {"working_dir", "py_modules", "pip", "uv", "conda", "env_vars", "excludes", "config"}


@functools.lru_cache(maxsize=1)
def _ray_start_options() -> frozenset[str]:
    """`ray start`'s own long options (rayStartParams keys are these without the dashes)."""
    with warnings.catch_warnings():  # the CLI module imports Serve, which warns about pydantic
        warnings.simplefilter("ignore")
        from ray.scripts.scripts import start
    return frozenset(opt[2:] for param in start.params for opt in param.opts if opt.startswith("--"))


def structure_problems(obj, spec, where: str) -> list[str]:
    """Keys of `obj` not allowed by `spec`, at every level, with the path and a did-you-mean."""
    if spec is ANY:
        return []
    if spec is MAP:
        return [] if isinstance(obj, dict) else [f"{where}: expected a mapping"]
    if spec == RAY_START_PARAMS:
        if not isinstance(obj, dict):
            return [f"{where}: expected a mapping"]
        return _unknown(obj, _ray_start_options(), where)
    if isinstance(spec, tuple):
        if not isinstance(obj, list):
            return [f"{where}: expected a list"]
        return [p for i, item in enumerate(obj) for p in structure_problems(item, spec[1], f"{where}[{i}]")]
    if not isinstance(obj, dict):
        return [f"{where}: expected a mapping"]
    problems = _unknown(obj, set(spec), where)
    for k, v in obj.items():
        if k in spec:
            problems += structure_problems(v, spec[k], f"{where}.{k}")
    return problems


def manifest_problems(doc: dict) -> list[str]:
    key = (doc.get("apiVersion"), doc.get("kind"))
    where = f"{key[1]}/{doc.get('metadata', {}).get('name')}"
    if key not in KINDS:
        return [f"{where}: apiVersion/kind {key} not expected in clusters/"]
    spec = {"apiVersion": ANY, "kind": ANY, "metadata": METADATA, **KINDS[key]}
    return structure_problems(doc, spec, where)


def _ray_clusters(path: Path) -> list[tuple[str, dict]]:
    """(where, RayClusterSpec) of every RayCluster and RayJob in a file."""
    out = []
    for d in _docs(path):
        if d["kind"] == "RayCluster":
            out.append((f"RayCluster/{d['metadata']['name']}", d["spec"]))
        elif d["kind"] == "RayJob":
            out.append((f"RayJob/{d['metadata']['name']}.rayClusterSpec", d["spec"]["rayClusterSpec"]))
    return out


def _ray_containers(spec: dict):
    yield "head", spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    for g in spec["workerGroupSpecs"]:
        yield g["groupName"], g["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_manifest_keys_are_the_known_ones(path):
    problems = [p for d in _docs(path) for p in manifest_problems(d)]
    assert problems == []


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_ray_cluster_in_manifest_autoscales_gpu_workers_from_zero(path):
    clusters = _ray_clusters(path)
    assert clusters, f"{path.name}: no RayCluster or RayJob"
    for where, spec in clusters:
        assert spec["enableInTreeAutoscaling"] is True, where
        assert spec["authOptions"]["mode"] == "token", where
        assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0", f"{where}: the head runs no trial"
        assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP", where
        gpu_groups = 0
        for g in spec["workerGroupSpecs"]:
            assert g["minReplicas"] == 0 and g["maxReplicas"] >= 1, f"{where}/{g['groupName']}"
            assert g["minReplicas"] <= g.get("replicas", 0) <= g["maxReplicas"], f"{where}/{g['groupName']}"
            res = g["template"]["spec"]["containers"][0]["resources"]
            if int(res.get("limits", {}).get("nvidia.com/gpu", 0)) >= 1:
                assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"], where
                gpu_groups += 1
        assert gpu_groups >= 1, f"{where}: no worker group with nvidia.com/gpu limits"
        for group, c in _ray_containers(spec):
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            assert env.get("MLFLOW_TRACKING_URI", "").startswith("http://raycf-mlflow:"), f"{where}/{group}"
            assert "RAYCF_CACHE" in env, f"{where}/{group}"
            assert any(m["mountPath"] == "/mnt/raycf" for m in c["volumeMounts"]), f"{where}/{group}"
            assert c["image"].startswith("rayproject/ray:") and c["image"].split(":")[1].startswith(spec["rayVersion"])


def test_rayjob_runs_the_sweep_on_shared_storage():
    docs = _docs(CLUSTERS / "kuberay-rayjob.yaml")
    (job,) = [d for d in docs if d["kind"] == "RayJob"]
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "raycf.sweep"]
    assert any(a.startswith("storage_path=/mnt/raycf/") for a in argv)
    renv = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert set(renv) <= RUNTIME_ENV_KEYS, set(renv) - RUNTIME_ENV_KEYS
    assert "working_dir" in renv and "pip" in renv


def test_raycluster_file_holds_the_shared_storage_and_mlflow():
    docs = _docs(CLUSTERS / "kuberay-raycluster.yaml")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("PersistentVolumeClaim", "raycf-shared"), ("Deployment", "raycf-mlflow"),
            ("Service", "raycf-mlflow"), ("RayCluster", "raycf")} <= kinds
    shared = [d for d in docs if d["metadata"].get("labels", {}).get("raycf.io/part") == "shared"]
    assert {d["kind"] for d in shared} == {"PersistentVolumeClaim", "Deployment", "Service"}
    (pvc,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize("typo, where", [
    (("spec", "enableInTreeAutoscale"), "spec.enableInTreeAutoscale"),
    (("spec", "workerGroupSpecs", 0, "minReplica"), "spec.workerGroupSpecs[0].minReplica"),
    (("spec", "workerGroupSpecs", 0, "template", "spec", "containers", 0, "resource"),
     "spec.workerGroupSpecs[0].template.spec.containers[0].resource"),
    (("spec", "headGroupSpec", "rayStartParams", "num-cpu"), "spec.headGroupSpec.rayStartParams.num-cpu"),
    (("spec", "authOptions", "secretname"), "spec.authOptions.secretname"),
])
def test_a_typo_in_a_manifest_key_is_reported(typo, where):
    (doc,) = [d for d in _docs(CLUSTERS / "kuberay-raycluster.yaml") if d["kind"] == "RayCluster"]
    node = doc
    for k in typo[:-1]:
        node = node[k]
    bad = typo[-1]
    right = difflib.get_close_matches(bad, [str(k) for k in node], n=1, cutoff=0.6)
    node[bad] = node.pop(right[0]) if right else 1
    problems = manifest_problems(doc)
    assert [p.split(":")[0] for p in problems] == [f"RayCluster/raycf.{where}"], problems


# ----------------------------------------------------------------------------- all files

def _walk(obj, path=""):
    yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")


@pytest.mark.parametrize("path", FILES, ids=ids)
def test_nothing_binds_the_wildcard_address_or_opens_a_port_publicly(path):
    text = path.read_text()
    assert "0.0.0.0" not in text and "::/0" not in text
    assert not re.search(r"--(dashboard-)?host[= ]+(::|\[::\])", text)
    if path in YAMLS:
        for where, value in (w for d in _docs(path) for w in _walk(d)):
            key = where.rsplit(".", 1)[-1]
            if key in ("type", "serviceType") and isinstance(value, str):
                assert value not in ("LoadBalancer", "NodePort"), where
            assert key not in ("hostNetwork", "hostPort", "IpRanges", "CidrIp", "sourceRanges", "nodePort"), where
            if key == "enableIngress":
                assert value is False, where
        assert not any(d.get("kind") in ("Ingress", "Gateway", "HTTPRoute") for d in _docs(path) if "kind" in d)


def test_mlflow_server_script_binds_loopback_unless_told():
    text = (REPO / "scripts" / "mlflow_server.sh").read_text()
    assert 'HOST="${HOST:-127.0.0.1}"' in text
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in text and "--workers 1" in text


SECRET_PATTERNS = {
    "AWS access key id": r"\b(AKIA|ASIA)[0-9A-Z]{16}\b",
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "GitHub token": r"\b(ghp|gho|ghs|github_pat)_[A-Za-z0-9_]{20,}",
    "Slack token": r"\bxox[abprs]-[A-Za-z0-9-]{10,}",
    "long hex string": r"\b[0-9a-fA-F]{32,}\b",
    "long base64 string": r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{40,}={0,2}",
    "credential in a URI": r"://[^/\s:@]+:[^/\s@]+@",
    "literal Ray token": r"RAY_AUTH_TOKEN=[^$\s\"']",
}
SECRET_KEY = re.compile(r"(password|passwd|secret|token|api[_-]?key|access[_-]?key|credentials?)$", re.I)


@pytest.mark.parametrize("path", FILES, ids=ids)
def test_no_credentials_in_cluster_files(path):
    text = path.read_text()
    for what, pattern in SECRET_PATTERNS.items():
        m = re.search(pattern, text)
        assert m is None, f"{path.name}: looks like a {what}: {m.group(0)[:12]}..."
    if path not in YAMLS:
        return
    for where, value in (w for d in _docs(path) for w in _walk(d)):
        key = where.rsplit(".", 1)[-1]
        if where.startswith(".file_mounts"):
            continue  # REMOTE: LOCAL paths (the token travels as a file, never as text)
        if SECRET_KEY.search(key) and isinstance(value, (str, int)) and not isinstance(value, bool):
            pytest.fail(f"{path.name}{where}: a literal value under a credential-like key")
        if key == "env" and isinstance(value, list):
            for e in value:
                if SECRET_KEY.search(e.get("name", "")) and "value" in e:
                    pytest.fail(f"{path.name}{where}: env {e['name']} holds a literal; use valueFrom.secretKeyRef")


def _sweep_commands(path: Path) -> list[list[str]]:
    """argv of every `python -m raycf.sweep ...` in a file: shell lines ('\\' continuations joined; in a YAML
    file its comment lines, stripped of '#') and RayJob entrypoints. Prose mentions ('...') are skipped."""
    lines = path.read_text().splitlines()
    if path in YAMLS:
        lines = [re.sub(r"^\s*#\s?", "", ln) for ln in lines if ln.lstrip().startswith("#")]
    joined, buf = [], ""
    for ln in lines:
        if ln.rstrip().endswith("\\"):
            buf += ln.rstrip()[:-1] + " "
        else:
            joined.append(buf + ln)
            buf = ""
    cmds = []
    for ln in joined:
        i = ln.find("python -m raycf.sweep")
        if i >= 0:
            argv = shlex.split(re.split(r"\s#\s|`|\s&&\s|;", ln[i:])[0])
            if "..." not in argv:
                cmds.append(argv)
    if path in MANIFESTS:
        for d in _docs(path):
            if d.get("kind") == "RayJob":
                cmds.append(shlex.split(d["spec"]["entrypoint"]))
    return cmds


def test_every_sweep_command_in_clusters_resolves():
    from raycf.config import ConfigError, load, parse_overrides
    found, problems = 0, []
    for path in FILES:
        for argv in _sweep_commands(path):
            found += 1
            space = argv[argv.index("--space") + 1] if "--space" in argv else "search_spaces/default.yaml"
            sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
            if not (REPO / space).is_file():
                problems.append(f"{path.name}: --space {space} does not exist")
                continue
            try:
                cfg = load(REPO / space, parse_overrides(sets))
            except ConfigError as e:
                problems.append(f"{path.name}: {' '.join(argv)}\n  {e}")
                continue
            if cfg.storage_path != "raycf_runs" and not cfg.storage_path.startswith(("/mnt/raycf/", "s3://", "gs://")):
                problems.append(f"{path.name}: storage_path {cfg.storage_path} is neither on the shared mount "
                                f"nor in a bucket")
    assert found >= 4, f"only {found} sweep commands found in clusters/"
    assert problems == [], "\n".join(problems)
