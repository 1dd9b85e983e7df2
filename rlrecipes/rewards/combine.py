"""Call the recipe's reward functions on one step's completions and combine them."""
from __future__ import annotations

import functools
import inspect
import math

import torch

from ..errors import UserError
from ..registry import get

LOOP_ARGS = ("prompts", "completions", "completion_ids", "group_size", "step")


class RewardFn:
    """One configured reward: the function, its YAML params bound, its weight and display name."""

    def __init__(self, spec, index: int):
        self.field = f"rewards[{index}]"
        self.fn = functools.partial(get("reward", spec.fn, f"{self.field}.fn"), **spec.params)
        self.name = spec.label
        self.weight = spec.weight

    def required_columns(self) -> set[str]:
        """Named parameters without a default that the loop does not pass: dataset columns."""
        sig = inspect.signature(self.fn)
        return {p.name for p in sig.parameters.values()
                if p.default is p.empty and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
                and p.name not in LOOP_ARGS}

    def __call__(self, prompts, completions, columns: dict, group_size: int, step: int,
                 completion_ids: list[list[int]] | None = None) -> list:
        extra = {} if completion_ids is None else {"completion_ids": completion_ids}
        try:
            out = self.fn(prompts=prompts, completions=completions, group_size=group_size,
                          step=step, **extra, **columns)
        except Exception as exc:
            raise UserError(f"{self.field} ({self.name})",
                            f"reward function raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(out, (list, tuple)) or len(out) != len(completions):
            raise UserError(f"{self.field} ({self.name})", f"returned {type(out).__name__} of length "
                            f"{len(out) if hasattr(out, '__len__') else '?'}; expected a list of "
                            f"{len(completions)} floats or None")
        return list(out)


def check_columns(reward_fns: list[RewardFn], row: dict) -> None:
    for fn in reward_fns:
        missing = fn.required_columns() - set(row)
        if missing:
            raise UserError(f"{fn.field} ({fn.name})", f"needs dataset column(s) {sorted(missing)}",
                            "columns: " + ", ".join(sorted(row)) + "; map them with data.fields")


def score(reward_fns, prompts, completions, rows, group_size: int, step: int,
          completion_ids: list[list[int]] | None = None) -> torch.Tensor:
    """rewards_NK (float32, NaN where a reward returned None) for N completions of `rows`.
    `completion_ids` (each completion's tokens up to and including EOS, as TRL passes them)
    reach reward functions as the keyword `completion_ids`."""
    columns = {k: [row[k] for row in rows] for k in rows[0] if k != "prompt"} if rows else {}
    cols = []
    for fn in reward_fns:
        values = fn(prompts, completions, columns, group_size, step, completion_ids)
        cols.append([math.nan if v is None else float(v) for v in values])
    return torch.tensor(cols, dtype=torch.float32).T.reshape(len(completions), len(reward_fns))


def combine(rewards_NK: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """Weighted sum over rewards, skipping None (NaN); all-None rows stay NaN (as TRL)."""
    w_K = torch.tensor(weights, dtype=torch.float32)
    total_N = (rewards_NK * w_K).nansum(-1)
    total_N[torch.isnan(rewards_NK).all(-1)] = math.nan
    return total_N
