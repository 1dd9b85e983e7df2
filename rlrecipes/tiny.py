"""The offline tiny world's model: a Qwen2-architecture causal LM and a character tokenizer.

Both are built deterministically from a seed, with no download. `model.name_or_path: tiny`
selects them; `model.tiny` sets the shape. The tokenizer has one token per printable ASCII
character plus special tokens for the think/answer/tool tags, so tags cost one token each.
"""
from __future__ import annotations

import hashlib
import json
import os
import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>"]
TAGS = ["<think>", "</think>", "<answer>", "</answer>", "<search>", "</search>",
        "<information>", "</information>", "<tool_call>", "</tool_call>"]
CHARS = [c for c in string.printable if c not in "\x0b\x0c\r"]


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level fast tokenizer; tags are single added tokens, decoding joins characters."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL + TAGS + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<bos>", unk_token="<unk>")
    fast.add_special_tokens({"additional_special_tokens": TAGS})
    return fast


def build_model(tokenizer, hidden_size=64, layers=2, heads=4, kv_heads=2, intermediate_size=256,
                vocab_size=None, seed=0) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 model; the same arguments give the same weights.
    `vocab_size` larger than the tokenizer pads the embedding, as real Qwen checkpoints do."""
    config = Qwen2Config(
        vocab_size=max(vocab_size or 0, len(tokenizer)), hidden_size=hidden_size, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=intermediate_size,
        max_position_embeddings=512, tie_word_embeddings=True, rope_theta=10000.0,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def cache_dir() -> Path:
    return Path(os.environ.get("RLRECIPES_CACHE", Path.home() / ".cache" / "rlrecipes"))


def tiny_path(**shape) -> Path:
    """A local directory holding the tiny model of this shape (built once, then reused).

    Loading through a directory lets the tiny model take the same path as a real one
    (`from_pretrained`, 4-bit quantisation for QLoRA)."""
    shape = {k: v for k, v in shape.items() if v is not None}
    key = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / f"tiny-{key}"
    if not (path / "config.json").exists():
        tokenizer = build_tokenizer()
        model = build_model(tokenizer, **shape)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, path)
        except OSError:  # another process built it first
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    return path
