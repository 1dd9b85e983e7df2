"""Injected completions (issue 19, mechanism 4): fixed texts (a gold solution, a teacher's answer,
an anchor) put into rows of a step's rollout as if the policy had sampled them.

Contract, for a refining sampler (`refine(batch)`, rollout/samplers.py):
- `batch.inject(dest, texts)`: row dest[i] keeps its prompt (tokens, mask, images) and its
  completion becomes texts[i], tokenised as the SFT stage tokenises a gold (no special tokens
  added) followed by EOS: the ids the model would have emitted had it sampled that text, with
  the completion mask over all of them and `truncated` False. The text the rewards see is
  those ids decoded as a sampled completion is. The rows are re-scored with the recipe's
  rewards and listed in `batch.injected`.
- Behaviour log-probs: the loop never takes log-probs from the generator. Every row's old
  log-probs are the current policy's, computed before the step's first optimizer update
  (update.py), or `logp.detach()` for the single on-policy update (ppo_epochs 1, one
  mini-batch). So an injected row has pi_old := pi_theta.detach(): its ratio is exactly 1 at
  the first update and is clipped like any row's afterwards. This is TempSamp-R1's rule
  (arXiv 2509.18056, fork `_inject_gt_rollout_in_gen_output`: old log-probs recomputed by the
  trainer, ratio 1 with one epoch) and the spec's for DaGRPO's anchors (algorithms_b.md §11).
  No importance weight 1/pi_behaviour is applied: the text came from no sampler whose
  probability we know.
- The reference log-probs (KL) and the advantage treat an injected row like any other of its
  group; shaping its advantage is the advantage estimator's or the reward's job.
- A text longer than `generation.max_new_tokens` is kept whole (it widens the batch), because
  cutting a gold would inject a completion that fails its own reward.
"""
from __future__ import annotations

import torch

from .generate import Rollout, decode


def tokenise_completions(tokenizer, texts: list[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids_NT, mask_NT): each text's ids (no special tokens added) plus EOS, right-padded."""
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
    T = max(map(len, rows))
    ids = torch.tensor([r + [tokenizer.pad_token_id] * (T - len(r)) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows], device=device)
    return ids, mask


def fixed_rollout(rollout: Rollout, rows: list[int], texts: list[str], tokenizer) -> Rollout:
    """The rollout of rows `rows` of `rollout` (their prompts and images) with `texts` as their
    completions, tokenised as if sampled."""
    base = rollout.select(rows)
    ids_NT, mask_NT = tokenise_completions(tokenizer, texts, rollout.completion_ids_NT.device)
    return Rollout(base.prompt_ids_NP, base.prompt_mask_NP, ids_NT, mask_NT, decode(tokenizer, ids_NT, mask_NT),
                   torch.zeros(len(rows), dtype=torch.bool, device=rollout.truncated_N.device), vision=base.vision)

