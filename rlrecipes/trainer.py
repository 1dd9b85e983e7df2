"""The shared loop. Stages `sft` then `rl`; every paper-specific choice is a registered component.

One RL step: sample prompts -> G completions each (batched generate) -> rewards (TRL contract)
-> weighted sum -> advantage -> [old / reference log-probs] -> ppo_epochs x mini_batches of
policy loss + regularizers, aggregated -> backward, clip, step. Each rank generates for its
share of the prompts; rewards are gathered so advantages see the whole batch.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

from . import branches, credit
from .algorithms.advantages import nanstd
from .registry import call_with, construct, get, signature_params
from .rewards.combine import combine, score
from .rollout.paraphrase import step_prompts
from .update import fixed_logprobs, micro_batches, update


def build(kind: str, spec_fn: str, params: dict, field: str):
    """(callable, params to pass per call): a registered class is instantiated with its YAML
    parameters (it may keep state); a function gets them on every call."""
    obj = get(kind, spec_fn)
    return (construct(obj, field, **params), {}) if isinstance(obj, type) else (obj, params)


class Components:
    """The recipe's algorithm components, built once, with what each needs from the loop."""

    def __init__(self, recipe, num_rows: int):
        alg = recipe.algorithm
        self.advantage, self.adv_params = build("advantage", alg.advantage.fn, alg.advantage.params,
                                                "algorithm.advantage")
        self.loss, self.loss_params = build("loss", alg.loss.fn, alg.loss.params, "algorithm.loss")
        self.aggregation = get("aggregation", alg.loss.aggregation)
        self.regularizers = [build("regularizer", r.fn, r.params, f"algorithm.regularizers[{i}]")
                             for i, r in enumerate(alg.regularizers)]
        if alg.kl.beta > 0:
            self.regularizers.insert(0, build("regularizer", "kl", {"beta": alg.kl.beta,
                                                                    "estimator": alg.kl.estimator}, "algorithm.kl"))
        wants = {name for fn, _ in self.regularizers for name in signature_params(fn).parameters}
        self.needs_ref = "ref_logp_NT" in wants | set(signature_params(self.loss).parameters)
        self.entropy_grad = "entropy_NT" in wants  # losses that read entropy use it detached
        self.needs_last_layer = "hidden_NTD" in signature_params(self.loss).parameters
        sampler_cls = get("sampler", alg.sampler.fn)
        linked = {"advantage": self.advantage} if "advantage" in signature_params(sampler_cls).parameters else {}
        self.sampler = construct(sampler_cls, "algorithm.sampler", num_rows=num_rows, seed=recipe.train.seed,
                                 **linked, **alg.sampler.params)
        # hooks: refine(batch) after scoring, after_update(info) after the optimizer steps
        self.refiners = [c for c in (self.sampler, self.advantage) if hasattr(c, "refine")]
        self.post_update = [c for c in (self.advantage, self.sampler) if hasattr(c, "after_update")]
        # lr_scale(micro-batch gradients) -> (factor, metrics) before each optimizer step (OBLR-PO)
        self.lr_scalers = [c for c in (self.advantage, self.loss) if hasattr(c, "lr_scale")]
        # replay_batch(rollout, adv_N, old_NT, reward_N, pad_id) -> the batch to train on (R2VPO)
        self.replayers = [c for c in (self.loss,) if getattr(c, "replay", 0)]
        self.token_level = credit.check(self, alg)  # the estimator asks for per-token inputs
        self.branches = branches.check(self, alg)   # rows cut from the step's rows (budget summaries)

    def stateful(self) -> dict:
        """Every component with `state_dict` (value trackers, samplers, KL controllers...): all
        are saved in checkpoints and restored on resume."""
        items = {"sampler": self.sampler, "advantage": self.advantage, "loss": self.loss,
                 **{f"regularizer{i}": fn for i, (fn, _) in enumerate(self.regularizers)}}
        return {k: v for k, v in items.items() if hasattr(v, "state_dict") and not isinstance(v, type)}


def rl_step(ctx, step: int) -> dict:
    """One RL step; returns the step's metrics."""
    r, comp, acc = ctx.recipe, ctx.comp, ctx.accelerator
    B, G, t0 = r.train.prompts_per_step, r.train.group_size, time.perf_counter()
    idx = comp.sampler.next(B)
    P = acc.num_processes
    mine = idx[acc.process_index::P]
    rows = [ctx.train_rows[i] for i in mine for _ in range(G)]
    # G rows per prompt, or a mixed-group sampler's own prompts per row (rollout/samplers.py)
    prompts, repeat = step_prompts(comp.sampler, [ctx.train_rows[i] for i in mine],
                                   [ctx.train_prompts[i] for i in mine], G, ctx.format)
    t_gen = time.perf_counter()
    rollout = ctx.generate(prompts, repeat=repeat)
    gen_time = time.perf_counter() - t_gen
    rewards_NK = score(ctx.reward_fns, [p for p in prompts for _ in range(repeat)], rollout.texts, rows, G, step,
                       rollout.completion_ids())
    score_time = time.perf_counter() - t_gen - gen_time
    refined, grown = {}, None
    if comp.refiners:  # components that rework a scored batch (Scaf-GRPO, DAPO, SPO's offline values)
        rollout, rewards_NK, refined, grown = _refine(ctx, step, rows, rollout, rewards_NK)
    reward_N = combine(rewards_NK, [f.weight for f in ctx.reward_fns])
    # Advantages over the whole batch: gather every rank's rewards, keep this rank's slice.
    gather = lambda t: acc.gather(t.to(acc.device)).cpu()  # noqa: E731
    all_N, all_K = gather(reward_N), gather(rewards_NK)
    rewards_BG = all_N.view(-1, G)
    # A completion that no reward applied to (all None) takes its group's mean: advantage ~0.
    rewards_BG = torch.where(torch.isnan(rewards_BG), rewards_BG.nanmean(1, keepdim=True), rewards_BG)
    mask_NT = rollout.loss_mask()
    available = {"rewards_BGK": all_K.view(-1, G, all_K.shape[-1]), "group_size": G, "step": step,
                 "reward_weights_K": torch.tensor([f.weight for f in ctx.reward_fns]),
                 "row_ids_B": torch.tensor([i for rank in range(P) for i in idx[rank::P]])}
    wants = signature_params(comp.advantage).parameters
    if "lengths_BG" in wants:  # a collective: only when the estimator asks (the same on every rank)
        available["lengths_BG"] = gather(mask_NT.sum(1).float()).view(-1, G)
    # behaviour log-probs before any update, for an estimator that asks for them or to keep with a
    # replayed batch; the update reuses them as old log-probs
    needs_seq = "seq_logp_BG" in wants
    old_NT = _policy_logprobs(ctx, rollout) if needs_seq or comp.replayers else None
    if needs_seq:
        available["seq_logp_BG"] = gather((old_NT * mask_NT).sum(1)).view(-1, G)
    if comp.token_level:  # segment credit, per-token rewards, masks (credit.py)
        available.update(credit.step_inputs(ctx, rollout, rewards_NK, G, wants))
    if comp.branches:  # branch rows beside the groups (branches.py)
        inputs, branch_counts = branches.step_inputs(acc, grown, [f.weight for f in ctx.reward_fns], len(mine) * G)
        available.update(inputs)
    adv = call_with(comp.advantage, available, comp.adv_params, positional=(rewards_BG,))
    adv, adv_M = adv if comp.branches else (adv, None)
    adv_N = credit.this_rank(adv, P, acc.process_index, len(mine) * G,
                             rollout.completion_ids_NT.shape[1]).to(acc.device)
    batch = (rollout, adv_N, old_NT, reward_N)
    if comp.branches:  # the parents, then their branches with their own advantages (the update
        # recomputes behaviour log-probs for all rows when it needs them: the weights are unchanged)
        both, adv_all, reward_all = branches.join(rollout, adv_N, reward_N, grown,
                                                  branches.this_rank(adv_M, branch_counts, acc.process_index),
                                                  [f.weight for f in ctx.reward_fns], ctx.tokenizer.pad_token_id)
        batch = (both, adv_all, None, reward_all)
    for c in comp.replayers:  # kept batches join the fresh one, each with its behaviour log-probs
        batch = c.replay_batch(*batch, pad_id=ctx.tokenizer.pad_token_id)
    metrics = update(ctx, batch[0], batch[1], batch[3], step, batch[2])
    if comp.replayers:
        metrics["replay/rows"] = len(batch[0]) - len(rollout)
    metrics.update(refined)
    metrics.update(_after_update(ctx, mine, rollout, gather))
    metrics.update({
        "reward_mean": all_N.nanmean().item(), "reward_std": torch.nan_to_num(nanstd(all_N)).item(),
        **{f"reward/{f.name}": all_K[:, k].nanmean().item() for k, f in enumerate(ctx.reward_fns)},
        "completion_len": mask_NT.sum(1).float().mean().item(),
        "truncated_frac": rollout.truncated_N.float().mean().item(),
        **{("injected_frac" if k == "injected" else f"tool/{k}"): v.float().mean().item()
           for k, v in rollout.stats.items()},
        "lr": ctx.scheduler.get_last_lr()[0], "step_time": time.perf_counter() - t0,
        "gen_tokens_per_s": mask_NT.sum().item() / gen_time, "time/generate": gen_time, "time/score": score_time})
    if torch.cuda.is_available():
        metrics["gpu_mem_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    ctx.scheduler.step()
    return metrics


@dataclass
class Updated:
    """What a component's `after_update(info)` sees once the step's optimizer updates are done
    (SPO's value tracker): this rank's row ids (one per prompt) and rollout, log-probs of any
    rollout under the updated policy, and a gather over ranks (rank-major, like the advantages)."""
    row_ids: list[int]
    group_size: int
    rollout: object
    logprobs: Callable
    gather: Callable
    pad_id: int


def _after_update(ctx, mine: list[int], rollout, gather) -> dict:
    if not ctx.comp.post_update:
        return {}
    info = Updated(mine, ctx.recipe.train.group_size, rollout, gather=gather, pad_id=ctx.tokenizer.pad_token_id,
                   logprobs=lambda ro: _policy_logprobs(ctx, ro))
    metrics = {}
    for obj in ctx.comp.post_update:
        metrics.update(obj.after_update(info))
    return metrics


def _refine(ctx, step: int, rows: list[dict], rollout, rewards_NK):
    """Let the refining components rework this rank's scored batch; returns (rollout, rewards_NK,
    metrics, branches: rows a component attached beside the groups, or None)."""
    from .rollout.samplers import Batch
    batch = Batch(step=step, group_size=ctx.recipe.train.group_size, rows=rows, rollout=rollout, rewards_NK=rewards_NK,
                  weights=[f.weight for f in ctx.reward_fns], generate=lambda p, **kw: ctx.generate(p, repeat=1, **kw),
                  score=lambda p, r, rws: score(ctx.reward_fns, p, r.texts, rws, 1, step, r.completion_ids()),
                  format=ctx.format, pad_id=ctx.tokenizer.pad_token_id, rank=ctx.accelerator.process_index,
                  train_rows=ctx.train_rows, train_prompts=ctx.train_prompts, question_of=ctx.task.prompt,
                  tokenizer=ctx.tokenizer, gold_of=ctx.task.gold,
                  reward_names=[f.name for f in ctx.reward_fns], **({"note": ctx.note} if hasattr(ctx, "note") else {}))
    for obj in ctx.comp.refiners:
        obj.refine(batch)
    return batch.rollout, batch.rewards_NK, batch.metrics, batch.branches


def _policy_logprobs(ctx, rollout):
    """Per-token log-probs of `rollout` under the current policy (no grad), in the recipe's
    micro-batches."""
    model = ctx.accelerator.unwrap_model(ctx.model)
    return fixed_logprobs(ctx, model, rollout, micro_batches(ctx.recipe, len(rollout))[1])


def lr_lambda(train):
    """Linear warmup over `warmup_steps` RL steps, then constant or cosine to 0 at `steps`."""
    def f(step: int) -> float:
        if step < train.warmup_steps:
            return (step + 1) / train.warmup_steps
        if train.schedule == "constant":
            return 1.0
        span = max(1, train.steps - train.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - train.warmup_steps) / span)))
    return f

