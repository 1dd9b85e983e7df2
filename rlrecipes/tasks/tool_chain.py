"""`tool_chain`: sums of named quantities that only a lookup tool knows, several lookups per
question in any order (SALT's offline analogue, papers/next/salt.md §5-6).

    prompt "k+m+q="
    gold   "<search>m</search><information>4</information><search>k</search><information>7</information>
            <search>q</search><information>1</information><answer>12</answer>"   (one line)

SFT golds look the operands up in a random order (fixed per row); a `guess` share of them skips
one lookup and answers with a random value in its place (almost always wrong). The knowledge
base maps every name to its value, so a lookup of a name not in the question is harmless but
wasted. The environment's state is the set of names looked up so far: different orders reach
the same state, which SALT's `merge: state` with `state: facts` reads from the tokens (a lookup
is deterministic, so the set of (call, result) pairs is the set of names asked). With three
operands, the last lookup after either order of the first two is one state-keyed edge.

Eval metrics: `looked_all` (every operand looked up before answering), `guess` (answered
without looking up every operand).
"""
from __future__ import annotations

import itertools
import random
import re
import string

from ..registry import register
from .base import Task, disjoint_split

SEARCH_RE = re.compile(r"<search>(.*?)</search>", re.DOTALL)


@register("task", "tool_chain")
class ToolChain(Task):
    name = "tool_chain"
    metrics = ("looked_all", "guess")

    def __init__(self, names: int = 26, max_value: int = 9, operands: int = 3, guess: float = 0.2,
                 seed: int = 1234):
        if not 2 <= operands <= names <= 26 or max_value < 1 or not 0 <= guess <= 1:
            raise ValueError("need 2 <= operands <= names <= 26, max_value >= 1, guess in [0, 1]")
        self.max_value, self.operands, self.guess, self.seed = max_value, operands, guess, seed
        rng = random.Random(seed)
        self.values = {name: rng.randint(0, max_value) for name in string.ascii_lowercase[:names]}

    def knowledge(self) -> dict[str, int]:
        return dict(self.values)

    def synthetic(self, split: str, n: int, seed: int, test_size: int = 200) -> list[dict]:
        items = list(itertools.permutations(self.values, self.operands))
        random.Random(self.seed).shuffle(items)
        if test_size >= len(items):
            raise ValueError(f"test_size leaves no training items ({len(items)} in all)")
        rows, rng = [], random.Random(seed + 7)
        for keys in disjoint_split(items, test_size, split, n, seed):
            order = rng.sample(range(self.operands), self.operands)
            skip = rng.randrange(self.operands) if rng.random() < self.guess else -1
            rows.append({"prompt": "+".join(keys) + "=", "answer": str(sum(self.values[k] for k in keys)),
                         "keys": "".join(keys), "sft_order": "".join(keys[i] for i in order), "sft_skip": skip,
                         "sft_value": rng.randint(0, self.max_value)})
        return rows

    def gold(self, row: dict) -> str:
        if "keys" not in row:
            return super().gold(row)
        order = row["sft_order"]
        skipped = order[row["sft_skip"]] if row["sft_skip"] >= 0 else None
        calls = "".join(f"<search>{k}</search><information>{self.values[k]}</information>"
                        for k in order if k != skipped)
        total = sum(row["sft_value"] if k == skipped else self.values[k] for k in row["keys"])
        return f"{calls}<answer>{total}</answer>"

    def sample_metrics(self, completion: str, row: dict) -> dict[str, float]:
        cut = completion.find("<answer>")
        if cut < 0:
            return {"looked_all": 0.0, "guess": 0.0}
        asked = {q.strip() for q in SEARCH_RE.findall(completion[:cut])}
        looked = set(row["keys"]) <= asked
        return {"looked_all": float(looked), "guess": float(not looked)}
