"""Mixed-prompt groups: a group of G rows that answer several phrasings of one item (Info-consistent
GRPO, arXiv 2512.12858 [src:abstract]: "a group is a set of semantically equivalent prompts, each
sent in a fresh conversation"; layout K variants x m samples per variant [recon], spec
shared/papers/next/info_consistent_grpo.md §5).

The loop's hook (contract in rollout/samplers.py): a sampler with `group_prompts(rows, G)` gives,
for each of the step's B training rows, the G raw questions of its group's rows; every row keeps
its own prompt through generation, rewards and the loss, and is a fresh single-turn
conversation (the spec's context reset). Rewards see the whole group as G consecutive
completions (`group_size`), so `info_stability` can compare paraphrases' answers.
"""
from __future__ import annotations

import math

import torch

from ..errors import UserError
from ..registry import register
from .samplers import Uniform


@register("sampler", "paraphrase_groups")
class ParaphraseGroups(Uniform):
    """Training rows in `Uniform`'s order; each row's group takes `variants` of the phrasings in
    its `column` (a list of raw questions: `arith_paraphrase`'s `variants`, or a data file's
    field), `samples_per_variant` rows each, in blocks: [v1 x m, v2 x m, ...]. `group_size` must be
    variants x samples_per_variant (`samples_per_variant: null`: group_size / variants). With fewer variants than the row has, which ones (and their
    order) is a seeded draw per group, checkpointed with the epoch position; `variants: null`
    takes all of them, in order. `variants: 1` is the control: standard groups of one
    uniformly drawn phrasing."""

    def __init__(self, num_rows: int, seed: int, shuffle: bool = True, variants: int | None = None,
                 samples_per_variant: int | None = None, column: str = "variants"):
        super().__init__(num_rows, seed, shuffle)
        if variants is not None and variants < 1 or samples_per_variant is not None and samples_per_variant < 1:
            raise ValueError("variants and samples_per_variant must be >= 1")
        self.variants, self.samples_per_variant, self.column = variants, samples_per_variant, column
        self.gen = torch.Generator().manual_seed(seed + 29)

    def group_prompts(self, rows: list[dict], group_size: int) -> list[list[str]]:
        """For each training row, the raw questions of its group's `group_size` rows."""
        out = []
        for row in rows:
            if self.column not in row:
                raise UserError("algorithm.sampler.column", f"the training rows have no {self.column!r} column",
                                "use a task whose rows list paraphrases (e.g. arith_paraphrase)")
            phrasings = list(row[self.column])
            K = self.variants or len(phrasings)
            m = self.samples_per_variant or group_size // K
            if K * m != group_size:
                raise UserError("algorithm.sampler", f"{K} variants x {m} samples_per_variant = {K * m} rows, "
                                f"but train.group_size is {group_size}", "make train.group_size = variants x samples_per_variant")
            if K > len(phrasings):
                raise UserError("algorithm.sampler.variants", f"{K} variants, but a row lists {len(phrasings)}")
            if self.variants is not None and K < len(phrasings):
                pick = torch.randperm(len(phrasings), generator=self.gen)[:K].tolist()
                phrasings = [phrasings[i] for i in pick]
            out.append([q for q in phrasings[:K] for _ in range(m)])
        return out

    def state_dict(self) -> dict:
        return {**super().state_dict(), "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.gen.set_state(state["gen"])


def step_prompts(sampler, rows_B: list[dict], prompts_B: list[str], G: int, format) -> tuple[list[str], int]:
    """(prompts, repeat) that generate one step's B·G rows in group order: each training row's
    prompt G times, or a mixed-group sampler's prompts, formatted by `format(texts, rows)`, with
    runs of equal prompts folded into `repeat` (the largest that divides every run)."""
    if not hasattr(sampler, "group_prompts"):
        return prompts_B, G
    questions = [q for qs in sampler.group_prompts(rows_B, G) for q in qs]
    flat = format(questions, [row for row in rows_B for _ in range(G)])
    runs, start = [], 0
    for i in range(1, len(flat) + 1):
        if i == len(flat) or flat[i] != flat[start]:
            runs.append(i - start)
            start = i
    repeat = math.gcd(*runs)
    return flat[::repeat], repeat
