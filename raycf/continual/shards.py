"""A parameter's values where each rank holds a shard of it (FSDP2's DTensors) or all of it (DDP, one process)."""
from __future__ import annotations

import torch


def is_sharded(t) -> bool:
    from torch.distributed.tensor import DTensor
    return isinstance(t, DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's values of `t` (a view: writing to it writes the parameter)."""
    return t.to_local() if is_sharded(t) else t


def whole(t: torch.Tensor) -> torch.Tensor:
    """All of `t` on every rank; a collective for a sharded tensor (every rank calls it, in the same order)."""
    return t.full_tensor() if is_sharded(t) else t


def local_part(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This rank's shard of `full` (every rank holds the same `full`), as `like` is sharded; no communication."""
    if not is_sharded(like):
        return full
    from torch.distributed.tensor import distribute_tensor
    return distribute_tensor(full.to(like.dtype), like.device_mesh, like.placements, src_data_rank=None).to_local()


def add_to_grad(p: torch.nn.Parameter, g: torch.Tensor) -> None:
    """p.grad += g, g being this rank's part of it."""
    if p.grad is None:
        p.grad = torch.zeros_like(p)
    local(p.grad).add_(g.to(local(p.grad).dtype))
