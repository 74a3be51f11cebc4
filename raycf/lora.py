"""PEFT's LoRA linear layers computed as one autograd op, for training speed.

    from raycf.lora import fuse; fuse(peft_model)     # done by raycf.models.add_lora

PEFT computes y = base(x) + lora_B(lora_A(dropout(x))) * scaling: the scaling multiply and the add
each read and write a full (tokens x out_features) tensor, forward and backward, in every adapted
layer. On CPU those elementwise passes took about 13% of a SmolLM2-135M LoRA step. Here the scaling
is applied to the rank-r intermediate and both adds ride inside the matrix products (addmm), so a
layer costs its GEMMs and nothing else. Same math, same parameters and state dict: PEFT still builds,
saves and loads the adapter; tests check values and gradients against PEFT's own forward.

Under autocast (resources.mixed_precision: bf16) the op runs in the autocast dtype, as autocast would run
PEFT's three linear layers; inside `frozen_casts` (a training stage) each frozen base weight is cast once,
not at every forward and backward.

Layers the fused op does not cover (DoRA and other variants, merged or disabled adapters, several
active adapters, LoRA bias, trainable base weights, mixed dtypes outside autocast) take PEFT's forward.
"""
from __future__ import annotations

import types
from contextlib import contextmanager

import torch


class _LoraLinear(torch.autograd.Function):
    """out = x W^T + bias + scaling * (xd A^T) B^T, where xd is x or dropout(x); W and bias frozen."""

    @staticmethod
    def forward(ctx, x, xd, weight, bias, a, b, scaling):
        flat, flat_d = x.reshape(-1, x.shape[-1]), xd.reshape(-1, x.shape[-1])
        h = torch.mm(flat_d, a.t()).mul_(scaling)  # (tokens, r): the only place the scaling touches
        out = torch.mm(flat, weight.t()) if bias is None else torch.addmm(bias, flat, weight.t())
        out.addmm_(h, b.t())
        ctx.same_input = xd is x
        ctx.scaling = scaling
        ctx.save_for_backward(flat_d, weight, a, b, h)
        return out.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        flat_d, weight, a, b, h = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        gh = torch.mm(g, b).mul_(ctx.scaling)  # gradient at the rank-r intermediate, (tokens, r)
        grad_a = torch.mm(gh.t(), flat_d) if ctx.needs_input_grad[4] else None
        grad_b = torch.mm(g.t(), h) if ctx.needs_input_grad[5] else None
        grad_x = grad_xd = None
        shape = (*grad.shape[:-1], weight.shape[1])
        if ctx.needs_input_grad[0]:
            grad_x = torch.mm(g, weight)
            if ctx.same_input:
                grad_x.addmm_(gh, a)
            grad_x = grad_x.view(shape)
        if not ctx.same_input and ctx.needs_input_grad[1]:
            grad_xd = torch.mm(gh, a).view(shape)
        return grad_x, grad_xd, None, None, grad_a, grad_b, None


def _fused_forward(self, x, *args, **kwargs):
    name = self.active_adapters[0] if len(self.active_adapters) == 1 else None
    base = self.base_layer
    autocast = torch.is_autocast_enabled(x.device.type)
    if (args or kwargs or name not in self.lora_A or self.disable_adapters or self.merged
            or name in getattr(self, "lora_variant", {}) or self.lora_B[name].bias is not None
            or base.weight.requires_grad or (base.bias is not None and base.bias.requires_grad)
            or not (autocast or x.dtype == base.weight.dtype == self.lora_A[name].weight.dtype)):
        return type(self).forward(self, x, *args, **kwargs)
    dropout = self.lora_dropout[name]
    xd = x if isinstance(dropout, torch.nn.Identity) else dropout(x)
    a, b, weight, bias = self.lora_A[name].weight, self.lora_B[name].weight, base.weight, base.bias
    if autocast:  # every operand in the autocast dtype; the adapter's gradients flow back to its fp32 weights
        dt = torch.get_autocast_dtype(x.device.type)
        cast = getattr(self, "_raycf_cast", None)
        weight = cast[1] if cast is not None and cast[0] == dt else weight.to(dt)
        bias = None if bias is None else bias.to(dt)
        same, x = xd is x, x.to(dt)
        xd = x if same else xd.to(dt)
        with torch.autocast(x.device.type, enabled=False):
            return _LoraLinear.apply(x, xd, weight, bias, a.to(dt), b.to(dt), self.scaling[name])
    return _LoraLinear.apply(x, xd, weight, bias, a, b, self.scaling[name])


@contextmanager
def frozen_casts(model, dtype):
    """While active, the fused layers of `model` use a copy of their frozen base weight in `dtype`, made once
    (autocast would cast it at every forward). Not for sharded (FSDP2) weights, which its mixed precision
    policy casts. dtype None: nothing."""
    from peft.tuners.lora.layer import Linear
    layers = [] if dtype is None else [
        m for m in model.modules() if isinstance(m, Linear) and isinstance(m.base_layer, torch.nn.Linear)
        and not m.base_layer.weight.requires_grad and type(m.base_layer.weight) in (torch.Tensor, torch.nn.Parameter)]
    for m in layers:
        m._raycf_cast = (dtype, m.base_layer.weight.detach().to(dtype))
    try:
        yield
    finally:
        for m in layers:
            del m._raycf_cast


def fuse(model) -> int:
    """Give every PEFT LoRA linear layer of `model` the fused forward; returns how many layers."""
    from peft.tuners.lora.layer import Linear
    n = 0
    for module in model.modules():
        if isinstance(module, Linear) and isinstance(module.base_layer, torch.nn.Linear):
            module.forward = types.MethodType(_fused_forward, module)
            n += 1
    return n
