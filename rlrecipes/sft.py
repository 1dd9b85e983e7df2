"""The SFT warm-start stage: a few lines of our own (TRL's SFTTrainer would pull in its whole
Trainer for what is cross-entropy on the gold completions).

The stage trains the *base* model (full weights, or a LoRA that is merged afterwards), saves it
to `<run>/sft-model`, and the RL stage loads that directory as its base, so the RL reference
(adapter disabled) is the warm-started model, as when a paper starts RL from its SFT checkpoint.
"""
from __future__ import annotations

import random

import torch

from .head import fused_head, head_logprobs
from .logprobs import adapter_autocast
from .model import attach_adapter, load_base, save_pretrained
from .vision import ImagePrompt, processor_of


def sft_batch(tokenizer, prompts: list[str], completions: list[str], device):
    """(input_ids, attention_mask, labels, vision) right-padded; labels are -100 on prompt and
    padding; `vision` holds the pixel inputs of prompts that show images (else None)."""
    seqs, labels, vision = [], [], None
    processor = processor_of(tokenizer)
    if processor is not None and any(isinstance(p, ImagePrompt) for p in prompts):
        prompts, vision = processor.expand(prompts)   # placeholders expanded to the image's tokens
    for p, c in zip(prompts, completions):
        p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
        c_ids = tokenizer(c, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        seqs.append(p_ids + c_ids)
        labels.append([-100] * len(p_ids) + c_ids)
    width = max(map(len, seqs))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=device)
    lab = torch.tensor([s + [-100] * (width - len(s)) for s in labels], device=device)
    attn = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
    return ids, attn, lab, vision


def sft_loss(model, ids, attn, labels, extra: dict) -> torch.Tensor:
    """The mean cross-entropy of the labelled tokens (transformers' causal-LM loss), through the
    LM head without logits (`head.head_logprobs`) where `head.fused_head` allows:
    cross-entropy is minus the chosen token's log-prob, so no [N, T, V] logits (float32 in
    transformers' loss) are kept for the backward."""
    with adapter_autocast(model):
        if fused_head(model) is None:
            return model(input_ids=ids, attention_mask=attn, labels=labels, use_cache=False, **extra).loss
        targets = labels[:, 1:]   # position t predicts token t + 1
        keep = targets != -100
        with head_logprobs(model, targets.clamp(min=0), 1.0, None, lambda hidden: hidden[:, :-1]) as split:
            logp, _ = split(model(input_ids=ids, attention_mask=attn, use_cache=False, **extra).logits)
    return -(logp * keep).sum() / keep.sum()


def run_sft(recipe, stage, base_path: str, tokenizer, task, rows, prompts, out_dir, device,
            log=lambda step, metrics: None, format_fn=None) -> None:
    """Train on (prompt, task.gold(row)) for `stage.steps` steps and save the merged model.

    With `stage.transform`, each drawn example's raw question and gold pass through it (its own
    seeded RNG, so the examples drawn are the same with or without it) and are then formatted
    with `format_fn` (raw questions and their rows -> prompts)."""
    model_cfg = recipe.model.model_copy(update={"adapter": stage.adapter})
    model = attach_adapter(load_base(model_cfg, device, base_path), model_cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=stage.lr or recipe.train.lr, weight_decay=0.0)
    rng = random.Random(recipe.train.seed)
    golds = [task.gold(row) for row in rows]
    transform = None
    if stage.transform is not None:
        from .registry import get
        fn, t_params = get("transform", stage.transform.fn), stage.transform.params
        t_rng = random.Random(recipe.train.seed + 1)
        transform = lambda i: fn(question=task.prompt(rows[i]), gold=golds[i], row=rows[i], rng=t_rng,  # noqa: E731
                                 **t_params)
    for step in range(1, (stage.steps or 0) + 1):
        idx = [rng.randrange(len(rows)) for _ in range(stage.batch_size)]
        if transform is None:
            batch_prompts, batch_golds = [prompts[i] for i in idx], [golds[i] for i in idx]
        else:
            pairs = [transform(i) for i in idx]
            batch_prompts = format_fn([q for q, _ in pairs], [rows[i] for i in idx])   # rows: their images
            batch_golds = [g for _, g in pairs]
        ids, attn, labels, vision = sft_batch(tokenizer, batch_prompts, batch_golds, device)
        extra = {} if vision is None else vision.model_kwargs(model, ids)
        loss = sft_loss(model, ids, attn, labels, extra)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, recipe.train.max_grad_norm or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        log(step, {"sft_loss": loss.item()})
    if stage.adapter == "lora":
        model = model.merge_and_unload()
    save_pretrained(model, tokenizer, out_dir)
