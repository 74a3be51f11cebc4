"""Bad input, as data: each case below runs a CLI on a file from tests/bad_inputs/ (or a bad argument) and
must end it with ONE stderr line `error: <file>: <key or FILE:LINE>: <problem>; <fix>`, exit status 2, no
traceback, and no Ray started. Most run in-process (main(argv)); a handful run as real subprocesses.

    python -m pytest tests/test_bad_input.py
"""
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raycf import config
from raycf.data import sources
from raycf.config import __main__ as config_cli
from raycf.probe import __main__ as probe_cli
from raycf.sweep import __main__ as sweep_cli
from raycf.trial import __main__ as trial_cli
from raycf.trial import preflight as preflight

ROOT = Path(__file__).resolve().parents[1]
B = "tests/bad_inputs/"
MAINS = {"sweep": sweep_cli.main, "trial": trial_cli.main, "probe": probe_cli.main, "config": config_cli.main}


def dry(name):
    return ["sweep", "--space", B + name, "--dry-run"]


def probe_cli(*args):
    return ["probe", "--model", "raycf-tiny", *args]


# (case, command, substrings of the one error line). Every line names the file, where in it, and the fix.
CASES = [
    # the YAML itself
    ("malformed_yaml", dry("malformed_yaml.yaml"), ["malformed_yaml.yaml: line 4: malformed YAML", "fix the syntax"]),
    ("bad_indent", dry("bad_indent.yaml"), ["bad_indent.yaml: line 4: malformed YAML (mapping values"]),
    ("top_level_list", dry("top_level_list.yaml"),
     ["top_level_list.yaml: top level must be a mapping", "write sections"]),
    ("not_utf8_yaml", dry("not_utf8.yaml"),
     ["not_utf8.yaml: line 2: not UTF-8 text (byte 41); save the file as UTF-8"]),
    ("missing_space", dry("no_such_space.yaml"),
     ["no_such_space.yaml: file not found; give a YAML from search_spaces/"]),
    # keys and types
    ("unknown_key", dry("unknown_key.yaml"), ["unknown_key.yaml: modle: unknown key; did you mean 'model'?"]),
    ("unknown_nested_key", dry("unknown_nested_key.yaml"), ["optim.lrr: unknown key; did you mean 'lr'?"]),
    ("wrong_type_int", dry("wrong_type_int.yaml"),
     ["wrong_type_int.yaml: optim.batch_size: expected int, got str 'eight'"]),
    ("wrong_type_section", dry("wrong_type_section.yaml"), ["optim: expected a mapping, got int 3; write optim: {key"]),
    ("wrong_type_stages", dry("wrong_type_stages.yaml"), ["stages: expected list, got str 'simplification'"]),
    ("wrong_type_bool", dry("wrong_type_bool.yaml"), ["model.allow_pickle: expected bool, got str 'sure why not'"]),
    ("set_without_equals", ["sweep", "--space", B + "base.yaml", "--set", "optim.lr", "--dry-run"],
     ["--set optim.lr: expected dotted.key=value, e.g. --set optim.lr=3e-4"]),
    # values out of range
    ("negative_lr", dry("out_of_range_lr.yaml"), ["out_of_range_lr.yaml: optim.lr: must be > 0, got -0.1"]),
    ("dropout_above_1", dry("out_of_range_dropout.yaml"), ["finetune.lora_dropout: must be in [0, 1), got 1.5"]),
    ("replay_of_everything", dry("out_of_range_replay.yaml"), ["data.replay_ratio: must be in [0, 1), got 1.0"]),
    ("lora_rank_above_hidden", dry("lora_rank_too_big.yaml"),
     ["finetune.lora_rank: 100 exceeds the model's hidden size 64; use a rank <= 64"]),
    ("batch_not_multiple", dry("batch_not_multiple.yaml"),
     ["optim.batch_size: 7 must be a multiple of resources.workers x optim.grad_accum = 2"]),
    ("unknown_strategy", dry("bad_choice.yaml"), ["resources.strategy: 'zero3' is not one of fsdp, ddp"]),
    ("nothing_trains", dry("no_epochs_no_steps.yaml"), ["optim: set optim.steps_per_stage > 0 or optim.epochs > 0"]),
    # impossible resources
    ("too_many_cpus", dry("too_many_cpus.yaml"),
     ["too_many_cpus.yaml: resources: 64 workers x 1 CPU = 64 CPUs, but the cluster has", "lower resources.workers"]),
    ("too_many_gpus", dry("too_many_gpus.yaml"),
     ["resources: 2 workers x 64 GPU = 128 GPUs, but the cluster has", "set resources.gpus_per_worker=0"]),
    ("no_cpu_no_gpu", dry("no_cpu_no_gpu.yaml"),
     ["resources.cpus_per_worker: a worker needs some CPU or GPU; set it > 0"]),
    # stages and task orders
    ("duplicate_stage", dry("duplicate_stage.yaml"),
     ["stages: a task appears twice", "each stage must be a different"]),
    ("unknown_stage", dry("unknown_stage.yaml"),
     ["unknown_stage.yaml: stages[1]: unknown stage 'headlines'; did you mean 'headline'?", "data.sources.headlines"]),
    ("order_names_missing_stage", dry("orders_missing_stage.yaml"),
     ["search.stages: order 2 ['headline', 'simplifcation'] names unknown stage 'simplifcation'; did you mean"]),
    ("grid_of_stages_names_missing_stage", dry("grid_stages_missing_stage.yaml"),
     ["search.stages: order 2 ['poetry'] names unknown stage 'poetry'; known: simplification"]),
    ("all_orders_of_unknown_stage", dry("orders_of_unknown_stage.yaml"), ["stages[1]: unknown stage 'poetry'; known:"]),
    # search spaces with zero trials or bad domains
    ("zero_trials_empty_grid", dry("zero_trials_grid.yaml"),
     ["search.optim.lr: grid needs a non-empty list of values (it gives zero trials)"]),
    ("zero_trials_num_samples", dry("zero_trials_num_samples.yaml"), ["sweep.num_samples: must be >= 1, got 0"]),
    ("zero_random_orders", dry("orders_random_zero.yaml"), ["search.stages: orders must be 'all', {random: N}"]),
    ("unknown_domain", dry("unknown_domain.yaml"), ["search.optim.lr: unknown domain 'logunifrom'; did you mean"]),
    ("search_not_a_key", dry("search_not_a_key.yaml"),
     ["search.optim.lrr: not a config key; did you mean 'optim.lr'?"]),
    ("loguniform_from_zero", dry("loguniform_low_zero.yaml"),
     ["loguniform needs [low, high] with low < high and low > 0"]),
    ("sweep_unknown_key", dry("sweep_unknown_key.yaml"), ["sweep.shceduler: unknown key; did you mean 'scheduler'?"]),
    # probe tasks: names, task YAMLs and their rows
    ("unknown_probe_suite", dry("unknown_probe_task.yaml"),
     ["probes.suites: 'knowlege' is neither a task nor a category; did you mean 'knowledge'?"]),
    ("probe_rows_missing_field", dry("probe_task_missing_answer.yaml"),
     ["probes.suites[1]: ",
      "mc_missing_answer.jsonl:2: row has no field 'answer'", "row needs question, choices, answer"]),
    ("probe_rows_one_choice", dry("probe_task_one_choice.yaml"),
     ["probes.suites[1]: ", "mc_one_choice.jsonl:1: 'choices' has 1 item(s); give at least 2 choices"]),
    ("probe_rows_answer_out_of_range", dry("probe_task_answer_range.yaml"),
     ["mc_answer_range.jsonl:3: 'answer' is 2 but 'choices' has 2 items; give the 0-based index"]),
    ("task_yaml_unknown_key", dry("probe_task_unknown_key.yaml"),
     ["task_unknown_key.yaml: unknown key 'shot'; did you mean 'shots'?"]),
    ("task_yaml_malformed", dry("probe_task_malformed.yaml"), ["task_malformed.yaml: line 5: malformed YAML"]),
    ("task_yaml_unknown_metric", dry("probe_task_bad_metric.yaml"),
     ["task_bad_metric.yaml: metric 'rougeL' is not computed for generation tasks; did you mean 'rouge1'?"]),
    ("task_yaml_missing", dry("probe_task_missing.yaml"), ["no_such_task.yaml: no such task YAML; check the path"]),
    # data.sources: the user's own stage rows
    ("data_file_missing", dry("data_missing_file.yaml"),
     ["data.sources.my_stage.train: ", "no_such_rows.jsonl: no such file; check the path"]),
    ("data_file_empty", dry("data_empty.yaml"), ["rows_empty.jsonl: file is empty; write one JSON object per line"]),
    ("data_malformed_json", dry("data_malformed_json.yaml"),
     ["rows_malformed.jsonl:2: malformed JSON (Expecting ',' delimiter at column 65); write one complete JSON object"]),
    ("data_row_missing_field", dry("data_missing_field.yaml"),
     ["data.sources.my_stage.train: ", "rows_missing_output.jsonl:3: row has no field 'output'",
      "a generation row needs instruction, input, output"]),
    ("data_not_utf8", dry("data_not_utf8.yaml"),
     ["data.sources.my_stage.eval: ",
      "rows_not_utf8.jsonl:2: not UTF-8 (byte 0xe9 at column 51); save the file as UTF-8"]),
    ("data_row_not_object", dry("data_not_object.yaml"), ["rows_list.jsonl:2: a row must be a JSON object, got list"]),
    ("data_field_wrong_type", dry("data_wrong_field_type.yaml"),
     ["rows_output_number.jsonl:2: 'output' must be string(s); quote the value(s) in the JSON"]),
    ("data_csv", dry("data_bad_suffix.yaml"), ["rows.csv: unknown file type '.csv'; give a .jsonl or .parquet file"]),
    ("data_unknown_split", dry("data_unknown_split.yaml"),
     ["data.sources.my_stage.trian: unknown key; did you mean 'train'?"]),
    ("data_source_not_mapping", dry("data_source_not_mapping.yaml"),
     ["data.sources.my_stage: expected {train: FILE.jsonl, eval: FILE.jsonl}, got str"]),
    ("data_own_stage_without_eval", dry("data_custom_no_eval.yaml"),
     ["data.sources.my_stage.eval: missing; probes.suites has tasks", "give an eval file or drop tasks"]),
    ("data_row_longer_than_max_length", dry("data_over_long.yaml"),
     ["data.sources.my_stage.train: ", "rows_long.jsonl:3: example is 1073 tokens, longer than optim.max_length=128; "
      "raise optim.max_length or shorten the row"]),
    # model folders
    ("model_not_a_model", dry("model_not_a_model.yaml"),
     ["model.name: /", "tests/bad_inputs/models/not_a_model is not a model folder (no config.json); give a folder"]),
    ("model_config_json_malformed", dry("model_bad_config_json.yaml"),
     ["model.name: /", "tests/bad_inputs/models/bad_config_json/config.json: line 3: malformed JSON"]),
    ("model_without_tokenizer", dry("model_no_tokenizer.yaml"),
     ["models/no_tokenizer: no tokenizer (tokenizer.json, tokenizer.model, ...); save the model's tokenizer"]),
    ("model_tokenizer_larger_than_embeddings", dry("model_vocab_mismatch.yaml"),
     ["models/vocab_mismatch: the tokenizer has 8 tokens but the model's embedding matrix has 4 rows",
      "use the tokenizer the model was trained with"]),
    ("model_remote_code_without_flag", dry("model_remote_code.yaml"),
     ["remote_code/config.json: auto_map asks to run the folder's own code (modeling_evil.py)",
      "unless model.trust_remote_code=true"]),
    ("model_pickle_without_flag", dry("model_pickle_only.yaml"),
     ["models/pickle_only: holds only pickle weights (pytorch_model.bin)", "or set model.allow_pickle=true"]),
    ("model_without_weights", dry("model_no_weights.yaml"),
     ["models/no_weights: no weights (*.safetensors); give a folder"]),
    ("warm_start_not_a_model", dry("warm_start_not_model.yaml"),
     ["warm_start.path: /", "tests/bad_inputs/models/not_a_model is not a model folder (no config.json); give a"]),
    ("warm_start_without_path", dry("warm_start_no_path.yaml"), ["warm_start.path: required when warm_start.kind is"]),
    # the other CLIs
    ("trial_data_row_missing_field", ["trial", "--space", B + "data_missing_field.yaml"],
     ["data_missing_field.yaml: data.sources.my_stage.train: ",
      "rows_missing_output.jsonl:3: row has no field 'output'"]),
    ("trial_model_pickle", ["trial", "--space", B + "model_pickle_only.yaml"], ["holds only pickle weights"]),
    ("config_malformed_yaml", ["config", "--space", B + "malformed_yaml.yaml"], ["malformed_yaml.yaml: line 4"]),
    ("probe_unknown_task", probe_cli("--suite", "knowlege"),
     ["--suite: 'knowlege' is neither a task nor a category; did you mean 'knowledge'?"]),
    ("probe_task_one_choice", probe_cli("--suite", B + "task_one_choice.yaml"),
     ["--suite: tests/bad_inputs/mc_one_choice.jsonl:1: 'choices' has 1 item(s); give at least 2 choices"]),
    ("probe_task_answer_out_of_range", probe_cli("--suite", f"knowledge,{B}task_answer_range.yaml"),
     ["--suite: tests/bad_inputs/mc_answer_range.jsonl:3: 'answer' is 2"]),
    ("probe_model_not_a_model", ["probe", "--model", B + "models/not_a_model", "--suite", "knowledge"],
     ["--model: tests/bad_inputs/models/not_a_model is not a model folder (no config.json)"]),
    ("probe_model_remote_code", ["probe", "--model", B + "models/remote_code", "--suite", "knowledge"],
     ["--model: ", "auto_map asks to run the folder's own code", "--trust-remote-code"]),
    ("probe_model_pickle", ["probe", "--model", B + "models/pickle_only", "--suite", "knowledge"],
     ["--model: ", "holds only pickle weights", "--allow-pickle"]),
    ("probe_adapter_not_an_adapter", probe_cli("--adapter", B + "models/not_a_model", "--suite", "knowledge"),
     ["--adapter tests/bad_inputs/models/not_a_model: not a PEFT adapter folder (no adapter_config.json)"]),
]
# a handful again as real processes: exit status, stderr and no traceback as a user sees them
SUBPROCESS = ["probe_rows_one_choice", "data_row_missing_field", "model_remote_code_without_flag",
              "trial_data_row_missing_field", "probe_task_one_choice", "config_malformed_yaml"]


def error_line(stderr: str) -> str:
    lines = [x for x in stderr.splitlines() if x.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize("argv,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_ends_in_one_line_before_ray(argv, expected, capsys, monkeypatch, cache_dir):
    import ray
    monkeypatch.chdir(ROOT)  # the corpus names its files relative to the repository
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    t0 = time.perf_counter()
    rc = MAINS[argv[0]](argv[1:])
    seconds = time.perf_counter() - t0
    line = error_line(capsys.readouterr().err)
    assert rc == 2
    for part in expected:
        assert part in line
    assert not ray.is_initialized()
    assert seconds < 15, f"{seconds:.1f}s: something slow (Ray? a model build?) ran before the check"


@pytest.mark.parametrize("case", SUBPROCESS)
def test_bad_input_as_a_user_runs_it(case):
    argv, expected = next(c[1:] for c in CASES if c[0] == case)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", f"raycf.{argv[0]}", *argv[1:]], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    seconds = time.perf_counter() - t0
    assert r.returncode == 2, r.stderr[-2000:]
    line = error_line(r.stderr)
    assert all(part in line for part in expected), line
    assert "Traceback" not in r.stderr and "Started a local Ray instance" not in r.stdout + r.stderr
    assert seconds < 60


def test_debug_shows_the_traceback():
    r = subprocess.run([sys.executable, "-m", "raycf.sweep", "--space", B + "data_missing_field.yaml", "--dry-run",
                        "--debug"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "Traceback" in r.stderr and "rows_missing_output.jsonl:3: row has no field 'output'" in r.stderr


def test_the_corpus_is_what_it_claims():
    """Every bad YAML in the corpus is used by a case; the non-UTF-8 files really are not UTF-8 (an editor
    that re-encodes them would silently turn two cases into passes); the base space they vary is valid."""
    used = {a for _, argv, _ in CASES for a in argv if a.startswith(B)}
    spaces = {B + p.name for p in (ROOT / B).glob("*.yaml") if not p.name.startswith("task_") and p.name != "base.yaml"}
    assert spaces <= used, sorted(spaces - used)
    for name in ("not_utf8.yaml", "rows_not_utf8.jsonl"):
        with pytest.raises(UnicodeDecodeError):
            (ROOT / B / name).read_bytes().decode("utf-8")
    assert len(CASES) >= 40


def test_the_base_space_and_a_stage_of_ones_own_pass_the_dry_run(capsys, monkeypatch, cache_dir):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert sweep_cli.main(["--space", B + "base.yaml", "--dry-run"]) == 0
    sources = "{my_stage: {train: tests/bad_inputs/ok_stage.train.jsonl, eval: tests/bad_inputs/ok_stage.eval.jsonl}}"
    assert sweep_cli.main(["--space", B + "base.yaml", "--dry-run", "--set", "stages=[simplification, my_stage]",
                       "--set", f"data.sources={sources}"]) == 0
    out = capsys.readouterr()
    assert out.err == "" and out.out.count("space ok: 1 trials, 2 stage trainings") == 2


def test_data_sources_are_the_rows_a_trial_trains_and_probes(monkeypatch):
    """A stage of one's own: absolute paths in the config, its rows for training, its eval rows for the
    learned-task probe (generation, rouge1); a shipped stage's train file replaces only its train rows."""
    from raycf.data import load_stage
    monkeypatch.chdir(ROOT)
    train, evals = B + "ok_stage.train.jsonl", B + "ok_stage.eval.jsonl"
    cfg = config.from_dict({"stages": ["headline", "my_stage"],
                            "data": {"sources": {"my_stage": {"train": train, "eval": evals},
                                                 "headline": {"train": evals}}}})
    assert cfg.data.sources["my_stage"] == {"train": str(ROOT / train), "eval": str(ROOT / evals)}
    assert sources.stage_rows(cfg, "my_stage")[0] == {"instruction": "Repeat the input.", "input": "red apple",
                                                    "output": "red apple"}
    assert len(sources.stage_rows(cfg, "my_stage")) == 8 and len(sources.stage_rows(cfg, "my_stage", "eval")) == 4
    assert len(sources.stage_rows(cfg, "headline")) == 4
    assert sources.stage_rows(cfg, "headline", "eval") == load_stage("headline", "eval")
    task = sources.probe_task(cfg, "my_stage")
    assert (task.name, task.category, task.type, task.metric, len(task.rows)) == \
        ("my_stage", "tasks", "generation", ("rouge1",), 4)
    assert sources.probe_task(cfg, "headline").rows == load_stage("headline", "eval")
    preflight.check(cfg, build=False)  # nothing to report
