"""The blockwise chosen-token log-softmax equals the plain formula, values and gradients."""
import pytest
import torch

import rlrecipes.head as hd
import rlrecipes.logprobs as lp


def _plain(logits, ids, temperature):
    x = logits / temperature
    lse = torch.logsumexp(x, -1)
    return x.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - lse, lse - (torch.softmax(x, -1) * x).sum(-1)


@pytest.mark.parametrize("block", [1 << 24, 20, 3])  # whole sequences per block; token blocks; one row
def test_values_and_gradients_match_the_plain_formula(monkeypatch, block):
    monkeypatch.setattr(lp, "BLOCK_ELEMENTS", block)
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 7, (3, 5))
    assert torch.autograd.gradcheck(lambda z: lp._ChosenLogSoftmax.apply(z, ids, 0.7, True), (logits,))
    ours, ent = lp.chosen_logprobs(logits, ids, 0.7, entropy="grad")
    ref, ref_ent = _plain(logits, ids, 0.7)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(ent, ref_ent)
    w = torch.randn(3, 5, dtype=torch.float64)
    g = torch.autograd.grad((ours * w).sum() - ent.sum(), logits)[0]
    g_ref = torch.autograd.grad((ref * w).sum() - ref_ent.sum(), logits)[0]
    torch.testing.assert_close(g, g_ref)


def test_worked_example_and_dtypes():
    # logits [0, ln 3] at temperature 1: p = [1/4, 3/4]; log p(token 1) = ln 0.75,
    # H = -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.5623351
    logits = torch.tensor([[[0.0, 1.0986123]]], dtype=torch.bfloat16, requires_grad=True)
    logp, ent = lp.chosen_logprobs(logits, torch.tensor([[1]]), entropy="log")
    assert logp.dtype == torch.float32 and not ent.requires_grad
    assert abs(logp.item() - torch.log(torch.tensor(0.75)).item()) < 5e-3
    assert abs(ent.item() - 0.5623351) < 5e-3
    logp.sum().backward()
    # d log p_1 / dx = [0, 1] - p = [-1/4, 1/4]; the gradient keeps the logits' dtype
    assert logits.grad.dtype == torch.bfloat16
    torch.testing.assert_close(logits.grad.float(), torch.tensor([[[-0.25, 0.25]]]), atol=5e-3, rtol=0)


def _lora_policy(dtype: str, adapter: str = "lora", *overrides: str):
    from rlrecipes.config import load_recipe
    from rlrecipes.model import attach_adapter, load_base
    cfg = load_recipe("recipes/grpo.yaml", "tiny", [f"model.dtype={dtype}", f"model.adapter={adapter}", *overrides]).model
    torch.manual_seed(0)
    model = attach_adapter(load_base(cfg, torch.device("cpu"), quantize=adapter == "qlora"), cfg)
    for n, p in model.named_parameters():   # a trained-looking adapter: B is zero at init
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.02)
    return model


def _saved_bytes_and_grads(model, ctx):
    """Bytes of non-parameter tensors the autograd graph keeps for one forward, and the LoRA
    gradients after its backward."""
    saved, params = {}, {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    ids = torch.randint(5, 60, (4, 40), generator=torch.Generator().manual_seed(1))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx:
        logits = model(input_ids=ids).logits
    model.zero_grad()
    logits.float().log_softmax(-1)[..., 7].sum().backward()
    grads = torch.cat([p.grad.flatten() for n, p in model.named_parameters() if p.requires_grad])
    return sum(v for k, v in saved.items() if k not in params), grads, logits.detach().float()


def test_adapter_autocast_keeps_no_float32_copies_for_lora_on_a_bf16_base():
    """LoRA on a bf16 base with float32 adapters: the forward under `adapter_autocast` keeps
    fewer activation bytes for the backward than peft's casting forward (which keeps a float32
    copy of every adapted projection's input), with the same logits and gradients to bf16
    precision; the adapters and their gradients stay float32."""
    import contextlib
    model = _lora_policy("bfloat16")
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    plain, g_plain, logits_plain = _saved_bytes_and_grads(model, contextlib.nullcontext())
    ctx = lp.adapter_autocast(model)
    assert not isinstance(ctx, contextlib.nullcontext)
    mixed, g_mixed, logits_mixed = _saved_bytes_and_grads(model, ctx)
    assert mixed < 0.8 * plain, (mixed, plain)
    assert g_mixed.dtype == torch.float32 and torch.isfinite(g_mixed).all()
    assert torch.nn.functional.cosine_similarity(g_mixed, g_plain, dim=0) > 0.99
    assert (logits_mixed - logits_plain).abs().max() < 0.1
    assert all(m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "cast_input_dtype_enabled"))


def test_adapter_autocast_is_nothing_for_float32_full_and_qlora():
    import contextlib
    assert isinstance(lp.adapter_autocast(_lora_policy("float32")), contextlib.nullcontext)
    assert isinstance(lp.adapter_autocast(_lora_policy("bfloat16", "none")), contextlib.nullcontext)
    assert isinstance(lp.adapter_autocast(_lora_policy("bfloat16", "qlora")), contextlib.nullcontext)


def test_adapter_autocast_with_gradient_checkpointing_and_lora_dropout():
    """Checkpointing recomputes each layer in the backward, after the context has ended: peft's
    input casts then stay on in the forward too, so the recomputation matches it (with them off,
    a LoRA dropout on bf16 in the forward and on a float32 copy in the recomputation made the
    backward raise CheckpointError)."""
    model = _lora_policy("bfloat16", "lora", "model.gradient_checkpointing=true", "model.lora.dropout=0.1").train()
    ids = torch.randint(5, 60, (2, 24), generator=torch.Generator().manual_seed(1))
    with lp.adapter_autocast(model):
        logits = model(input_ids=ids).logits
    logits.float().log_softmax(-1)[..., 7].sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("block", [1 << 24, 10, 3])  # one block; blocks of rows; one row per block
def test_head_logprobs_match_the_plain_formula(monkeypatch, block):
    """The LM head inside the blockwise log-softmax (`_HeadChosenLogSoftmax`): values and the
    gradients of hidden states, weight and bias equal those of logits = hidden W^T + b through
    the plain formula (float64, gradcheck too)."""
    monkeypatch.setattr(lp, "BLOCK_ELEMENTS", block)
    torch.manual_seed(0)
    hidden = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 5, (8,))
    assert torch.autograd.gradcheck(lambda h, w, b: hd._HeadChosenLogSoftmax.apply(h, w, b, ids, 0.7, True),
                                    (hidden, weight, bias))
    ours, ent = hd._HeadChosenLogSoftmax.apply(hidden, weight, bias, ids, 0.7, True)
    ref, ref_ent = _plain((hidden @ weight.T + bias).unsqueeze(0), ids.unsqueeze(0), 0.7)
    torch.testing.assert_close(ours, ref[0])
    torch.testing.assert_close(ent, ref_ent[0])
    w = torch.randn(8, dtype=torch.float64)
    g = torch.autograd.grad((ours * w).sum() - ent.sum(), (hidden, weight, bias))
    g_ref = torch.autograd.grad((ref[0] * w).sum() - ref_ent[0].sum(), (hidden, weight, bias))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b)


def _tiny_policy(adapter: str):
    return _lora_policy("float32", adapter).train()


@pytest.mark.parametrize("adapter", ["none", "lora"])
@pytest.mark.parametrize("share", [False, True])
def test_token_logprobs_through_the_head_equal_the_logits_path(monkeypatch, adapter, share):
    """`token_logprobs` through the head (the default for a plain head) and through the logits
    (`fused_head` forced to None) give the same log-probs, entropies and parameter gradients
    (float32, 1e-5), with and without prefix sharing; a full fine-tune's tied head/embedding
    gradient included."""
    from rlrecipes.rollout.generate import completion_mask, encode_prompts
    model = _tiny_policy(adapter)
    tok = __import__("rlrecipes.tiny", fromlist=["build_tokenizer"]).build_tokenizer()
    ids, mask = encode_prompts(tok, [p for p in ("12+34=", "What is 7+8? Answer:") for _ in range(3)], "cpu")
    comp = torch.randint(20, 60, (6, 9), generator=torch.Generator().manual_seed(0))
    comp[1, 3] = comp[4, 0] = tok.eos_token_id
    cmask = completion_mask(comp, tok.eos_token_id)
    weights = torch.rand(comp.shape, generator=torch.Generator().manual_seed(1))
    assert hd.fused_head(model) is not None
    results = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(hd, "fused_head", lambda model: None)
        model.zero_grad()
        logp, ent = lp.token_logprobs(model, ids, mask, comp, cmask, 0.7, entropy="grad", share_prefix=share)
        ((logp * weights + 0.1 * ent) * cmask).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((logp.detach(), ent.detach(), grads))
    (a, ea, ga), (b, eb, gb) = results
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(ea, eb, atol=1e-5, rtol=0)
    assert ga.keys() == gb.keys() and ga
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], atol=1e-5, rtol=1e-4, msg=name)
    assert "forward" not in vars(model.get_output_embeddings())   # the head's own forward restored


def test_head_logprobs_keep_no_logits_for_the_backward(monkeypatch):
    """With a 4,096-token vocabulary the logits path keeps the logits [N, T + 1, V] (float32
    here) for the backward; through the head, no tensor kept is a quarter of their size (the
    largest are the model's own activations)."""
    from rlrecipes.tiny import build_model, build_tokenizer
    tok = build_tokenizer()
    model = build_model(tok, vocab_size=4096, seed=1).train()
    ids = torch.randint(20, 60, (4, 30), generator=torch.Generator().manual_seed(0))
    comp = torch.randint(20, 60, (4, 20), generator=torch.Generator().manual_seed(1))
    mask, cmask = torch.ones_like(ids), torch.ones_like(comp)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept, largest = [], []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(hd, "fused_head", lambda model: None)
        saved = {}

        def pack(t):
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            logp, _ = lp.token_logprobs(model, ids, mask, comp, cmask)
        logp.sum().backward()
        kept.append(sum(v for k, v in saved.items() if k not in params))
        largest.append(max(v for k, v in saved.items() if k not in params))
    logits_bytes = 4 * 21 * 4096 * 4           # [N, T + 1, V] float32: the head's output
    assert kept[1] - kept[0] >= logits_bytes, kept
    assert largest[0] < logits_bytes / 4 <= largest[1], largest


@pytest.mark.parametrize("adapter", ["none", "lora"])
def test_head_logprobs_in_bf16(monkeypatch, adapter):
    """A bf16 model (LoRA: under `adapter_autocast`): the path through the head gives the logits
    path's log-probs to bf16 precision and gradients in each parameter's own dtype, pointing the
    same way (cosine > 0.999)."""
    model = _lora_policy("bfloat16", adapter).train()
    ids = torch.randint(20, 60, (4, 12), generator=torch.Generator().manual_seed(0))
    comp = torch.randint(20, 60, (4, 10), generator=torch.Generator().manual_seed(1))
    results = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(hd, "fused_head", lambda model: None)
        model.zero_grad()
        logp, _ = lp.token_logprobs(model, ids, torch.ones_like(ids), comp, torch.ones_like(comp))
        logp.sum().backward()
        named = [(n, p) for n, p in model.named_parameters() if p.grad is not None]
        assert all(p.grad.dtype == p.dtype for _, p in named)
        results.append((logp.detach(), torch.cat([p.grad.float().flatten() for _, p in named])))
    (a, ga), (b, gb) = results
    assert a.dtype == torch.float32 and (a - b).abs().max() < 0.05
    assert torch.nn.functional.cosine_similarity(ga, gb, dim=0) > 0.999


@pytest.mark.parametrize("adapter", ["none", "lora"])
def test_sft_loss_through_the_head_equals_transformers_loss(adapter):
    """The SFT stage's loss through the head equals transformers' causal-LM loss on the same
    right-padded batch (labels -100 on prompt and padding), value and gradients."""
    from rlrecipes.sft import sft_batch, sft_loss
    from rlrecipes.tiny import build_tokenizer
    model = _lora_policy("float32", adapter).train()
    ids, attn, labels, _ = sft_batch(build_tokenizer(), ["12+34=", "What is 7+8?"], ["46", "<answer>15</answer>"], "cpu")
    results = []
    for ours in (True, False):
        model.zero_grad()
        loss = sft_loss(model, ids, attn, labels, {}) if ours else \
            model(input_ids=ids, attention_mask=attn, labels=labels, use_cache=False).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (a, ga), (b, gb) = results
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    assert ga.keys() == gb.keys() and ga
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], atol=1e-6, rtol=1e-4, msg=name)


def test_heads_of_architectures_that_transform_logits_keep_the_logits_path():
    """A model whose forward changes the logits after the head (Gemma 2's soft-cap here) is not
    computed through the head: its log-probs are those of its own output logits."""
    from transformers import Gemma2Config, Gemma2ForCausalLM
    config = Gemma2Config(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=8, final_logit_softcapping=0.5)
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(config)
    assert hd.fused_head(model) is None
    ids, comp = torch.randint(3, 50, (2, 5)), torch.randint(3, 50, (2, 4))
    logp, _ = lp.token_logprobs(model, ids, torch.ones_like(ids), comp, torch.ones_like(comp))
    logits = model(input_ids=torch.cat([ids, comp], 1)).logits[:, 4:-1]
    assert logits.abs().max() <= 0.5      # soft-capped
    torch.testing.assert_close(logp, logits.log_softmax(-1).gather(-1, comp[..., None])[..., 0])


def test_head_logprobs_under_autocast_recompute_the_forwards_logits(monkeypatch):
    """A float32 model under bf16 autocast (accelerate's mixed_precision): the backward runs
    outside autocast, yet must recompute the bf16 logits the forward normalised. Gradients of
    the path through the head equal the logits path's under the same autocast. Completions are
    the model's own greedy choices, so p(chosen) is near 1 and a mismatch shows."""
    from rlrecipes.tiny import build_model, build_tokenizer
    model = build_model(build_tokenizer(), seed=1).train()
    with torch.no_grad():
        model.lm_head.weight.mul_(8)   # tied: sharper distributions
    ids = torch.randint(20, 60, (3, 8), generator=torch.Generator().manual_seed(0))
    seq = ids
    with torch.no_grad():
        for _ in range(6):
            seq = torch.cat([seq, model(input_ids=seq).logits[:, -1:].argmax(-1)], 1)
    comp = seq[:, 8:]
    results = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(hd, "fused_head", lambda model: None)
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logp, _ = lp.token_logprobs(model, ids, torch.ones_like(ids), comp, torch.ones_like(comp))
        assert logp.exp().mean() > 0.5
        logp.sum().backward()
        results.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    a, b = results
    assert a.dtype == torch.float32
    assert (a - b).norm() / b.norm() < 0.02, ((a - b).norm() / b.norm()).item()


def test_a_hooked_or_remote_code_head_keeps_the_logits_path():
    from rlrecipes.tiny import build_model, build_tokenizer
    model = build_model(build_tokenizer(), seed=1)
    assert hd.fused_head(model) is model.lm_head
    handle = model.lm_head.register_forward_hook(lambda *a: None)
    assert hd.fused_head(model) is None
    handle.remove()
    type(model).__module__, module = "transformers_modules.someone.modeling", type(model).__module__
    try:
        assert hd.fused_head(model) is None
    finally:
        type(model).__module__ = module
