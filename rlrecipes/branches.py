"""Branch rows (issue 19, mechanism 2: budgeted rollouts, AnytimeReasoner arXiv 2505.13438): rows
that branch off the step's rows at a cut point and are trained in the same update.

Contract. A refining sampler whose class sets `attaches_branches = True` may set
`batch.branches = Branches(...)` in `refine(batch)` (rollout/samplers.py): M extra rows whose
prompt is a parent row's prompt + a prefix of the parent's completion (+ any cue text), with
their own sampled completions, scored with the recipe's rewards. The step's B·G rows keep their
group shape (rewards, `rewards_BG`, metrics); the branches ride beside them. An advantage
estimator that names any of BRANCH_INPUTS receives them over the whole step (every rank's
branches, rank-major; parents as indices into the step's B·G rows, pools unique over the step):

- `branch_rewards_M`: each branch's combined (weighted) reward, NaN where no reward applied;
- `branch_parent_M`, `branch_slot_M` (the parent's cut slot, e.g. the budget index),
  `branch_pool_M` (branches with the same pool share one prompt), `branch_cut_M` (tokens of the
  parent's completion before the cut);

and returns `(adv_parents, adv_M)`: the B·G rows' advantages ([B, G] or [B, G, T]) and one per
branch. The loop then trains on the parents followed by the branches (`join`), each branch row
with its scalar advantage on every completion token; the branch rows' prompts contain the
parent's prefix as context only, so those tokens are trained once, in the parent row (the
authors pack a trace and its summaries into one tree sequence; flattened rows give the same
gradient with more compute). Refining components other than the one attaching branches must
not reorder or replace rows after it, and replay (R2VPO) does not take branches.

Why a refine hook and not a generator: the branches need the step's formatted prompts, the
recipe's rewards and a second generation with its own length cap, all of which `Batch`
already carries; a generator would have had to change the row count of the scored batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import UserError
from .registry import signature_params
from .rewards.combine import combine
from .rollout.generate import Rollout, stack

BRANCH_INPUTS = ("branch_rewards_M", "branch_parent_M", "branch_slot_M", "branch_pool_M", "branch_cut_M")


@dataclass
class Branches:
    """M rows branching off this rank's rows (indices into the batch's N rows)."""
    rollout: Rollout
    parent_M: torch.Tensor
    slot_M: torch.Tensor
    pool_M: torch.Tensor
    cut_M: torch.Tensor
    rewards_MK: torch.Tensor


def check(comp, alg) -> bool:
    """Whether the step has branches: the sampler attaches them exactly when the estimator
    reads them (one-line errors naming the YAML field otherwise)."""
    reads = bool(set(signature_params(comp.advantage).parameters) & set(BRANCH_INPUTS))
    attaches = bool(getattr(comp.sampler, "attaches_branches", False))
    if reads and not attaches:
        raise UserError("algorithm.sampler.fn", f"advantage {alg.advantage.fn!r} reads branch rows (summaries of cut "
                        f"completions), and sampler {alg.sampler.fn!r} attaches none", "use sampler budget_summaries")
    if attaches and not reads:
        raise UserError("algorithm.advantage.fn", f"sampler {alg.sampler.fn!r} attaches branch rows that advantage "
                        f"{alg.advantage.fn!r} would ignore", "use advantage brpo")
    if attaches and comp.replayers:
        raise UserError("algorithm.loss.params.replay", "replay does not take branch rows", "drop replay")
    return reads


def _gather_list(acc, values: list) -> list[list]:
    if acc.num_processes == 1:
        return [values]
    from accelerate.utils import gather_object
    return gather_object([values])


def step_inputs(acc, branches: Branches, weights: list[float], rows_per_rank: int) -> tuple[dict, list[int]]:
    """(BRANCH_INPUTS over the whole step, each rank's branch count)."""
    reward_M = combine(branches.rewards_MK, weights)
    parts = _gather_list(acc, [reward_M.tolist(), branches.parent_M.tolist(), branches.slot_M.tolist(),
                               branches.pool_M.tolist(), branches.cut_M.tolist()])
    out = {k: [] for k in BRANCH_INPUTS}
    pool_offset = 0
    for rank, (rew, parent, slot, pool, cut) in enumerate(parts):
        out["branch_rewards_M"] += rew
        out["branch_parent_M"] += [p + rank * rows_per_rank for p in parent]
        out["branch_slot_M"] += slot
        out["branch_pool_M"] += [p + pool_offset for p in pool]
        out["branch_cut_M"] += cut
        pool_offset += max(pool, default=-1) + 1
    tensors = {k: torch.tensor(v, dtype=torch.float32 if k == "branch_rewards_M" else torch.long)
               for k, v in out.items()}
    return tensors, [len(p[0]) for p in parts]


def this_rank(adv_M: torch.Tensor, counts: list[int], rank: int) -> torch.Tensor:
    start = sum(counts[:rank])
    return adv_M[start:start + counts[rank]]


def join(rollout: Rollout, adv_N: torch.Tensor, reward_N: torch.Tensor, branches: Branches, adv_M: torch.Tensor,
         weights: list[float], pad_id: int) -> tuple[Rollout, torch.Tensor, torch.Tensor]:
    """The parents followed by the branch rows: rollout, advantages (per token when the
    parents' are, each branch's scalar on its every token), combined rewards."""
    both = stack([rollout, branches.rollout], pad_id)
    adv_M = adv_M.to(adv_N.device, adv_N.dtype)
    if adv_N.dim() == 2:
        T = both.completion_ids_NT.shape[1]
        mask_MT = branches.rollout.loss_mask().float().to(adv_N.device)
        pad = torch.nn.functional.pad
        adv_N = torch.cat([pad(adv_N, (0, T - adv_N.shape[1])), pad(adv_M[:, None] * mask_MT, (0, T - mask_MT.shape[1]))])
    else:
        adv_N = torch.cat([adv_N, adv_M])
    reward_M = combine(branches.rewards_MK, weights).to(reward_N.device)
    return both, adv_N, torch.cat([reward_N, reward_M])
