"""Batched generation with the KV cache over all B*G sequences (HF `generate`).

Prompts are left-padded, completions right-padded. A completion's mask covers its tokens up to
and including the first EOS (TRL's convention); a completion with no EOS is `truncated`.
Prompts that show images (`vision.ImagePrompt`, on a VLM) are encoded by the tokenizer's
`VisionProcessor`; each prompt's images are encoded once and its `repeat` samples share them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..vision import ImagePrompt, VisionInputs, processor_of


@dataclass
class Rollout:
    """Token ids and masks of N completions. `completion_mask_NT` marks the tokens a completion
    has (attention); `loss_mask_NT`, when set, marks the ones the policy generated, which the
    loss, KL and statistics use (tool observations are in the first, not the second). `stats`
    holds per-sequence counts a generator reports (tool calls, turns, observation tokens).
    `vision` holds each row's pixel inputs when the prompts show images."""
    prompt_ids_NP: torch.Tensor
    prompt_mask_NP: torch.Tensor
    completion_ids_NT: torch.Tensor
    completion_mask_NT: torch.Tensor
    texts: list[str]
    truncated_N: torch.Tensor
    loss_mask_NT: torch.Tensor | None = None
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    vision: VisionInputs | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def loss_mask(self) -> torch.Tensor:
        return self.completion_mask_NT if self.loss_mask_NT is None else self.loss_mask_NT

    def completion_ids(self) -> list[list[int]]:
        """Each completion's token ids up to and including its EOS (TRL's `completion_ids`)."""
        return [ids[m.bool()].tolist() for ids, m in zip(self.completion_ids_NT.cpu(), self.completion_mask_NT.cpu())]

    def to(self, device) -> "Rollout":
        return Rollout(self.prompt_ids_NP.to(device), self.prompt_mask_NP.to(device),
                       self.completion_ids_NT.to(device), self.completion_mask_NT.to(device), self.texts,
                       self.truncated_N.to(device), None if self.loss_mask_NT is None else self.loss_mask_NT.to(device),
                       dict(self.stats), self.vision)

    def select(self, idx) -> "Rollout":
        """The sub-rollout of sequences `idx` (a list or tensor of indices)."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        return Rollout(self.prompt_ids_NP[idx], self.prompt_mask_NP[idx], self.completion_ids_NT[idx],
                       self.completion_mask_NT[idx], [self.texts[i] for i in idx.tolist()],
                       self.truncated_N[idx], None if self.loss_mask_NT is None else self.loss_mask_NT[idx],
                       {k: v[idx.to(v.device)] for k, v in self.stats.items()},
                       None if self.vision is None else self.vision.select(idx))


def pad_to(x: torch.Tensor, width: int, value: int, left: bool) -> torch.Tensor:
    """[N, T] -> [N, width], filled with `value` on the left or the right (never cut)."""
    extra = width - x.shape[1]
    if extra <= 0:
        return x
    fill = torch.full((x.shape[0], extra), value, dtype=x.dtype, device=x.device)
    return torch.cat([fill, x] if left else [x, fill], dim=1)


def replace_rows(rollout: Rollout, dest: list[int], source: Rollout, src: list[int], pad_id: int,
                 keep_prompt: list[bool] | None = None) -> Rollout:
    """`rollout` with row dest[i] replaced by row src[i] of `source` (prompt and completion, or
    only the completion where keep_prompt[i]); prompts stay left-padded, completions right-padded."""
    keep_prompt = keep_prompt or [False] * len(dest)
    P = max(rollout.prompt_ids_NP.shape[1], source.prompt_ids_NP.shape[1])
    T = max(rollout.completion_ids_NT.shape[1], source.completion_ids_NT.shape[1])
    out = [t.clone() for t in _padded(rollout, P, T, pad_id)]
    new = _padded(source, P, T, pad_id)
    texts, truncated = list(rollout.texts), rollout.truncated_N.clone()
    vision = None
    if rollout.vision is not None or source.vision is not None:   # rows of both, then pick
        both = VisionInputs.cat([rollout.vision, source.vision], [len(rollout), len(source)])
        rows = list(range(len(rollout)))
        for d, s, keep in zip(dest, src, keep_prompt):
            if not keep:   # a kept prompt keeps its images
                rows[d] = len(rollout) + s
        vision = both.select(rows)
    for d, s, keep in zip(dest, src, keep_prompt):
        for which in ((2, 3, 4) if keep else (0, 1, 2, 3, 4)):
            out[which][d] = new[which][s]
        texts[d], truncated[d] = source.texts[s], source.truncated_N[s]
    return Rollout(*out[:4], texts, truncated, out[4], vision=vision)


def _padded(rollout: Rollout, P: int, T: int, pad_id: int) -> list[torch.Tensor]:
    """The id/mask tensors (prompt ids and mask, completion ids and mask, loss mask), prompts
    left-padded to P and completions right-padded to T."""
    return [pad_to(rollout.prompt_ids_NP, P, pad_id, True), pad_to(rollout.prompt_mask_NP, P, 0, True),
            pad_to(rollout.completion_ids_NT, T, pad_id, False), pad_to(rollout.completion_mask_NT, T, 0, False),
            pad_to(rollout.loss_mask(), T, 0, False)]


def stack(rollouts: list[Rollout], pad_id: int) -> Rollout:
    """One rollout holding the rows of several, padded to the widest (rows kept across steps)."""
    P = max(r.prompt_ids_NP.shape[1] for r in rollouts)
    T = max(r.completion_ids_NT.shape[1] for r in rollouts)
    parts = [_padded(r, P, T, pad_id) for r in rollouts]
    tensors = [torch.cat([p[k] for p in parts]) for k in range(5)]
    return Rollout(*tensors[:4], [t for r in rollouts for t in r.texts], torch.cat([r.truncated_N for r in rollouts]),
                   tensors[4], vision=VisionInputs.cat([r.vision for r in rollouts], [len(r) for r in rollouts]))


def completion_mask(completion_ids_NT: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1 on tokens up to and including the first EOS of each row, 0 after it."""
    is_eos = completion_ids_NT == eos_id
    T = completion_ids_NT.shape[1]
    first_eos = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(is_eos[:, 0], T, dtype=torch.long))
    positions = torch.arange(T, device=completion_ids_NT.device).expand_as(completion_ids_NT)
    return (positions <= first_eos.unsqueeze(1)).long()


def encode_prompts(tokenizer, prompts: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left",
                    add_special_tokens=False)
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], gen, device, repeat: int = 1) -> Rollout:
    """Sample `repeat` completions of each prompt (consecutive: prompt i owns rows i*repeat...)."""
    processor, vision, extra = processor_of(tokenizer), None, {}
    if processor is not None and any(isinstance(p, ImagePrompt) for p in prompts):
        # B prompts in, B*repeat out: generate encodes each prompt's images once and expands them
        ids_NP, mask_NP, vision = processor.encode(prompts, device)
        extra = {**vision.token_kwargs(ids_NP), "pixel_values": vision.pixels(device),
                 "num_return_sequences": repeat, "suppress_tokens": processor.special_ids()}
        vision = vision.select([i for i in range(len(prompts)) for _ in range(repeat)])
    else:
        ids_NP, mask_NP = encode_prompts(tokenizer, [p for p in prompts for _ in range(repeat)], device)
    was_training = model.training
    model.eval()
    out = model.generate(
        input_ids=ids_NP, attention_mask=mask_NP, do_sample=True, temperature=gen.temperature,
        top_p=gen.top_p, top_k=gen.top_k, max_new_tokens=gen.max_new_tokens,
        min_new_tokens=gen.min_new_tokens, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, **extra)
    if vision is not None:
        ids_NP, mask_NP = ids_NP.repeat_interleave(repeat, 0), mask_NP.repeat_interleave(repeat, 0)
    model.train(was_training)
    completion_NT = out[:, ids_NP.shape[1]:]
    if completion_NT.shape[1] == 0:  # degenerate: nothing generated
        completion_NT = torch.full((len(ids_NP), 1), tokenizer.eos_token_id, device=device)
    return sampled_rollout(tokenizer, ids_NP, mask_NP, completion_NT, vision)


def sampled_rollout(tokenizer, ids_NP, mask_NP, completion_NT, vision=None) -> Rollout:
    """The Rollout of sampled completions (right-padded after EOS): masks, truncation, texts."""
    cmask_NT = completion_mask(completion_NT, tokenizer.eos_token_id)
    truncated_N = ~(completion_NT == tokenizer.eos_token_id).any(1)
    texts = decode(tokenizer, completion_NT, cmask_NT)
    return Rollout(ids_NP, mask_NP, completion_NT, cmask_NT, texts, truncated_N, vision=vision)


def decode(tokenizer, completion_NT, mask_NT) -> list[str]:
    """Completion texts without EOS/pad but with every other special token (tags are content)."""
    drop = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    known = len(tokenizer)  # padded embedding rows (real Qwen checkpoints have some) decode to nothing
    rows = []
    for ids, m in zip(completion_NT.tolist(), mask_NT.tolist()):
        rows.append([t for t, keep in zip(ids, m) if keep and t not in drop and t < known])
    return tokenizer.batch_decode(rows, skip_special_tokens=False)
