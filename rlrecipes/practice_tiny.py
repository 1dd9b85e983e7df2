"""The tiny offline analogue of Training-Free GRPO (next/training_free_grpo.md §6): a prompt-space
check, NOT the paper's mechanism. The tiny character model can neither write nor read lessons, so

- the SFT warm-start (`transform: experience_tips`) teaches it three prompt conditions on `arith`:
  a "[tip:carry]" line -> the digit-by-digit scratchpad, "[tip:fast]" -> the answer alone, no tip
  -> either, half and half (so a plain prompt gives mixed groups);
- the summary, advantage and update roles are `mock` clients whose replies are hand-coded here:
  the summary says which style a rollout used, the "semantic advantage" names the style whose
  rollouts scored higher in the group (carry for the scratchpad, fast for a bare answer), and the
  updates ADD it, UPDATE a contradicting entry, or do nothing when it is there; the batch update
  keeps the lesson most groups proposed.
What the run shows: the loop (rollouts, group filter, calls, JSON operations, library, eval with
the library) selects a prompt by group outcomes with zero gradient steps.
"""
from __future__ import annotations

import json
import re

from .registry import register

STYLES = {"carry": "used a scratchpad", "fast": "answered directly"}
_ANSWER = re.compile(r"<answer>.*?</answer>", re.DOTALL)


@register("transform", "experience_tips")
def experience_tips(question: str, gold: str, row: dict, rng, p_tip: float = 2 / 3,
                    line: str = "[tip:{text}]\n") -> tuple[str, str]:
    """With probability `p_tip` a tip line (carry or fast, equally likely) before the question and
    a gold that obeys it (carry: the task's gold; fast: its <answer> part only); otherwise the
    question as is and either gold, half and half."""
    if not 0.0 <= p_tip <= 1.0:
        raise ValueError(f"p_tip must be in [0, 1], got {p_tip}")
    m = _ANSWER.search(gold)
    fast = m.group(0) if m else gold
    if rng.random() < p_tip:
        tip = rng.choice(sorted(STYLES))
        return line.format(text=tip) + question, gold if tip == "carry" else fast
    return question, gold if rng.random() < 0.5 else fast


def summary(text: str) -> str:
    """Mock summary role: the style of the attempt in a SUMMARY prompt."""
    attempt = text.split("The solver's attempt:\n", 1)[-1]
    return STYLES["carry"] if attempt.lstrip().startswith("<think>") else STYLES["fast"]


def advantage(text: str) -> str:
    """Mock group advantage: the style with the higher mean reward in the group, as a lesson."""
    found = re.findall(r"Attempt \d+ \(reward ([-\d.e]+)\):\n(.*?)(?:\n\n|$)", text)
    by_style: dict[str, list[float]] = {}
    for reward, said in found:
        tip = next((k for k, v in STYLES.items() if v in said), None)
        if tip is not None:
            by_style.setdefault(tip, []).append(float(reward))
    means = {k: sum(v) / len(v) for k, v in by_style.items()}
    if len(means) < 2 or means["carry"] == means["fast"]:
        return "<Experiences>\n</Experiences>"
    return f"<Experiences>\n{max(means, key=means.get)}\n</Experiences>"


def _library(text: str) -> dict[str, str]:
    block = text.split("Experience library:\n", 1)[-1].split("\n\n", 1)[0]
    return dict(re.findall(r"^\[(\w+)\]\. (.*)$", block, re.MULTILINE))


def group_update(text: str) -> str:
    """Mock group update: NONE when the lesson is in the library, UPDATE of a contradicting tip,
    else ADD."""
    lessons = re.findall(r"^- (\w+)$", text.split("New lessons:\n", 1)[-1], re.MULTILINE)
    library, ops = _library(text), []
    for lesson in lessons:
        if lesson in library.values():
            ops.append({"operation": "NONE", "content": lesson})   # a vote to keep it
            continue
        other = next((k for k, v in library.items() if v in STYLES and v != lesson), None)
        ops.append({"operation": "UPDATE", "id": other, "content": lesson} if other
                   else {"operation": "ADD", "content": lesson})
    return json.dumps(ops)


def batch_update(text: str) -> str:
    """Mock batch update: the lesson most groups proposed (NONE on a lesson already there is a
    vote to keep it; first on a tie), as its first ADD/UPDATE, or no operation when it is there."""
    proposed = json.loads(text.split("several problems:\n", 1)[-1].split("\n\nMerge", 1)[0])
    votes: dict[str, list[dict]] = {}
    for op in proposed:
        if op.get("operation") in ("ADD", "UPDATE", "NONE") and op.get("content"):
            votes.setdefault(op["content"], []).append(op)
    if not votes:
        return "[]"
    best = max(votes, key=lambda k: len(votes[k]))
    change = [op for op in votes[best] if op["operation"] != "NONE"]
    return json.dumps(change[:1])


def update(text: str) -> str:
    """Mock update role: a batch-update prompt gets `batch_update`, a group-update one `group_update`."""
    return batch_update(text) if "Operations proposed from several problems:" in text else group_update(text)
