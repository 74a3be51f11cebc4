"""Probes: score a model on the general-ability tasks after every stage (knowledge, reasoning, reading, bias,
and the learned instruction tasks).

    python -m raycf.probe --model PATH [--adapter DIR] --suite knowledge,reasoning [--shots K] [--limit N]

Multiple choice is lm-evaluation-harness 0.4.13's log-likelihood scoring for a HF model, reproduced number
for number (tests/test_probe_peer.py runs both):
  - context = the k few-shot examples, each `template.format(**row) + " " + answer + "\\n\\n"`, then
    `template.format(**row)`; continuation = " " + choice;
  - trailing whitespace of the context moves to the continuation; causal models encode context+continuation
    as ONE string and take the tokens after len(encode(context)) as the continuation; seq2seq models encode
    the two apart (the encoder gets the context, the decoder scores the continuation);
  - acc = argmax of the summed log-probs, acc_norm = argmax of log-prob / len(choice) in characters, WITHOUT
    the " " delimiter.
The k examples are drawn once per task with random.Random(seed) from its fewshot rows: the same k for every
question, so the few-shot prefix is shared.

Faster than lm-eval by computing shared work once: the few-shot prefix is run once per task and its KV cache
reused for every question, each question's context is run once and all its choices are scored against its
cache in one batch, and questions are batched by length. The prefix is shared only as far as an item's own
tokens equal the prefix's tokens (where a BPE merges the prefix's last tokens with the question's first,
up to the merge; items sharing nothing are scored whole). The token ids fed to the model are exactly
lm-eval's, so only float rounding differs (~1e-6).

Pairs (CrowS-Pairs, as lm-eval's crows_pairs task): log-likelihood of each whole sentence (empty context =
the BOS token); pct_stereotype = fraction of pairs whose sent_more is more likely (0..1, as lm-eval reports
it), also per bias type as `pct_stereotype/<bias_type>`, and likelihood_diff = mean |difference|.
Generation: greedy decoding, batched, scored with the task's metrics from raycf.metrics.

Distributed: with world_size > 1 and torch.distributed initialised, each rank scores a balanced, disjoint
slice of every task and the per-item results are all-gathered, so every rank returns the full results.
Ranks run different numbers of forward passes, so no forward may be a collective: a DDP wrapper is taken
off, and an FSDP2 model has its parameters gathered once before probing (one collective, all ranks) and
resharded after (see `probing`). All ranks must call run_probes together, with the same tasks.
"""
from __future__ import annotations

import copy
import inspect
import random
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field

DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when neither config nor tokenizer give a length
TOKENIZER_INFINITY = 1000000000000000019884624838656
FEWSHOT_DELIMITER = "\n\n"
TARGET_DELIMITER = " "


# ---------------------------------------------------------------------------------------------------------
# lm-eval's tokenisation (lm_eval/api/model.py _encode_pair, lm_eval/models/huggingface.py tok_encode)

def is_seq2seq(model) -> bool:
    return bool(getattr(model.config, "is_encoder_decoder", False))


def max_length(model, tok) -> int:
    """lm-eval's resolve_max_length: config n_positions | max_position_embeddings | n_ctx, then tokenizer."""
    cfg = getattr(model.config, "text_config", None) or model.config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        if getattr(cfg, attr, None) is not None:
            return int(getattr(cfg, attr))
    n = getattr(tok, "model_max_length", None)
    return int(n) if n is not None and n != TOKENIZER_INFINITY else DEFAULT_MAX_LENGTH


def prefix_token_id(tok) -> int:
    """The token that stands in for an empty context: BOS, else EOS."""
    return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id


def tok_encode(tok, text: str, add_special_tokens: bool | None = None) -> list[int]:
    """lm-eval's HFLM.tok_encode with add_bos_token unset: the tokenizer's own special tokens, except that a
    string which already starts with the BOS text gets none."""
    kwargs = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
    if add_special_tokens is None and text.startswith(tok.decode(prefix_token_id(tok))):
        kwargs["add_special_tokens"] = False
    return tok.encode(text, **kwargs)


def encode_pair(tok, context: str, continuation: str, seq2seq: bool = False) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens) exactly as lm-eval builds them, empty context included."""
    if context == "":
        cont = tok_encode(tok, continuation, add_special_tokens=False)
        first = prefix_token_id(tok)
        return ([first], cont) if first != cont[0] else (cont[:1], cont[1:])
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    if seq2seq:
        return tok_encode(tok, context), tok_encode(tok, continuation, add_special_tokens=False)
    whole = tok_encode(tok, context + continuation)
    ctx = tok_encode(tok, context)
    return ctx, whole[len(ctx):]


# ---------------------------------------------------------------------------------------------------------
# Scoring core: (context tokens, continuation tokens) -> summed log-prob, like lm-eval's _loglikelihood_tokens

def loglikelihood(model, tok, requests, *, prefix: str = "", batch_size: int = 16, fast: bool = True,
                  stats: dict | None = None) -> list[float]:
    """Summed log-prob of each continuation given its context, lm-eval's numbers.

    requests: list of (context, continuation) strings. prefix: a string the contexts start with (the
    few-shot prefix); its KV cache is computed once and shared as far as each item's own tokens agree
    with the prefix's tokens (see _split_by_prefix). batch_size: contexts per forward pass (all
    continuations of a batch's contexts go in one pass). fast=False scores every request whole, one row
    each, as lm-eval does (the reference path). stats, if given, gets request counts: shared_prefix (all of
    the prefix), partial_prefix (up to a token merge), fallback (none), truncated (scored whole because
    lm-eval truncates them), and forwards (forward passes run).
    """
    seq2seq = is_seq2seq(model)
    ctx_cache: dict[str, list[int]] = {}
    toks = []
    for context, continuation in requests:
        if seq2seq or context == "" or context != context.rstrip():
            toks.append(encode_pair(tok, context, continuation, seq2seq))
            continue
        if context not in ctx_cache:  # the context's encoding is the same for all its choices
            ctx_cache[context] = tok_encode(tok, context)
        ctx = ctx_cache[context]
        toks.append((ctx, tok_encode(tok, context + continuation)[len(ctx):]))
    pre = tok_encode(tok, prefix) if prefix and fast and not seq2seq else []
    return loglikelihood_tokens(model, toks, prefix=pre, batch_size=batch_size, fast=fast,
                                max_len=max_length(model, tok), stats=stats)


def loglikelihood_tokens(model, requests, *, prefix=(), batch_size: int = 16, fast: bool = True,
                         max_len: int = DEFAULT_MAX_LENGTH, stats: dict | None = None) -> list[float]:
    """Token-level core of `loglikelihood`: requests are (context ids, continuation ids)."""
    import torch

    st = {"shared_prefix": 0, "partial_prefix": 0, "fallback": 0, "truncated": 0, "forwards": 0}
    out: list[float | None] = [None] * len(requests)
    with torch.inference_mode():
        if is_seq2seq(model):
            _score_seq2seq(model, requests, out, batch_size, max_len, st)
        elif not fast:
            _score_whole(model, list(range(len(requests))), requests, out, batch_size, max_len, st)
        else:
            _score_causal(model, requests, out, list(prefix), batch_size, max_len, st)
    if stats is not None:
        stats.update(st)
    return out  # type: ignore[return-value]


def _accepts(model, name: str) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return name in inspect.signature(base.forward).parameters


def _pad(rows, length, value=0):
    import torch
    return torch.tensor([list(r) + [value] * (length - len(r)) for r in rows], dtype=torch.long)


def _select_cache(cache, index):
    """A copy of `cache` holding rows `index` (new tensors: the original stays reusable)."""
    import torch
    new = copy.copy(cache)
    new.layers = [copy.copy(layer) for layer in cache.layers]
    new.batch_select_indices(torch.as_tensor(index, dtype=torch.long))
    return new


def _chunks(seq, n):
    for i in range(0, len(seq), max(1, n)):
        yield seq[i:i + n]


def _score_whole(model, idx, requests, out, batch_size, max_len, st):
    """lm-eval's own loop: one row per request, (ctx+cont)[-(max_len+1):][:-1], right padded, longest first."""
    import torch
    order = sorted(idx, key=lambda i: -len(requests[i][0]) - len(requests[i][1]))
    for chunk in _chunks(order, batch_size):
        inps = [(requests[i][0] + requests[i][1])[-(max_len + 1):][:-1] for i in chunk]
        width = max(map(len, inps))
        logp = torch.log_softmax(model(_pad(inps, width)).logits, dim=-1)
        st["forwards"] += 1
        for row, i in enumerate(chunk):
            cont = requests[i][1]
            n = len(inps[row])
            picked = logp[row, n - len(cont):n].gather(1, torch.tensor(cont).unsqueeze(-1)).squeeze(-1)
            out[i] = float(picked.sum())


def _score_causal(model, requests, out, prefix, batch_size, max_len, st):
    """Group requests by context; run the shared prefix once, each context once, all its continuations in one
    batch against the context's KV cache. Items that lm-eval would truncate are scored whole."""
    groups: dict[tuple, list[int]] = {}
    whole = []
    for i, (ctx, cont) in enumerate(requests):
        if len(ctx) + len(cont) > max_len + 1:
            whole.append(i)
        else:
            groups.setdefault(tuple(ctx), []).append(i)
    st["truncated"] = len(whole)
    if whole:
        _score_whole(model, whole, requests, out, batch_size, max_len, st)
    # cap the continuations per group so that a huge group (e.g. CrowS pairs, all with context [BOS]) batches
    items = [(ctx, part) for ctx, members in groups.items() for part in _chunks(members, 4 * batch_size)]
    by_shared = _split_by_prefix(items, list(prefix))
    st["shared_prefix"] = sum(len(m) for _, m in by_shared.get(len(prefix), [])) if prefix else 0
    st["partial_prefix"] = sum(len(m) for n, part in by_shared.items() if 0 < n < len(prefix) for _, m in part)
    st["fallback"] = sum(len(m) for _, m in by_shared.get(0, [])) if prefix else 0
    for n, part in sorted(by_shared.items(), reverse=True):
        cache = None
        if n:
            import torch
            keep = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
            cache = model(torch.tensor([prefix[:n]]), use_cache=True, **keep).cache
            st["forwards"] += 1
        part = sorted(part, key=lambda it: -len(it[0]))
        for chunk in _chunks(part, batch_size):
            _score_contexts(model, chunk, requests, out, n, cache, st)


def _split_by_prefix(items, prefix: list[int]) -> dict[int, list]:
    """Items keyed by how many leading tokens of `prefix` their context shares (0 = none, scored whole).

    The tokens fed to the model are always the item's own (lm-eval's) context tokens; only a run of them
    that equals the prefix's tokens is taken from the shared cache, so sharing never changes the input.
    Where the prefix's last tokens merge with the question's first ones (e.g. "\\n\\n" + "Question" in some
    BPEs), the items share the prefix up to the merge. At least one context token stays after the shared
    part (it predicts the first continuation token), and a partial prefix is shared only by 2+ items."""
    def shared(ctx) -> int:
        n = 0
        limit = min(len(prefix), len(ctx) - 1)
        while n < limit and ctx[n] == prefix[n]:
            n += 1
        return n
    out: dict[int, list] = {}
    for it in items:
        out.setdefault(shared(it[0]) if prefix else 0, []).append(it)
    for n in [n for n, part in out.items() if 0 < n < len(prefix) and len(part) < 2]:
        out.setdefault(0, []).extend(out.pop(n))
    return out


def _score_contexts(model, chunk, requests, out, plen, prefix_cache, st):
    """One batch of contexts (after the shared prefix of `plen` tokens), then all their continuations."""
    import torch
    tails = [list(ctx[plen:]) for ctx, _ in chunk]
    width = max(map(len, tails))
    mask = torch.tensor([[1] * (plen + len(t)) + [0] * (width - len(t)) for t in tails])
    kwargs = {"attention_mask": mask, "use_cache": True}
    if prefix_cache is not None:
        kwargs["cache"] = _select_cache(prefix_cache, [0] * len(chunk))
    last = torch.tensor([[len(t) - 1] for t in tails])
    if _accepts(model, "logits_to_keep"):  # the vocab projection only where the next token is predicted
        kwargs["logits_to_keep"] = last
        last = torch.zeros_like(last)
    res = model(_pad(tails, width), **kwargs)
    st["forwards"] += 1
    first = torch.log_softmax(res.logits.gather(1, last.unsqueeze(-1).expand(-1, 1, res.logits.shape[-1])), -1)
    rows = [(b, i) for b, (_, members) in enumerate(chunk) for i in members if len(requests[i][1]) > 1]
    rest = {}
    if rows:  # continuation tokens 2.. are predicted from continuation tokens 1..n-1 on top of the context
        conts = [requests[i][1][:-1] for _, i in rows]
        w2 = max(map(len, conts))
        mask2 = torch.cat([mask[[b for b, _ in rows]],
                           torch.tensor([[1] * len(c) + [0] * (w2 - len(c)) for c in conts])], dim=1)
        kwargs2 = {"attention_mask": mask2, "cache": _select_cache(res.cache, [b for b, _ in rows]),
                   "use_cache": True}  # some models drop a given cache unless use_cache
        if _accepts(model, "position_ids"):  # the pad gap between context and continuation has no position
            kwargs2["position_ids"] = torch.tensor([[plen + len(tails[b]) + t for t in range(w2)] for b, _ in rows])
        logp = torch.log_softmax(model(_pad(conts, w2), **kwargs2).logits, dim=-1)
        st["forwards"] += 1
        rest = {i: logp[r] for r, (_, i) in enumerate(rows)}
    for b, (_, members) in enumerate(chunk):
        for i in members:
            cont = requests[i][1]
            picked = [first[b, 0, cont[0]].reshape(1)]
            if len(cont) > 1:
                picked.append(rest[i][:len(cont) - 1].gather(1, torch.tensor(cont[1:]).unsqueeze(-1)).squeeze(-1))
            out[i] = float(torch.cat(picked).sum())


def _score_seq2seq(model, requests, out, batch_size, max_len, st):
    """lm-eval's seq2seq path (encoder: context, decoder labels: continuation), the encoder run once per
    context and shared by all its continuations."""
    import torch
    from transformers.modeling_outputs import BaseModelOutput
    groups: dict[tuple, list[int]] = {}
    for i, (ctx, _) in enumerate(requests):
        groups.setdefault(tuple(ctx[-max_len:]), []).append(i)
    items = sorted(groups.items(), key=lambda it: -len(it[0]))
    for chunk in _chunks(items, batch_size):
        width = max(len(ctx) for ctx, _ in chunk)
        enc_ids = _pad([ctx for ctx, _ in chunk], width)
        enc_mask = torch.tensor([[1] * len(ctx) + [0] * (width - len(ctx)) for ctx, _ in chunk])
        hidden = model.get_encoder()(input_ids=enc_ids, attention_mask=enc_mask).last_hidden_state
        rows = [(b, i) for b, (_, members) in enumerate(chunk) for i in members]
        conts = [requests[i][1][-max_len:] for _, i in rows]
        pick = [b for b, _ in rows]
        logits = model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden[pick]),
                       attention_mask=enc_mask[pick], labels=_pad(conts, max(map(len, conts)))).logits
        st["forwards"] += 2
        logp = torch.log_softmax(logits, dim=-1)
        for r, (_, i) in enumerate(rows):
            cont = conts[r]
            out[i] = float(logp[r, :len(cont)].gather(1, torch.tensor(cont).unsqueeze(-1)).squeeze(-1).sum())


# ---------------------------------------------------------------------------------------------------------
# Multiple choice, pairs, generation: plain rows in, metrics out

def fewshot_examples(rows, k: int, seed: int = 0) -> list:
    """The k few-shot examples of a task: drawn once with random.Random(seed), used for every question."""
    rows = list(rows)
    if k > len(rows):
        raise ValueError(f"{k}-shot asks for more examples than the {len(rows)} few-shot rows")
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


def multiple_choice_lls(model, tok, template: str, rows, examples=(), *, batch_size: int = 16,
                        fast: bool = True) -> list[list[float]]:
    """Per question, the log-likelihood of each choice after the shared few-shot prefix."""
    prefix = fewshot_prefix(template, examples)
    requests, sizes = [], []
    for row in rows:
        context = prefix + template.format(**row)
        requests += [(context, TARGET_DELIMITER + c) for c in row["choices"]]
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


def generate(model, tok, prompts, *, max_new_tokens: int = 64, batch_size: int = 16) -> list[str]:
    """Greedy completions of `prompts` (left padded for causal models), special tokens dropped, stripped."""
    import torch
    out: list[str | None] = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    side, pad = tok.padding_side, tok.pad_token
    tok.padding_side = "right" if is_seq2seq(model) else "left"
    tok.pad_token = pad if pad is not None else tok.eos_token
    try:
        with torch.inference_mode():
            for chunk in _chunks(order, batch_size):
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
    from raycf import metrics as M
    refs = [row.get("references") or row["output"] for row in rows]
    out = {}
    for name in metric_names:
        fn = getattr(M, name)
        out[name] = float(fn([row["input"] for row in rows], predictions, refs) if name == "sari"
                          else fn(predictions, refs))
    return out


# ---------------------------------------------------------------------------------------------------------
# Sharding over Ray Train workers

def shard(costs, rank: int, world_size: int) -> list[int]:
    """Indices of rank's items: longest-first greedy onto the least loaded rank (deterministic, balanced)."""
    load = [0] * world_size
    mine = []
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(world_size), key=lambda r: (load[r], r))
        load[r] += costs[i]
        if r == rank:
            mine.append(i)
    return sorted(mine)


def _distributed(world_size: int) -> bool:
    import torch.distributed as dist
    return world_size > 1 and dist.is_available() and dist.is_initialized()


def _on_all_ranks(fn, n_items: int, costs, rank: int, world_size: int) -> list:
    """fn(indices) -> per-item results for those indices; every rank gets the results of all items."""
    if not _distributed(world_size):
        return fn(list(range(n_items)))
    import torch.distributed as dist
    mine = shard(costs, rank, world_size)
    local = dict(zip(mine, fn(mine) if mine else []))
    gathered: list = [None] * world_size
    dist.all_gather_object(gathered, local)
    merged = {i: v for part in gathered for i, v in part.items()}
    return [merged[i] for i in range(n_items)]


@contextmanager
def probing(model):
    """The model as the probe runs it: eval mode, no DDP wrapper, and FSDP2 parameters gathered ONCE.

    An FSDP2 forward all-gathers its parameters, a collective, but every rank runs a different number of
    forwards here. So all FSDP modules are unsharded up front (one collective, every rank enters this
    together) with reshard-after-forward off, which makes each forward local; on exit they are resharded and
    reshard-after-forward is set back to FSDP's defaults (True, the root False). Each rank holds the full
    parameters while probing, as a plain copy would."""
    from torch.nn.parallel import DistributedDataParallel
    if isinstance(model, DistributedDataParallel):
        model = model.module
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch built without distributed
        FSDPModule = ()
    sharded = [m for m in model.modules() if isinstance(m, FSDPModule)]
    training = model.training
    model.eval()
    for m in sharded:
        m.set_reshard_after_forward(False, recurse=False)
    for m in sharded:
        m.unshard()
    try:
        yield model
    finally:
        for i, m in enumerate(sharded):
            m.reshard()
            m.set_reshard_after_forward(i > 0, recurse=False)  # sharded[0] is the outermost: the root
        model.train(training)


# ---------------------------------------------------------------------------------------------------------
# Tasks from the registry

@dataclass(frozen=True)
class ProbeResult:
    """Scores of one task: metrics (name -> value) over n items (counts: metric -> items, where fewer)."""
    task: str
    category: str
    metrics: dict = field(default_factory=dict)
    n: int = 0
    counts: dict = field(default_factory=dict)


def probe_task(model, tok, task, *, shots: int | None = None, limit: int | None = None, seed: int = 0,
               rank: int = 0, world_size: int = 1, batch_size: int = 16, max_new_tokens: int = 64) -> ProbeResult:
    """Score one raycf.data Task. shots None = the task's own default; limit = its first N rows."""
    rows = list(task.rows)[:limit] if limit is not None else list(task.rows)
    counts = {}
    if task.type == "multiple_choice":
        k = task.shots if shots is None else shots
        examples = fewshot_examples(task.fewshot_rows, k, seed)
        lls = _on_all_ranks(lambda idx: multiple_choice_lls(model, tok, task.template, [rows[i] for i in idx],
                                                            examples, batch_size=batch_size),
                            len(rows), [_cost(task.template.format(**r), r["choices"]) for r in rows],
                            rank, world_size)
        metrics = multiple_choice_metrics(rows, lls)
    elif task.type == "pairs":
        lls = _on_all_ranks(lambda idx: pair_lls(model, tok, [rows[i] for i in idx], batch_size=batch_size),
                            len(rows), [_cost("", [r["sent_more"], r["sent_less"]]) for r in rows],
                            rank, world_size)
        metrics = pair_metrics(rows, lls)
        counts = {f"pct_stereotype/{k}": sum(r.get("bias_type") == k for r in rows)
                  for k in {r.get("bias_type", "") for r in rows} - {""}}
    elif task.type == "generation":
        from raycf.data.template import PROMPT_WITH_INPUT, prompt
        # the Alpaca template as training builds it (no "### Input" block for an empty input); a task's own
        # template otherwise
        prompts = [prompt(r) if task.template == PROMPT_WITH_INPUT else task.template.format(**r) for r in rows]
        preds = _on_all_ranks(lambda idx: generate(model, tok, [prompts[i] for i in idx],
                                                   max_new_tokens=max_new_tokens, batch_size=batch_size),
                              len(rows), [len(p) + 4 * max_new_tokens for p in prompts], rank, world_size)
        metrics = generation_metrics(task.metric, rows, preds)
    else:
        raise ValueError(f"task {task.name}: unknown type {task.type!r} "
                         f"(expected multiple_choice, pairs or generation)")
    return ProbeResult(task.name, task.category, metrics, len(rows), counts)


def _cost(context: str, continuations) -> int:
    return len(context) + sum(len(c) for c in continuations)


def probe_tasks(model, tok, task_names, **kwargs) -> list[ProbeResult]:
    """probe_task for each task (a raycf.data Task, or a name for raycf.data.load_task) on the model as
    `probing` prepares it."""
    from raycf.data import Task, load_task
    tasks = [name if isinstance(name, Task) else load_task(name) for name in task_names]
    with probing(model) as plain:
        return [probe_task(plain, tok, task, **kwargs) for task in tasks]


def run_probes(model, tok, task_names, *, shots: int | None = None, limit: int | None = None, seed: int = 0,
               rank: int = 0, world_size: int = 1, batch_size: int = 16,
               max_new_tokens: int = 64) -> dict[str, dict[str, float]]:
    """task -> metric -> value, e.g. {"facts_capitals": {"acc": 0.9, "acc_norm": 0.85}}. Identical on all ranks.

    shots: few-shot examples for multiple choice (None = each task's default), drawn with `seed`.
    limit: first N rows per task. batch_size: contexts (questions, pairs, prompts) per forward pass.
    rank/world_size: with torch.distributed initialised, each rank scores a balanced slice and the results
    are all-gathered; every rank must call this together. The model may be plain, DDP- or FSDP2-wrapped
    (see `probing`); it is left in the train/eval mode it came in.
    """
    results = probe_tasks(model, tok, task_names, shots=shots, limit=limit, seed=seed, rank=rank,
                          world_size=world_size, batch_size=batch_size, max_new_tokens=max_new_tokens)
    return {r.task: dict(r.metrics) for r in results}


# ---------------------------------------------------------------------------------------------------------
# CLI

def format_table(results) -> str:
    lines = [f"{'task':<24} {'category':<10} {'metric':<36} {'value':>8} {'n':>6}"]
    for r in results:
        for name, value in r.metrics.items():
            lines.append(f"{r.task:<24} {r.category:<10} {name:<36} {value:>8.4f} {r.counts.get(name, r.n):>6}")
    return "\n".join(lines)


def _load(model_dir, adapter: str | None, trust_remote_code: bool = False, allow_pickle: bool = False):
    """Model + tokenizer from a folder; with `adapter`, the PEFT adapter on top, not merged."""
    from raycf.models import load_model
    model, tok = load_model(model_dir, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    if adapter:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, adapter)
    return model, tok


def _check_adapter(adapter: str | None, allow_pickle: bool = False):
    from pathlib import Path
    if adapter and not (Path(adapter) / "adapter_config.json").exists():
        raise FileNotFoundError(f"--adapter {adapter}: not a PEFT adapter folder (no adapter_config.json)")
    if adapter and not allow_pickle and not (Path(adapter) / "adapter_model.safetensors").exists() \
            and (Path(adapter) / "adapter_model.bin").exists():
        raise FileNotFoundError(f"--adapter {adapter}: holds only pickle weights (adapter_model.bin), which can "
                                f"run code when loaded; save it as safetensors or pass --allow-pickle for a folder "
                                f"you trust")


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m raycf.probe", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model folder or built-in name (see raycf.models)")
    p.add_argument("--adapter", default=None, help="PEFT adapter folder, scored without merging")
    p.add_argument("--suite", required=True, help="comma-separated task names or categories")
    p.add_argument("--shots", type=int, default=None, help="few-shot examples (default: each task's own)")
    p.add_argument("--limit", type=int, default=None, help="first N rows of each task")
    p.add_argument("--seed", type=int, default=0, help="seed of the few-shot draw")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--trust-remote-code", action="store_true", help="run the model folder's own code (auto_map)")
    p.add_argument("--allow-pickle", action="store_true", help="load pickle weights (pytorch_model.bin)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    if not args.debug:
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()  # stderr is for the one error line
    try:
        from raycf.models import ModelError, folder_problems, resolve_model_dir
        model_dir = resolve_model_dir(args.model, key="--model")
        problems = folder_problems(model_dir, trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle,
                                   key="--model")
        if problems:
            raise ModelError(problems[0])
        _check_adapter(args.adapter, args.allow_pickle)
        from raycf.data import DataError, load_task, suite
        try:  # bad rows are reported before the model loads
            tasks = [load_task(n) for n in suite([s.strip() for s in args.suite.split(",") if s.strip()])]
        except DataError as e:
            raise DataError(f"--suite: {e}") from None
        model, tok = _load(model_dir, args.adapter, args.trust_remote_code, args.allow_pickle)
        results = probe_tasks(model, tok, tasks, shots=args.shots, limit=args.limit, seed=args.seed,
                              batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    except Exception as e:
        if args.debug:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
