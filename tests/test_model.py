"""LoRA and QLoRA (4-bit NF4 on CPU) steps change only adapter weights; the reference is the
adapter-disabled model; a full fine-tune keeps a frozen copy."""
import pytest
import torch

from rlrecipes.config import ModelConfig
from rlrecipes.logprobs import token_logprobs
from rlrecipes.model import Reference, load_policy
from rlrecipes.rollout.generate import encode_prompts


def _step(model, tok):
    ids, mask = encode_prompts(tok, ["12+3=", "4+5="], "cpu")
    comp = tok(["<answer>15", "<answer>9"], return_tensors="pt", padding=True, add_special_tokens=False)["input_ids"]
    logp, _ = token_logprobs(model, ids, mask, comp, torch.ones_like(comp))
    loss = -logp.mean()
    loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5).step()
    return ids, mask, comp


def _snapshot(model):
    import bitsandbytes as bnb
    out = {}
    for name, p in model.named_parameters():
        out[name] = p.detach().clone() if not isinstance(p, bnb.nn.Params4bit) else p.data.clone()
    return out


@pytest.mark.parametrize("adapter", ["lora", "qlora"])
def test_adapter_step_changes_only_adapter_weights(adapter):
    cfg = ModelConfig(name_or_path="tiny", adapter=adapter)
    model, tok = load_policy(cfg, torch.device("cpu"))
    if adapter == "qlora":
        import bitsandbytes as bnb
        assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    before = _snapshot(model)
    model.train()
    ids, mask, comp = _step(model, tok)
    after = _snapshot(model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_B" in n for n in changed)
    # reference = adapter disabled = the untouched base; the policy has moved away from it
    ref = Reference(model, adapter)
    ref_model, ctx = ref.context(model)
    with torch.no_grad(), ctx:
        ref_logp, _ = token_logprobs(ref_model, ids, mask, comp, torch.ones_like(comp))
    with torch.no_grad():
        pol_logp, _ = token_logprobs(model, ids, mask, comp, torch.ones_like(comp))
    assert not torch.allclose(ref_logp, pol_logp)
    from peft.tuners.tuners_utils import BaseTunerLayer
    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    assert layers and not any(m.disable_adapters for m in layers)  # active again after the context


def test_full_finetune_reference_is_a_frozen_copy():
    cfg = ModelConfig(name_or_path="tiny", adapter="none")
    model, tok = load_policy(cfg, torch.device("cpu"))
    ref = Reference(model, "none")
    frozen = {n: p.clone() for n, p in ref.copy.named_parameters()}
    model.train()
    _step(model, tok)
    assert all(not p.requires_grad for p in ref.copy.parameters())
    assert all(torch.equal(frozen[n], p) for n, p in ref.copy.named_parameters())
    assert not torch.equal(model.lm_head.weight, ref.copy.lm_head.weight)
