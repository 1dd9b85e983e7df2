"""Synthetic image tasks for the offline vision-language world (drawn with PIL, seeded).

Every image is 56x56 pixels: a 4x4 grid of 14-pixel cells (one vision patch each), some holding
a coloured square of jittered size and position, others blank.

- `squares` (TON / MMR1 / OThink-MR1 image mode): count the squares.
      prompt: <image> "count:"   gold: "<think>1+0+2+1=4</think><answer>4</answer>"
  The thought counts row by row. `difficulty` is trivial for 0 or 1 square (no counting needed,
  TON's skip-think split) and hard otherwise; `trivial_frac` fixes the trivial share (else the
  count is uniform on min_count..max_count). With `distractors`, blue squares share the grid
  and only the red ones count (the prompt says "count red:").
- `image_rating` (Aes-R1 image mode): the image's hidden quality is the share of filled cells,
  k/16 rounded to two decimals, a known function of its pixels; judged like `rating` (a score
  within `tolerance`; eval adds PLCC/SRCC).
      gold: "<think>6 of 16</think><answer>0.38</answer>"

Train and test images come from separate seeded streams (test: `seed`, train: `seed` + the
run seed + 1); the jitter makes every image distinct, though small counts reuse cell layouts.
"""
from __future__ import annotations

import random

from ..registry import register
from .base import Task
from .rating import Rating

SIDE, CELLS = 56, 4
CELL = SIDE // CELLS
RED, BLUE, WHITE = (220, 30, 30), (30, 60, 220), (255, 255, 255)


def draw(cells: dict[int, tuple], rng: random.Random):
    """A 56x56 RGB image; `cells` maps a cell index (row-major, 0..15) to its square's colour."""
    from PIL import Image, ImageDraw
    image = Image.new("RGB", (SIDE, SIDE), WHITE)
    pen = ImageDraw.Draw(image)
    for cell, colour in cells.items():
        size = rng.randint(7, 11)
        x = (cell % CELLS) * CELL + rng.randint(0, CELL - size)
        y = (cell // CELLS) * CELL + rng.randint(0, CELL - size)
        pen.rectangle([x, y, x + size - 1, y + size - 1], fill=colour)
    return image


def layout(rng: random.Random, count: int, distractors: int = 0) -> dict[int, tuple]:
    chosen = rng.sample(range(CELLS * CELLS), count + distractors)
    return {c: (RED if i < count else BLUE) for i, c in enumerate(chosen)}


def _stream(split: str, task_seed: int, seed: int) -> random.Random:
    return random.Random(task_seed if split == "test" else task_seed + seed + 1)


@register("task", "squares")
class Squares(Task):
    name = "squares"
    images = True

    def __init__(self, min_count: int = 0, max_count: int = 6, distractors: bool = False, think: bool = True,
                 trivial_frac: float | None = None, seed: int = 1234):
        if not 0 <= min_count <= max_count <= CELLS * CELLS // (2 if distractors else 1):
            raise ValueError(f"need 0 <= min_count <= max_count <= {CELLS * CELLS // (2 if distractors else 1)}")
        if trivial_frac is not None and not (0 <= trivial_frac <= 1 and min_count <= 1 < max_count):
            raise ValueError("trivial_frac needs a value in [0, 1] and min_count <= 1 < max_count")
        self.min_count, self.max_count, self.distractors = min_count, max_count, distractors
        self.think, self.trivial_frac, self.seed = think, trivial_frac, seed

    def _count(self, rng: random.Random) -> int:
        if self.trivial_frac is None:
            return rng.randint(self.min_count, self.max_count)
        trivial = rng.random() < self.trivial_frac
        return rng.randint(self.min_count, 1) if trivial else rng.randint(2, self.max_count)

    def synthetic(self, split: str, n: int, seed: int, test_size: int = 200) -> list[dict]:
        rng, rows = _stream(split, self.seed, seed), []
        for _ in range(n):
            count = self._count(rng)
            extra = rng.randint(0, 3) if self.distractors else 0
            cells = layout(rng, count, extra)
            per_row = [sum(1 for c, col in cells.items() if c // CELLS == r and col == RED) for r in range(CELLS)]
            rows.append({"prompt": "count red:" if self.distractors else "count:", "answer": str(count),
                         "image": draw(cells, rng), "row_counts": per_row,
                         "difficulty": "trivial" if count <= 1 else "hard"})
        return rows

    def gold(self, row: dict) -> str:
        if "row_counts" not in row:
            return super().gold(row)
        answer = f"<answer>{row['answer']}</answer>"
        if not self.think:
            return answer
        return f"<think>{'+'.join(map(str, row['row_counts']))}={row['answer']}</think>{answer}"


@register("task", "image_rating")
class ImageRating(Rating):
    name = "image_rating"
    images = True

    def __init__(self, tolerance: float = 0.1, seed: int = 1234):
        super().__init__(digits=4, tolerance=tolerance, seed=seed)

    def synthetic(self, split: str, n: int, seed: int, test_size: int = 200) -> list[dict]:
        rng, rows = _stream(split, self.seed, seed), []
        for _ in range(n):
            count = rng.randint(0, CELLS * CELLS)
            rows.append({"prompt": "rate:", "answer": f"{count / (CELLS * CELLS):.2f}", "filled": count,
                         "image": draw(layout(rng, count), rng)})
        return rows

    def gold(self, row: dict) -> str:
        if "filled" not in row:
            return Task.gold(self, row)
        return f"<think>{row['filled']} of {CELLS * CELLS}</think><answer>{row['answer']}</answer>"
