"""POLAR's two reward-model stages on the tiny sums (arXiv 2507.05197, text analogue).

- `arith_reference`: `arith` rows with a `reference` column, the gold trajectory, which the
  reward model reads next to each completion (POLAR's RFT reward is RM(prompt, reference, output)).
- `polar_pretrain` (rm_data, Bradley-Terry): policy discrimination. A pool of toy policies, each a
  writing style and an arithmetic habit (right, dropped carries, tens off by one, digits swapped)
  with occasional slips, and three that have lost the task (repeats, cut-offs, noise); for a prompt the reference and the chosen come from one policy, the
  rejected from another, so the RM learns to score a completion by how much it resembles the
  policy that wrote the reference (POLAR §3, "same policy > different policy").
- `polar_finetune` (rm_data, Bradley-Terry): a little preference data, reference = the gold,
  chosen = a right completion, rejected = a wrong one (POLAR §3.3: fine-tuning on
  {prompt, reference, chosen, rejected}).
"""
from __future__ import annotations

import random

from ..registry import register
from .arith import Arith

STYLES = ("scratch", "terse", "polite", "spaced")
HABITS = ("right", "no_carry", "tens_off", "swapped")
# policies that have lost the task (a repeated character, a cut-off scratchpad, noise): POLAR's
# pool spans weak and strong LLMs; without these the RM had never seen what a policy drifting
# away from it writes, and a tiny policy found "8888..." scored above every sum
DEGENERATE = ("repeat", "cut", "noise")


@register("task", "arith_reference")
class ArithReference(Arith):
    """`arith` (with a scratchpad) whose rows carry `reference`: the gold completion."""
    name = "arith_reference"

    def synthetic(self, split: str, n: int, seed: int, test_size: int = 200) -> list[dict]:
        return [{**row, "reference": self.gold(row)} for row in super().synthetic(split, n, seed, test_size)]


def answer_of(a: int, b: int, habit: str) -> int:
    """The sum a policy with this habit writes."""
    if habit == "no_carry":   # each column mod 10, carries dropped
        out, place = 0, 1
        while a or b:
            out += ((a % 10 + b % 10) % 10) * place
            a, b, place = a // 10, b // 10, place * 10
        return out
    if habit == "tens_off":
        return a + b + 10
    if habit == "swapped":
        return int(str(a + b)[::-1])
    return a + b


def write(a: int, b: int, style: str, habit: str, rng: random.Random, slip: float = 0.15,
          wrong: bool = False) -> str:
    """One completion of the policy (style, habit); with probability `slip` a digit goes wrong;
    `wrong`: the answer is never the right sum."""
    if style in DEGENERATE:
        return degenerate(a, b, style, rng)
    value = answer_of(a, b, habit)
    if rng.random() < slip or (wrong and value == a + b):
        value = max(0, value + rng.choice([-2, -1, 1, 2]))
    steps = ";".join(Arith.steps(a, b))
    if style == "terse":
        return f"<answer>{value}</answer>"
    if style == "spaced":
        return f"<think>{steps.replace(';', '; ')}</think> <answer>{value}</answer>"
    body = f"<think>{steps}</think><answer>{value}</answer>"
    return "ok." + body if style == "polite" else body


def degenerate(a: int, b: int, style: str, rng: random.Random) -> str:
    if style == "repeat":
        return rng.choice("0123456789;+=<") * rng.randint(5, 40)
    if style == "cut":
        full = f"<think>{';'.join(Arith.steps(a, b))}</think><answer>{a + b}</answer>"
        return full[:rng.randint(1, len(full) - 1)]
    return "".join(rng.choice("0123456789;+=") for _ in range(rng.randint(3, 40)))


def policies(names: list[str] | None) -> list[tuple[str, str]]:
    pool = [(s, h) for s in STYLES for h in HABITS] + [(d, "right") for d in DEGENERATE]
    return pool if names is None else [tuple(n.split("/")) for n in names]


@register("rm_data", "polar_pretrain")
def polar_pretrain(rows, rng, task, pool: list[str] | None = None, **_) -> list[dict]:
    """Pairs for policy discrimination: reference and chosen from one policy, rejected from another
    (pool entries "style/habit"; default the 16 styles x habits and 3 degenerate policies)."""
    pool_ = policies(pool)
    out = []
    for row in rows:
        a, b = int(row["a"]), int(row["b"])
        same, other = rng.sample(pool_, 2)
        out.append({"prompt": row["prompt"], "reference": write(a, b, *same, rng),
                    "chosen": write(a, b, *same, rng), "rejected": write(a, b, *other, rng)})
    return out


def near_miss(a: int, b: int, rng: random.Random) -> str:
    """The gold's layout with an answer that shares its length or leading digits but is wrong:
    a last digit off, a round number, or a number the policy repeats for every prompt."""
    right = a + b
    value = rng.choice([right + rng.choice([-1, 1, -2, 2]), right - right % 10 if right % 10 else right + 5,
                        rng.choice([10, 100, 99, 111])])
    value = right + 3 if value == right or value < 0 else value
    return f"<think>{';'.join(Arith.steps(a, b))}</think><answer>{value}</answer>"


@register("rm_data", "polar_finetune")
def polar_finetune(rows, rng, task, **_) -> list[dict]:
    """Preference triplets against the gold: a right completion over a wrong one: 40% a near miss
    in the gold's layout, 12% a degenerate output, the rest a wrong habit in any style."""
    out = []
    for row in rows:
        a, b = int(row["a"]), int(row["b"])
        style = rng.choice(STYLES)
        out.append({"prompt": row["prompt"], "reference": task.gold(row),
                    "chosen": write(a, b, style, "right", rng, slip=0.0),
                    "rejected": near_miss(a, b, rng) if rng.random() < 0.4 else
                    degenerate(a, b, rng.choice(DEGENERATE), rng) if rng.random() < 0.2 else
                    write(a, b, rng.choice(STYLES), rng.choice(HABITS[1:]), rng, wrong=True)})
    return out
