"""Probing on Ray Train workers: every rank scores a balanced, disjoint slice of a task and the per-item results
are all-gathered; no forward may be a collective (see `probing`)."""
from __future__ import annotations

from contextlib import contextmanager


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


def distributed(world_size: int) -> bool:
    import torch.distributed as dist
    return world_size > 1 and dist.is_available() and dist.is_initialized()


def on_all_ranks(fn, n_items: int, costs, rank: int, world_size: int) -> list:
    """fn(indices) -> per-item results for those indices; every rank gets the results of all items."""
    if not distributed(world_size):
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
