"""HEAD_IS_LAST (rlrecipes/head.py) checked against the installed transformers, architecture by
architecture: a path that computes log-probs from the LM head's input is right only if the
model's output logits are the head's output unchanged. A transformers upgrade that adds a
logits transform (a soft-cap, a scale) to one of these architectures fails here instead of
silently changing training numbers."""
from __future__ import annotations

import pytest
import torch

from rlrecipes import head as hd
from rlrecipes import logprobs as lp

V = 64
TEXT = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
            eos_token_id=2,
            # mixtures of experts (each architecture reads its own names)
            num_experts=4, num_local_experts=4, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
            shared_expert_intermediate_size=16, n_shared_experts=1, n_group=1, topk_group=1, first_k_dense_replace=1,
            # DeepSeek-V3's multi-head latent attention (its key/value heads equal its heads)
            q_lora_rank=16, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8)
VISION = dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, intermediate_size=64, out_hidden_size=32)
MROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}   # head_dim 8: 4 rotary pairs


def tiny(model_type: str):
    """A two-layer random model of `model_type` with every size small."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText
    text = TEXT | ({"num_key_value_heads": 4} if model_type == "deepseek_v3" else {})
    config = AutoConfig.for_model(model_type, **text)
    vision = hasattr(config, "vision_config")
    if vision:   # Qwen2-VL and 2.5-VL: the language model's sizes, a one-block vision tower
        for key, value in (text | {"rope_parameters": MROPE}).items():
            setattr(config.text_config, key, value)
        for key, value in VISION.items():
            if hasattr(config.vision_config, key):
                setattr(config.vision_config, key, value)
    torch.manual_seed(0)
    return (AutoModelForImageTextToText if vision else AutoModelForCausalLM).from_config(config).eval()


@pytest.mark.parametrize("model_type", sorted(hd.HEAD_IS_LAST))
def test_allowlisted_architectures_return_the_heads_output_unchanged(model_type):
    model = tiny(model_type)
    head = hd.fused_head(model)
    assert head is model.get_output_embeddings(), f"{model_type}: its head is not a plain nn.Linear"
    seen = {}
    hook = head.register_forward_hook(lambda mod, inputs, out: seen.__setitem__("logits", out))
    ids = torch.randint(3, V, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    hook.remove()
    assert torch.equal(logits, seen["logits"]), f"{model_type}: its forward changes the logits after the head"
    # and the log-probs through the head are those of the model's own logits
    prompt, completion = ids[:, :5], ids[:, 5:]
    with torch.no_grad():
        logp, _ = lp.token_logprobs(model, prompt, torch.ones_like(prompt), completion, torch.ones_like(completion))
    want = logits[:, 4:-1].log_softmax(-1).gather(-1, completion[..., None])[..., 0]
    torch.testing.assert_close(logp, want, rtol=1e-5, atol=1e-5)
