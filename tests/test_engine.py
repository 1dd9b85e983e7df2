"""The `fast` rollout engine (rlrecipes/rollout/engine.py) against HF `generate`: token for token
when decoding is deterministic (greedy, or top_k=1 through the sampling path), for left-padded
prompts of different lengths, rows that stop at different steps (compaction), LoRA, QLoRA and
tool rollouts; with sampling, its log-probs equal those the loss recomputes."""
import zlib

import pytest
import torch

from rlrecipes.config import Generation, ModelConfig, ToolUse
from rlrecipes.logprobs import token_logprobs
from rlrecipes.model import load_policy
from rlrecipes.registry import register
from rlrecipes.rollout.engine import fast_generate, fast_supported, sample
from rlrecipes.rollout.weights import weights_of
from rlrecipes.rollout.generate import completion_mask, encode_prompts, generate
from rlrecipes.rollout.multiturn import ToolRollouts

PROMPTS = ["12+34=", "7+8=?", "What is 100+250? Answer:", "9"]


def _sharpen(model, scale: float = 6.0):
    """A random tiny model's logits are nearly flat (one token repeated); scaled-up weights make
    varied, confident outputs, so equal sequences mean something."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and p.dtype.is_floating_point and "lora_A" not in name:
                p.mul_(scale)
    return model


def _policy(adapter: str):
    torch.manual_seed(0)   # peft draws lora_A from the global generator
    model, tok = load_policy(ModelConfig(name_or_path="tiny", adapter=adapter), torch.device("cpu"))
    if adapter == "qlora":
        return model.eval(), tok   # 4-bit weights cannot be scaled in place
    _sharpen(model)
    with torch.no_grad():      # a LoRA adapter starts as a no-op (B = 0): give it a real update
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(zlib.crc32(name.encode())))
    return model.eval(), tok


def _stop_token(model, tok, ids, mask) -> int:
    """A token that greedy decoding emits in some rows but not first: rows stop at different steps."""
    out = sample(model, ids, mask, 1, 24, stop_ids=[tok.eos_token_id], pad_id=tok.pad_token_id, greedy=True)
    counts = torch.bincount(out[:, 3:].flatten(), minlength=len(tok))
    counts[tok.pad_token_id] = 0
    return int(counts.argmax())


def _graph_sizes(monkeypatch) -> list[int]:
    """Compaction thresholds of the fixed-shape path lowered so that the tiny tests reach them;
    the returned list receives the row count of every `StaticDecode` built."""
    import rlrecipes.rollout.engine as engine
    monkeypatch.setattr(engine, "GRAPH_COMPACT_MIN_ROWS", 2)
    monkeypatch.setattr(engine, "GRAPH_COMPACT_MIN_STEPS", 1)
    sizes = []
    plain_init = engine.StaticDecode.__init__
    monkeypatch.setattr(engine.StaticDecode, "__init__",
                        lambda self, w, cache, rope, N, device: (sizes.append(N), plain_init(self, w, cache, rope, N, device))[1])
    return sizes


@pytest.mark.parametrize("static", [False, True], ids=["compacting", "static-shapes"])
@pytest.mark.parametrize("adapter", ["none", "lora", "qlora"])
def test_greedy_equals_hf_generate_token_for_token(adapter, static):
    """Both decode paths: the compacting one, and the fixed-shape one that `cuda_graphs` captures
    on a GPU (run eagerly here: the same fixed-shape `decode`, finished rows kept in the batch)."""
    model, tok = _policy(adapter)
    assert fast_supported(model) is None
    ids, mask = encode_prompts(tok, PROMPTS, "cpu")
    stop = _stop_token(model, tok, ids, mask)
    ours = sample(model, ids, mask, 3, 24, stop_ids=[stop], pad_id=tok.pad_token_id, greedy=True,
                  static_shapes=static)
    hf = model.generate(input_ids=ids.repeat_interleave(3, 0), attention_mask=mask.repeat_interleave(3, 0),
                        do_sample=False, max_new_tokens=24, pad_token_id=tok.pad_token_id,
                        eos_token_id=stop)[:, ids.shape[1]:]
    lengths = (hf != tok.pad_token_id).sum(1)
    assert lengths.unique().numel() > 1, "every row stopped at the same step; compaction untested"
    assert len(set(map(tuple, hf.tolist()))) >= 3, "outputs too uniform to compare"
    assert torch.equal(ours, hf)


def test_fixed_shapes_compact_and_recapture_when_half_the_rows_finished(monkeypatch):
    """The fixed-shape (CUDA graph) path compacts the batch once at most half its rows are alive
    and builds a new `StaticDecode` at the smaller size (thresholds lowered so that the tiny
    test reaches them); greedy output stays HF `generate`'s token for token, and the sampled
    log-probs stay those the loss recomputes."""
    sizes = _graph_sizes(monkeypatch)
    model, tok = _policy("lora")
    ids, mask = encode_prompts(tok, PROMPTS, "cpu")
    out = sample(model, ids, mask, 1, 24, stop_ids=[tok.eos_token_id], pad_id=tok.pad_token_id, greedy=True)
    counts = torch.bincount(out[:, 3:].flatten(), minlength=len(tok))
    counts[tok.pad_token_id] = 0
    stops = counts.topk(2).indices.tolist()   # two frequent tokens: the prompts stop at 4 different steps
    ours = sample(model, ids, mask, 3, 24, stop_ids=stops, pad_id=tok.pad_token_id, greedy=True, static_shapes=True)
    hf = model.generate(input_ids=ids.repeat_interleave(3, 0), attention_mask=mask.repeat_interleave(3, 0),
                        do_sample=False, max_new_tokens=24, pad_token_id=tok.pad_token_id,
                        eos_token_id=stops)[:, ids.shape[1]:]
    assert sizes[0] == 12 and len(sizes) > 1 and all(2 * b <= a for a, b in zip(sizes, sizes[1:])), sizes
    assert torch.equal(ours, hf)
    sizes.clear()
    torch.manual_seed(0)
    comp, logp = sample(model, ids, mask, 4, 24, stop_ids=stops, pad_id=tok.pad_token_id,
                        temperature=0.8, with_logp=True, static_shapes=True)
    assert len(sizes) > 1, sizes
    cmask = (torch.cumsum(torch.isin(comp, torch.tensor(stops)).long(), 1)
             - torch.isin(comp, torch.tensor(stops)).long()) == 0   # up to and with each row's stop token
    ours, _ = token_logprobs(model, ids.repeat_interleave(4, 0), mask.repeat_interleave(4, 0), comp, cmask.long(), 0.8)
    keep = cmask.bool()
    assert keep.sum() > 30
    assert torch.allclose(logp[keep], ours[keep], atol=1e-4)


def test_qlora_generation_copy_is_in_the_compute_dtype():
    """QLoRA keeps embeddings, norms and head in float32 (peft's kbit preparation) while the 4-bit
    layers compute in the recipe's dtype: the dequantised copy is in that dtype (half the bytes
    of float32 in bf16), the residual stream stays float32 as in the model's own forward, and
    greedy decoding still equals HF `generate` token for token."""
    torch.manual_seed(0)
    model, tok = load_policy(ModelConfig(name_or_path="tiny", adapter="qlora", dtype="bfloat16"), torch.device("cpu"))
    model.eval()
    w = weights_of(model)
    assert (w.dtype, w.embed.dtype, w.layers[0]["q"][0].dtype, w.layers[0]["down"][0].dtype) == \
        (torch.float32, torch.float32, torch.bfloat16, torch.bfloat16)
    ids, mask = encode_prompts(tok, PROMPTS, "cpu")
    ours = sample(model, ids, mask, 2, 16, stop_ids=[tok.eos_token_id], pad_id=tok.pad_token_id, greedy=True)
    hf = model.generate(input_ids=ids.repeat_interleave(2, 0), attention_mask=mask.repeat_interleave(2, 0),
                        do_sample=False, max_new_tokens=16, pad_token_id=tok.pad_token_id,
                        eos_token_id=tok.eos_token_id)[:, ids.shape[1]:]
    assert torch.equal(ours, hf)


def test_rollouts_equal_hf_through_the_sampling_path_and_weights_stay_intact():
    model, tok = _policy("lora")
    before = {n: (p.detach().clone(), p._version) for n, p in model.named_parameters()}
    gen = Generation(max_new_tokens=16, top_k=1, min_new_tokens=2)   # top_k=1: deterministic sampling
    ours, hf = fast_generate(model, tok, PROMPTS, gen, "cpu", repeat=2), generate(model, tok, PROMPTS, gen, "cpu", repeat=2)
    for field in ("prompt_ids_NP", "prompt_mask_NP", "completion_ids_NT", "completion_mask_NT", "truncated_N"):
        assert torch.equal(getattr(ours, field), getattr(hf, field)), field
    assert ours.texts == hf.texts
    assert all(torch.equal(p, before[n][0]) and p._version == before[n][1] for n, p in model.named_parameters())


@pytest.mark.parametrize("static", [False, True], ids=["compacting", "static-shapes"])
def test_sampled_logprobs_are_the_policys(static):
    model, tok = _policy("lora")
    ids, mask = encode_prompts(tok, PROMPTS, "cpu")
    torch.manual_seed(0)
    comp, logp = sample(model, ids, mask, 4, 12, stop_ids=[tok.eos_token_id], pad_id=tok.pad_token_id,
                        temperature=0.8, with_logp=True, static_shapes=static)
    cmask = completion_mask(comp, tok.eos_token_id)
    ours, _ = token_logprobs(model, ids.repeat_interleave(4, 0), mask.repeat_interleave(4, 0), comp, cmask, 0.8)
    keep = cmask.bool()
    assert keep.sum() > 40 and len(set(map(tuple, comp.tolist()))) > 4
    assert torch.allclose(logp[keep], ours[keep], atol=1e-4)


def test_generation_weights_follow_optimizer_steps():
    model, tok = _policy("lora")
    first = weights_of(model)
    assert weights_of(model) is first                       # cached while nothing changed
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    torch.optim.SGD(params, lr=0.5).step()
    assert weights_of(model) is not first
    ids, mask = encode_prompts(tok, PROMPTS, "cpu")
    ours = sample(model, ids, mask, 1, 12, stop_ids=[tok.eos_token_id], pad_id=tok.pad_token_id, greedy=True)
    hf = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=12,
                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)[:, ids.shape[1]:]
    assert torch.equal(ours, hf)


@register("tool", "_echo_len")
class EchoLength:
    def __init__(self, task=None):
        pass

    def __call__(self, query: str) -> str:
        return str(len(query))


def test_tool_rollouts_equal_hf():
    model, tok = _policy("lora")
    ids, mask = encode_prompts(tok, PROMPTS, "cpu")
    out = sample(model, ids, mask, 1, 24, stop_ids=[tok.eos_token_id], pad_id=tok.pad_token_id, greedy=True)
    # the closing tag: a character the model often writes, so that calls happen mid-sequence
    counts = torch.bincount(out.flatten(), minlength=len(tok))
    close = next(tok.decode([t]) for t in counts.argsort(descending=True).tolist()
                 if tok.decode([t]).strip() and t not in tok.all_special_ids)
    spec = ToolUse(tool={"fn": "_echo_len"}, max_turns=2, call=("<search>", close))
    gen = Generation(max_new_tokens=40, top_k=1)
    ours = ToolRollouts(spec, engine="fast")(model, tok, PROMPTS, gen, "cpu", repeat=2)
    hf = ToolRollouts(spec, engine="hf")(model, tok, PROMPTS, gen, "cpu", repeat=2)
    assert ours.stats["calls"].sum() > 0, "no tool call made; the test would be empty"
    assert ours.stats["obs_tokens"].sum() > 0
    for field in ("completion_ids_NT", "completion_mask_NT", "loss_mask_NT", "truncated_N"):
        assert torch.equal(getattr(ours, field), getattr(hf, field)), field
    assert all(torch.equal(ours.stats[k], hf.stats[k]) for k in hf.stats)


@pytest.mark.parametrize("how", [dict(temperature=0.7), dict(top_k=3), dict(top_p=0.8, temperature=1.3),
                                 dict(top_k=5, top_p=0.5, temperature=0.5), dict(min_new=2)])
def test_warp_equals_transformers_logits_processors(how):
    from transformers import (LogitsProcessorList, MinNewTokensLengthLogitsProcessor, TemperatureLogitsWarper,
                              TopKLogitsWarper, TopPLogitsWarper)
    from rlrecipes.rollout.engine import warp
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(0)) * 3
    procs = LogitsProcessorList()
    if how.get("min_new"):
        procs.append(MinNewTokensLengthLogitsProcessor(prompt_length_to_skip=4, min_new_tokens=how["min_new"], eos_token_id=[7, 9]))
    if "temperature" in how:
        procs.append(TemperatureLogitsWarper(how["temperature"]))
    if "top_k" in how:
        procs.append(TopKLogitsWarper(how["top_k"]))
    if "top_p" in how:
        procs.append(TopPLogitsWarper(how["top_p"]))
    ids_so_far = torch.zeros(6, 4 + 1, dtype=torch.long)   # prompt of 4, one new token: step 1
    expected = procs(ids_so_far, logits.clone())
    ours = warp(logits.clone(), 1, stop_ids=[7, 9], **how)
    assert torch.equal(torch.isinf(ours), torch.isinf(expected))
    assert torch.allclose(ours[~torch.isinf(ours)], expected[~torch.isinf(expected)])
    if "top_k" in how or "top_p" in how:
        assert torch.isinf(ours).any()   # the case removes tokens, so it tests something


def test_draws_follow_the_warped_distribution():
    from rlrecipes.rollout.engine import choose
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(20000, 1)
    torch.manual_seed(0)
    freq = torch.bincount(choose(logits, 0, stop_ids=[3], temperature=0.5, top_k=3), minlength=4) / 20000
    expected = torch.tensor([4.0, 2.0, 0.0]).exp()   # logits / 0.5 over the top 3
    expected = torch.cat([expected / expected.sum(), torch.zeros(1)])
    assert torch.allclose(freq, expected, atol=0.01)


def test_a_full_fine_tune_generates_from_its_own_weights_without_a_copy():
    model, _ = _policy("none")
    w = weights_of(model)
    attn = model.model.layers[0].self_attn
    assert w.layers[0]["q"][0] is attn.q_proj.weight and w.layers[0]["down"][0] is model.model.layers[0].mlp.down_proj.weight
    lora, _ = _policy("lora")
    base = lora.get_base_model().model.layers[0].self_attn.q_proj
    assert weights_of(lora).layers[0]["q"][0].data_ptr() != base.base_layer.weight.data_ptr()   # merged copy


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (benchmarks/gpu_check.sh runs this)")
def test_cuda_graphs_decode_as_the_compacting_loop_on_a_gpu():
    """On a GPU, float32: graph replays give the compacting loop's greedy tokens (rows stopping at
    different steps, a multi-token stop string), and sampled log-probs the loss recomputes."""
    model, tok = _policy("lora")
    model.to("cuda")
    ids, mask = encode_prompts(tok, PROMPTS, "cuda")
    stop = _stop_token(model, tok, ids, mask)
    kw = dict(stop_ids=[stop], pad_id=tok.pad_token_id, greedy=True)
    assert torch.equal(sample(model, ids, mask, 3, 24, cuda_graphs=True, **kw),
                       sample(model, ids, mask, 3, 24, cuda_graphs=False, **kw))
    ends = lambda t: tok.decode(t).endswith(tok.decode([stop, stop]))  # noqa: E731
    kw = dict(stop_ids=[tok.eos_token_id], stop_text=ends, pad_id=tok.pad_token_id, greedy=True)
    assert torch.equal(sample(model, ids, mask, 2, 24, cuda_graphs=True, **kw),
                       sample(model, ids, mask, 2, 24, cuda_graphs=False, **kw))
    torch.manual_seed(0)
    comp, logp = sample(model, ids, mask, 4, 20, stop_ids=[tok.eos_token_id], pad_id=tok.pad_token_id,
                        temperature=0.8, top_p=0.9, with_logp=True, cuda_graphs=True)
    cmask = completion_mask(comp, tok.eos_token_id)
    ours, _ = token_logprobs(model, ids.repeat_interleave(4, 0), mask.repeat_interleave(4, 0), comp, cmask, 0.8)
    keep = cmask.bool()
    assert torch.allclose(logp[keep], ours[keep], atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (benchmarks/gpu_check.sh runs this)")
def test_cuda_graphs_recaptured_after_compaction_on_a_gpu(monkeypatch):
    """On a GPU, float32, thresholds lowered: graphs captured again after compactions that leave
    prompts with uneven rows (the grouped prompt attention's scatter and gather inside the
    graph) and drop prompts decode as the compacting loop, token for token."""
    sizes = _graph_sizes(monkeypatch)
    model, tok = _policy("lora")
    model.to("cuda")
    ids, mask = encode_prompts(tok, PROMPTS, "cuda")
    out = sample(model, ids, mask, 1, 24, stop_ids=[tok.eos_token_id], pad_id=tok.pad_token_id, greedy=True)
    counts = torch.bincount(out[:, 3:].flatten().cpu(), minlength=len(tok))
    counts[tok.pad_token_id] = 0
    kw = dict(stop_ids=counts.topk(2).indices.tolist(), pad_id=tok.pad_token_id, greedy=True)
    graphed = sample(model, ids, mask, 3, 24, cuda_graphs=True, **kw)
    assert len(sizes) > 1, sizes
    assert torch.equal(graphed, sample(model, ids, mask, 3, 24, cuda_graphs=False, **kw))


def test_sampled_tool_rollouts_share_each_prompt_and_sample_as_on_whole_contexts(monkeypatch):
    """Sampled tool rollouts, 3 rows per prompt that diverge: the fast engine, which prefills each
    prompt once per turn with every row's turns so far as its own suffix, draws the same tokens
    under the same seed as the fast engine on each row's whole context, built from the loop's
    own state the way `_generate` built it before (so a wrong prompt for a row would show)."""
    import rlrecipes.rollout.multiturn as multiturn
    model, tok = _policy("lora")
    out = sample(model, *encode_prompts(tok, PROMPTS, "cpu"), 1, 24, stop_ids=[tok.eos_token_id],
                 pad_id=tok.pad_token_id, greedy=True)
    counts = torch.bincount(out.flatten(), minlength=len(tok))
    close = next(tok.decode([t]) for t in counts.argsort(descending=True).tolist()
                 if tok.decode([t]).strip() and t not in tok.all_special_ids)
    spec = ToolUse(tool={"fn": "_echo_len"}, max_turns=2, call=("<search>", close))
    gen = Generation(max_new_tokens=40, temperature=1.2)
    shared = []

    def spy(model, ids, mask, repeat, max_new, suffix=None, **kw):
        shared.append((len(ids), int(torch.as_tensor(repeat).sum()), suffix is not None))
        return sample(model, ids, mask, repeat, max_new, suffix=suffix, **kw)

    def whole_contexts(self, model, tokenizer, rows, context, resp, repeat, budget, gen, close, is_call, device):
        ids, mask = multiturn._left_pad([context[i] + resp[i] for i in rows], tokenizer.pad_token_id, device)
        stop = {"stop_ids": [tokenizer.eos_token_id, close[0]]} if len(close) == 1 else \
            {"stop_ids": [tokenizer.eos_token_id], "stop_text": is_call}
        return sample(model, ids, mask, 1, budget, pad_id=tokenizer.pad_token_id, temperature=gen.temperature,
                      top_k=gen.top_k, top_p=gen.top_p, **stop)

    monkeypatch.setattr(multiturn, "sample", spy)
    torch.manual_seed(7)
    ours = ToolRollouts(spec, engine="fast")(model, tok, PROMPTS, gen, "cpu", repeat=3)
    monkeypatch.setattr(ToolRollouts, "_generate", whole_contexts)
    torch.manual_seed(7)
    plain = ToolRollouts(spec, engine="fast")(model, tok, PROMPTS, gen, "cpu", repeat=3)
    assert ours.stats["calls"].sum() > 0 and len(set(map(tuple, ours.completion_ids_NT.tolist()))) > len(PROMPTS)
    assert any(n_prompts < n_rows and has_suffix for n_prompts, n_rows, has_suffix in shared), shared
    for field in ("completion_ids_NT", "completion_mask_NT", "loss_mask_NT", "truncated_N"):
        assert torch.equal(getattr(ours, field), getattr(plain, field)), field
