"""One rollout's optimizer updates: reference (and, off-policy, behaviour) log-probs, then
ppo_epochs x mini_batches of micro-batch forward/backward with the loss, regularizers and the
recipe's aggregation, gradient clipping and the optimizer step.

Several processes: DDP averages gradients over ranks, and the aggregation's normaliser (tokens,
sequences or rows x max_len; a count additive over rows) is summed over ranks first
(`global_normaliser`), so a token-mean loss is the mean over every rank's tokens: the gradient
equals the single-process gradient on the whole batch (TRL's `dapo` normaliser behaves so).
"""
from __future__ import annotations

import math
import time

import torch

from . import sharding
from .logprobs import token_logprobs
from .registry import call_with


@torch.no_grad()
def fixed_logprobs(ctx, model, rollout, chunks):
    out = [token_logprobs(model, *_tensors(rollout, c), ctx.recipe.generation.temperature,
                          vision=_vision(rollout, c), share_prefix=ctx.recipe.train.prefix_sharing)[0]
           for c in chunks]
    return torch.cat(out)


def _tensors(rollout, idx):
    return (rollout.prompt_ids_NP[idx], rollout.prompt_mask_NP[idx],
            rollout.completion_ids_NT[idx], rollout.completion_mask_NT[idx])


def _injected(rollout, idx) -> torch.Tensor:
    """Which rows of `idx` hold an injected completion (rollout/inject.py), bool."""
    flags = rollout.stats.get("injected")
    return torch.zeros(len(idx), dtype=torch.bool) if flags is None else flags[torch.as_tensor(idx)].cpu()


def _vision(rollout, idx):
    return None if rollout.vision is None else rollout.vision.select(idx)


def micro_batches(r, N: int) -> tuple[list[list[list[int]]], list[list[int]]]:
    """(micro-batches of each mini-batch, all micro-batches) of N rows, as lists of row indices."""
    mini = max(1, N // r.train.mini_batches)
    micro = r.train.micro_batch_size or mini
    minibatches = [list(range(s, min(s + mini, N))) for s in range(0, N, mini)]
    chunked = [[mb[s:s + micro] for s in range(0, len(mb), micro)] for mb in minibatches]
    return chunked, [c for chunks in chunked for c in chunks]


def update(ctx, rollout, adv_N, reward_N, step: int, old_NT=None) -> dict:
    """ppo_epochs x mini_batches optimizer steps on one rollout; returns averaged metrics.
    `old_NT`: behaviour log-probs when already computed (else computed here if off-policy)."""
    r, comp, acc = ctx.recipe, ctx.comp, ctx.accelerator
    chunked, all_micro = micro_batches(r, len(rollout))
    minibatches = [[i for c in chunks for i in c] for chunks in chunked]
    on_policy = r.train.ppo_epochs == 1 and len(minibatches) == 1
    unwrapped = acc.unwrap_model(ctx.model)
    if old_NT is None and not on_policy:
        old_NT = fixed_logprobs(ctx, unwrapped, rollout, all_micro)
    ref_NT, t_ref = None, time.perf_counter()
    if comp.needs_ref:
        ref_model, ref_ctx = ctx.reference.context(unwrapped)
        with ref_ctx:
            ref_NT = fixed_logprobs(ctx, ref_model, rollout, all_micro)
    t_ref, t_update = time.perf_counter() - t_ref, time.perf_counter()
    mask_NT = rollout.loss_mask().float()
    max_len = r.generation.max_new_tokens
    sums: dict[str, float] = {}
    n_updates = skipped = 0
    ctx.model.train()
    for _ in range(r.train.ppo_epochs):
        for mb, chunks in zip(minibatches, chunked):
            den = global_normaliser(acc, sum(comp.aggregation(torch.zeros_like(mask_NT[c]), mask_NT[c],
                                                              max_len=max_len)[1] for c in chunks))
            loss_total, micro_grads, before = 0.0, [], None
            for c in chunks:
                loss, m = micro_loss(ctx, rollout, c, adv_N, reward_N, old_NT, ref_NT, mask_NT, den, step)
                loss_total += loss
                for k, v in m.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * len(c) / len(mb)
                if comp.lr_scalers:
                    now = _flat_grad(ctx.params)
                    micro_grads.append(now if before is None else now - before)
                    before = now
            factor = 1.0
            for scaler in comp.lr_scalers:
                f, m = scaler.lr_scale(micro_grads)
                factor *= f
                for k, v in m.items():
                    sums[k] = sums.get(k, 0.0) + v
            max_norm = r.train.max_grad_norm or float("inf")
            norm = sharding.clip_grad_norm_(ctx.params, max_norm) if getattr(ctx, "sharded", False) \
                else acc.clip_grad_norm_(ctx.params, max_norm)
            if acc.num_processes > 1:  # each rank's share is num_r * P / den: their mean is the loss
                loss_total = acc.reduce(torch.tensor(loss_total, device=acc.device), "mean").item()
            sums["loss"] = sums.get("loss", 0.0) + loss_total
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(norm)
            n_updates += 1
            if math.isfinite(loss_total) and torch.isfinite(norm):
                _step(ctx.optimizer, factor)
            else:  # NaN/inf guard: drop this update, keep the weights (the loop counts streaks)
                skipped += 1
            ctx.optimizer.zero_grad(set_to_none=True)
    return {**{k: v / n_updates for k, v in sums.items()}, "skipped_updates": skipped,
            "updates": n_updates, "time/reference": t_ref, "time/update": time.perf_counter() - t_update}


def global_normaliser(acc, den: torch.Tensor) -> torch.Tensor:
    """The aggregation's normaliser over every rank's rows, divided by the number of ranks: DDP
    averages the ranks' gradients, so losses num_r / (sum_r den_r / P) average to
    sum_r num_r / sum_r den_r, the single-process loss on the whole batch. One process: `den`."""
    if acc.num_processes == 1:
        return den
    total = acc.reduce(torch.as_tensor(den, dtype=torch.float32, device=acc.device), "sum")
    return total.cpu() / acc.num_processes


def _flat_grad(params) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().flatten().float()
                      for p in params])


def _step(optimizer, lr_factor: float) -> None:
    """optimizer.step() with every group's learning rate times `lr_factor` for this step only."""
    if lr_factor == 1.0:
        optimizer.step()
        return
    saved = [g["lr"] for g in optimizer.param_groups]
    for g in optimizer.param_groups:
        g["lr"] = g["lr"] * lr_factor
    optimizer.step()
    for g, lr in zip(optimizer.param_groups, saved):
        g["lr"] = lr


def micro_loss(ctx, rollout, idx, adv_N, reward_N, old_NT, ref_NT, mask_NT, den, step):
    """Forward + backward of one micro-batch; returns (its share of the loss, metrics)."""
    r, comp = ctx.recipe, ctx.comp
    extras = {} if comp.needs_last_layer else None
    logp_NT, entropy_NT = token_logprobs(ctx.model, *_tensors(rollout, idx), r.generation.temperature,
                                         entropy="grad" if comp.entropy_grad else "log", extras=extras,
                                         vision=_vision(rollout, idx), share_prefix=r.train.prefix_sharing)
    old = logp_NT.detach() if old_NT is None else old_NT[idx]
    inputs = {"logp_NT": logp_NT, "old_logp_NT": old, "adv_N": adv_N[idx], "mask_NT": mask_NT[idx],
              "ref_logp_NT": None if ref_NT is None else ref_NT[idx], "entropy_NT": entropy_NT,
              "ids_NT": rollout.completion_ids_NT[idx], "rewards_N": reward_N[idx].to(logp_NT.device),
              "group_size": r.train.group_size, "step": step, "total_steps": r.train.steps,
              "injected_N": _injected(rollout, idx), **(extras or {})}
    loss_NT, metrics = call_with(comp.loss, inputs, comp.loss_params)
    for fn, params in comp.regularizers:
        term_NT, m = call_with(fn, inputs, params)
        loss_NT = loss_NT + term_NT
        metrics.update(m)
    num, _ = comp.aggregation(loss_NT, mask_NT[idx], max_len=r.generation.max_new_tokens)
    loss = num / den
    ctx.accelerator.backward(loss)
    with torch.no_grad():
        m = mask_NT[idx]
        metrics["entropy"] = (entropy_NT.detach() * m).sum() / m.sum().clamp(min=1)
    return loss.item(), {k: (v.item() if torch.is_tensor(v) else v) for k, v in metrics.items()}


