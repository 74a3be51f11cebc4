"""Probe any model folder on raycf's tasks.

    python -m raycf.probe --model PATH [--adapter DIR] --suite knowledge,reasoning [--shots K] [--limit N]
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

IMPORTED = time.perf_counter()

from raycf.data import load_task, suite
from raycf.errors import ConfigError, DataError, ModelError, cli, parser
from raycf.models.folder import folder_problems
from raycf.models.resolve import resolve_model_dir


def load(model_dir: Path, adapter: str | None, model_arg: str, trust_remote_code: bool = False,
         allow_pickle: bool = False):
    """Model + tokenizer from a folder; with `adapter`, the PEFT adapter on top, not merged (a stage checkpoint's
    earlier adapters, merged by continual.method merge or o_lora, merged into the base as the trial had them)."""
    from raycf.models.load import load_model
    model, tok = load_model(model_dir, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    if adapter:
        from peft import PeftModel
        from raycf.continual import load_state, restore_weights
        try:
            model = PeftModel.from_pretrained(model, adapter)
            restore_weights(model, load_state(Path(adapter)))
        except (RuntimeError, ValueError, OSError, KeyError) as e:  # e.g. shapes of another base model
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ModelError(f"--adapter {adapter}: does not load onto --model {model_arg} ({first}); give the "
                             f"adapter trained on this base model, or the base model it was trained on") from None
    return model, tok


def check_adapter(adapter: str | None, allow_pickle: bool = False) -> None:
    if adapter and not (Path(adapter) / "adapter_config.json").exists():
        raise ModelError(f"--adapter {adapter}: not a PEFT adapter folder (no adapter_config.json)")
    if adapter:
        try:
            json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ModelError(f"--adapter {adapter}: adapter_config.json is not valid JSON ({e}); save the adapter "
                             f"again with save_pretrained") from None
    if adapter and not allow_pickle and not (Path(adapter) / "adapter_model.safetensors").exists() \
            and (Path(adapter) / "adapter_model.bin").exists():
        raise ModelError(f"--adapter {adapter}: holds only pickle weights (adapter_model.bin), which can "
                         f"run code when loaded; save it as safetensors or pass --allow-pickle for a folder "
                         f"you trust")


FLAG_RANGES = {"limit": (1, "rows per task; leave --limit out for all"), "shots": (0, "few-shot examples"),
               "batch_size": (1, "contexts per forward pass"), "max_new_tokens": (1, "tokens per answer")}


def flag_problems(args) -> list[str]:
    problems = [f"--{name.replace('_', '-')} {value}: must be >= {low}: {what}"
                for name, (low, what) in FLAG_RANGES.items()
                if (value := getattr(args, name)) is not None and value < low]
    if args.chat_template and not args.apply_chat_template:
        problems.append("--chat-template: used only with --apply-chat-template; add it or leave the template out")
    elif args.chat_template and not Path(args.chat_template).is_file():
        problems.append(f"--chat-template {args.chat_template}: no such file; give a Jinja chat template file")
    if args.system_instruction and not args.apply_chat_template:
        problems.append("--system-instruction: used only with --apply-chat-template; add it or leave the "
                        "instruction out")
    if not [s for s in args.suite.split(",") if s.strip()]:
        problems.append(f"--suite {args.suite!r}: names no task; give task names, task YAMLs or categories, e.g. "
                        f"--suite knowledge,reasoning")
    return problems


def probe(args) -> int:
    problems = flag_problems(args)
    if problems:
        raise ConfigError(problems)
    if not args.debug:
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()  # stderr is for the one error line
    model_dir = resolve_model_dir(args.model, key="--model", allow_download=args.allow_download,
                                  download_flag="--allow-download")
    problems = folder_problems(model_dir, trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle,
                               key="--model")
    if problems:
        raise ModelError(problems[0])
    check_adapter(args.adapter, args.allow_pickle)
    try:  # bad rows are reported before the model loads
        include = tuple(str(Path(d).expanduser().absolute()) for d in args.lm_eval_include)
        chat_system = args.system_instruction if args.apply_chat_template else None
        tasks = [load_task(n, shots=args.shots, lm_eval_include=include, chat_system=chat_system)
                 for n in suite([s.strip() for s in args.suite.split(",") if s.strip()], include)]
    except DataError as e:
        raise DataError(f"--suite: {e}") from None
    t_imports = time.perf_counter()
    from raycf.probe.run import format_table, probe_tasks
    model, tok = load(model_dir, args.adapter, args.model, args.trust_remote_code, args.allow_pickle)
    t_loaded = time.perf_counter()
    if args.chat_template:
        tok.chat_template = Path(args.chat_template).read_text(encoding="utf-8")
    if args.apply_chat_template:
        from raycf.data import chat
        chat.check_template(tok, f"--model {args.model}", asks="--apply-chat-template is given",
                            off="no --apply-chat-template")
    results = probe_tasks(model, tok, tasks, shots=args.shots, limit=args.limit, seed=args.seed,
                          batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, precision=args.precision,
                          chat_system=chat_system, chat_choices=chat_system)
    print(format_table(results))
    if args.timings:
        done = time.perf_counter()
        print(f"timings: start to checked inputs {since_start(t_imports):.1f} s, imports and model load "
              f"{t_loaded - t_imports:.1f} s, scoring {done - t_loaded:.1f} s, total {since_start(done):.1f} s",
              file=sys.stderr)
    return 0


def since_start(t: float) -> float:
    """Seconds from this process's start (Linux: /proc) to perf_counter() time t; from this module's import
    elsewhere."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - ticks / os.sysconf("SC_CLK_TCK") - (time.perf_counter() - t)
    except (OSError, ValueError, IndexError):
        return t - IMPORTED


def main(argv=None) -> int:
    p = parser("raycf.probe", "score a model folder (optionally with a PEFT adapter) on raycf's probe tasks "
                              "and print one row per task and metric")
    p.add_argument("--model", required=True, help="model folder or built-in name (see raycf.models)")
    p.add_argument("--adapter", default=None, help="PEFT adapter folder, scored without merging")
    p.add_argument("--suite", required=True, help="comma-separated task names, task YAML paths, categories or lm_eval:TASK (lm-eval's tasks)")
    p.add_argument("--lm-eval-include", action="append", default=[], metavar="DIR",
                   help="a folder of lm-eval task YAMLs for lm_eval:NAME in --suite (repeatable)")
    p.add_argument("--shots", type=int, default=None, help="few-shot examples (default: each task's own)")
    p.add_argument("--limit", type=int, default=None, help="first N rows of each task")
    p.add_argument("--seed", type=int, default=0, help="seed of the few-shot draw")
    p.add_argument("--batch-size", type=int, default=16, help="contexts per forward pass")
    p.add_argument("--max-new-tokens", type=int, default=64, help="generation probes: tokens per answer")
    p.add_argument("--trust-remote-code", action="store_true", help="run the model folder's own code (auto_map)")
    p.add_argument("--allow-pickle", action="store_true", help="load pickle weights (pytorch_model.bin)")
    p.add_argument("--allow-download", action="store_true", help="let --model be a hub name (org/name), downloaded")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="fp32: lm-eval's numbers exactly; bf16: under autocast, faster where bf16 is")
    p.add_argument("--apply-chat-template", action="store_true",
                   help="every prompt in the tokenizer's chat template, as lm-eval's --apply_chat_template (few-shot "
                        "examples as turns)")
    p.add_argument("--system-instruction", default="", metavar="TEXT",
                   help="with --apply-chat-template: the system turn (lm-eval's --system_instruction)")
    p.add_argument("--chat-template", default="", metavar="FILE",
                   help="with --apply-chat-template: a Jinja chat template file (.jinja) for the tokenizer, instead "
                        "of its own")
    p.add_argument("--timings", action="store_true", help="print where the time went (stderr)")
    return cli(p, probe, argv)


if __name__ == "__main__":
    sys.exit(main())
