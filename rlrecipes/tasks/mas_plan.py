"""`mas_plan`: design a multi-agent team for a query, the tiny world's text analogue of MasHost
(arXiv 2506.08507): the policy writes its construction decisions as a list of agent roles, a
deterministic simulated executor scores the team.

    prompt: "7*8+3>"        gold: "<answer>pln,cal,sol,ver</answer>"
    prompt: "12+5>"         gold: "<answer>sol</answer>"

Roles: `pln` planner, `cal` calculator, `sol` solver, `ver` verifier, `crt` critic. A query has
2 or 3 operands joined by + - *. The executor's rules (`needed`): every query needs a solver;
a product needs a calculator; three operands need a planner; a query with both needs a
verifier too; the critic is never needed. Decision t (the t-th role written, comma-separated, in
the last <answer> block) is *irrational* (`rationality` = -1, else 0) when its role is unknown,
repeats an earlier role, is not needed by the query, or is a verifier with no solver before it
(nothing to verify yet). The team solves the query (`accuracy` 1) when every needed role is
present, a verifier counting only after a solver; each decision is one agent (`cost`).

The gold is the needed roles in the order pln, cal, sol, ver; `noisy_gold_frac` of the golds get
one extra role inserted at a random place (any of the five, so a duplicate or an unneeded one):
the SFT start keeps accuracy but learns some redundant agents, so RL has room.

Eval: pass@1 is "the optimal team" (solves the query with no irrational decision, i.e. exactly
the needed roles, the verifier after the solver); task metrics `acc`, `agents` (decisions per
plan), `redundant` (share of decisions that are irrational), `any_redundant` (plan has one).
Train and test are disjoint queries from one seeded stream.
"""
from __future__ import annotations

import math
import random

from ..registry import register
from .base import ANSWER_RE, Task

ROLES = ("pln", "cal", "sol", "ver", "crt")
ORDER = ("pln", "cal", "sol", "ver")


def needed(query: str) -> list[str]:
    """The roles the executor needs for a query such as "7*8+3", in the gold's order."""
    operands = sum(ch.isdigit() and (i == 0 or not query[i - 1].isdigit()) for i, ch in enumerate(query))
    product, three = "*" in query, operands >= 3
    need = {"sol"} | ({"cal"} if product else set()) | ({"pln"} if three else set()) \
        | ({"ver"} if product and three else set())
    return [r for r in ORDER if r in need]


def decisions(completion: str) -> list[tuple[str, int]] | None:
    """(role, end character in the completion) of each comma-separated decision in the last
    <answer> block; [] for an empty block, None without one."""
    found = list(ANSWER_RE.finditer(completion))
    if not found:
        return None
    text, start = found[-1].group(1), found[-1].start(1)
    if not text.strip():
        return []
    out, pos = [], start
    for piece in text.split(","):
        out.append((piece.strip(), pos + len(piece)))
        pos += len(piece) + 1
    return out


def rationality(roles: list[str], need: list[str]) -> list[float]:
    """Each decision's score: -1 unknown, duplicate, unneeded, or a verifier before any solver; else 0."""
    out, seen = [], set()
    for r in roles:
        bad = r not in ROLES or r in seen or r not in need or (r == "ver" and "sol" not in seen)
        out.append(-1.0 if bad else 0.0)
        seen.add(r)
    return out


def accuracy(roles: list[str], need: list[str]) -> float:
    """1 when every needed role is present (a verifier counts only after a solver), else 0."""
    have, seen = set(), set()
    for r in roles:
        if r != "ver" or "sol" in seen:
            have.add(r)
        seen.add(r)
    return float(set(need) <= have)


@register("task", "mas_plan")
class MasPlan(Task):
    name = "mas_plan"
    required_fields = ("prompt", "needed")
    metrics = ("acc", "agents", "redundant", "any_redundant")

    def __init__(self, max_operand: int = 20, noisy_gold_frac: float = 0.4, seed: int = 1234):
        if max_operand < 5:
            raise ValueError(f"max_operand must be >= 5, got {max_operand}")
        if not 0.0 <= noisy_gold_frac <= 1.0:
            raise ValueError(f"noisy_gold_frac must be in [0, 1], got {noisy_gold_frac}")
        self.max_operand, self.noisy_gold_frac, self.seed = max_operand, noisy_gold_frac, seed

    def _query(self, rng: random.Random) -> str:
        n = rng.choice((2, 3))
        nums = [str(rng.randint(1, self.max_operand)) for _ in range(n)]
        ops = [rng.choice("+-*") for _ in range(n - 1)]
        return nums[0] + "".join(o + x for o, x in zip(ops, nums[1:]))

    def synthetic(self, split: str, n: int, seed: int, test_size: int = 200) -> list[dict]:
        """Distinct queries from one seeded stream: test the first `test_size`, train the next n."""
        rng, items, seen = random.Random(f"mas-{self.seed}"), [], set()
        need = test_size + (n if split == "train" else 0)
        for _ in range(50 * need):
            if len(items) == need:
                break
            q = self._query(rng)
            if q not in seen:
                seen.add(q)
                items.append(q)
        if len(items) < need:
            raise ValueError(f"only {len(items)} distinct mas_plan queries for {need}; raise max_operand")
        chosen = items[:min(n, test_size)] if split == "test" else items[test_size:test_size + n]
        noise, rows = random.Random(f"mas-gold-{split}-{seed}"), []
        for q in chosen:
            team = needed(q)
            gold = list(team)
            if noise.random() < self.noisy_gold_frac:
                gold.insert(noise.randint(0, len(gold)), noise.choice(ROLES))
            rows.append({"prompt": q + ">", "answer": ",".join(team), "needed": ",".join(team),
                         "gold_team": ",".join(gold)})
        return rows

    def gold(self, row: dict) -> str:
        if "completion" in row:
            return row["completion"]
        return f"<answer>{row.get('gold_team', row['answer'])}</answer>"

    def extract(self, completion: str) -> str | None:
        found = decisions(completion)
        return None if found is None else ",".join(r for r, _ in found)

    def check(self, answer: str | None, row: dict) -> float:
        """1 for the optimal team: solves the query and no decision is irrational."""
        if answer is None or not answer:
            return 0.0
        roles, need = answer.split(","), str(row["needed"]).split(",")
        return float(accuracy(roles, need) == 1.0 and min(rationality(roles, need)) == 0.0)

    def sample_metrics(self, completion: str, row: dict) -> dict[str, float]:
        found, need = decisions(completion), str(row["needed"]).split(",")
        roles = [r for r, _ in found or []]
        scores = rationality(roles, need)
        return {"acc": accuracy(roles, need), "agents": float(len(roles)),
                "redundant": sum(s < 0 for s in scores) / len(scores) if scores else math.nan,
                "any_redundant": float(min(scores, default=0.0) < 0)}
