"""`span`: 1-D interval grounding, the text analogue of video temporal grounding (TempSamp-R1,
arXiv 2509.18056; papers/next/tempsamp_r1.md §6).

A "video" is a row of `length` cells; each of `events` events is a run of one letter, the rest
is background '.'; the query names one event's letter. The answer is the event's first and last
cell (0-based, inclusive), as the fork's GT text writes a segment ("<answer> s to e </answer>"):

    prompt: "b|..aaaa.......bbbbbb.....="      gold: "<answer>13 to 18</answer>"

Runs are `min_run`..`max_run` cells long and at least one background cell apart. A prediction
is judged by its IoU with the gold interval over integer cells (`interval_iou`):
inter = max(0, min(b, e) - max(a, s) + 1), union = max(b, e) - min(a, s) + 1, 0 when a > b or
nothing parses. The answer may be written "a to b" or "[a, b]".

Eval: pass@1 is R1@0.5 (IoU >= 0.5, ActivityNet's headline; eval's pass@k needs a 0/1 score,
so the score is the hit, not the IoU itself); task metrics `miou` (mean IoU over samples, then
problems), `r1_05`, `r1_07` (Charades' headline). Train and test are disjoint: distinct items
drawn with the task seed, the test split the first `test_size`.
"""
from __future__ import annotations

import random
import re

from ..registry import register
from .base import Task, distinct_items, extract_answer

INTERVAL_RE = re.compile(r"\[?\s*(-?\d+)\s*(?:to|,)\s*(-?\d+)\s*\]?")
LETTERS = "abcdefgh"


def parse_interval(completion: str) -> tuple[int, int] | None:
    """(a, b) from the last <answer> block holding exactly "a to b" or "[a, b]"; else None."""
    text = extract_answer(completion)
    m = INTERVAL_RE.fullmatch(text) if text is not None else None
    return (int(m.group(1)), int(m.group(2))) if m else None


def iou(pred: tuple[int, int] | None, start: int, end: int) -> float:
    """IoU of the inclusive cell intervals [a, b] and [start, end]; 0 for None or a > b."""
    if pred is None or pred[0] > pred[1]:
        return 0.0
    a, b = pred
    inter = max(0, min(b, end) - max(a, start) + 1)
    return inter / (max(b, end) - min(a, start) + 1)


@register("task", "span")
class Span(Task):
    name = "span"
    required_fields = ("prompt", "start", "end")
    metrics = ("miou", "r1_05", "r1_07")

    def __init__(self, length: int = 32, events: int = 3, min_run: int = 3, max_run: int = 8,
                 seed: int = 1234):
        if not 1 <= events <= len(LETTERS):
            raise ValueError(f"events must be in 1..{len(LETTERS)}")
        if not 1 <= min_run <= max_run:
            raise ValueError("need 1 <= min_run <= max_run")
        if events * (max_run + 1) > length:
            raise ValueError(f"length {length} cannot hold {events} runs of up to {max_run} cells; raise length")
        self.length, self.events, self.min_run, self.max_run, self.seed = length, events, min_run, max_run, seed

    def _item(self, rng: random.Random) -> dict:
        runs = [rng.randint(self.min_run, self.max_run) for _ in range(self.events)]
        gaps = self.length - sum(runs) - (self.events - 1)   # one '.' between runs is fixed
        cuts = sorted(rng.randint(0, gaps) for _ in range(self.events))   # free '.' before each run
        letters = rng.sample(LETTERS, self.events)
        cells, spans, pos, prev = [], {}, 0, 0
        for run, cut, letter in zip(runs, cuts, letters):
            pad = cut - prev + (1 if cells else 0)
            cells += ["."] * pad + [letter] * run
            spans[letter] = (pos + pad, pos + pad + run - 1)
            pos, prev = pos + pad + run, cut
        cells += ["."] * (self.length - len(cells))
        q = rng.choice(letters)
        s, e = spans[q]
        # the query comes first, so a causal model reads every cell knowing what it looks for
        return {"prompt": f"{q}|{''.join(cells)}=", "answer": f"{s} to {e}", "start": s, "end": e}

    def synthetic(self, split: str, n: int, seed: int, test_size: int = 200) -> list[dict]:
        need = test_size + (n if split == "train" else 0)
        items = distinct_items(self._item, random.Random(self.seed), need, "raise length or events")
        return items[:min(n, test_size)] if split == "test" else items[test_size:test_size + n]

    def gold(self, row: dict) -> str:
        if "completion" in row:
            return row["completion"]
        return f"<answer>{int(row['start'])} to {int(row['end'])}</answer>"

    def extract(self, completion: str) -> str | None:
        pred = parse_interval(completion)
        return None if pred is None else f"{pred[0]} to {pred[1]}"

    def check(self, answer: str | None, row: dict) -> float:
        pred = None
        if answer is not None:
            a, _, b = answer.partition(" to ")
            pred = (int(a), int(b))
        return float(iou(pred, int(row["start"]), int(row["end"])) >= 0.5)

    def score(self, completion: str, row: dict) -> float:
        return float(iou(parse_interval(completion), int(row["start"]), int(row["end"])) >= 0.5)

    def sample_metrics(self, completion: str, row: dict) -> dict[str, float]:
        v = iou(parse_interval(completion), int(row["start"]), int(row["end"]))
        return {"miou": v, "r1_05": float(v >= 0.5), "r1_07": float(v >= 0.7)}
