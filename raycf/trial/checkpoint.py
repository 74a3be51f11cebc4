"""A trial's models and checkpoints: the model a stage trains (base + LoRA, or the weights of the last finished
stage), the plain copy a probe scores, and each stage's checkpoint in the stage cache, saved from the full
state dict (a collective) and checked to reload to the live model's loss before it is published."""
from __future__ import annotations

import json
from pathlib import Path

from raycf import cache, continual
from raycf.config.checks import given_template
from raycf.config.schema import ExperimentConfig
from raycf.models.load import add_lora, load_model
from raycf.trial.collective import barrier
from raycf.trial.plan import TrialPlan


def cached_prefix(plan: TrialPlan) -> int:
    """How many leading stages are finished (a valid cache entry each)."""
    done = 0
    for k in range(1, len(plan.stage_keys) + 1):
        if cache.lookup(plan.stage_entry(k)) is None:
            break
        done = k
    return done


def check_lineage(plan: TrialPlan, done: int) -> None:
    """A trial restored from a PBT donor holds the donor's stages, never trains them, and finds each pinned to
    the manifest the donor published."""
    from raycf.sweep.pbt import manifest_digest
    if done < plan.fixed:
        entry = plan.stage_entry(done + 1)
        raise RuntimeError(f"stage {done + 1} of this trial's lineage (a PBT donor's, stage cache entry "
                           f"{entry.location}) is gone from the stage cache: it was removed while the sweep ran")
    for k, digest in sorted(plan.pinned.items()):
        if k <= done:
            if manifest_digest(str(fetched(plan.stage_entry(k)))) != digest:
                raise RuntimeError(f"stage {k}'s checkpoint {plan.stage_entry(k).location} is not the one its PBT "
                                   f"donor published (manifest SHA-256 {digest[:12]}...)")


def fetched(entry: cache.Entry) -> Path:
    """The entry's local folder: rank 0 saw it published, so every rank can fetch it."""
    path = cache.lookup(entry)
    if path is None:
        raise RuntimeError(f"cache entry {entry.kind}/{entry.key} disappeared from storage while the trial ran")
    return path


def last_reported_stage() -> int:
    """The stage of the checkpoint Ray Train restored after a failure, else -1."""
    import ray.train
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return -1
    with ckpt.as_directory() as d:
        return int(json.loads((Path(d) / "result.json").read_text())["stage"])


def unwrap(model):
    return getattr(model, "module", model)  # DDP keeps the model in .module; FSDP2 shards in place


def full_state_dict(model) -> dict:
    """Full (unsharded) state dict on every rank: a collective, every rank calls it. Every rank gets the
    tensors because under FSDP2 each rank also probes a plain copy of the model."""
    import torch.distributed as dist
    if not dist.is_initialized() or dist.get_world_size() == 1 or not is_fsdp(model):
        return {k: v.detach() for k, v in unwrap(model).state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


def is_fsdp(model) -> bool:
    from torch.distributed.fsdp import FSDPModule
    return isinstance(model, FSDPModule)


def load_base(cfg: ExperimentConfig, folder):
    """The model a trial starts from (model, warm start or checkpoint), loaded only as the config allows:
    its own code with model.trust_remote_code, pickle weights with model.allow_pickle."""
    m = cfg.model
    model, tok = load_model(Path(folder), dtype=m.dtype, trust_remote_code=m.trust_remote_code,
                            allow_pickle=m.allow_pickle)
    return model, given_template(cfg, tok)


def build_model(cfg: ExperimentConfig, plan: TrialPlan, base_dir: Path, done: int, device):
    """The model to train from stage done+1: base (+ fresh LoRA), or the weights of stage `done`."""
    if cfg.finetune.method == "full" and done > 0:
        model, tok = load_model(fetched(plan.stage_entry(done)), dtype=cfg.model.dtype)
        return model.to(device), given_template(cfg, tok)
    model, tok = load_base(cfg, base_dir)
    if cfg.finetune.method == "lora":
        import torch
        ft = cfg.finetune
        torch.manual_seed(cfg.seed)  # the same adapter init on every rank: FSDP2 shards local tensors as they are
        model = add_lora(model, ft.lora_rank, ft.lora_alpha, ft.lora_dropout, ft.target_modules)
        if done > 0:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file
            folder = fetched(plan.stage_entry(done))
            set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))
            continual.restore_weights(model, continual.load_state(folder))
    return model.to(device), tok


def with_adapter(model, folder: Path):
    """`model` with a stage checkpoint's LoRA adapter, and the adapters its method merged into the base weights
    before it (continual.method merge, o_lora)."""
    from peft import PeftModel
    model = PeftModel.from_pretrained(model, str(folder))
    continual.restore_weights(model, continual.load_state(folder))
    return model


def plain_model(cfg: ExperimentConfig, plan: TrialPlan, base_dir: Path, model, state: dict | None, copy: dict,
                device):
    """The model to probe. DDP and one process: the model itself. FSDP2: a forward is a collective and the
    probe runs different forwards per rank, so every rank probes a plain copy loaded from the full state
    dict (gathered now if the stage came from the cache)."""
    if not is_fsdp(model):
        return unwrap(model)
    if state is None:
        state = full_state_dict(model)
    if "model" not in copy:
        copy["model"], _ = build_model(cfg, plan, base_dir, 0, device)
    copy["model"].load_state_dict(state)
    return copy["model"]


def save_checkpoint(cfg: ExperimentConfig, plan: TrialPlan, k: int, model, tok, result: dict, examples, rank: int,
                    device, plain=None, method_state: dict | None = None) -> dict:
    """Collective: gather the full state, rank 0 writes adapter (LoRA) or full weights, checks that the
    saved checkpoint is non-empty and reloads to the live weights' loss, and publishes it. Both losses are
    fp32 forwards, whatever the training precision (in bf16 two orders of the same sums differ by up to 1%
    on a few examples, more than any tolerance that still catches a bad checkpoint). plain(sd): the live
    weights as a plain fp32 model, for FSDP2 in bf16, whose own forward runs in its bf16 policy. method_state:
    what the continual method carries to the next stage (continual.Method.state), saved beside the weights."""
    from raycf.train import eval_loss
    probe_batch = examples[:4]
    sd = full_state_dict(model)
    live = eval_loss(plain(sd) if plain is not None else model, probe_batch, plan.kind, tok.pad_token_id, device)
    if rank == 0:
        inner = unwrap(model)
        with cache.writing(plan.stage_entry(k)) as tmp:
            if method_state:
                from safetensors.torch import save_file
                save_file(method_state, tmp / continual.STATE_FILE)
            if cfg.finetune.method == "lora":
                from peft import get_peft_model_state_dict
                adapter = get_peft_model_state_dict(inner, state_dict=sd)
                if not adapter or all(float(t.abs().sum()) == 0 for t in adapter.values()):
                    raise RuntimeError(f"stage {k}: the LoRA adapter to save is empty or all zeros")
                inner.save_pretrained(tmp, state_dict=sd)
            else:
                inner.save_pretrained(tmp, state_dict=sd)
                tok.save_pretrained(tmp)
            reloaded = reload_loss(cfg, plan, tmp, probe_batch, tok.pad_token_id)
            if abs(reloaded - live) > 1e-3 * max(1.0, abs(live)):
                raise RuntimeError(f"stage {k}: checkpoint reloads to loss {reloaded:.6f}, live model {live:.6f}")
            result["train/reload_loss"] = reloaded
            result["train/live_loss"] = live
            (tmp / "result.json").write_text(json.dumps(result))
    barrier()
    return sd


def reload_loss(cfg: ExperimentConfig, plan: TrialPlan, folder: Path, examples, pad_id: int) -> float:
    """Loss of `examples` under the checkpoint in `folder`, loaded fresh in this process (fp32)."""
    from raycf.train import eval_loss
    if cfg.finetune.method == "full":
        model, _ = load_model(folder, dtype=cfg.model.dtype)
    else:
        base_dir = plan.warm_dir() if plan.warm_key else Path(cfg.warm_start.path or plan.model_dir)
        model = with_adapter(load_base(cfg, base_dir)[0], folder)
    return eval_loss(model, examples, plan.kind, pad_id)
