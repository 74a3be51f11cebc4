"""Greedy generation for the generation probes: the tokens of transformers' `generate(do_sample=False)`, for less.

    greedy(model, tok, prompts, max_new_tokens=32, batch_size=16)   # None where `generate` must run instead

What `generate` does for a batch of prompts, and what is done here instead:
- every prompt is left padded to the batch's longest and run whole; here the token prefix all prompts share
  (the Alpaca preamble) runs once, and each row's own tail runs on top of its KV cache, right padded, with
  its own positions (the pad gap is masked and has no position, as in raycf.probe.engine);
- a row that has produced EOS is fed pad tokens until the whole batch has; here it leaves the batch;
- per step, logits processors and stopping criteria run; here none is configured (see `plain`), so a step is
  the forward and an argmax.
The text of each row is then decoded exactly as `generate`'s output would be (EOS, then pads to the batch's
longest), so every prediction and every score stays the same (tests/test_probe.py compares them).
"""
from __future__ import annotations

# generation_config settings that add logits processors or stopping rules to greedy decoding: with any of them
# away from its default, `generate` runs
PROCESSOR_SETTINGS = ("repetition_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
                      "min_length", "min_new_tokens", "forced_bos_token_id", "forced_eos_token_id", "suppress_tokens",
                      "begin_suppress_tokens", "sequence_bias", "exponential_decay_length_penalty",
                      "renormalize_logits", "guidance_scale", "watermarking_config", "num_beams", "penalty_alpha",
                      "dola_layers", "prompt_lookup_num_tokens", "stop_strings", "max_time", "token_healing")


def plain(model) -> bool:
    """Whether greedy decoding of `model` is a forward and an argmax per token: a causal model that takes
    position ids and a KV cache, whose generation config adds nothing to greedy decoding."""
    from transformers import GenerationConfig
    from raycf.probe.engine import accepts, is_seq2seq
    if is_seq2seq(model) or not (accepts(model, "position_ids") and accepts(model, "cache")):
        return False
    config, default = getattr(model, "generation_config", None), GenerationConfig()
    return config is not None and all(getattr(config, k, None) == getattr(default, k, None) for k in PROCESSOR_SETTINGS)


def eos_ids(model) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set() if eos is None else {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


def greedy(model, tok, prompts, *, max_new_tokens: int, batch_size: int) -> list[str] | None:
    """Greedy completions of `prompts`, special tokens dropped, stripped: `generate`'s texts, batched as
    raycf.probe.tasks.generate batches them (longest prompts first). None if the model is not `plain`."""
    import torch
    from raycf.probe.engine import select_cache, chunks
    if not plain(model) or not prompts:
        return None
    ids = [tok(p, return_token_type_ids=False)["input_ids"] for p in prompts]
    shared = _shared_length(ids)
    prefix_cache = None
    with torch.inference_mode():
        if shared:
            prefix_cache = model(torch.tensor([ids[0][:shared]]), use_cache=True, logits_to_keep=1).cache
        out: list[str | None] = [None] * len(prompts)
        for chunk in chunks(sorted(range(len(prompts)), key=lambda i: -len(prompts[i])), batch_size):
            cache = select_cache(prefix_cache, [0] * len(chunk)) if shared else None
            tokens = _decode_batch(model, [ids[i][shared:] for i in chunk], shared, cache, max_new_tokens,
                                   eos_ids(model), _pad_id(tok))
            for i, text in zip(chunk, tok.batch_decode(tokens, skip_special_tokens=True)):
                out[i] = text.strip()
    return out  # type: ignore[return-value]


def _shared_length(ids) -> int:
    """Leading tokens every prompt has, leaving each at least one token of its own."""
    n, limit = 0, min(len(x) for x in ids) - 1
    while n < limit and all(x[n] == ids[0][n] for x in ids):
        n += 1
    return n


def _pad_id(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def _decode_batch(model, tails, shared: int, cache, max_new_tokens: int, eos: set[int], pad: int) -> list[list[int]]:
    """New tokens of each row (after `shared` cached prefix tokens and its tail), then padded as `generate`
    pads a batch: pad tokens after a row's EOS, up to the batch's longest."""
    import torch
    width = max(map(len, tails))
    mask = torch.tensor([[1] * (shared + len(t)) + [0] * (width - len(t)) for t in tails])
    positions = torch.arange(shared, shared + width).expand(len(tails), -1)
    lasts = [len(t) - 1 for t in tails]
    keep = sorted(set(lasts))
    res = model(torch.tensor([t + [pad] * (width - len(t)) for t in tails]), attention_mask=mask,
                position_ids=positions, cache=cache, use_cache=True, logits_to_keep=torch.tensor(keep))
    picked = res.logits[torch.arange(len(tails)), torch.tensor([keep.index(n) for n in lasts])]
    new = [[int(t)] for t in picked.float().argmax(-1)]
    alive = [r for r in range(len(tails)) if new[r][0] not in eos]
    cache, step_pos = res.cache, torch.tensor([shared + len(t) for t in tails])
    if len(alive) < len(tails):
        cache.batch_select_indices(torch.tensor(alive, dtype=torch.long))
        mask, step_pos = mask[alive], step_pos[alive]
    for _ in range(max_new_tokens - 1):
        if not alive:
            break
        mask = torch.cat([mask, torch.ones(len(alive), 1, dtype=mask.dtype)], dim=1)
        res = model(torch.tensor([[new[r][-1]] for r in alive]), attention_mask=mask, position_ids=step_pos[:, None],
                    cache=cache, use_cache=True)
        cache, step_pos = res.cache, step_pos + 1
        nxt = res.logits[:, -1].float().argmax(-1).tolist()
        still = []
        for j, (r, t) in enumerate(zip(alive, nxt)):
            new[r].append(int(t))
            if t not in eos:
                still.append(j)
        if len(still) < len(alive):
            cache.batch_select_indices(torch.tensor(still, dtype=torch.long))
            mask, step_pos = mask[still], step_pos[still]
            alive = [alive[j] for j in still]
    longest = max(map(len, new))
    return [row + [pad] * (longest - len(row)) for row in new]
