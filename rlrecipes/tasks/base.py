"""The task interface every registered task implements."""
from __future__ import annotations

import random
import re

ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")


def extract_answer(completion: str) -> str | None:
    """The text inside the last <answer>...</answer>, stripped; None when there is none."""
    found = ANSWER_RE.findall(completion)
    return found[-1].strip() if found else None


def same_answer(pred: str | None, gold) -> bool:
    """Numeric equality when both parse as numbers (1e-6 relative), else exact string match."""
    if pred is None:
        return False
    gold = str(gold).strip()
    try:
        a, b = float(pred), float(gold)
        return abs(a - b) <= 1e-6 * max(1.0, abs(b))
    except ValueError:
        return pred == gold


def disjoint_split(shuffled: list, n_test: int, split: str, n: int, seed: int) -> list:
    """From a seeded shuffle: the test split is (up to n of) its first n_test items; the train
    split is n seeded draws from the rest."""
    if split == "test":
        return shuffled[:min(n, n_test)]
    rng, train = random.Random(seed), shuffled[n_test:]
    return [train[rng.randrange(len(train))] for _ in range(n)]


def distinct_items(make, rng, need: int, hint: str) -> list[dict]:
    """`need` items of `make(rng)` with distinct prompts (up to 50 draws per item asked for); too
    few distinct ones is a ValueError whose message ends with `hint` (which parameter to raise)."""
    items, seen = [], set()
    for _ in range(50 * need):
        if len(items) == need:
            break
        item = make(rng)
        if item["prompt"] not in seen:
            seen.add(item["prompt"])
            items.append(item)
    if len(items) < need:
        raise ValueError(f"only {len(items)} distinct items for {need}; {hint}")
    return items


class Task:
    """Rows are dicts with at least `prompt` and `answer`; other fields ride along as reward columns.

    Subclasses set `name` and may override any method. `synthetic(split, n, seed)` makes offline
    data; real data comes through `tasks.loaders` with a field mapping onto these names.
    """
    name = "task"
    required_fields = ("prompt", "answer")
    # A regression task (scores, not right/wrong) also defines `label(row) -> float` and
    # `predicted(answers) -> float`; eval then adds PLCC and SRCC over the problems.
    regression = False
    # An image task's rows carry an `image` column: it needs `model.vision` (checked by validate).
    images = False
    # Extra eval metrics: the names `sample_metrics` returns. Eval reports each as the mean over
    # problems of the problem's mean over its samples (NaN = not applicable, left out); three
    # named X_tp, X_fp, X_fn are counts and give X_precision, X_recall, X_f1 over all samples.
    metrics: tuple[str, ...] = ()

    def sample_metrics(self, completion: str, row: dict) -> dict[str, float]:
        """Values of `metrics` for one sample (a task with no extra metrics returns {})."""
        return {}

    def synthetic(self, split: str, n: int, seed: int) -> list[dict]:
        raise NotImplementedError(f"task {self.name!r} has no synthetic data; set data.source")

    def prompt(self, row: dict) -> str:
        return row["prompt"]

    def gold(self, row: dict) -> str:
        """The completion an SFT warm-start imitates (needs a `completion` field for real data)."""
        if "completion" in row:
            return row["completion"]
        return f"<answer>{row['answer']}</answer>"

    def extract(self, completion: str) -> str | None:
        """The final answer, used for majority voting."""
        return extract_answer(completion)

    def check(self, answer: str | None, row: dict) -> float:
        """Is an extracted answer right? (Used for maj@k, where votes are answers.)"""
        return float(same_answer(answer, row["answer"]))

    def score(self, completion: str, row: dict) -> float:
        """Correctness in [0, 1]: the eval metric, not the shaped reward."""
        return self.check(self.extract(completion), row)
