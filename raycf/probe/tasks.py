"""The three probe types, plain rows in and metrics out: multiple choice (acc, acc_norm), pairs (CrowS-Pairs'
pct_stereotype and likelihood_diff) and generation (greedy, scored with raycf.metrics)."""
from __future__ import annotations

import random

from raycf import metrics as M
from raycf.errors import DataError
from raycf.probe.engine import chunks, is_seq2seq, loglikelihood
from raycf.probe.greedy import greedy


FEWSHOT_DELIMITER = "\n\n"


TARGET_DELIMITER = " "


def fewshot_examples(rows, k: int, seed: int = 0) -> list:
    """The k few-shot examples of a task: drawn once with random.Random(seed), used for every question."""
    rows = list(rows)
    if k > len(rows):
        raise DataError(f"{k}-shot asks for more examples than the {len(rows)} few-shot rows")
    return random.Random(seed).sample(rows, k) if k else []


def fewshot_prefix(template: str, examples) -> str:
    """lm-eval's plain-text few-shot block: question, " ", answer, "\\n\\n" for each example."""
    return "".join(template.format(**ex) + TARGET_DELIMITER + ex["choices"][ex["answer"]] + FEWSHOT_DELIMITER
                   for ex in examples)


def choice_metrics(lls, choices, answer: int) -> dict[str, float]:
    """acc and acc_norm of one question, lm-eval's way (np.argmax: the first of equal maxima wins)."""
    import numpy as np
    lls = np.asarray(lls, dtype=float)
    lengths = np.array([float(len(c)) for c in choices])
    return {"acc": float(np.argmax(lls) == answer), "acc_norm": float(np.argmax(lls / lengths) == answer)}


def example_turns(template: str, examples) -> list[dict]:
    """lm-eval's few-shot examples as chat turns (apply_chat_template with fewshot_as_multiturn): each question a
    user turn, its answer the assistant's."""
    return [turn for ex in examples for turn in ({"role": "user", "content": template.format(**ex)},
                                                  {"role": "assistant", "content": ex["choices"][ex["answer"]]})]


def multiple_choice_lls(model, tok, template: str, rows, examples=(), *, batch_size: int = 16,
                        fast: bool = True, delimiter: str = TARGET_DELIMITER, chat=None) -> list[list[float]]:
    """Per question, the log-likelihood of each choice (after `delimiter`) after the shared few-shot prefix.
    chat(turns, generation_prompt) -> text: each context in a chat template the way lm-eval's
    apply_chat_template does it (the examples as turns, the question as the last user turn, then the assistant's
    generation prompt; no delimiter before a choice)."""
    if chat is None:
        prefix = fewshot_prefix(template, examples)
        contexts = [prefix + template.format(**row) for row in rows]
    else:
        shots = example_turns(template, examples)
        prefix, delimiter = chat(shots, False) if shots else "", ""
        contexts = [chat([*shots, {"role": "user", "content": template.format(**row)}], True) for row in rows]
    requests, sizes = [], []
    for row, context in zip(rows, contexts):
        requests += [(context, delimiter + c) for c in row["choices"]]
        sizes.append(len(row["choices"]))
    flat = loglikelihood(model, tok, requests, prefix=prefix, batch_size=batch_size, fast=fast)
    out, start = [], 0
    for n in sizes:
        out.append(flat[start:start + n])
        start += n
    return out


def multiple_choice_metrics(rows, lls) -> dict[str, float]:
    per = [choice_metrics(ll, row["choices"], row["answer"]) for row, ll in zip(rows, lls)]
    return {m: sum(p[m] for p in per) / max(1, len(per)) for m in ("acc", "acc_norm")}


def pair_lls(model, tok, rows, *, batch_size: int = 16) -> list[list[float]]:
    """[ll(sent_more), ll(sent_less)] per pair: whole sentences after an empty context, like crows_pairs."""
    requests = [("", row[key]) for row in rows for key in ("sent_more", "sent_less")]
    flat = loglikelihood(model, tok, requests, batch_size=batch_size)
    return [flat[i:i + 2] for i in range(0, len(flat), 2)]


def pair_metrics(rows, lls) -> dict[str, float]:
    more = [float(a > b) for a, b in lls]
    metrics = {"pct_stereotype": sum(more) / max(1, len(more)),
               "likelihood_diff": sum(abs(a - b) for a, b in lls) / max(1, len(lls))}
    for kind in sorted({row.get("bias_type", "") for row in rows} - {""}):
        hits = [m for m, row in zip(more, rows) if row.get("bias_type") == kind]
        metrics[f"pct_stereotype/{kind}"] = sum(hits) / len(hits)
    return metrics


def generate(model, tok, prompts, *, max_new_tokens: int = 64, batch_size: int = 16,
             shared_prefix: bool = True, shared_batch_size: int = 64) -> list[str]:
    """Greedy completions of `prompts`, special tokens dropped, stripped: transformers' `generate` (left padded
    for causal models, batch_size prompts at a time); shared_prefix: the same tokens from raycf.probe.greedy
    where the model allows, shared_batch_size rows at a time (decoding reads every weight once per step for
    the whole batch: on CPU a larger batch is nearly free until the matrix units are busy)."""
    import torch
    fast = greedy(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=shared_batch_size) \
        if shared_prefix else None
    if fast is not None:
        return fast
    out: list[str | None] = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    side, pad = tok.padding_side, tok.pad_token
    tok.padding_side = "right" if is_seq2seq(model) else "left"
    tok.pad_token = pad if pad is not None else tok.eos_token
    try:
        with torch.inference_mode():
            for chunk in chunks(order, batch_size):
                enc = tok([prompts[i] for i in chunk], return_tensors="pt", padding=True,
                          return_token_type_ids=False)
                ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id)
                new = ids if is_seq2seq(model) else ids[:, enc["input_ids"].shape[1]:]
                for i, text in zip(chunk, tok.batch_decode(new, skip_special_tokens=True)):
                    out[i] = text.strip()
    finally:
        tok.padding_side, tok.pad_token = side, pad
    return out  # type: ignore[return-value]


def generation_metrics(metric_names, rows, predictions) -> dict[str, float]:
    """The task's metrics (raycf.metrics: bleu, rouge1, sari) over all predictions; a row's "references"
    (several, e.g. for SARI) if it has them, else its "output"."""
    refs = [row.get("references") or row["output"] for row in rows]
    out = {}
    for name in metric_names:
        fn = getattr(M, name)
        out[name] = float(fn([row["input"] for row in rows], predictions, refs) if name == "sari"
                          else fn(predictions, refs))
    return out
