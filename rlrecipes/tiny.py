"""The offline tiny world's model: a Qwen2-architecture causal LM and a character tokenizer.

Both are built deterministically from a seed, with no download. `model.name_or_path: tiny`
selects them; `model.tiny` sets the shape. The tokenizer has one token per printable ASCII
character plus special tokens for the think/answer/tool tags, so tags cost one token each.

With `model.vision` set, `tiny` is a Qwen2-VL-architecture model instead: the same text shape
(M-RoPE), a one-block vision tower on 14-pixel patches merged 2x2, the tokenizer with the four
vision tags added, and a PIL image processor that resizes every image to 56x56 (4 image
tokens), saved beside the weights like a real checkpoint.
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


def build_tokenizer(extra_tags: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """Character-level fast tokenizer; tags are single added tokens, decoding joins characters.
    `extra_tags` (the vision tags) come after the characters, so text ids stay the same."""
    tags = TAGS + list(extra_tags)
    vocab = {tok: i for i, tok in enumerate(SPECIAL + TAGS + CHARS + list(extra_tags))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<bos>", unk_token="<unk>")
    fast.add_special_tokens({"additional_special_tokens": tags})
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
    return _seeded(Qwen2ForCausalLM, config, tokenizer, seed)


def _seeded(model_cls, config, tokenizer, seed: int):
    """`model_cls(config)` initialised from `seed` (the global RNG untouched), generating with
    the tokenizer's pad and EOS."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def build_vision_model(tokenizer, hidden_size=64, layers=2, heads=4, kv_heads=2, intermediate_size=256,
                       vocab_size=None, seed=0):
    """A randomly initialised Qwen2-VL model with the text shape of `build_model`."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from .vision import IMAGE_PAD, VIDEO_PAD, VISION_END, VISION_START
    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
               bos_token_id=tokenizer.bos_token_id)
    half = hidden_size // heads // 2   # M-RoPE splits the rotary half into temporal, height, width
    hw = 3 * half // 8                  # Qwen2-VL's 16/24/24 of 64, scaled
    text = dict(vocab_size=max(vocab_size or 0, len(tokenizer)), hidden_size=hidden_size, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=intermediate_size,
                max_position_embeddings=512, tie_word_embeddings=True, **ids,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": [half - 2 * hw, hw, hw]})
    vision = dict(depth=1, embed_dim=32, hidden_size=hidden_size, num_heads=2, mlp_ratio=2, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
    token = tokenizer.convert_tokens_to_ids
    config = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=token(IMAGE_PAD),
                           video_token_id=token(VIDEO_PAD), vision_start_token_id=token(VISION_START),
                           vision_end_token_id=token(VISION_END), tie_word_embeddings=True, **ids)
    return _seeded(Qwen2VLForConditionalGeneration, config, tokenizer, seed)


def build_image_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    side = 56
    return Qwen2VLImageProcessorPil(min_pixels=side * side, max_pixels=side * side, patch_size=14, merge_size=2,
                                    temporal_patch_size=2)


def cache_dir() -> Path:
    return Path(os.environ.get("RLRECIPES_CACHE", Path.home() / ".cache" / "rlrecipes"))


def tiny_path(vision: bool = False, **shape) -> Path:
    """A local directory holding the tiny model of this shape (built once, then reused); with
    `vision`, the tiny Qwen2-VL model and its image processor.

    Loading through a directory lets the tiny model take the same path as a real one
    (`from_pretrained`, 4-bit quantisation for QLoRA)."""
    shape = {k: v for k, v in shape.items() if v is not None}
    key = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / (f"tiny-vl-{key}" if vision else f"tiny-{key}")
    if not (path / "config.json").exists():
        from .vision import VISION_TAGS
        tokenizer = build_tokenizer(tuple(VISION_TAGS) if vision else ())
        model = (build_vision_model if vision else build_model)(tokenizer, **shape)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if vision:
            build_image_processor().save_pretrained(tmp)
        try:
            os.replace(tmp, path)
        except OSError:  # another process built it first
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    return path
