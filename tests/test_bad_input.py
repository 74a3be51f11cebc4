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

from raycf import config, forgetting, pretrain, storage, tracking
from raycf.data import registry
from raycf.models import __main__ as models_cli
from raycf.report import __main__ as report_cli
from raycf.data import sources
from raycf.config import __main__ as config_cli
from raycf.probe import __main__ as probe_main
from raycf.sweep import __main__ as sweep_cli
from raycf.trial import __main__ as trial_cli
from raycf.trial import preflight as preflight

ROOT = Path(__file__).resolve().parents[1]
B = "tests/bad_inputs/"
MAINS = {"sweep": sweep_cli.main, "trial": trial_cli.main, "probe": probe_main.main, "config": config_cli.main,
         "storage": storage.main, "tracking": tracking.main, "report": report_cli.main, "models": models_cli.main,
         "data.registry": registry.main, "forgetting": forgetting.main, "pretrain": pretrain.main}


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
    ("negative_lr", dry("out_of_range_lr.yaml"), ["out_of_range_lr.yaml: optim.lr: -0.1 is outside (0, 1] (a learning rate)"]),
    ("dropout_above_1", dry("out_of_range_dropout.yaml"), ["finetune.lora_dropout: 1.5 is outside [0, 1) (a probability)"]),
    ("replay_of_everything", dry("out_of_range_replay.yaml"),
     ["continual.replay.ratio: 1.0 is outside (0, 1) (a fraction of each stage's examples)"]),
    ("replay_ratio_moved", dry("moved_replay_ratio.yaml"),
     ["data.replay_ratio: moved to continual.replay.ratio, with continual.method: replay"]),
    ("method_typo", dry("base.yaml") + ["--set", "continual.method=replay_buffer"],
     ["continual.method: 'replay_buffer' is not one of naive, replay, general_mix, ewc, lwf, o_lora, merge, average; did you mean 'replay'?"]),
    ("key_of_another_method", dry("base.yaml") + ["--set", "continual.replay.alpha=0.3"],
     ["continual.replay.alpha: alpha is a key of continual.lwf and continual.average, not of continual.replay; set "
      "continual.lwf.alpha (with continual.method: lwf) or continual.average.alpha (with continual.method: average)"]),
    ("lora_rank_above_hidden", dry("lora_rank_too_big.yaml"),
     ["finetune.lora_rank: 100 exceeds the model's hidden size 64; use a rank <= 64"]),
    ("batch_not_multiple", dry("batch_not_multiple.yaml"),
     ["optim.batch_size: 7 must be a multiple of resources.workers x optim.grad_accum = 2"]),
    ("unknown_strategy", dry("bad_choice.yaml"), ["resources.strategy: 'zero3' is not one of fsdp, ddp"]),
    ("unknown_probe_precision", dry("base.yaml") + ["--set", "probes.precision=fp16"],
     ["probes.precision: 'fp16' is not one of fp32, bf16"]),
    ("unknown_mixed_precision", dry("base.yaml") + ["--set", "resources.mixed_precision=fp16"],
     ["resources.mixed_precision: 'fp16' is not one of auto, bf16, fp32"]),
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
    ("grid_repeats_a_value", dry("grid_repeats_a_value.yaml"),
     ["search.optim.lr: grid lists 0.001 more than once (each copy runs the same trials again); give each value "
      "once, and sweep.seeds for repeats"]),
    ("zero_trials_num_samples", dry("zero_trials_num_samples.yaml"), ["sweep.num_samples: 0 is outside [1, 100000] (samples)"]),
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
     ["rows_output_number.jsonl:2: 'output' is number 42; give string(s) (in JSON: quoted; in parquet: a string column)"]),
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
# Issue "Every mistake refused before Ray starts": each class of mistake, in several variants. A case may give
# more than one line (one per problem), each `error: ...`; the substrings are looked for in all of them.
CLASS_CASES = [
    # 1. what would hang: fewer rows than a batch
    ("rows_fewer_than_batch", dry("rows_fewer_than_batch.yaml"),
     ["data.sources.my_stage.train: stage my_stage trains on 8 rows, fewer than optim.batch_size=16"]),
    ("examples_per_stage_below_batch", dry("examples_per_stage_tiny.yaml"),
     ["data.examples_per_stage: 2 rows make no full batch of optim.batch_size=4"]),
    ("warm_batch_not_multiple_of_workers", dry("warm_batch_not_multiple.yaml"),
     ["warm_start.batch_size: 3 must be a multiple of resources.workers = 2"]),
    ("warm_batch_over_general_rows", dry("warm_batch_over_rows.yaml"),
     ["warm_start.batch_size: 1024 is more than the 640 rows of the general set"]),
    ("examples_per_stage_via_set", dry("base.yaml") + ["--set", "data.examples_per_stage=3"],
     ["data.examples_per_stage: 3 rows make no full batch"]),
    # 2. what would silently change the experiment
    ("duplicate_key", dry("dup_key.yaml"), ["dup_key.yaml: line 7: key 'lr' is given twice (lines 5 and 7)"]),
    ("duplicate_section", dry("dup_section.yaml"), ["dup_section.yaml: line 5: key 'optim' is given twice"]),
    ("duplicate_search_key", dry("dup_search_key.yaml"), ["key 'optim.lr' is given twice (lines 9 and 10)"]),
    ("section_under_search", dry("search_section.yaml"),
     ["search.optim: is a section, not a key; search keys inside it, e.g. search.optim.lr"]),
    ("duplicate_key_in_task_yaml", dry("base.yaml") + ["--set", f"probes.suites=[{B}task_dup_key.yaml]"],
     ["task_dup_key.yaml: line 6: key 'shots' is given twice"]),
    # 3. sampled domains: both bounds, the key's type
    ("uniform_on_an_int_key", dry("uniform_on_int.yaml"),
     ["search.finetune.lora_rank: uniform samples floats, but finetune.lora_rank is an integer; use {randint"]),
    ("uniform_high_bound_out_of_range", dry("uniform_ratio_high.yaml"),
     ["search.continual.replay.ratio=1.5: continual.replay.ratio: 1.5 is outside (0, 1)"]),
    ("loguniform_to_infinity", dry("loguniform_inf.yaml"), ["loguniform needs [low, high], two finite numbers"]),
    ("randint_fraction", dry("randint_fraction.yaml"), ["randint needs integer bounds, got [1.5, 4]"]),
    ("uniform_on_a_string_key", dry("uniform_on_str.yaml"), ["search.model.name: uniform samples numbers"]),
    # 4. Tune settings
    ("metric_typo", dry("metric_typo.yaml"),
     ["sweep.metric: 'forgetting/mean_fg' is not a metric the trials report; did you mean 'headline/mean_FG'?"]),
    ("metric_nonsense", dry("base.yaml") + ["--set", "sweep.metric=accuracy"],
     ["sweep.metric: 'accuracy' is not a metric the trials report; e.g. headline/objective, headline/mean_FG"]),
    ("asha_reduction_factor_one", dry("asha_factor_one.yaml"), ["sweep.reduction_factor: 1.0 is outside (1, 1000]"]),
    ("asha_grace_zero", dry("asha_grace_zero.yaml"), ["sweep.grace_period: 0 is outside [1, 100000]"]),
    ("asha_grace_longer_than_trial", dry("asha_grace_too_long.yaml"),
     ["sweep.grace_period: 5 stages, but a trial has 2"]),
    ("max_concurrent_negative", dry("max_concurrent_negative.yaml"), ["sweep.max_concurrent: -1 is outside [0,"]),
    ("trial_cpus_zero", dry("base.yaml") + ["--set", "sweep.trial_cpus=0"], ["sweep.trial_cpus: 0.0 is outside (0,"]),
    ("seeds_zero", dry("base.yaml") + ["--set", "sweep.seeds=0"],
     ["sweep.seeds: 0 is outside [1, 1000] (a number of seeds per setting)"]),
    ("seeds_and_a_seed_search", dry("base.yaml") + ["--set", "sweep.seeds=2", "--set", "search={seed: {grid: [0, 1]}}"],
     ["search.seed: sweep.seeds already runs every setting with several seeds; drop one of the two"]),
    ("seeds_past_the_largest_seed", dry("base.yaml") + ["--set", "seed=4294967295", "--set", "sweep.seeds=2"],
     ["sweep.seeds: 2 seeds from seed 4294967295 end at 4294967296, above 4294967295; lower seed or sweep.seeds"]),
    ("warm_start_seed_negative", dry("base.yaml") + ["--set", "warm_start.seed=-1"],
     ["warm_start.seed: -1 is outside [0, 4294967295] (a seed, below 2^32)"]),
    ("metric_bias_fg_is_gone", dry("base.yaml") + ["--set", "sweep.metric=forgetting/bias/FG"],
     ["sweep.metric: 'forgetting/bias/FG' is not a metric the trials report; did you mean"]),
    ("metric_old_name", dry("base.yaml") + ["--set", "sweep.metric=objective"],
     ["sweep.metric: 'objective' is not a metric the trials report; did you mean 'headline/objective'?"]),
    ("objective_unknown", dry("base.yaml") + ["--set", "sweep.objectives={headline/mean_FG: min, tasks_gain: max}"],
     ["sweep.objectives.tasks_gain: 'tasks_gain' is not a metric the trials report; did you mean "
      "'headline/tasks_gain'?"]),
    ("objective_mode", dry("base.yaml") + ["--set", "sweep.objectives={headline/mean_FG: min, "
                                                    "headline/tasks_gain: maximize}"],
     ["sweep.objectives.headline/tasks_gain: 'maximize' is not min or max"]),
    ("objective_alone", dry("base.yaml") + ["--set", "sweep.objectives={headline/mean_FG: min}"],
     ["sweep.objectives: one objective (headline/mean_FG); give two or more, or set sweep.metric=headline/mean_FG "
      "and sweep.mode=min for a single one"]),
    ("optuna_with_a_grid", dry("base.yaml") + ["--set", "sweep.search_alg=optuna",
                                                "--set", "search={optim.lr: {grid: [1.0e-3, 2.0e-3]}}"],
     ["search.optim.lr: a grid, but sweep.search_alg optuna samples every dimension; use choice for a list of "
      "values, sweep.seeds=1, or sweep.search_alg=basic"]),
    ("objectives_with_asha", dry("base.yaml") + ["--set", "sweep.objectives={headline/mean_FG: min, "
                                                          "headline/tasks_gain: max}", "--set", "sweep.scheduler=asha"],
     ["sweep.objectives: ASHA stops trials on one metric (sweep.metric); with several objectives use "
      "sweep.scheduler=fifo"]),
    ("pbt_key_that_cannot_change", dry("base.yaml") + ["--set", "sweep.scheduler=pbt",
                                                        "--set", "search={finetune.lora_rank: {grid: [4, 8]}}",
                                                        "--set", "sweep.pbt.keys=[finetune.lora_rank]"],
     ["sweep.pbt.keys: finetune.lora_rank cannot change between two stages of a trial; PBT may perturb optim.lr"]),
    ("pbt_key_not_searched", dry("base.yaml") + ["--set", "sweep.scheduler=pbt", "--set", "sweep.num_samples=2",
                                                  "--set", "sweep.pbt.keys=[optim.lr]"],
     ["sweep.pbt.keys: optim.lr is not searched; give its domain under search, e.g. search.optim.lr: {loguniform"]),
    ("pbt_nothing_to_perturb", dry("base.yaml") + ["--set", "sweep.scheduler=pbt",
                                                    "--set", "search={finetune.lora_rank: {grid: [4, 8]}}"],
     ["sweep.scheduler: pbt perturbs searched keys that may change between stages, and none is searched"]),
    ("pbt_population_of_one", dry("base.yaml") + ["--set", "sweep.scheduler=pbt",
                                                   "--set", "search={optim.lr: {loguniform: [1.0e-4, 1.0e-2]}}"],
     ["sweep.num_samples: a population of 1 trial; pbt needs two or more (e.g. sweep.num_samples=4)"]),
    ("pbt_interval_past_the_last_stage", dry("base.yaml") + ["--set", "sweep.scheduler=pbt",
                                                              "--set", "search={optim.lr: {grid: [1.0e-3, 2.0e-3]}}",
                                                              "--set", "sweep.pbt.interval=2"],
     ["sweep.pbt.interval: 2, but a trial has 2 stage(s): PBT would never act before the last; use an interval "
      "below 2"]),
    ("pbt_quantile_above_half", dry("base.yaml") + ["--set", "sweep.pbt.quantile=0.8"],
     ["sweep.pbt.quantile: 0.8 is outside (0, 0.5]"]),
    ("pb2_on_strings", dry("base.yaml") + ["--set", "sweep.scheduler=pb2",
                                           "--set", "search={optim.schedule: {grid: [constant, cosine]}}"],
     ["search.optim.schedule: pb2 explores numbers between bounds; optim.schedule takes ['constant', 'cosine']: "
      "use sweep.scheduler=pbt"]),
    ("pbt_with_objectives", dry("base.yaml") + ["--set", "sweep.scheduler=pbt",
                                                 "--set", "search={optim.lr: {grid: [1.0e-3, 2.0e-3]}}",
                                                 "--set", "sweep.objectives={headline/mean_FG: min, "
                                                          "headline/tasks_gain: max}"],
     ["sweep.objectives: pbt exploits by one metric (sweep.metric); with several objectives use "
      "sweep.scheduler=fifo"]),
    ("register_best_slash", dry("base.yaml") + ["--set", "sweep.register_best=team/best"],
     ["sweep.register_best: 'team/best' is no MLflow model name (no '/', ':' or surrounding spaces)"]),
    ("system_metrics_not_bool", dry("base.yaml") + ["--set", "tracking.system_metrics=often"],
     ["tracking.system_metrics: expected bool, got str 'often'"]),
    # 5. non-finite or absurd numbers
    ("lr_nan", dry("lr_nan.yaml"), ["lr_nan.yaml: optim.lr: expected a finite number, got nan"]),
    ("epochs_inf", dry("epochs_inf.yaml"), ["optim.epochs: expected a finite number, got inf"]),
    ("seed_23_digits", dry("seed_huge.yaml"), ["seed: 12345678901234567890123 is outside [0, 4294967295]"]),
    ("cpus_nan", dry("cpus_nan.yaml"), ["resources.cpus_per_worker: expected a finite number, got nan"]),
    ("cpus_negative", dry("cpus_negative.yaml"), ["resources.cpus_per_worker: -1.0 is outside [0, 1024]"]),
    ("max_new_tokens_negative", dry("new_tokens_negative.yaml"), ["probes.max_new_tokens: -1 is outside [1, 4096]"]),
    ("lr_inf_via_set", dry("base.yaml") + ["--set", "optim.lr=.inf"], ["optim.lr: expected a finite number"]),
    ("lr_absurd", dry("base.yaml") + ["--set", "optim.lr=30"], ["optim.lr: 30.0 is outside (0, 1]"]),
    # 6. what the dry run reads: the model's config, its modules, the shipped rows, pools, names, URIs
    ("model_unknown_architecture", dry("model_unknown_arch.yaml"), ["model_type 'llamaxyz' is not known"]),
    ("model_without_model_type", dry("model_no_model_type.yaml"), ["no_model_type/config.json: no model_type"]),
    ("model_kind_contradicts_folder", dry("model_kind_contradicts.yaml"),
     ["model.kind: seq2seq, but ", "is a causal model", "set model.kind=auto or causal"]),
    ("target_modules_match_nothing", dry("target_modules_none_match.yaml"),
     ["finetune.target_modules: 'q_prj' matches no linear layer of the model; did you mean 'q_proj'?"]),
    ("shipped_rows_longer_than_max_length", dry("shipped_rows_too_long.yaml"),
     ["stage simplification: shipped row 1: example is 83 tokens, longer than optim.max_length=24"]),
    ("shots_over_the_pool", dry("shots_over_pool.yaml"),
     ["probes.shots: 40-shot, but facts_geography, facts_science, facts_words have 15 few-shot rows"]),
    ("suites_empty", dry("suites_empty.yaml"), ["probes.suites: expected a non-empty list"]),
    ("tracking_unknown_scheme", dry("tracking_unknown_scheme.yaml"), ["tracking.uri: unknown scheme 'htp://'"]),
    ("tracking_sqlite_two_slashes", dry("tracking_sqlite_two_slashes.yaml"),
     ["tracking.uri: a sqlite URI has three slashes"]),
    ("storage_path_empty", dry("storage_empty.yaml"), ["storage_path: empty"]),
    ("name_escapes_storage", dry("name_escapes.yaml"), ["name: '../../elsewhere' must be letters, digits"]),
    ("warm_path_without_checkpoint_kind", dry("warm_path_without_checkpoint.yaml"),
     ["warm_start.path: given, but warm_start.kind is 'none'"]),
    ("name_with_slash_via_set", dry("base.yaml") + ["--set", "name=a/b"], ["name: 'a/b' must be letters"]),
    # 7. task YAMLs of one's own
    ("task_yaml_without_source", dry("probe_task_no_source.yaml"), ["task_no_source.yaml: missing key 'source'"]),
    ("task_template_unclosed_brace", dry("base.yaml") + ["--set", f"probes.suites=[{B}task_unclosed_brace.yaml]"],
     ["is not a str.format string"]),
    ("task_template_a_list", dry("base.yaml") + ["--set", f"probes.suites=[{B}task_template_list.yaml]"],
     ["template must be a string"]),
    ("task_hub_a_string", dry("base.yaml") + ["--set", f"probes.suites=[{B}task_hub_string.yaml]"],
     ["hub must be a mapping like {path: DATASET"]),
    ("task_template_field_no_row_has", dry("probe_task_field_absent.yaml"),
     ["many_mc.jsonl: the template names field 'query', which no row has"]),
    # 8. data files
    ("parquet_corrupt", dry("data_parquet_corrupt.yaml"), ["rows_corrupt.parquet: not a readable parquet file"]),
    ("json_array_not_lines", dry("data_json_array.yaml"), ["rows_array.jsonl: a JSON array; raycf reads JSON Lines"]),
    ("parquet_wrong_column_type", dry("data_parquet_wrong_type.yaml"),
     ["rows_int_output.parquet:1: 'output' is number 0; give string(s) (in JSON: quoted; in parquet: a string"]),
    ("many_unreadable_lines_capped", dry("data_many_unreadable.yaml"), ["... and 5 more unreadable lines"]),
    # 9. secrets: a password in an unknown-scheme URI is never printed
    ("password_in_unknown_scheme_sweep", dry("tracking_unknown_scheme.yaml"), ["tracking.uri: unknown scheme"]),
    ("password_in_unknown_scheme_trial", ["trial", "--space", B + "base.yaml", "--set",
                                          "tracking.uri=htp://alice:s3cr3t@127.0.0.1:5000"],
     ["tracking.uri: unknown scheme 'htp://'"]),
    ("password_in_report_uri", ["report", "--experiment", "x", "--tracking-uri", "mlfow://alice:s3cr3t@host"],
     ["--tracking-uri: unknown scheme 'mlfow://'"]),
    # 10. checks that must not lie
    ("storage_check_under_proc", ["storage", "check", "/proc/raycf/x"], ["storage_path: /proc/raycf/x cannot be"]),
    ("storage_check_a_file", ["storage", "check", B + "base.yaml"], ["base.yaml is a file; give a folder"]),
    ("storage_check_empty", ["storage", "check", ""], ["storage_path: empty"]),
    ("flush_a_typo", ["tracking", "flush", "--storage", "/tmp/raycf_runz_typo"], ["--storage /tmp/raycf_runz_typo: no such folder"]),
    ("report_out_a_file", ["report", "--experiment", "x", "--out", B + "base.yaml", "--tracking-uri",
                           "sqlite:////tmp/raycf-no-store/mlflow.db"], ["--out tests/bad_inputs/base.yaml: is a file"]),
    ("report_sqlite_two_slashes", ["report", "--experiment", "x", "--tracking-uri", "sqlite://mlflow.db"],
     ["--tracking-uri: a sqlite URI has three slashes"]),
    ("report_store_not_a_database", ["report", "--experiment", "x", "--tracking-uri", f"sqlite:///{ROOT / B / 'base.yaml'}"],
     ["base.yaml is not an SQLite database"]),
    ("trial_storage_unwritable", ["trial", "--space", B + "base.yaml", "--set", "storage_path=/proc/raycf"],
     ["storage_path: /proc/raycf cannot be written"]),
    # 11. the probe CLI
    ("probe_limit_zero", probe_cli("--suite", "knowledge", "--limit", "0"), ["--limit 0: must be >= 1"]),
    ("probe_limit_negative", probe_cli("--suite", "knowledge", "--limit", "-85"), ["--limit -85: must be >= 1"]),
    ("probe_suite_empty", probe_cli("--suite", ""), ["--suite '': names no task"]),
    ("probe_shots_negative", probe_cli("--suite", "knowledge", "--shots", "-1"), ["--shots -1: must be >= 0"]),
    ("probe_batch_zero", probe_cli("--suite", "knowledge", "--batch-size", "0"), ["--batch-size 0: must be >= 1"]),
    ("probe_adapter_config_broken", probe_cli("--suite", "knowledge", "--adapter", B + "models/bad_adapter"),
     ["--adapter tests/bad_inputs/models/bad_adapter: adapter_config.json is not valid JSON"]),
    ("probe_hub_model_names_the_flag", ["probe", "--model", "org/some-model", "--suite", "knowledge"],
     ["for a hub model (org/name) give --allow-download"]),
    ("probe_system_instruction_alone", probe_cli("--suite", "knowledge", "--system-instruction", "Be brief."),
     ["--system-instruction: used only with --apply-chat-template"]),
    ("probe_chat_template_without_one", probe_cli("--suite", "knowledge", "--apply-chat-template"),
     ["--model raycf-tiny: --apply-chat-template is given, but this tokenizer has no chat template",
      "or no --apply-chat-template"]),
    # a chat template asked of a tokenizer without one
    ("data_chat_template_without_one", dry("base.yaml") + ["--set", "data.template=chat"],
     ["model.name tiny-causal: data.template is chat, but this tokenizer has no chat template"]),
    ("probes_chat_template_without_one", dry("base.yaml") + ["--set", "probes.apply_chat_template=true"],
     ["model.name tiny-causal: probes.apply_chat_template is true, but this tokenizer has no chat template",
      "or probes.apply_chat_template: false"]),
    ("chat_template_unused", dry("base.yaml") + ["--set", "data.chat_template=tests/data/chatml_like.jinja"],
     ["data.chat_template: given, but nothing applies it; set data.template: chat"]),
    ("chat_template_missing_file", dry("base.yaml") + ["--set", "data.template=chat", "--set",
                                                        "data.chat_template=tests/bad_inputs/no_such.jinja"],
     ["data.chat_template:", "no_such.jinja: cannot be read (FileNotFoundError); give a UTF-8 Jinja file"]),
    ("chat_template_not_jinja", dry("base.yaml") + ["--set", "data.template=chat", "--set",
                                                     f"data.chat_template={B}chat_broken.jinja"],
     ["data.chat_template: line 1: not a Jinja template", "fix the template"]),
    ("probe_chat_template_alone", probe_cli("--suite", "knowledge", "--chat-template", "tests/data/chatml_like.jinja"),
     ["--chat-template: used only with --apply-chat-template"]),
    # 12. space files
    ("space_empty", dry("space_empty.yaml"), ["space_empty.yaml: the file is empty (or only comments)"]),
    ("space_comments_only", dry("space_comments_only.yaml"), ["the file is empty (or only comments)"]),
    ("space_dev_null", ["sweep", "--space", "/dev/null", "--dry-run"], ["/dev/null: the file is empty"]),
    ("space_a_folder", ["sweep", "--space", B, "--dry-run"], ["tests/bad_inputs: is a folder; give a YAML file"]),
    ("orders_all_too_many", dry("orders_all_too_many.yaml"),
     ["orders: all over 8 stages is 40,320 orders", "use {orders: {random: N}}"]),
    # the other CLIs
    ("models_unknown_name", ["models", "tiny-causl"], ["NAME: 'tiny-causl' is not a built-in"]),
    ("registry_unknown_file_type", ["data.registry", B + "base.yaml"], ["base.yaml: unknown file type '.yaml'"]),
    ("forgetting_not_a_matrix", ["forgetting", B + "rows.csv"], ["rows.csv: expected rows starting with stage"]),
    ("config_duplicate_key", ["config", "--space", B + "dup_key.yaml"], ["key 'lr' is given twice"]),
]
ACCEPTED = ["loguniform_strings.yaml", "data_bom.yaml"]  # look wrong, are right: the dry run passes

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
    used = {a for _, argv, _ in CASES + CLASS_CASES for a in argv if a.startswith(B)} | {B + a for a in ACCEPTED}
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
    cfg = config.from_dict({"stages": ["headline", "my_stage"], "optim": {"batch_size": 4},
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


@pytest.mark.parametrize("argv,expected", [c[1:] for c in CLASS_CASES], ids=[c[0] for c in CLASS_CASES])
def test_every_class_of_mistake_is_refused_before_ray(argv, expected, capsys, monkeypatch, cache_dir):
    """Every problem a line `error: ...` naming the file, key or row and the fix; exit status 2; no traceback,
    no Ray, no secret; within seconds (nothing hangs, no model is trained)."""
    import ray
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    t0 = time.perf_counter()
    rc = MAINS[argv[0]](argv[1:])
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc == 2, err
    assert lines and all(x.startswith("error: ") for x in lines), lines
    for part in expected:
        assert any(part in x for x in lines), (part, lines)
    assert "Traceback" not in err and "s3cr3t" not in err
    assert not ray.is_initialized()
    assert seconds < 20, f"{seconds:.1f}s"


@pytest.mark.parametrize("name", ACCEPTED)
def test_what_looks_wrong_but_is_right_passes(name, capsys, monkeypatch, cache_dir):
    monkeypatch.chdir(ROOT)
    assert sweep_cli.main(["--space", B + name, "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("space ok: ")


def test_every_cli_takes_debug_and_has_a_complete_help(capsys):
    for name, main in MAINS.items():
        with pytest.raises(SystemExit) as e:
            main(["--help"])
        out = capsys.readouterr().out
        assert e.value.code == 0 and "--debug" in out, name
        description = out.split("\n\n")[1]
        assert description.strip().endswith((")", ".", "it", "MLflow", "tables")) or len(description) > 30, name
