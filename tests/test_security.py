"""What raycf never does without being told: run a model folder's own code, unpickle weights, or write a
secret (environment tokens, tracking-URI passwords) into MLflow, artifacts, the run folder or its messages.

    python -m pytest tests/test_security.py            # the slow test runs a real tiny trial (Ray + MLflow)
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from raycf import config
from raycf.config import ConfigError
from raycf.errors import ModelError
from raycf.models.load import load_model
from raycf.models.resolve import resolve_model_dir
from raycf.redact import redact_uri
from raycf.trial import checkpoint as checkpoint
from raycf.trial import preflight as preflight
from raycf.trial import run as trial_run

ROOT = Path(__file__).resolve().parents[1]
EVIL = '''import os
from pathlib import Path
from transformers import LlamaForCausalLM
Path(os.environ["RAYCF_TEST_MARKER"]).write_text("custom code ran")


class EvilForCausalLM(LlamaForCausalLM):
    pass
'''


@pytest.fixture
def tiny(cache_dir, tmp_path):
    """A copy of the tiny-causal folder to spoil."""
    folder = tmp_path / "model"
    shutil.copytree(resolve_model_dir("tiny-causal"), folder)
    return folder


def cfg_for(folder, **model):
    return config.from_dict({"model": {"name": str(folder), **model}, "finetune": {"lora_rank": 4},
                             "probes": {"suites": ["knowledge"]}, "resources": {"workers": 1}})


def assert_refused(folder, problem: str) -> None:
    """check() names the folder's one problem, and neither load path loads it: load_model with its defaults
    (both flags False) and a trial's load_base with a default config."""
    with pytest.raises(ConfigError) as e:
        preflight.check(cfg_for(folder), build=False)
    assert e.value.problems == [problem]
    for load in (lambda: load_model(folder), lambda: checkpoint.load_base(cfg_for(folder), folder)):
        with pytest.raises(ModelError) as m:
            load()
        assert str(m.value) == problem


def test_remote_code_runs_only_with_the_flag(tiny, tmp_path, monkeypatch):
    from transformers import dynamic_module_utils
    monkeypatch.setattr(dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "hf_modules"))
    marker = tmp_path / "marker"
    monkeypatch.setenv("RAYCF_TEST_MARKER", str(marker))
    cfg_json = json.loads((tiny / "config.json").read_text())
    cfg_json["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (tiny / "config.json").write_text(json.dumps(cfg_json))
    (tiny / "modeling_evil.py").write_text(EVIL)

    assert_refused(tiny, f"model.name: {tiny}/config.json: auto_map asks to run the folder's own code "
                         f"(modeling_evil.py); raycf runs no model code unless model.trust_remote_code=true "
                         f"(raycf.probe: --trust-remote-code), for a folder you trust")
    assert not marker.exists()

    allowed = cfg_for(tiny, trust_remote_code=True)
    preflight.check(allowed, build=False)
    model, _ = checkpoint.load_base(allowed, tiny)
    assert type(model).__name__ == "EvilForCausalLM" and marker.read_text() == "custom code ran"


def test_pickle_weights_load_only_when_allowed(tiny):
    import torch
    from safetensors.torch import load_file
    weights = load_file(tiny / "model.safetensors")
    (tiny / "model.safetensors").unlink()
    torch.save(weights, tiny / "pytorch_model.bin")

    assert_refused(tiny, f"model.name: {tiny}: holds only pickle weights (pytorch_model.bin), which can run "
                         f"code when loaded; save them as safetensors (save_pretrained) or set "
                         f"model.allow_pickle=true (raycf.probe: --allow-pickle) for a folder you trust")

    allowed = cfg_for(tiny, allow_pickle=True)
    preflight.check(allowed, build=False)
    model, _ = checkpoint.load_base(allowed, tiny)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights.items()) and len(weights) == 20


def test_safetensors_win_over_pickle_in_the_same_folder(tiny):
    """A folder with both loads the safetensors (no unpickling), flag or not: a broken .bin proves it."""
    (tiny / "pytorch_model.bin").write_bytes(b"not a pickle")
    preflight.check(cfg_for(tiny), build=False)
    load_model(tiny)


URI = "http://alice:s3cret-PASS@127.0.0.1:{port}"


def test_tracking_uri_password_is_redacted_in_params_yaml_and_messages():
    cfg = config.from_dict({"tracking": {"uri": URI.format(port=5000)}})
    assert cfg.tracking.uri == URI.format(port=5000)  # the run still needs it
    assert config.flat_params(cfg)["tracking.uri"] == "http://alice:***@127.0.0.1:5000"
    assert "s3cret" not in config.to_yaml(cfg) and "alice:***@127.0.0.1:5000" in config.to_yaml(cfg)
    assert redact_uri("https://tok3n@host/x") == "https://***@host/x"
    assert redact_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def test_tracking_uri_credentials_reach_the_server_as_basic_auth_only():
    """check_reachable sends the URI's user and password as an Authorization header (not in the path), and a
    server that refuses them gives a message without the password."""
    from raycf import tracking
    seen = []

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            seen.append((self.path, self.headers.get("Authorization")))
            ok = self.headers.get("Authorization") == "Basic " + base64.b64encode(b"alice:s3cret-PASS").decode()
            self.send_response(200 if ok else 401)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        tracking.check_reachable(URI.format(port=port))
        with pytest.raises(ConnectionError) as e:
            tracking.check_reachable(URI.format(port=port).replace("s3cret-PASS", "wrong-PASS"))
    finally:
        server.shutdown()
    assert seen[0] == ("/health", "Basic " + base64.b64encode(b"alice:s3cret-PASS").decode())
    assert str(e.value) == (f"tracking.uri http://alice:***@127.0.0.1:{port} does not answer (HTTPError); start the "
                            f"server (scripts/mlflow_server.sh) or fix tracking.uri")


def test_trial_cli_never_prints_the_tracking_password(cache_dir):
    r = subprocess.run([sys.executable, "-m", "raycf.trial", "--space", "tests/bad_inputs/base.yaml",
                        "--set", f"tracking.uri={URI.format(port=9)}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=180, env={**os.environ, "RAYCF_CACHE": cache_dir})
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: tracking.uri http://alice:***@127.0.0.1:9 does not answer (URLError); start "
                                "the server (scripts/mlflow_server.sh) or fix tracking.uri")
    assert "uri: http://alice:***@127.0.0.1:9" in r.stdout  # the resolved config, printed before the run
    assert "s3cret" not in r.stdout + r.stderr


SECRETS = {"HF_TOKEN": "hf_FAKEtokenRAYCF0123456789abcdef",
           "AWS_SECRET_ACCESS_KEY": "FAKEawsSecretRAYCF/0123456789+abcdefXYZ",
           "MLFLOW_TRACKING_PASSWORD": "FAKEmlflowPasswordRAYCF42",
           "WANDB_API_KEY": "FAKEwandbKeyRAYCF0123456789"}


@pytest.mark.slow
def test_environment_secrets_never_reach_mlflow_or_the_run_folder(cache_dir, tmp_path, monkeypatch):
    """A real one-worker trial on a stage of the user's own (data.sources), with fake tokens in the
    environment the driver and the Ray workers share: no byte of any token lands in the MLflow store, its
    artifacts, or the run folder (Ray results, stage cache, configs)."""
    import ray
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # MLflow puts a sqlite store's artifacts in ./mlruns
    data = ROOT / "tests" / "bad_inputs"
    cfg = config.from_dict({
        "name": "secrets", "model": {"name": "tiny-causal"}, "stages": ["my_stage"],
        "data": {"sources": {"my_stage": {"train": str(data / "ok_stage.train.jsonl"),
                                          "eval": str(data / "ok_stage.eval.jsonl")}}},
        "finetune": {"lora_rank": 4}, "optim": {"steps_per_stage": 2, "batch_size": 2},
        "probes": {"suites": ["tasks"], "limit": 2, "max_new_tokens": 4},
        "resources": {"workers": 1, "cpus_per_worker": 1, "strategy": "ddp"},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "secrets"},
        "storage_path": str(tmp_path / "runs")})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # workers inherit the planted env
    try:
        final = trial_run.run(cfg)
    finally:
        ray.shutdown()
    assert final["stage"] == 1
    from raycf import tracking
    c = tracking.client(cfg.tracking.uri)
    (run,) = c.search_runs([c.get_experiment_by_name("secrets").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["data.sources.my_stage.train"] == str(data / "ok_stage.train.jsonl")
    learned = c.get_metric_history(run.info.run_id, "probe/my_stage")
    assert sorted(m.step for m in learned) == [0, 1]  # the stage of one's own is probed on its eval rows

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.name for p in files}  # the search covers the store, its artifacts, Ray results and the cache
    assert {"mlflow.db", "accuracy_matrix.csv", "adapter_model.safetensors"} <= names
    assert any(n.startswith("secrets-trial-") and n.endswith(".yaml") for n in names)
    db = (tmp_path / "mlflow.db").read_bytes()
    assert b"data.sources.my_stage.train" in db and b"probe/my_stage" in db  # the search reads real bytes
    leaks = [(str(p.relative_to(tmp_path)), key) for p in files for key, value in SECRETS.items()
             if value.encode() in p.read_bytes()]
    assert leaks == []
