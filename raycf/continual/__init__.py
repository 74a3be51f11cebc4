"""Methods against forgetting, chosen by continual.method (each one's strengths in its own config section):

    naive        each stage fine-tunes the model the last one left (the study's setting)
    replay       each stage's rows plus rows of the earlier stages, `ratio` of the result; `balanced`: as many of
                 each earlier stage (else uniform over their rows)  -- rows: raycf.data.sources.stage_train_rows
    general_mix  each stage's rows plus rows of the general instruction set, `ratio` of the result (the study
                 reports that mixing in general data reduces forgetting)
    ewc          after each stage, the diagonal empirical Fisher F of the trainable parameters on the stage's
                 first `fisher_examples` examples, summed online over stages (`decay`); later stages' loss gains
                 penalty/2 x sum F (theta - theta*)^2, theta* the weights after the last stage
    lwf          each stage's loss gains alpha x T^2 x KL(teacher || model) per target token (softmaxes at
                 temperature T), the teacher being the model before the stage: its trainable weights are swapped
                 in for the teacher's forward (with LoRA only the adapter's; no second copy of the model)
    o_lora       LoRA only: a new adapter per stage, the earlier ones frozen, and the loss gains
                 orth x sum_i |A_i A^T| (the new A against each earlier stage's) + l2 x |new A, B|^2
                 (Wang et al. 2023). The frozen adapters are merged into the base weights, which computes their
                 sum as probes must see it
    merge        LoRA only: after each stage its adapter is merged into the base (W += scaling x B @ A) and the
                 next stage trains a fresh one (seeded by seed and stage)
    average      after each stage, theta <- alpha * theta_before + (1 - alpha) * theta_after for every trained
                 parameter (WiSE-FT-style averaging, Wortsman et al. 2022). With LoRA the adapter's factors A and B
                 are averaged (not their product); the frozen base never changes.

The method and its strengths are part of every stage's cache key (raycf.trial.plan), so trials of different
methods share no checkpoint after the first stage they differ on. A stage's checkpoint holds the weights the
method left (averaged ones for `average`, a fresh adapter for `merge` and `o_lora`) and, in
continual.safetensors, what the method carries to the next stage (EWC's Fisher; the merged adapters, from which
a reload rebuilds the base weights in the same order of operations), so a resumed trial goes on exactly.

Under FSDP2 every rank keeps its own shards of the anchors, Fisher and earlier adapters' B; every penalty is a
sum over its parameters' elements or over the new A's rows, so a rank adds its shard's gradient and no
collective is needed during training (raycf.continual.terms).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from raycf.config.schema import ExperimentConfig
from raycf.continual import terms
from raycf.continual.shards import add_to_grad, is_sharded, local, local_part, whole
from raycf.train import collate, target_logits

ADAPTER = "default"                  # PEFT's name of the one adapter a trial trains
STATE_FILE = "continual.safetensors"  # in a stage checkpoint: what the method carries to the next stage


def inner(model):
    return getattr(model, "module", model)  # DDP keeps the model in .module; FSDP2 shards in place


def trainable(model) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in inner(model).named_parameters() if p.requires_grad]


def trained(model) -> dict:
    """A copy of every trainable parameter (under FSDP2 each rank's own shards: no collective is needed)."""
    return {n: p.detach().clone() for n, p in trainable(model)}


def interpolate(model, before: dict, alpha: float) -> None:
    """In place: each trainable parameter becomes alpha * before + (1 - alpha) * its current value."""
    with torch.no_grad():
        for name, p in trainable(model):
            p.copy_(terms.interpolated(before[name], p, alpha))


def lora_layers(model) -> list:
    """(name, layer) of every PEFT LoRA layer carrying the trial's adapter, in module order."""
    from peft.tuners.lora.layer import LoraLayer
    return [(n, m) for n, m in inner(model).named_modules() if isinstance(m, LoraLayer) and ADAPTER in m.lora_A]


def load_state(folder: Path) -> dict:
    """What a stage checkpoint's method carries on (empty if nothing)."""
    path = Path(folder) / STATE_FILE
    if not path.exists():
        return {}
    from safetensors.torch import load_file
    return load_file(path)


def restore_weights(model, state: dict) -> None:
    """Merge the adapters of the finished stages into a plain PEFT model's base weights, in stage order, the same
    operations the live model ran (merge, o_lora); nothing for other methods."""
    for j in _earlier_stages(state):
        with torch.no_grad():
            for name, layer in lora_layers(model):
                w = layer.base_layer.weight
                w.add_(terms.lora_delta(state[f"earlier/{j}/{name}/A"], state[f"earlier/{j}/{name}/B"],
                                        layer.scaling[ADAPTER], w.dtype).to(w.device))


def _earlier_stages(state: dict) -> list[int]:
    return sorted({int(k.split("/")[1]) for k in state if k.startswith("earlier/")})


class Method:
    """A trial's continual method on one rank, over its stages: before_stage, then in training teacher_logits and
    distill_sum (each microbatch) and penalty_grads (each optimizer step), then after_stage; state() goes into
    the stage's checkpoint, resume() reads it back."""

    def __init__(self, cfg: ExperimentConfig):
        self.name, self.c, self.seed = cfg.continual.method, cfg.continual, cfg.seed
        self.before: dict | None = None   # average, lwf: the trainable weights before the stage
        self.fisher: dict = {}            # ewc: name -> F (whole), what the checkpoint keeps
        self.fisher_local: dict = {}      # ewc: name -> this rank's part of F
        self.anchor: dict = {}            # ewc: name -> this rank's part of theta*
        self.earlier: list[dict] = []     # merge, o_lora: per finished stage, layer name -> (A, B), whole
        self.added = None                 # this rank's part of the stage's method terms, summed over steps
        self.steps = 0

    @property
    def distills(self) -> bool:
        return self.name == "lwf" and self.before is not None and self.c.lwf.alpha > 0

    @property
    def adds_loss(self) -> bool:
        return self.name in ("ewc", "lwf", "o_lora")

    def before_stage(self, model) -> None:
        self.added, self.steps = None, 0
        if self.name in ("average", "lwf"):
            self.before = trained(model)

    def note(self, part: torch.Tensor) -> None:
        """Add this rank's part of a step's method term (what the ranks' parts sum to)."""
        part = part.detach().double()
        self.added = part if self.added is None else self.added + part

    def stage_loss(self) -> float | None:
        """The stage's method term per optimizer step (EWC's penalty, LwF's distillation per target token,
        O-LoRA's two losses), summed over the ranks (one collective); None for methods that add none."""
        if not self.adds_loss or not self.steps:
            return None
        import torch.distributed as dist
        total = self.added if self.added is not None else torch.zeros(())
        if dist.is_initialized() and dist.get_world_size() > 1:
            total = total.clone()
            dist.all_reduce(total)
        return float(total) / self.steps

    def teacher_logits(self, model, batch: dict, kind: str) -> torch.Tensor:
        """LwF: the logits of the model as it was before the stage, on one microbatch (its weights swapped in for
        this forward, then the current ones back, before the model's own forward)."""
        with torch.no_grad():
            now = self._swap(model, self.before)
            teacher, _ = target_logits(model, batch, kind)
            _reshard(model)  # FSDP2 keeps the root's gathered weights after a forward: gather the student's anew
            self._swap(model, now)
        return teacher

    def distill_sum(self, logits: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """LwF's term for one microbatch, summed over its target tokens (like the stage's loss)."""
        return self.c.lwf.alpha * terms.distill_sum(logits, teacher, targets, self.c.lwf.temperature)

    @staticmethod
    def _swap(model, values: dict) -> dict:
        held = {}
        for n, p in trainable(model):  # (under no_grad) a DTensor copies shard to shard
            held[n] = p.detach().clone()
            p.copy_(values[n])
        return held

    def penalty_grads(self, model) -> None:
        """Once per optimizer step: add the gradient of the method's penalty (EWC, O-LoRA) to this rank's part of
        every parameter's grad, and note the penalty (a rank holding whole parameters notes 1/world of it)."""
        self.steps += 1
        if self.name == "ewc" and self.anchor and self.c.ewc.penalty > 0:
            for n, p in trainable(model):
                x = local(p).detach().requires_grad_(True)
                pen = terms.ewc_penalty(x, self.anchor[n], self.fisher_local[n], self.c.ewc.penalty)
                add_to_grad(p, torch.autograd.grad(pen, x)[0])
                self.note(pen * (1.0 if is_sharded(p) else 1.0 / _world()))
        elif self.name == "o_lora" and (self.earlier and self.c.o_lora.orth > 0 or self.c.o_lora.l2 > 0):
            for name, layer in lora_layers(model):
                a, b = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
                xa = local(a).detach().requires_grad_(True)
                pen = self.c.o_lora.orth * terms.orthogonality([e[name][0] for e in self.earlier], xa) \
                    + self.c.o_lora.l2 * terms.squared_l2(xa)
                add_to_grad(a, torch.autograd.grad(pen, xa)[0])
                if self.c.o_lora.l2 > 0:
                    xb = local(b).detach().requires_grad_(True)
                    pen_b = self.c.o_lora.l2 * terms.squared_l2(xb)
                    add_to_grad(b, torch.autograd.grad(pen_b, xb)[0])
                    pen = pen + pen_b
                self.note(pen * (1.0 if is_sharded(a) else 1.0 / _world()))

    def after_stage(self, model, k: int, examples: list, plain, kind: str, pad_id: int, device) -> None:
        """What the method does once stage k has trained, before its checkpoint is saved. plain(): the model
        with its current weights as one process computes it (FSDP2: a plain copy; a collective)."""
        if self.name == "average" and self.before is not None:
            interpolate(model, self.before, self.c.average.alpha)
        elif self.name == "ewc":
            batches = [{t: v.to(device) for t, v in collate([e], pad_id, kind).items()}
                       for e in examples[:self.c.ewc.fisher_examples]]
            new = terms.fisher_diagonal(plain(), batches, terms.token_mean_loss(kind))
            self.fisher = {n: terms.online_fisher(self.fisher.get(n), f, self.c.ewc.decay) for n, f in new.items()}
            self._localize(model)
        elif self.name in ("merge", "o_lora"):
            self._merge_adapter(model, k)
        self.before = None

    def _localize(self, model) -> None:
        self.fisher_local = {n: local_part(self.fisher[n], p) for n, p in trainable(model)}
        self.anchor = {n: local(p).detach().clone() for n, p in trainable(model)}

    def _merge_adapter(self, model, k: int) -> None:
        """W += scaling x B @ A in every LoRA layer (each rank its rows of W), then a fresh adapter: A drawn as PEFT
        draws it (Kaiming-uniform, a = sqrt 5) from a generator seeded by seed and stage, B = 0."""
        stage = {}
        gen = torch.Generator().manual_seed(self.seed * 1000 + k)
        with torch.no_grad():
            for name, layer in lora_layers(model):
                a_p, b_p, w = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight, layer.base_layer.weight
                a, b = whole(a_p).detach().clone(), whole(b_p).detach().clone()
                stage[name] = (a, b)
                local(w).add_(local_part(terms.lora_delta(a, b, layer.scaling[ADAPTER], w.dtype), w))
                fresh = torch.empty(a.shape, dtype=torch.float32)
                torch.nn.init.kaiming_uniform_(fresh, a=math.sqrt(5), generator=gen)
                local(a_p).copy_(local_part(fresh.to(a.device), a_p))
                local(b_p).zero_()
        self.earlier.append(stage)

    def state(self) -> dict:
        """Tensors the stage checkpoint keeps for the next stage (whole, on CPU)."""
        out = {f"fisher/{n}": f for n, f in self.fisher.items()}
        for j, stage in enumerate(self.earlier):
            for name, (a, b) in stage.items():
                out[f"earlier/{j}/{name}/A"], out[f"earlier/{j}/{name}/B"] = a, b
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    def resume(self, model, state: dict) -> None:
        """Go on after a finished stage whose checkpoint `model` was built from (weights already restored)."""
        if self.name == "ewc":
            self.fisher = {k.split("/", 1)[1]: v.to(_device(model)) for k, v in state.items()
                           if k.startswith("fisher/")}
            self._localize(model)
        elif self.name in ("merge", "o_lora"):
            dev = _device(model)
            names = [n for n, _ in lora_layers(model)]
            self.earlier = [{n: (state[f"earlier/{j}/{n}/A"].to(dev), state[f"earlier/{j}/{n}/B"].to(dev))
                             for n in names} for j in _earlier_stages(state)]


def _world() -> int:
    import torch.distributed as dist
    return dist.get_world_size() if dist.is_initialized() else 1


def _device(model) -> torch.device:
    return local(next(inner(model).parameters())).device


def _reshard(model) -> None:
    from torch.distributed.fsdp import FSDPModule
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.reshard()
