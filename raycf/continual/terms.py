"""The continual methods' math on plain tensors (tested on hand-made values in tests/test_continual.py).

Every penalty here is a sum over elements (EWC, L2) or over the rows of the new adapter's A (O-LoRA), so a rank
that holds a shard of a parameter (FSDP2) computes its shard's part, and the parts add up to the whole.
"""
from __future__ import annotations

import torch

from raycf.train import IGNORE, loss_sum


def ewc_penalty(theta: torch.Tensor, anchor: torch.Tensor, fisher: torch.Tensor, strength: float) -> torch.Tensor:
    """EWC (Kirkpatrick et al. 2017): strength/2 x sum F (theta - theta*)^2."""
    return 0.5 * strength * (fisher * (theta - anchor) ** 2).sum()


def online_fisher(old: torch.Tensor | None, new: torch.Tensor, decay: float) -> torch.Tensor:
    """Online EWC (Schwarz et al. 2018): one Fisher for all earlier stages, F <- decay x F + F_stage."""
    return new if old is None else decay * old + new


def fisher_diagonal(model, batches: list, loss) -> dict[str, torch.Tensor]:
    """The empirical diagonal Fisher of `model`'s trainable parameters: the mean over batches (each one example)
    of the squared gradient of loss(model, batch). Eval mode (no dropout); gradients taken with autograd.grad, so
    nothing accumulates into .grad (and no DDP hook fires)."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    was_training = model.training
    model.eval()
    for batch in batches:
        for t, g in zip(total, torch.autograd.grad(loss(model, batch), params, allow_unused=True)):
            if g is not None:
                t.add_(g.float() ** 2)
    model.train(was_training)
    return {n: t / len(batches) for n, t in zip(names, total)}


def token_mean_loss(kind: str):
    """An example's loss as the Fisher takes it: its token-mean cross-entropy (a batch of one example)."""
    return lambda model, batch: loss_sum(model, batch, kind) / int((batch["labels"] != IGNORE).sum())


def distill_sum(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor,
                temperature: float) -> torch.Tensor:
    """LwF (Li and Hoiem 2016) on a language model: T^2 x sum over target positions of KL(p_teacher || p_student),
    both softmaxes at temperature T. Positions x vocabulary logits; positions whose target is IGNORE count not."""
    keep = targets != IGNORE
    s = torch.log_softmax(student[keep] / temperature, dim=-1)
    t = torch.log_softmax(teacher[keep].detach() / temperature, dim=-1)
    return temperature ** 2 * (t.exp() * (t - s)).sum()


def orthogonality(earlier: list[torch.Tensor], a: torch.Tensor) -> torch.Tensor:
    """O-LoRA (Wang et al. 2023): sum over earlier stages' A_i (rank x in) of |A_i A^T| summed over entries;
    A may be some of the new adapter's rows (a shard)."""
    if not earlier:
        return a.new_zeros(())
    return sum(torch.mm(e.to(a.dtype), a.t()).abs().sum() for e in earlier)


def squared_l2(t: torch.Tensor) -> torch.Tensor:
    """O-LoRA's L2 term on the new adapter, as a squared norm (a sum over elements; the O-LoRA code takes the
    norm itself, which no shard can compute alone)."""
    return (t.float() ** 2).sum()


def interpolated(before: torch.Tensor, after: torch.Tensor, alpha: float) -> torch.Tensor:
    """WiSE-FT-style averaging: alpha x before + (1 - alpha) x after."""
    return after * (1.0 - alpha) + before * alpha


def lora_delta(a: torch.Tensor, b: torch.Tensor, scaling: float, dtype) -> torch.Tensor:
    """What a LoRA adapter adds to its layer's weight, scaling x B @ A, computed in fp32, in `dtype`."""
    return (scaling * (b.float() @ a.float())).to(dtype)
