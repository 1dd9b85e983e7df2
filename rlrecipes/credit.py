"""Token-level credit (issue 19, mechanism 1): what the loop gives an advantage estimator that
asks for per-token inputs, and how a per-token advantage comes back. The contract is in
rewards/dense.py; this module builds the step's inputs, gathered over ranks.
"""
from __future__ import annotations

import torch

from .errors import UserError
from .registry import signature_params
from .rewards.dense import char_ends, token_rewards, token_spans

TOKEN_INPUTS = ("segments_BGK", "token_rewards_BGT", "mask_BGT", "ids_BGT", "reward_names_K")


def check(comp, alg) -> bool:
    """Whether the recipe's estimator asks for token-level inputs; if so, that the loss and
    regularizers take per-token advantages and nothing reworks the batch behind its back.
    One-line errors name the YAML field."""
    if not set(signature_params(comp.advantage).parameters) & set(TOKEN_INPUTS):
        return False
    how = f"advantage {alg.advantage.fn!r} gives one advantage per token"
    if not getattr(comp.loss, "token_advantages", False):
        raise UserError("algorithm.loss.fn", f"loss {alg.loss.fn!r} takes one advantage per sequence, but {how}",
                        "use ppo_clip (or another loss that accepts per-token advantages)")
    for i, (fn, _) in enumerate(comp.regularizers):
        if "adv_N" in signature_params(fn).parameters and not getattr(fn, "token_advantages", False):
            raise UserError(f"algorithm.regularizers[{i}].fn", f"this regularizer reads one advantage per "
                            f"sequence, but {how}", "drop it or use a sequence-level advantage")
    # A refined row's reward parts are those of the rows it replaced (or of whatever the refiner
    # scored last): only an estimator that reads them is refused; masks and ids come from the
    # refined rollout (BRPO's budget summaries refine and read mask_BGT).
    reads_parts = set(signature_params(comp.advantage).parameters) & {"segments_BGK", "token_rewards_BGT"}
    if (comp.refiners and reads_parts) or comp.replayers:
        raise UserError("algorithm.sampler.fn" if comp.refiners and reads_parts else "algorithm.loss.params.replay",
                        f"{how}; batches reworked after scoring (refining samplers, replay) are not supported "
                        "with token-level credit yet", "use the uniform sampler and no replay")
    return True


def _last_positions(mask_NT: torch.Tensor) -> list[int]:
    T = mask_NT.shape[1]
    pos = torch.arange(T).expand_as(mask_NT)
    last = torch.where(mask_NT.bool(), pos, torch.full_like(pos, -1)).max(1).values
    return last.tolist()


def step_inputs(ctx, rollout, rewards_NK: torch.Tensor, group_size: int, wants) -> dict:
    """The token-level inputs this estimator names (see rewards/dense.py), over the whole step:
    every rank's rows, rank-major, padded to the widest completion of any rank."""
    acc, tok, G = ctx.accelerator, ctx.tokenizer, group_size
    ids_NT, cmask_NT, mask_NT = (t.cpu() for t in (rollout.completion_ids_NT, rollout.completion_mask_NT,
                                                    rollout.loss_mask()))
    N, T = ids_NT.shape
    drop, known = {tok.eos_token_id, tok.pad_token_id}, len(tok)
    segments = []
    parts_wanted = {"segments_BGK", "token_rewards_BGT"} & set(wants)
    for n in range(N if parts_wanted else 0):
        ids = ids_NT[n].tolist()
        keep = [bool(m) and t not in drop and t < known for t, m in zip(ids, cmask_NT[n].tolist())]
        ends, row = None, []
        for fn in ctx.reward_fns:
            parts = fn.parts[n] if len(fn.parts) == N else None
            if parts is None:
                row.append(None)
                continue
            ends = ends if ends is not None else char_ends(tok, ids, keep)
            row.append(token_spans(ends, keep, parts))
        segments.append(row)
    weights = [f.weight for f in ctx.reward_fns]
    last = _last_positions(mask_NT)
    rewards_NT = torch.stack([token_rewards(T, segments[n], rewards_NK[n].tolist(), weights, last[n])
                              for n in range(N)]) if N and parts_wanted else torch.zeros(N, T)
    tensors = {"token_rewards_BGT": rewards_NT, "mask_BGT": mask_NT.float(), "ids_BGT": ids_NT}
    if acc.num_processes > 1:
        from accelerate.utils import gather_object
        width = int(acc.gather(torch.tensor([T], device=acc.device)).max())
        fill = {"token_rewards_BGT": 0.0, "mask_BGT": 0.0, "ids_BGT": tok.pad_token_id}
        tensors = {k: acc.gather(torch.nn.functional.pad(v, (0, width - T), value=fill[k]).to(acc.device)).cpu()
                   for k, v in tensors.items()}
        segments = gather_object(segments)
    out = {k: v.view(-1, G, v.shape[-1]) for k, v in tensors.items() if k in wants}
    if "segments_BGK" in wants:
        out["segments_BGK"] = [segments[b:b + G] for b in range(0, len(segments), G)]
    if "reward_names_K" in wants:
        out["reward_names_K"] = [f.name for f in ctx.reward_fns]
    return out


def this_rank(adv: torch.Tensor, processes: int, rank: int, rows: int, width: int) -> torch.Tensor:
    """This rank's advantages from the whole step's: [rows] from adv_BG, or [rows, width] from
    adv_BGT (cut back from the step's widest completion to this rank's)."""
    if adv.dim() == 2:
        return adv.reshape(processes, rows)[rank]
    if adv.dim() != 3:
        raise RuntimeError(f"an advantage estimator returned a tensor of shape {tuple(adv.shape)}; "
                           "expected [B, G] or [B, G, T]")
    return adv.reshape(processes, rows, adv.shape[-1])[rank][:, :width]
