"""Budgeted rollouts (AnytimeReasoner, arXiv 2505.13438; official code sail-sg/AnytimeReasoner
`brpo.py` `sample_partial_cot`, `compute_reward_and_correct_answer`; spec
shared/papers/next/anytime_reasoner_brpo.md §2): each thinking trace is cut at every budget of a
grid and summarised from each cut, so the trace earns a verifiable reward at every budget.

The step's B·G rows are the thoughts: the policy's completion up to and including the first
`think_close` ("</think>"), at most the last budget L_max tokens (a trace that writes past
`</think>` is cut there: the authors stop generation at it; here the extra tokens are sampled
and dropped). For trace g and budget b_j:
  - the trace is longer than b_j, or never closed its thought: prompt = x ‖ z[:b_j] ‖
    `truncation` ‖ `think_close` ‖ `cue`;
  - else (it finished inside the budget): prompt = x ‖ z ‖ `cue`, and every budget from this one
    on shares that prompt: it is summarised once with A·m samples (m merged budgets), spread
    over the merged budgets in order (their summary baseline pools all of them).
Summaries are sampled with at most `summary_max_tokens` tokens (the code's MAX_ANSWER_LEN - 10
= 118) and scored with the recipe's rewards; a summary scores 0 when its trace ended with EOS
inside the thought or when it writes `think_close` again (the code's "exactly one </think>").
They are attached as branch rows (rlrecipes/branches.py) for the `brpo` advantage. A thought's
own row reward (reward_mean, rewards_BG) is the mean of its last budget's summaries.
Prompts are text: the cut thought is decoded and re-tokenised with the prompt (context only;
the thought's tokens are trained in their own row).

Anytime eval (`evaluate`): per test problem, `samples` thoughts cut at `eval_splits` (default:
the training splits), one summary each; reports budget_acc@<b> and their mean, anytime_acc
(the authors' validation weighs its budgets equally), and think_len. Metrics each step: budget/acc@<b> (mean
summary reward), budget/think_len, budget/closed_frac, budget/eos_frac.
"""
from __future__ import annotations

import torch

from .. import branches   # the module, not the class: branches imports rollout.generate (a cycle)
from ..registry import register
from ..rewards.combine import combine
from .generate import Rollout, decode
from .samplers import Batch, Uniform


def _find(ids: list[int], sub: list[int]) -> int:
    """Index just past the first occurrence of `sub` in `ids`, or -1."""
    n = len(sub)
    return next((i + n for i in range(len(ids) - n + 1) if ids[i:i + n] == sub), -1)


class Thoughts:
    """The thoughts of a rollout's rows: ids (cut), and whether each closed or hit EOS."""

    def __init__(self, rollout: Rollout, tokenizer, close: list[int], max_len: int):
        eos = tokenizer.eos_token_id
        self.ids, self.closed, self.eos = [], [], []
        for ids in rollout.completion_ids():
            end = _find(ids[:max_len], close)
            if end > 0:
                ids, closed, hit_eos = ids[:end], True, False
            else:
                ids = ids[:max_len]
                hit_eos = eos in ids
                ids, closed = (ids[:ids.index(eos) + 1] if hit_eos else ids), False
            self.ids.append(ids)
            self.closed.append(closed)
            self.eos.append(hit_eos)

    def rollout(self, source: Rollout, pad_id: int) -> Rollout:
        """`source` with every completion cut to its thought."""
        width = max(1, max(len(t) for t in self.ids))
        ids = torch.full((len(self.ids), width), pad_id, dtype=source.completion_ids_NT.dtype)
        mask = torch.zeros_like(ids)
        for n, t in enumerate(self.ids):
            ids[n, :len(t)] = torch.tensor(t, dtype=ids.dtype)
            mask[n, :len(t)] = 1
        dev = source.completion_ids_NT.device
        truncated = torch.tensor([not (c or e) for c, e in zip(self.closed, self.eos)], device=source.truncated_N.device)
        return Rollout(source.prompt_ids_NP, source.prompt_mask_NP, ids.to(dev), mask.to(dev), [], truncated,
                       stats=dict(source.stats), vision=source.vision)


def prompt_texts(rollout: Rollout, tokenizer) -> list[str]:
    """Each row's prompt as text (special tokens kept: a chat template survives)."""
    return decode(tokenizer, rollout.prompt_ids_NP, rollout.prompt_mask_NP)


@register("sampler", "budget_summaries")
class BudgetSummaries(Uniform):
    """AnytimeReasoner's budgeted rollouts (module docstring): `splits` = the budget grid in
    tokens (the authors: L_max (j + 1) / S, S = 4, L_max 8000 → 2000/4000/6000/8000; the last
    must not exceed generation.max_new_tokens), `n_summary` = A summaries per budget (4),
    `summary_max_tokens` (118), the marker texts of `sample_partial_cot` (`truncation` then
    `think_close` then `cue`), `eval_splits` for the anytime eval. Prompt order as `uniform`."""

    attaches_branches = True

    def __init__(self, num_rows: int, seed: int, splits: list[int], shuffle: bool = True, n_summary: int = 4,
                 summary_max_tokens: int = 118, think_close: str = "</think>", truncation: str = "...\n\n...\n\n",
                 cue: str = "\n\n**Final Answer**\n", eval_splits: list[int] | None = None):
        super().__init__(num_rows, seed, shuffle)
        for name, grid in (("splits", splits), ("eval_splits", eval_splits or splits)):
            if not grid or any(b <= 0 for b in grid) or any(b <= a for a, b in zip(grid, grid[1:])):
                raise ValueError(f"{name} must be increasing positive token budgets, got {grid}")
        if n_summary < 1 or summary_max_tokens < 1:
            raise ValueError("n_summary and summary_max_tokens must be >= 1")
        self.splits, self.eval_splits = list(splits), list(eval_splits or splits)
        self.n_summary, self.summary_max_tokens = n_summary, summary_max_tokens
        self.think_close, self.truncation, self.cue = think_close, truncation, cue

    def requests(self, prompts: list[str], thoughts: Thoughts, tokenizer, splits: list[int], A: int) -> list[tuple]:
        """(prompt text, parent, slots, cut) for every summary prompt: budgets at or past a
        closed thought's length share one prompt, with A samples per budget."""
        out = []
        for n, (x, z) in enumerate(zip(prompts, thoughts.ids)):
            for j, b in enumerate(splits):
                if thoughts.closed[n] and len(z) <= b:
                    out.append((x + tokenizer.decode(z, skip_special_tokens=False) + self.cue, n,
                                list(range(j, len(splits))), len(z)))
                    break
                head = tokenizer.decode([t for t in z[:b] if t != tokenizer.eos_token_id], skip_special_tokens=False)
                out.append((x + head + self.truncation + self.think_close + self.cue, n, [j], min(b, len(z))))
        return [(text, n, slots, cut) for text, n, slots, cut in out for _ in range(A * len(slots))]

    def summarise(self, generate, tokenizer, prompts: list[str], thoughts: Thoughts, splits: list[int], A: int):
        """(summary rollout, parent_M, slot_M, pool_M, cut_M, spoiled_M)."""
        reqs = self.requests(prompts, thoughts, tokenizer, splits, A)
        rollout = generate([r[0] for r in reqs], max_new_tokens=self.summary_max_tokens)
        parent, slot, pool, cut, seen = [], [], [], [], {}
        for i, (text, n, slots, c) in enumerate(reqs):
            key = (n, slots[0])
            k = seen.setdefault(key, [len(seen), 0])
            parent.append(n)
            slot.append(slots[k[1] // A])
            k[1] += 1
            pool.append(k[0])
            cut.append(c)
        spoiled = [thoughts.eos[n] or self.think_close in t for n, t in zip(parent, rollout.texts)]
        return rollout, *(torch.tensor(v) for v in (parent, slot, pool, cut, spoiled))

    def refine(self, batch: Batch) -> None:
        tok = batch.tokenizer
        close = tok.encode(self.think_close, add_special_tokens=False)
        thoughts = Thoughts(batch.rollout, tok, close, self.splits[-1])
        prompts = prompt_texts(batch.rollout, tok)
        summary, parent, slot, pool, cut, spoiled = self.summarise(
            lambda p, **kw: batch.generate(p, **kw), tok, prompts, thoughts, self.splits, self.n_summary)
        rows = [batch.rows[n] for n in parent.tolist()]
        rewards_MK = batch.score([prompts[n] for n in parent.tolist()], summary, rows)
        rewards_MK[spoiled] = 0.0
        cut_rollout = thoughts.rollout(batch.rollout, batch.pad_id)
        cut_rollout.texts = decode(tok, cut_rollout.completion_ids_NT, cut_rollout.completion_mask_NT)
        batch.rollout = cut_rollout
        last = slot == len(self.splits) - 1   # a thought's own reward: its last budget's summaries
        N = len(cut_rollout)
        rewards = torch.zeros(N, rewards_MK.shape[1]).index_add(0, parent[last], torch.nan_to_num(rewards_MK[last]))
        count = torch.zeros(N).index_add(0, parent[last], torch.ones(int(last.sum())))
        batch.rewards_NK = rewards / count.clamp(min=1).unsqueeze(1)
        batch.branches = branches.Branches(summary, parent, slot, pool, cut, rewards_MK)
        total_M = combine(rewards_MK, batch.weights)
        for j, b in enumerate(self.splits):
            batch.metrics[f"budget/acc@{b}"] = total_M[slot == j].nanmean().item()
        batch.metrics["budget/think_len"] = sum(len(t) for t in thoughts.ids) / N
        batch.metrics["budget/closed_frac"] = sum(thoughts.closed) / N
        batch.metrics["budget/eos_frac"] = sum(thoughts.eos) / N

    @staticmethod
    def eval_names(splits: list[int], eval_splits: list[int] | None = None, **_) -> list[str]:
        """What `evaluate` reports (validate checks expect.tiny.metric and best_metric against it)."""
        names = [f"budget_acc@{b}" for b in eval_splits or splits] + ["anytime_acc", "think_len"]
        return names + [f"{n}_ci" for n in names]

    @torch.no_grad()
    def evaluate(self, model, tokenizer, task, rows, prompts, samples: int, gen, device, generate_fn) -> dict:
        """Per-problem budget_acc@<b> (one summary per thought and budget, scored with
        `task.score`, spoiled summaries 0), anytime_acc (their mean over `eval_splits`) and
        think_len (mean thought length in tokens, at most the last eval split)."""
        think_gen = gen.model_copy(update={"max_new_tokens": max(gen.max_new_tokens, self.eval_splits[-1])})
        sum_gen = gen.model_copy(update={"max_new_tokens": self.summary_max_tokens})
        close = tokenizer.encode(self.think_close, add_special_tokens=False)
        out = {f"budget_acc@{b}": [] for b in self.eval_splits}
        lengths = []
        chunk = max(1, 256 // samples)
        for s in range(0, len(rows), chunk):
            part_rows = rows[s:s + chunk]
            rollout = generate_fn(model, tokenizer, prompts[s:s + chunk], think_gen, device, repeat=samples)
            thoughts = Thoughts(rollout, tokenizer, close, self.eval_splits[-1])
            summary, parent, slot, _, _, spoiled = self.summarise(
                lambda p, **kw: generate_fn(model, tokenizer, p, sum_gen, device, repeat=1),
                tokenizer, prompt_texts(rollout, tokenizer), thoughts, self.eval_splits, 1)
            score = torch.tensor([0.0 if bad else float(task.score(t, part_rows[n // samples]))
                                  for t, n, bad in zip(summary.texts, parent.tolist(), spoiled.tolist())])
            problem = parent // samples
            lengths += [sum(len(t) for t in thoughts.ids[i * samples:(i + 1) * samples]) / samples
                        for i in range(len(part_rows))]
            for j, b in enumerate(self.eval_splits):
                at = slot == j
                acc = torch.zeros(len(part_rows)).index_add(0, problem[at], score[at]) / samples
                out[f"budget_acc@{b}"] += acc.tolist()
        out["anytime_acc"] = [sum(v) / len(v) for v in zip(*out.values())]
        out["think_len"] = lengths
        return out
