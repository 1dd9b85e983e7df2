"""`tool_call`: a request in words, answered by one function call (CRAFT-GUI's text analogue:
algorithms_b.md §17, an action is a function name, its "bbox/text" the arguments).

    prompt: "take 5 from 12:"       gold: "sub(12,5)"
    prompt: "largest of 7 40 3:"    gold: "max(7,40,3)"

Five functions (add, sub, mul, max, min), each asked for in two phrasings; 2 to `max_args`
arguments in 0..`max_value`. Items differ in difficulty: more arguments to copy, and a
phrasing that states the arguments in the other order ("take 5 from 12" is sub(12,5)). A call is read as `name(arg,arg,...)` with spaces ignored; the eval score
is the exact call. Train and test are disjoint: distinct items drawn with the task seed, the test
split the first `test_size`, train the next ones (without repeats while they last).
"""
from __future__ import annotations

import random
import re

from ..registry import register
from .base import Task, distinct_items

# (function, phrase of the arguments {0}, {1} or {all}, fixed arity or None for 2..max_args)
PHRASES = [("add", "{0} plus {1}", 2), ("add", "sum of {all}", None),
           ("sub", "{0} minus {1}", 2), ("sub", "take {1} from {0}", 2),
           ("mul", "{0} times {1}", 2), ("mul", "product of {all}", None),
           ("max", "max of {all}", None), ("max", "largest of {all}", None),
           ("min", "min of {all}", None), ("min", "smallest of {all}", None)]
CALL_RE = re.compile(r"([A-Za-z_]\w*)\((.*)\)", re.DOTALL)


def parse_call(text: str | None) -> tuple[str, list[str]] | None:
    """(name, arguments) of a completion that is exactly one call, spaces ignored; else None."""
    if text is None:
        return None
    m = CALL_RE.fullmatch("".join(text.split()))
    if not m:
        return None
    args = m.group(2).split(",") if m.group(2) else []
    return m.group(1), args


def canonical(text: str | None) -> str | None:
    call = parse_call(text)
    return None if call is None else f"{call[0]}({','.join(call[1])})"


@register("task", "tool_call")
class ToolCall(Task):
    name = "tool_call"

    def __init__(self, max_args: int = 4, max_value: int = 99, seed: int = 1234):
        if max_args < 2 or max_value < 1:
            raise ValueError("need max_args >= 2 and max_value >= 1")
        self.max_args, self.max_value, self.seed = max_args, max_value, seed

    def _item(self, rng: random.Random) -> dict:
        fn, phrase, arity = rng.choice(PHRASES)
        n = arity or rng.randint(2, self.max_args)
        args = [rng.randint(0, self.max_value) for _ in range(n)]
        text = phrase.format(*args, all=" ".join(map(str, args)))
        return {"prompt": f"{text}:", "answer": f"{fn}({','.join(map(str, args))})", "function": fn,
                "n_args": n}

    def synthetic(self, split: str, n: int, seed: int, test_size: int = 200) -> list[dict]:
        need = test_size + (n if split == "train" else 0)
        items = distinct_items(self._item, random.Random(self.seed), need, "raise max_value or max_args")
        if split == "test":
            return items[:min(n, test_size)]
        return items[test_size:test_size + n]

    def gold(self, row: dict) -> str:
        return row["answer"]

    def extract(self, completion: str) -> str | None:
        return canonical(completion)

    def check(self, answer: str | None, row: dict) -> float:
        return float(answer is not None and answer == canonical(row["answer"]))
