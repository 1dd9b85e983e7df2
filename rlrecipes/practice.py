"""The `practice` stage: Training-Free GRPO (arXiv 2510.08191; the authors' code,
TencentCloudADP/youtu-agent `utu/practice/`). Nothing is trained: an experience library E (id ->
text) that is shown with every question is learned from group comparisons.

    stages:
      - kind: practice
        practice: {llm: {fn: openai_compatible, ...}, epochs: 3, batch_size: 100, group_size: 5}

Per batch of questions (next/training_free_grpo.md §2, from the authors' code):
1. G rollouts per question from the `policy` client on render(E) + question (temperature 0.7);
2. rewards: the recipe's rewards, weighted sum (the verifier; 1 = right);
3. group filter: keep a question iff 0 < mean reward < 1 (with `use_ground_truth`; else all);
4. one `summary` call per kept rollout; 5. one `advantage` call per kept group: lessons inside
   <Experiences>...</Experiences>; 6. one `update` call per kept group: a JSON list of
   {operation: ADD|UPDATE|DELETE|NONE, id, content}; 7. one batch `update` call merging them
   into a plan, applied by `ExperienceLibrary.apply` (re-keyed G0, G1, ...).
LLM calls per batch: G·kept + kept + kept + 1 (no batch call when no group is kept). A reply
that is not a JSON list is asked again up to `json_retries` times, then counted and skipped.

Files: `<run>/experiences/step-XXXX.json` (the library after each batch, written atomically),
`<run>/practice_state.json` (last finished step, written after the library: the resume point),
metrics.jsonl rows (step, reward_mean, practice/*). Eval (pass@k with the library; the empty
library at the start) uses the policy client on `eval.limit` test rows x `eval.samples`.
The prompt templates are ours, following the authors' structure; the role split
(policy/summary/advantage/update) is theirs; `roles` may give each its own client.
"""
from __future__ import annotations

import json
import math
import os
import random
import re
from pathlib import Path

from .errors import UserError

SUMMARY = ("A solver was given this problem.\n\nProblem:\n{question}\n\nReference answer: {answer}\n\n"
           "Experiences the solver was shown:\n{experiences}\n\nThe solver's attempt:\n{rollout}\n\n"
           "Summarise the attempt step by step: the approach, which experiences it used, and where it "
           "made an error or a detour. Say whether the final answer is right.")
ADVANTAGE = ("Problem:\n{question}\n\nReference answer: {answer}\n\nSummaries of several attempts, each with its "
             "reward (1 = correct, 0 = wrong):\n{attempts}\n\nCompare the successful attempts with the failed "
             "ones. Write at most {num_experiences} short, general lesson(s) that would make a solver succeed on "
             "similar problems, one per line, between <Experiences> and </Experiences>.")
GROUP_UPDATE = ("Experience library:\n{library}\n\nNew lessons:\n{lessons}\n\nDecide how the library should "
                "change. Reply with a JSON list of operations, each {{\"operation\": \"ADD\" | \"UPDATE\" | "
                "\"DELETE\" | \"NONE\", \"id\": an existing id (UPDATE, DELETE), \"content\": the text (ADD, "
                "UPDATE)}}.")
BATCH_UPDATE = ("Experience library:\n{library}\n\nOperations proposed from several problems:\n{operations}\n\n"
                "Merge them into one consistent plan: a DELETE wins over an UPDATE of the same id, "
                "near-duplicate ADDs become one, every experience stays short and general. Reply with the "
                "final JSON list of operations.")
PAPER_HEADER = ("When solving problems, you MUST first carefully read and understand the helpful instructions "
                "and experiences:\n")
OPERATIONS = ("ADD", "UPDATE", "DELETE", "NONE")


class ExperienceLibrary:
    """E: ordered id -> text. `apply` follows the authors' batch update (main branch)."""

    def __init__(self, items: dict[str, str] | None = None):
        self.items = dict(items or {})

    def __len__(self) -> int:
        return len(self.items)

    def __eq__(self, other) -> bool:
        return isinstance(other, ExperienceLibrary) and list(self.items.items()) == list(other.items.items())

    def apply(self, plan: list[dict]) -> tuple["ExperienceLibrary", dict[str, int]]:
        """(E', counts of applied operations). ADD: a new key str(n), n from |E| upwards; UPDATE id:
        replace if present, else add as new; DELETE id: remove if present; empty content (ADD,
        UPDATE) and NONE: skip. Then re-key G0, G1, ... in insertion order."""
        items, n = dict(self.items), len(self.items)
        counts = dict.fromkeys(OPERATIONS, 0)
        for op in plan:
            kind = str(op.get("operation", "NONE")).upper()
            key, content = str(op.get("id", "")), str(op.get("content") or "").strip()
            if kind == "DELETE" and key in items:
                del items[key]
            elif kind in ("ADD", "UPDATE") and content:
                if kind == "UPDATE" and key in items:
                    items[key] = content
                else:
                    items[str(n)], n = content, n + 1
            else:
                kind = "NONE"
            counts[kind] += 1
        return ExperienceLibrary({f"G{i}": text for i, text in enumerate(items.values())}), counts

    def render(self, line: str = "[{id}]. {text}") -> str:
        return "\n".join(line.format(id=k, text=v) for k, v in self.items.items())

    def to_json(self) -> str:
        return json.dumps(self.items, indent=1, ensure_ascii=False)

    @classmethod
    def load(cls, path) -> "ExperienceLibrary":
        try:
            items = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise UserError(str(path), f"not an experience library: {exc}") from None
        if not isinstance(items, dict) or not all(isinstance(v, str) for v in items.values()):
            raise UserError(str(path), "an experience library is a JSON object of id -> text")
        return cls(items)

    def save(self, path) -> None:
        write_atomically(Path(path), self.to_json())


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def render_prompt(library: ExperienceLibrary, question: str, cfg) -> str:
    """The question with the library in front (`render.header` + one `render.line` per
    experience + `render.sep`); the empty library leaves the question as it is."""
    if not len(library):
        return question
    return cfg.header + library.render(cfg.line) + cfg.sep + question


def keep_group(rewards: list[float], use_ground_truth: bool) -> bool:
    """The group filter: mixed outcomes only, 0 < mean < 1 (every group without ground truth)."""
    if not use_ground_truth:
        return True
    mean = sum(rewards) / len(rewards)
    return 0.0 < mean < 1.0


def parse_lessons(reply: str, limit: int) -> list[str]:
    """The lines between <Experiences> and </Experiences> (the whole reply if no tags), list
    markers stripped, at most `limit`."""
    m = re.search(r"<Experiences>(.*?)</Experiences>", reply, re.DOTALL | re.IGNORECASE)
    text = m.group(1) if m else reply
    lines = [re.sub(r"^\s*(?:[-*]|\d+[.)])\s*", "", line).strip() for line in text.splitlines()]
    return [line for line in lines if line][:limit]


def parse_operations(reply: str) -> list[dict] | None:
    """The JSON list of operations in a reply (code fences and text around it allowed); None if
    there is none or an item is not an object with a known operation."""
    start, end = reply.find("["), reply.rfind("]")
    if start < 0 or end < start:
        return None
    try:
        ops = json.loads(reply[start:end + 1])
    except ValueError:
        return None
    if not isinstance(ops, list) or not all(isinstance(o, dict) and str(o.get("operation", "")).upper()
                                            in OPERATIONS for o in ops):
        return None
    return ops


def epoch_order(n_rows: int, epoch: int, seed: int) -> list[int]:
    order = list(range(n_rows))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def schedule(n_rows: int, epochs: int, batch_size: int, seed: int) -> list[list[int]]:
    """Row indices of every batch of every epoch (a seeded shuffle per epoch; the last batch of an
    epoch may be short)."""
    out = []
    for epoch in range(epochs):
        order = epoch_order(n_rows, epoch, seed)
        out += [order[i:i + batch_size] for i in range(0, n_rows, batch_size)]
    return out


def read_state(run_dir: Path) -> dict | None:
    path = Path(run_dir) / "practice_state.json"
    return json.loads(path.read_text()) if path.exists() else None


def _nan_to_zero(x: float) -> float:
    return 0.0 if math.isnan(x) else x
