"""What every rank of a worker group does together: agree on rank 0's value, gather everyone's, wait for each
other."""
from __future__ import annotations


def agree(value):
    """Rank 0's value on every rank: cache lookups must agree, or a rank that saw an entry another trial
    published a moment later would skip a collective the others enter."""
    import torch.distributed as dist
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value) -> list:
    """Every rank's value, in rank order, on every rank."""
    import torch.distributed as dist
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [value]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def barrier():
    import torch.distributed as dist
    if dist.is_initialized():
        dist.barrier()
