"""raycf.lora: the fused LoRA linear op gives PEFT's values and gradients, and steps aside where it does not apply."""
import contextlib
import copy

import pytest
import torch

from raycf import train as T
from tests.conftest import toy_rows


def _pair(toy_tokenizer, dropout):
    """The same tiny LoRA model twice: PEFT's forward and the fused one, with live (non-zero) B matrices."""
    from raycf.models.load import add_lora
    from raycf.models.tiny import tiny_model
    base = tiny_model("causal", toy_tokenizer, seed=0)
    models = []
    for fused in (False, True):
        torch.manual_seed(1)
        m = add_lora(copy.deepcopy(base), 4, 8, dropout, "auto", fused=fused)
        torch.manual_seed(2)
        for name, p in m.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.05)
        models.append(m)
    return models


def _loss_and_grads(model, batch, seed=3):
    model.zero_grad()
    torch.manual_seed(seed)  # the same dropout masks on both sides
    loss = T.loss_sum(model, batch, "causal")
    loss.backward()
    return float(loss), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_fused_lora_equals_peft(toy_tokenizer, dropout):
    peft_model, fused_model = _pair(toy_tokenizer, dropout)
    from peft.tuners.lora.layer import Linear
    fused_layers = [m for m in fused_model.modules() if isinstance(m, Linear)]
    assert len(fused_layers) == 14 and all("forward" in vars(m) for m in fused_layers)
    ex = T.encode(toy_rows(8), toy_tokenizer, "causal", 256)
    batch = T.collate(ex, toy_tokenizer.pad_token_id, "causal")
    for m in (peft_model, fused_model):
        m.train()
    ref_loss, ref_grads = _loss_and_grads(peft_model, batch)
    loss, grads = _loss_and_grads(fused_model, batch)
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    assert grads.keys() == ref_grads.keys() and len(grads) == 28  # A and B of 14 layers, nothing else
    for name in grads:  # float32 sums in another order: an element near 0 may differ by ~1e-7 (seen with
        # transformers 5.24 / peft 0.21.2 at dropout 0.2); tensors here peak at 0.06 to 7
        scale = ref_grads[name].abs().max().item()
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-5 * scale)
    assert fused_model.state_dict().keys() == peft_model.state_dict().keys()


def test_fused_lora_steps_aside_for_disabled_and_merged_adapters(toy_tokenizer):
    peft_model, fused_model = _pair(toy_tokenizer, 0.0)
    ids = torch.tensor([[3, 17, 42, 99, 5]])
    with torch.no_grad():
        for m in (peft_model, fused_model):
            m.eval()
        with fused_model.disable_adapter(), peft_model.disable_adapter():
            torch.testing.assert_close(fused_model(input_ids=ids).logits, peft_model(input_ids=ids).logits)
        adapted = fused_model(input_ids=ids).logits
        torch.testing.assert_close(adapted, peft_model(input_ids=ids).logits, rtol=1e-5, atol=1e-6)
        fused_model.merge_adapter()  # merged weights: the base layer alone must be used, not base + adapter again
        torch.testing.assert_close(fused_model(input_ids=ids).logits, adapted, rtol=1e-4, atol=1e-5)


def test_fused_lora_under_bf16_autocast_agrees_with_peft_and_frozen_casts_change_nothing(toy_tokenizer):
    """Under CPU bf16 autocast the fused op runs in bf16 (as autocast runs PEFT's layers): the loss agrees with
    PEFT's to bf16 precision, the adapter's gradients stay fp32 and agree in direction; the frozen-weight casts
    made once (lora.frozen_casts, as a training stage uses them) give bit-identical values."""
    from raycf.lora import frozen_casts
    peft_model, fused_model = _pair(toy_tokenizer, 0.0)
    ex = T.encode(toy_rows(8), toy_tokenizer, "causal", 256)
    batch = T.collate(ex, toy_tokenizer.pad_token_id, "causal")
    results = []
    for model, cache in ((peft_model, False), (fused_model, False), (fused_model, True)):
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16), (frozen_casts(model, torch.bfloat16) if cache
                                                           else contextlib.nullcontext()):
            results.append(_loss_and_grads(model, batch))
    (ref_loss, ref_grads), (loss, grads), (cached_loss, cached_grads) = results
    fp32_loss, _ = _loss_and_grads(fused_model, batch)
    assert loss != fp32_loss and abs(loss - fp32_loss) < 1e-2 * fp32_loss  # it did run in bf16
    assert loss == pytest.approx(ref_loss, rel=2e-3)
    assert grads.keys() == ref_grads.keys() and len(grads) == 28
    for name in grads:
        assert grads[name].dtype == torch.float32
        cos = torch.nn.functional.cosine_similarity(grads[name].flatten(), ref_grads[name].flatten(), dim=0)
        assert cos > 0.99, name
    assert cached_loss == loss
    assert all(torch.equal(cached_grads[n], grads[n]) for n in grads)
    assert not any(hasattr(m, "_raycf_cast") for m in fused_model.modules())  # the copies are gone afterwards
