"""One stage of continual fine-tuning on one worker: encode, batch, wrap (FSDP2 | DDP), train, save.

Run through a trial (`python -m raycf.trial`); the functions here are plain and work in a single
process too (world size 1), which is how tests compare FSDP2 and DDP with a one-process run.

Losses are token sums divided by the target-token count of the whole GLOBAL batch, which every rank
knows because every rank builds the same batch plan from the seed. So world size, gradient
accumulation and padding do not change the math: a 2-worker step equals a 1-process step.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.distributed as dist

from raycf.data import chat
from raycf.data.template import prompt
from raycf.errors import DataError
from raycf.lora import frozen_casts

IGNORE = -100
CHUNK_BATCHES = 16  # batches per length-sorted chunk: big enough to cut padding, small enough to stay random


@dataclass
class Example:
    input_ids: list[int]   # causal: prompt + response + eos; seq2seq: the encoder input (prompt)
    labels: list[int]      # causal: IGNORE over the prompt; seq2seq: response + eos (decoder targets)

    @property
    def length(self) -> int:
        return len(self.input_ids) + (len(self.labels) if len(self.labels) != len(self.input_ids) else 0)

    @property
    def targets(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)

    @property
    def longest(self) -> int:
        """Tokens of the longer sequence the model sees (what optim.max_length bounds)."""
        return max(len(self.input_ids), len(self.labels))


def encode(rows: list[dict], tok, kind: str, max_length: int, source: str = "stage", template: str = "alpaca",
           system: str = "") -> list[Example]:
    """Alpaca prompt -> context, `output` -> response; loss on response tokens only. template chat: each row in
    the tokenizer's chat template, the loss on every assistant turn (raycf.data.chat)."""
    examples, too_long = [], []
    if template == "chat":
        chat.check_template(tok, source, kind)
    for i, row in enumerate(rows):
        ex = encode_row(row, tok, kind, template, system)
        if ex.longest > max_length:
            too_long.append(i + 1)
        examples.append(ex)
    if too_long:
        raise DataError(f"{source}: {len(too_long)} rows (first: row {too_long[0]}) are longer than "
                        f"optim.max_length={max_length} tokens; raise optim.max_length or shorten them")
    return examples


def encode_row(row: dict, tok, kind: str, template: str = "alpaca", system: str = "") -> Example:
    """One row as the model trains on it: Alpaca prompt -> context, `output` + EOS -> response; template chat:
    the chat template's rendering (of a conversation row, or of an instruction row as one exchange), the loss on
    the assistant turns."""
    if template == "chat" or chat.is_conversation(row):
        if template != "chat":
            raise DataError("conversation rows (messages, conversations) train in a chat template; set "
                            "data.template: chat")
        if kind == "seq2seq":
            raise DataError(chat.SEQ2SEQ)
        turns = chat.messages(row) if chat.is_conversation(row) else chat.instruction_messages(row)
        return Example(*chat.encode(tok, chat.with_system(turns, system)))
    ctx = tok(prompt(row), add_special_tokens=True)["input_ids"]
    resp = tok(row["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    if kind == "seq2seq":
        return Example(ctx, resp)
    return Example(ctx + resp, [IGNORE] * len(ctx) + resp)


def num_steps(n_examples: int, batch_size: int, epochs: float, steps_per_stage: int) -> int:
    if steps_per_stage > 0:
        return steps_per_stage
    return max(1, math.ceil(n_examples * epochs / batch_size))


def batch_plan(examples: list[Example], batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Indices of each global batch. Seeded shuffle, then length-sorted within chunks (less padding),
    then the chunk's batches shuffled again so that lengths do not trend within a stage."""
    if len(examples) < batch_size:  # no full batch: the loop below would never end
        raise DataError(f"{len(examples)} examples make no full batch of {batch_size}; give more rows or a smaller "
                        f"batch")
    rng = random.Random(seed)
    plan: list[list[int]] = []
    while len(plan) < steps:
        order = list(range(len(examples)))
        rng.shuffle(order)
        chunk = batch_size * CHUNK_BATCHES
        for start in range(0, len(order), chunk):
            part = sorted(order[start:start + chunk], key=lambda i: examples[i].length)
            batches = [part[j:j + batch_size] for j in range(0, len(part), batch_size)]
            batches = [b for b in batches if len(b) == batch_size]  # equal batches keep steps comparable
            rng.shuffle(batches)
            plan.extend(batches)
    return plan[:steps]


def my_microbatches(batch: list[int], examples: list[Example], world: int, rank: int,
                    grad_accum: int) -> list[list[int]]:
    """This rank's share of a global batch, as `grad_accum` microbatches of similar lengths."""
    slots = world * grad_accum
    by_len = sorted(batch, key=lambda i: examples[i].length)
    # neighbours in length go to the same microbatch, so padding stays small everywhere
    size = len(batch) // slots
    parts = [by_len[s * size:(s + 1) * size] for s in range(slots)]
    # deal microbatches round-robin over ranks so that every rank gets short and long ones
    return [parts[a * world + rank] for a in range(grad_accum)]


def collate(examples: list[Example], pad_id: int, kind: str, decoder_start: int | None = None
            ) -> dict[str, torch.Tensor]:
    """Right-padded tensors for one microbatch (seq2seq: plus decoder inputs = labels shifted right)."""
    n = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    m = max(len(e.labels) for e in examples)
    labels = torch.full((len(examples), m), IGNORE, dtype=torch.long)
    for r, e in enumerate(examples):
        ids[r, :len(e.input_ids)] = torch.tensor(e.input_ids)
        mask[r, :len(e.input_ids)] = 1
        labels[r, :len(e.labels)] = torch.tensor(e.labels)
    out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if kind == "seq2seq":
        start = torch.full((len(examples), 1), pad_id if decoder_start is None else decoder_start)
        shifted = torch.cat([start, labels[:, :-1]], dim=1)
        out["decoder_input_ids"] = shifted.masked_fill(shifted == IGNORE, pad_id)
    return out


def loss_sum(model, batch: dict[str, torch.Tensor], kind: str) -> torch.Tensor:
    """Summed cross-entropy over target tokens."""
    logits, targets = target_logits(model, batch, kind)
    return torch.nn.functional.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="sum")


def target_logits(model, batch: dict[str, torch.Tensor], kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 logits (positions x vocabulary) and the token each position predicts (IGNORE where none). For causal
    models only the positions between the first and the last target get logits (logits_to_keep), which skips
    the vocabulary projection over most prompt tokens."""
    labels = batch["labels"]
    if kind == "seq2seq":
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    decoder_input_ids=batch["decoder_input_ids"], use_cache=False)
        return out.logits.float().flatten(0, 1), labels.flatten()
    if "position_ids" in batch:  # packed rows (pack_shared_prefix): labels[r, t] is what position t predicts
        keep = (labels != IGNORE).any(dim=0).nonzero().flatten()
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    position_ids=batch["position_ids"], logits_to_keep=keep, use_cache=False)
        return out.logits.float().flatten(0, 1), labels[:, keep].flatten()
    targets = labels[:, 1:]
    hit = (targets != IGNORE).any(dim=0).nonzero().flatten()
    keep = torch.arange(int(hit.min()), int(hit.max()) + 1)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep,
                use_cache=False)
    return out.logits.float().flatten(0, 1), targets[:, keep].flatten()


# Causal LMs whose attention takes explicit position_ids (RoPE) and a custom 4D mask as given; others
# (BLOOM's ALiBi reads positions off a 2D mask) train on padded batches.
SHARED_PREFIX_MODELS = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo", "olmo2")
MIN_SHARED_FRACTION = 0.1  # pack only when the shared prefix saves at least this share of a microbatch's tokens
PACK_ROW_TOKENS = 1024     # a packed row's attention is dense: bound its length (and its mask's size)


def prefix_attention(model) -> str | None:
    """The attention `model` (PEFT, FSDP2 or DDP wrapped) would run pack_shared_prefix rows with, sdpa or
    eager; None if it cannot take them."""
    config = getattr(getattr(model, "module", model), "config", None)  # .module: DDP
    if config is None or config.is_encoder_decoder or config.model_type not in SHARED_PREFIX_MODELS:
        return None
    attn = getattr(config, "_attn_implementation", None)
    return attn if attn in ("sdpa", "eager") else None


def pack_shared_prefix(examples: list[Example], sdpa: bool, dtype=torch.float32) -> dict[str, torch.Tensor] | None:
    """A causal microbatch as rows of [shared prefix | rest of ex 1 | rest of ex 2 | ...] (each row at most
    PACK_ROW_TOKENS long), or None when the examples share too little. Instruction rows start with the same
    template preamble; computing it once per row instead of once per example is the same math (causal
    attention: prefix positions never see what follows) and, on the study's Alpaca data, a third fewer tokens
    through the model. Each rest attends to its row's prefix and causally to itself (a 4D mask), at the
    positions it has in its own example (position_ids). labels[r, t] is the token that position t predicts,
    or IGNORE; the prefix stops short of every example's last prompt token, so no target is predicted from a
    shared position."""
    if len(examples) < 2:
        return None
    first = examples[0].input_ids
    p = min(len(e.labels) - 1 - e.targets for e in examples)  # prompt length - 1
    for e in examples[1:]:
        n = 0
        while n < p and e.input_ids[n] == first[n]:
            n += 1
        p = n
    rows: list[list[Example]] = [[]]
    widths = [p]  # each row's length: the prefix, then each example's rest
    for e in examples:
        if rows[-1] and widths[-1] + len(e.input_ids) - p > PACK_ROW_TOKENS:
            rows.append([])
            widths.append(p)
        rows[-1].append(e)
        widths[-1] += len(e.input_ids) - p
    if p * (len(examples) - len(rows)) < MIN_SHARED_FRACTION * sum(len(e.input_ids) for e in examples):
        return None
    width = max(widths)
    ids = torch.full((len(rows), width), first[0], dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    seg = torch.full((len(rows), width), -1, dtype=torch.long)  # -1 padding, 0 the prefix, s example s
    for r, row in enumerate(rows):
        ids[r, :p], pos[r, :p], seg[r, :p] = torch.tensor(first[:p], dtype=torch.long), torch.arange(p), 0
        t = p
        for s, e in enumerate(row, start=1):
            n = len(e.input_ids) - p
            ids[r, t:t + n] = torch.tensor(e.input_ids[p:])
            pos[r, t:t + n] = torch.arange(p, p + n)
            labels[r, t:t + n] = torch.tensor(e.labels[p + 1:] + [IGNORE])  # the next label of its own example
            seg[r, t:t + n] = s
            t += n
    key, query = seg[:, None, :], seg[:, :, None]
    allowed = torch.ones(width, width, dtype=torch.bool).tril() & (key >= 0) & ((key == 0) | (key == query))
    allowed |= torch.eye(width, dtype=torch.bool)  # padding attends to itself: no all-masked softmax row
    mask = allowed if sdpa else torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return {"input_ids": ids, "position_ids": pos, "labels": labels, "attention_mask": mask[:, None]}


def wrap(model, strategy: str, device: torch.device, mixed_precision: bool):
    """FSDP2 (each transformer block, then the root) or DDP. World size 1: the model as is.
    LoRA must already be applied: FSDP2 shards the adapter's parameters with the block that holds them."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    mesh = _mesh(device.type, dist.get_world_size())
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if mixed_precision \
        else MixedPrecisionPolicy()
    for block in transformer_blocks(model):
        fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    return model


_MESHES: dict = {}


def _mesh(device_type: str, world: int):
    """One device mesh per process group: a pooled worker wraps a new model for every trial it serves."""
    from torch.distributed.device_mesh import init_device_mesh
    key = (device_type, world, id(dist.distributed_c10d._get_default_group()))
    if key not in _MESHES:
        _MESHES[key] = init_device_mesh(device_type, (world,))
    return _MESHES[key]


def transformer_blocks(model) -> list[torch.nn.Module]:
    """The repeated layers (decoder layers, T5 blocks, BLOOM blocks): ModuleLists of identical types."""
    blocks = []
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0 and \
                len({type(m) for m in module}) == 1 and sum(1 for _ in module[0].parameters()) > 2:
            blocks.extend(module)
    return blocks


def make_optimizer(model, lr: float, weight_decay: float, schedule: str, warmup: int, steps: int):
    from transformers import get_scheduler
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = get_scheduler(schedule, opt, num_warmup_steps=warmup, num_training_steps=steps)
    return opt, sched


@dataclass
class StageStats:
    loss: float          # mean over steps of the global-batch token-mean loss
    steps: int
    tokens: int          # target tokens trained on, all ranks
    seen_tokens: int     # tokens of the examples trained on, all ranks (throughput numerator; a shared
                         # prefix counts once per example, padding not at all)
    seconds: float


def train_stage(model, examples: list[Example], *, kind: str, pad_id: int, batch_size: int, steps: int,
                grad_accum: int, lr: float, weight_decay: float, schedule: str, warmup: int,
                max_grad_norm: float, seed: int, device=None, autocast_dtype=None, on_step=None,
                method=None) -> StageStats:
    """Train `model` (already wrapped) for `steps` optimizer steps on `examples`; a fresh optimizer
    and schedule per stage, as when each task of the study is fine-tuned from the previous checkpoint.
    method: a continual method's terms (raycf.continual.Method), or None for the stage's loss alone."""
    import time
    device = device or torch.device("cpu")
    world = dist.get_world_size() if dist.is_initialized() else 1
    torch.manual_seed(seed)  # dropout masks; identical on restart from the previous stage
    opt, sched = make_optimizer(model, lr, weight_decay, schedule, warmup, steps)
    attn = prefix_attention(model) if kind == "causal" else None
    mask_dtype = autocast_dtype or next(model.parameters()).dtype
    model.train()
    t0, total, tokens, seen = time.perf_counter(), 0.0, 0, 0
    with frozen_casts(model, autocast_dtype):
        for step, batch in enumerate(batch_plan(examples, batch_size, steps, seed)):
            if on_step is not None:
                on_step(step)
            loss, n_targets, n_seen = train_step(model, opt, sched, examples, batch, kind=kind, pad_id=pad_id,
                                                 grad_accum=grad_accum, max_grad_norm=max_grad_norm,
                                                 device=device, attn=attn, mask_dtype=mask_dtype,
                                                 autocast_dtype=autocast_dtype, method=method)
            total, tokens, seen = total + loss, tokens + n_targets, seen + n_seen
    seen_t = torch.tensor(seen, dtype=torch.long)
    if world > 1:
        dist.all_reduce(seen_t)
    return StageStats(loss=total / steps, steps=steps, tokens=tokens, seen_tokens=int(seen_t),
                      seconds=time.perf_counter() - t0)


def train_step(model, opt, sched, examples: list[Example], batch: list[int], *, kind: str, pad_id: int,
               grad_accum: int, max_grad_norm: float, device, attn, mask_dtype, autocast_dtype, method=None):
    """One optimizer step on the global batch `batch` (this rank's microbatches of it): the global-batch
    token-mean loss, the batch's target tokens, and the tokens this rank trained on. A continual method adds
    a per-token term to each microbatch's loss (LwF) and its penalty's gradient before clipping (EWC,
    O-LoRA); the loss reported is the stage's own."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    n_targets = sum(examples[i].targets for i in batch)
    step_loss, seen = torch.zeros((), device=device), 0
    for micro in my_microbatches(batch, examples, world, rank, grad_accum):
        part = [examples[i] for i in micro]
        packed = pack_shared_prefix(part, attn == "sdpa", mask_dtype) if attn else None
        tensors = {k: v.to(device) for k, v in (packed or collate(part, pad_id, kind)).items()}
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            if method is not None and method.distills:
                teacher = method.teacher_logits(model, tensors, kind)  # first: it swaps weights in and out
                logits, targets = target_logits(model, tensors, kind)
                loss = torch.nn.functional.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="sum")
                distill = method.distill_sum(logits, teacher, targets)
                method.note(distill / n_targets)  # this rank's part of the step's per-token term
                total = loss + distill
            else:
                loss = total = loss_sum(model, tensors, kind)
        # DDP/FSDP average gradients over ranks: scale by world so the result is the global token mean
        (total * world / n_targets).backward()
        step_loss += loss.detach()
        seen += sum(e.length for e in part)
    if method is not None:
        method.penalty_grads(model)
    if max_grad_norm > 0:
        clip_grad_norm(model, max_grad_norm)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    if world > 1:
        dist.all_reduce(step_loss)
    return float(step_loss) / n_targets, n_targets, seen


def clip_grad_norm(model, max_norm: float) -> None:
    # FSDP2 grads are DTensors: clip_grad_norm_ handles them (the norm is computed over all shards)
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], max_norm)


@torch.no_grad()
def eval_loss(model, examples: list[Example], kind: str, pad_id: int, device=None, autocast_dtype=None) -> float:
    """Token-mean loss of `examples` in one batch (every rank runs the same batch: FSDP needs all ranks),
    under autocast to `autocast_dtype` if given (as training ran)."""
    device = device or torch.device("cpu")
    model.eval()
    tensors = {k: v.to(device) for k, v in collate(examples, pad_id, kind).items()}
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        total = loss_sum(model, tensors, kind)
    return float(total) / sum(e.targets for e in examples)
