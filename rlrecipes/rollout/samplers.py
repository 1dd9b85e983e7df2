"""Prompt samplers: which training rows each step uses. Stateful: `state_dict`/`load_state_dict`.

A sampler is a class registered as `sampler`; the loop builds it with `num_rows` and `seed` plus
the YAML parameters and calls `next(n)` for the row indices of a step. A sampler with a
`refine(batch: Batch)` method also sees each step's scored batch (this rank's share) before the
advantages and may replace rollouts and rewards in it (Scaf-GRPO's hints, rollout/scaffold.py),
or put fixed completions into it (`Batch.inject`: DaGRPO's anchors, rollout/anchors.py).

Mixed-prompt groups: a sampler with `group_prompts(rows: list[dict], group_size: int) ->
list[list[str]]` fills each group with its own prompts (paraphrases of one item: Info-consistent
GRPO, rollout/paraphrase.py). For the step's B training rows (this rank's share, in `next`'s
order) it returns B lists of G raw questions; the loop formats them (chat template) and every
row keeps its own prompt in generation, rewards, and the log-prob forward. The contract:
  - a group is still G consecutive rows of one training row: `rows`, `row_ids_B`, advantages and
    checkpoints are unchanged; rewards get the G rows' own prompts and `group_size`, so one that
    compares a group's completions (leave-one-out agreement) sees the whole group;
  - equal consecutive prompts are generated as one prompt with `repeat` (`paraphrase.step_prompts`), so the
    `fast` engine still prefills each distinct prompt once; `train.prefix_sharing` packs rows by
    identical prompt (rlrecipes/prefix.py), so a mixed group is simply several packed sequences;
  - whatever the sampler draws to choose prompts is in its `state_dict` (resume is exact).
A refining component that draws fresh groups (`Batch.draw`) draws standard ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..registry import register
from .generate import Rollout, replace_rows


@dataclass
class Batch:
    """What a refining sampler sees of one RL step (this rank's share) and may change in place."""
    step: int
    group_size: int
    rows: list[dict]              # one per completion (G consecutive per prompt)
    rollout: Rollout
    rewards_NK: torch.Tensor      # per reward function, NaN where it returned None
    weights: list[float]
    generate: Callable            # formatted prompts -> Rollout, one completion each
    score: Callable               # (prompts, rollout, rows) -> rewards_NK
    format: Callable              # (raw questions, their rows for images) -> formatted prompts
    pad_id: int
    question_of: Callable         # row -> raw question (before any chat template)
    rank: int = 0
    train_rows: list[dict] = field(default_factory=list)   # for samplers that draw more prompts
    train_prompts: list[str] = field(default_factory=list)
    reward_names: list[str] = field(default_factory=list)    # reward/<name> of each column
    metrics: dict = field(default_factory=dict)
    note: Callable = lambda text: None                       # progress text for long work
    tokenizer: object = None                                 # for injected completions (`inject`)
    gold_of: Callable | None = None                          # row -> the task's gold completion
    injected: list[int] = field(default_factory=list)        # rows whose completion was injected
    branches: object = None   # rows cut from these rows, trained beside them (rlrecipes/branches.py)

    def draw(self, idx: list[int], repeat: int) -> tuple[list[dict], list[str]]:
        """(rows, formatted prompts) of training rows `idx`, each `repeat` times in a row."""
        return ([self.train_rows[i] for i in idx for _ in range(repeat)],
                [self.train_prompts[i] for i in idx for _ in range(repeat)])

    def replace(self, dest: list[int], source: Rollout, src: list[int], source_NK: torch.Tensor,
                keep_prompt: list[bool] | None = None) -> None:
        """Rows dest[i] of the rollout and rewards become rows src[i] of `source` / `source_NK`
        (prompt and completion, or only the completion where keep_prompt[i])."""
        if not dest:
            return
        self.rollout = replace_rows(self.rollout, dest, source, src, self.pad_id, keep_prompt)
        self.rewards_NK = self.rewards_NK.clone()
        self.rewards_NK[dest] = source_NK[src]

    def inject(self, dest: list[int], texts: list[str]) -> None:
        """Rows dest[i] keep their prompt and take texts[i] as their completion, tokenised as if
        sampled and re-scored (rollout/inject.py has the contract and the behaviour log-prob rule)."""
        if not dest:
            return
        if self.tokenizer is None:
            raise RuntimeError("injecting completions needs the batch's tokenizer")
        from .inject import fixed_rollout
        source = fixed_rollout(self.rollout, dest, texts, self.tokenizer)
        rows = [self.rows[d] for d in dest]
        source_NK = self.score(self.format([self.question_of(r) for r in rows], rows), source, rows)
        self.replace(dest, source, list(range(len(dest))), source_NK, [True] * len(dest))
        self.injected += list(dest)
        flags = torch.zeros(len(self.rollout), dtype=torch.bool, device=self.rollout.truncated_N.device)
        flags[self.injected] = True
        self.rollout.stats["injected"] = flags   # the loss input injected_N; metric injected_frac


@register("sampler", "uniform")
class Uniform:
    """Epochs over the training rows in a seeded random order (without replacement within an
    epoch), like a shuffled DataLoader. `shuffle: false` keeps the file order."""

    def __init__(self, num_rows: int, seed: int, shuffle: bool = True):
        self.num_rows, self.seed, self.shuffle = num_rows, seed, shuffle
        self.epoch, self.pos = 0, 0
        self._order = self._make_order()

    def _make_order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_rows))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.num_rows, generator=g).tolist()

    def next(self, n: int) -> list[int]:
        out = []
        while len(out) < n:
            if self.pos == self.num_rows:
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._make_order()
            take = min(n - len(out), self.num_rows - self.pos)
            out += self._order[self.pos:self.pos + take]
            self.pos += take
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]
        self._order = self._make_order()


@register("sampler", "dynamic_sampling")
class DynamicSampling(Uniform):
    """DAPO dynamic sampling (arXiv 2503.14476, §3.2, eq. 11; verl recipe/dapo): groups whose
    G rewards are all equal (accuracy 0 or 1 for every sample) have zero advantage, so they are
    dropped and refilled with groups of fresh prompts, sampled and scored in rounds, until every
    slot holds a group with reward variance or `max_rounds` rounds are spent (verl's
    `max_num_gen_batches`). Slots still unfilled keep their zero-variance group: the batch keeps
    its size (every rank must run the same number of updates), and those rows add nothing but
    tokens to the loss denominator. Refill prompts come from a seeded stream of their own (step,
    round, rank), so the main prompt order and resume are unaffected. `metric`: the reward whose
    variance counts (verl's `acc`: e.g. `accuracy`), or the weighted total when unset (verl's
    `seq_reward`). Metrics: `ds/kept_frac` (groups with variance before refilling),
    `ds/filled_frac` (after), `ds/rounds`."""

    def __init__(self, num_rows: int, seed: int, shuffle: bool = True, max_rounds: int = 3,
                 metric: str | None = None):
        super().__init__(num_rows, seed, shuffle)
        if max_rounds < 0:
            raise ValueError("max_rounds must be >= 0")
        self.max_rounds, self.metric = max_rounds, metric

    def _per_group(self, batch: Batch, rewards_NK: torch.Tensor) -> torch.Tensor:
        from ..rewards.combine import combine
        if self.metric is None:
            return combine(rewards_NK, batch.weights).view(-1, batch.group_size)
        if self.metric not in batch.reward_names:
            raise ValueError(f"dynamic_sampling metric {self.metric!r} is not one of the recipe's "
                             f"rewards: {', '.join(batch.reward_names)}")
        return rewards_NK[:, batch.reward_names.index(self.metric)].view(-1, batch.group_size)

    def refine(self, batch: Batch) -> None:
        G, m = batch.group_size, batch.metrics
        flat = self._per_group(batch, batch.rewards_NK)
        empty = [g for g in range(flat.shape[0]) if _constant(flat[g])]
        n_groups = flat.shape[0]
        m["ds/kept_frac"] = 1 - len(empty) / n_groups
        rounds = 0
        while empty and rounds < self.max_rounds:
            rounds += 1
            g_ = torch.Generator().manual_seed(hash((self.seed, batch.step, rounds, batch.rank)) % 2**63)
            idx = torch.randint(self.num_rows, (len(empty),), generator=g_).tolist()
            rows, prompts = batch.draw(idx, G)
            fresh = batch.generate(prompts)
            fresh_NK = batch.score(prompts, fresh, rows)
            fresh_G = self._per_group(batch, fresh_NK)
            good = [j for j in range(len(idx)) if not _constant(fresh_G[j])]
            dest, src = [], []
            for slot, j in zip(list(empty), good):
                dest += range(slot * G, slot * G + G)
                src += range(j * G, j * G + G)
                batch.rows[slot * G:slot * G + G] = rows[j * G:j * G + G]
                empty.remove(slot)
            batch.replace(dest, fresh, src, fresh_NK)
        m["ds/filled_frac"] = 1 - len(empty) / n_groups
        m["ds/rounds"] = float(rounds)


def _constant(rewards_G: torch.Tensor) -> bool:
    """All rewards of a group equal (NaN counts as equal to anything): no advantage signal."""
    vals = rewards_G[~torch.isnan(rewards_G)]
    return vals.numel() < 2 or bool((vals == vals[0]).all())


@register("sampler", "variance_aware")
class VarianceAware(Uniform):
    """MMR1 Variance-Aware Sampling (arXiv 2509.21268, §3; LengSicong/MMR1
    `MixedCurriculumSampler`, released config): each batch takes floor(mix * n) prompts drawn
    with replacement in proportion to their weight and the rest from the shuffled uniform order.
    A prompt's weight is its outcome variance p(1 - p), p its pass rate over `rollout_n` scoring
    rollouts; every `update_every` steps `pool_size` prompts are re-scored (sampled and judged
    with the recipe's rewards: pass = total reward above `threshold`), with momentum
    w <- m w_old + (1 - m) w_new. Prompts never scored keep weight `initial` (0.25, the
    maximum). The trajectory-diversity term (TDS) is not implemented: the released config
    weighs learnability (p(1 - p)) alone. Weights and generator state are checkpointed."""

    def __init__(self, num_rows: int, seed: int, shuffle: bool = True, mix: float = 0.5, update_every: int = 4,
                 rollout_n: int = 8, pool_size: int = 512, momentum: float = 0.0, threshold: float = 0.0,
                 initial: float = 0.25):
        super().__init__(num_rows, seed, shuffle)
        if not 0.0 <= mix <= 1.0 or not 0.0 <= momentum < 1.0 or update_every < 1 or rollout_n < 2:
            raise ValueError("need 0 <= mix <= 1, 0 <= momentum < 1, update_every >= 1, rollout_n >= 2")
        self.mix, self.update_every, self.rollout_n, self.pool_size = mix, update_every, rollout_n, pool_size
        self.momentum, self.threshold = momentum, threshold
        self.weights = torch.full((num_rows,), float(initial))
        self.gen = torch.Generator().manual_seed(seed + 17)

    def next(self, n: int) -> list[int]:
        k = int(self.mix * n)
        weighted = []
        if k and self.weights.sum() > 0:
            weighted = torch.multinomial(self.weights, k, replacement=True, generator=self.gen).tolist()
        return _interleave(weighted, super().next(n - len(weighted)))

    def refine(self, batch: Batch) -> None:
        """Every `update_every` steps (from step 1), re-score a pool of prompts."""
        if (batch.step - 1) % self.update_every:
            return
        pool = torch.randperm(self.num_rows, generator=self.gen)[:self.pool_size].tolist()
        p = score_pool(batch, pool, self.rollout_n, self.threshold).float().mean(1)
        idx = torch.tensor(pool)
        self.weights[idx] = self.momentum * self.weights[idx] + (1 - self.momentum) * p * (1 - p)
        batch.metrics["vas/pool_pass_rate"] = p.mean().item()
        batch.metrics["vas/weight_mean"] = self.weights.mean().item()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "weights": self.weights.clone(), "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.weights = state["weights"].clone()
        self.gen.set_state(state["gen"])


def score_pool(batch: Batch, pool: list[int], n: int, threshold: float) -> torch.Tensor:
    """[len(pool), n] booleans: n sampled completions of each training row in `pool`, each
    passing when its weighted total reward exceeds `threshold`. Generated in chunks no larger
    than a training step's generation, which is known to fit."""
    from ..rewards.combine import combine
    rows, prompts = batch.draw(pool, n)
    chunk = max(len(batch.rows), n)
    passed = []
    for i in range(0, len(prompts), chunk):
        batch.note(f"scoring {len(pool)} prompts x {n}: {i // n}/{len(pool)}")
        rollout = batch.generate(prompts[i:i + chunk])
        passed.append(combine(batch.score(prompts[i:i + chunk], rollout, rows[i:i + chunk]), batch.weights) > threshold)
    return torch.cat(passed).view(len(pool), n)


@register("sampler", "spo_prioritized")
class SPOPrioritized(Uniform):
    """SPO prioritized prompt sampling (arXiv 2509.13232, §3.3; verl recipe/spo `fit`): each step
    takes the next `pool_size` prompts of the shuffled order (the reference's generation batch,
    14,000 of DAPO-Math-17k) and draws the step's prompts from them in proportion to
    sqrt(p^(1 - p^)) + eps, p^ the `spo` advantage's tracked value (eps = 0.05), with replacement
    only when the step needs more prompts than the pool holds. Needs `advantage: spo`."""

    def __init__(self, num_rows: int, seed: int, advantage, shuffle: bool = True, pool_size: int = 14000,
                 eps: float = 0.05):
        super().__init__(num_rows, seed, shuffle)
        self.advantage, self.pool_size, self.eps = advantage, min(pool_size, num_rows), eps
        self.gen = torch.Generator().manual_seed(seed + 23)

    def weights(self, rows: list[int]) -> torch.Tensor:
        p = self.advantage.p_hat(rows).double()
        return torch.sqrt(p * (1 - p)) + self.eps

    def next(self, n: int) -> list[int]:
        pool = super().next(self.pool_size)
        picks = torch.multinomial(self.weights(pool), n, replacement=n > len(pool), generator=self.gen)
        return [pool[i] for i in picks.tolist()]

    def state_dict(self) -> dict:
        return {**super().state_dict(), "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.gen.set_state(state["gen"])


def _interleave(a: list[int], b: list[int]) -> list[int]:
    """a[0], b[0], a[1], b[1], ... then the rest of the longer one (MMR1 interleaves the parts)."""
    out = [x for pair in zip(a, b) for x in pair]
    return out + a[len(b):] + b[len(a):]
