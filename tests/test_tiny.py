import torch

from rlrecipes.tiny import TAGS, build_model, build_tokenizer, tiny_path


def test_character_tokenizer_round_trip_and_single_token_tags():
    tok = build_tokenizer()
    text = "<think>7+8=15;4+3+1=8</think><answer>85</answer>\nQ: a b"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert len(tok("<think>", add_special_tokens=False)["input_ids"]) == 1
    assert len(tok("12+3", add_special_tokens=False)["input_ids"]) == 4
    assert all(t in tok.get_vocab() for t in TAGS)
    assert tok.eos_token_id != tok.pad_token_id


def test_model_is_deterministic_from_seed_and_qwen2():
    tok = build_tokenizer()
    a, b, c = build_model(tok, seed=0), build_model(tok, seed=0), build_model(tok, seed=1)
    assert a.config.model_type == "qwen2"
    n = sum(p.numel() for p in a.parameters())
    assert 100_000 < n < 5_000_000
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)


def test_tiny_path_is_cached_and_loadable(tmp_path, monkeypatch):
    monkeypatch.setenv("RLRECIPES_CACHE", str(tmp_path))
    from transformers import AutoModelForCausalLM, AutoTokenizer
    p = tiny_path(hidden_size=32, layers=1, heads=2, kv_heads=1, intermediate_size=64, seed=3)
    assert p == tiny_path(hidden_size=32, layers=1, heads=2, kv_heads=1, intermediate_size=64, seed=3)
    model = AutoModelForCausalLM.from_pretrained(p)
    ref = build_model(build_tokenizer(), hidden_size=32, layers=1, heads=2, kv_heads=1,
                      intermediate_size=64, seed=3)
    assert torch.equal(model.model.embed_tokens.weight, ref.model.embed_tokens.weight)
    assert AutoTokenizer.from_pretrained(p).decode([5]) == "</think>"
