"""The fast engine's shared-prefix KV cache (rlrecipes/rollout/decode.py): each prompt's keys and
values kept once for its G rows, and decode attention over [prompt ‖ own tokens] computed in two
parts with one softmax, equal to attention over the concatenated keys (Hydragen, arXiv
2402.05099, §3)."""
import pytest
import torch

from rlrecipes.rollout.decode import Cache, _bias, _decode_attention
from rlrecipes.rollout.engine import sample
from rlrecipes.tiny import build_model, build_tokenizer


def _plain(q, k_all, v_all, valid_all):
    """Attention of one query per row over its whole key list, the textbook way."""
    N, H, _, D = q.shape
    kv = k_all.shape[1]
    k_all, v_all = k_all.repeat_interleave(H // kv, 1), v_all.repeat_interleave(H // kv, 1)
    scores = (q @ k_all.transpose(-1, -2)) / D ** 0.5
    scores = scores.masked_fill(~valid_all[:, None, None, :], float("-inf"))
    return scores.softmax(-1) @ v_all


@pytest.mark.parametrize("rows", [None, [0, 2, 6, 7, 8]], ids=["all rows", "after compaction"])
def test_two_part_attention_equals_attention_over_the_concatenated_cache(rows):
    """Prompts of 5 keys (two left-padded), 3 rows per prompt, 4 own tokens per row; 4 query
    heads on 2 key/value heads. After compaction the rows left are uneven across prompts and the
    middle prompt, which none samples from any more, is dropped."""
    g = torch.Generator().manual_seed(0)
    B, G, P, S, H, kv, D = 3, 3, 5, 4, 4, 2, 8
    cache = Cache()
    cache.pk = [torch.randn(B, kv, P, D, generator=g)]
    cache.pv = [torch.randn(B, kv, P, D, generator=g)]
    prefix_valid = torch.ones(B, P, dtype=torch.bool)
    prefix_valid[0, :1] = False
    prefix_valid[1, :2] = False
    cache.set_prefix_valid(prefix_valid)
    cache.share(G, S)
    cache.k[0].copy_(torch.randn(B * G, kv, S, D, generator=g))
    cache.v[0].copy_(torch.randn(B * G, kv, S, D, generator=g))
    cache.valid_NS[:, :3] = True                      # three own tokens written so far
    pk, pv, group_N = cache.pk[0], cache.pv[0], torch.arange(B).repeat_interleave(G)
    k_rows, v_rows, valid_rows = cache.k[0], cache.v[0], cache.valid_NS
    if rows is not None:
        cache.keep(torch.tensor(rows))
        group_N, k_rows, v_rows, valid_rows = group_N[rows], k_rows[rows], v_rows[rows], valid_rows[rows]
        assert not cache.uniform and len(cache.pk[0]) == 2 and cache.group_N.tolist() == [0, 0, 1, 1, 1]
    N = len(group_N)
    q = torch.randn(N, H, 1, D, generator=g)
    ours = _decode_attention(q, cache.pk[0], cache.pv[0], cache.k[0], cache.v[0], cache,
                             _bias(cache.valid_NS, (N, 1, 1, S)))
    want = _plain(q, torch.cat([pk[group_N], k_rows], 2), torch.cat([pv[group_N], v_rows], 2),
                  torch.cat([prefix_valid[group_N], valid_rows], 1))
    torch.testing.assert_close(ours, want)


def test_the_prompt_cache_is_kept_once_per_prompt():
    """A sample call stores its prompt keys and values as [B, ...], not [B·G, ...], and each
    row's own as [B·G, ...] of max_new - 1 slots (the first token comes from the prefill); seen
    in the cache every decode step is given."""
    tok = build_tokenizer()
    model = build_model(tok, seed=0)
    ids = torch.randint(20, 90, (3, 40), generator=torch.Generator().manual_seed(0))
    seen = []
    import rlrecipes.rollout.engine as engine
    plain = engine.decode

    def spy(w, tok_N, pos_N, cache, rope, slot_1=None):
        seen.append((cache.pk[0].shape[0], cache.k[0].shape[0], cache.k[0].shape[2]))
        return plain(w, tok_N, pos_N, cache, rope, slot_1)
    engine.decode = spy
    try:
        sample(model, ids, torch.ones_like(ids), 8, 6, stop_ids=[tok.eos_token_id], pad_id=tok.pad_token_id, min_new=6)
    finally:
        engine.decode = plain
    assert len(seen) == 5 and all(s == (3, 24, 5) for s in seen), seen   # 3 prompts; 24 rows of 5 own slots


@pytest.mark.parametrize("static", [False, True], ids=["compacting", "static-shapes"])
def test_rows_own_suffixes_after_a_shared_prompt_decode_as_hf_on_the_whole_context(static):
    """`sample` with uneven rows per prompt (3, 1, 2) and each row's own left-padded suffix
    (one of them empty) after its prompt (a tool rollout's later turn): greedy tokens equal HF
    `generate` on each row's whole context, [prompt ‖ suffix], left-padded."""
    from rlrecipes.rollout.generate import encode_prompts
    tok = build_tokenizer()
    model = build_model(tok, seed=3)
    with torch.no_grad():                                   # confident, varied greedy outputs
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(6.0)
    prompts = ["12+34=", "What is 100+250? Answer:", "7+8=?"]
    counts = [3, 1, 2]
    suffixes = ["<search>46", " 350", "", " x", "<information>15</information>", "="]
    rows = [i for i, c in enumerate(counts) for _ in range(c)]
    ids, mask = encode_prompts(tok, prompts, "cpu")
    enc = [tok(s, add_special_tokens=False)["input_ids"] for s in suffixes]
    width = max(map(len, enc))
    suffix_ids = torch.tensor([[tok.pad_token_id] * (width - len(e)) + e for e in enc])
    suffix_mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc])
    ours = sample(model, ids, mask, torch.tensor(counts), 12, stop_ids=[tok.eos_token_id], pad_id=tok.pad_token_id,
                  greedy=True, suffix=(suffix_ids, suffix_mask), static_shapes=static)
    whole, whole_mask = encode_prompts(tok, [prompts[r] + s for r, s in zip(rows, suffixes)], "cpu")
    hf = model.generate(input_ids=whole, attention_mask=whole_mask, do_sample=False, max_new_tokens=12,
                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)[:, whole.shape[1]:]
    assert len(set(map(tuple, hf.tolist()))) > 3          # the rows differ: the test means something
    assert torch.equal(ours, hf[:, :ours.shape[1]]) and (hf[:, ours.shape[1]:] == tok.pad_token_id).all()


def test_a_suffix_that_is_not_left_padded_is_refused():
    tok = build_tokenizer()
    model = build_model(tok, seed=0)
    ids = torch.randint(20, 90, (1, 5))
    suffix = (torch.tensor([[30, 31, 0], [32, 33, 34]]), torch.tensor([[1, 1, 0], [1, 1, 1]]))   # row 0 right-padded
    with pytest.raises(ValueError, match="left-padded"):
        sample(model, ids, torch.ones_like(ids), 2, 4, stop_ids=[tok.eos_token_id], pad_id=tok.pad_token_id,
               suffix=suffix)
