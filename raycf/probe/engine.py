"""The scoring engine: lm-eval 0.4.13's tokenisation and log-likelihood of (context, continuation) requests,
with the few-shot prefix's KV cache computed once and each context's cache shared by its continuations
(see raycf.probe for what is reproduced exactly)."""
from __future__ import annotations

import copy
import inspect


DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when neither config nor tokenizer give a length


TOKENIZER_INFINITY = 1000000000000000019884624838656


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


def accepts(model, name: str) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return name in inspect.signature(base.forward).parameters


def _pad(rows, length, value=0):
    import torch
    return torch.tensor([list(r) + [value] * (length - len(r)) for r in rows], dtype=torch.long)


def select_cache(cache, index):
    """A copy of `cache` holding rows `index` (new tensors: the original stays reusable)."""
    import torch
    new = copy.copy(cache)
    new.layers = [copy.copy(layer) for layer in cache.layers]
    new.batch_select_indices(torch.as_tensor(index, dtype=torch.long))
    return new


def chunks(seq, n):
    for i in range(0, len(seq), max(1, n)):
        yield seq[i:i + n]


def _score_whole(model, idx, requests, out, batch_size, max_len, st):
    """lm-eval's own loop: one row per request, (ctx+cont)[-(max_len+1):][:-1], right padded, longest first."""
    import torch
    order = sorted(idx, key=lambda i: -len(requests[i][0]) - len(requests[i][1]))
    for chunk in chunks(order, batch_size):
        inps = [(requests[i][0] + requests[i][1])[-(max_len + 1):][:-1] for i in chunk]
        width = max(map(len, inps))
        logp = torch.log_softmax(model(_pad(inps, width)).logits.float(), dim=-1)
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
    items = [(ctx, part) for ctx, members in groups.items() for part in chunks(members, 4 * batch_size)]
    by_shared = _split_by_prefix(items, list(prefix))
    st["shared_prefix"] = sum(len(m) for _, m in by_shared.get(len(prefix), [])) if prefix else 0
    st["partial_prefix"] = sum(len(m) for n, part in by_shared.items() if 0 < n < len(prefix) for _, m in part)
    st["fallback"] = sum(len(m) for _, m in by_shared.get(0, [])) if prefix else 0
    for n, part in sorted(by_shared.items(), reverse=True):
        cache = None
        if n:
            import torch
            keep = {"logits_to_keep": 1} if accepts(model, "logits_to_keep") else {}
            cache = model(torch.tensor([prefix[:n]]), use_cache=True, **keep).cache
            st["forwards"] += 1
        part = sorted(part, key=lambda it: -len(it[0]))
        for chunk in chunks(part, batch_size):
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
        kwargs["cache"] = select_cache(prefix_cache, [0] * len(chunk))
    last = torch.tensor([[len(t) - 1] for t in tails])
    if accepts(model, "logits_to_keep"):  # the vocab projection only where the next token is predicted
        kwargs["logits_to_keep"] = last
        last = torch.zeros_like(last)
    res = model(_pad(tails, width), **kwargs)
    st["forwards"] += 1
    first = torch.log_softmax(res.logits.gather(1, last.unsqueeze(-1).expand(-1, 1, res.logits.shape[-1])).float(), -1)
    rows = [(b, i) for b, (_, members) in enumerate(chunk) for i in members if len(requests[i][1]) > 1]
    rest = {}
    if rows:  # continuation tokens 2.. are predicted from continuation tokens 1..n-1 on top of the context
        conts = [requests[i][1][:-1] for _, i in rows]
        w2 = max(map(len, conts))
        mask2 = torch.cat([mask[[b for b, _ in rows]],
                           torch.tensor([[1] * len(c) + [0] * (w2 - len(c)) for c in conts])], dim=1)
        kwargs2 = {"attention_mask": mask2, "cache": select_cache(res.cache, [b for b, _ in rows]),
                   "use_cache": True}  # some models drop a given cache unless use_cache
        if accepts(model, "position_ids"):  # the pad gap between context and continuation has no position
            kwargs2["position_ids"] = torch.tensor([[plen + len(tails[b]) + t for t in range(w2)] for b, _ in rows])
        logp = torch.log_softmax(model(_pad(conts, w2), **kwargs2).logits.float(), dim=-1)
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
    for chunk in chunks(items, batch_size):
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
        logp = torch.log_softmax(logits.float(), dim=-1)  # .float(): bf16 probing (a no-op in fp32)
        for r, (_, i) in enumerate(rows):
            cont = conts[r]
            out[i] = float(logp[r, :len(cont)].gather(1, torch.tensor(cont).unsqueeze(-1)).squeeze(-1).sum())
