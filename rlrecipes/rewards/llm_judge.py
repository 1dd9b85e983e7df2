"""LLM-as-judge reward: ask an `llm` client a templated question per completion, read a score.

    rewards:
      - fn: llm_judge
        llm: {fn: openai_compatible, base_url: "http://localhost:8000/v1", model: judge, api_key_env: null}
        reference_column: answer          # fills {reference}
        scale: 0.1                        # a 0-10 judge -> [0, 1]

The question is `template` filled with {prompt}, {completion} and (with `reference_column`)
{reference}; all of a step's questions go to the client in one batched `complete` call. The score
is group 1 of the LAST match of `pattern` in the reply (judges reason first and conclude last),
read as a float and multiplied by `scale`. A reply with no match, or a number that is not finite,
gives None (the sample is skipped by `combine`, as any reward's None) and is counted in `STATS`
(`asked`, `unparsed`), which a caller may log. The client is built once per process (llm.client).
"""
from __future__ import annotations

import math
import re

from ..errors import UserError
from ..registry import register
from .reward_model import fill

DEFAULT_TEMPLATE = ("Grade the response to the question.\n\nQuestion:\n{prompt}\n\nResponse:\n{completion}\n\n"
                    "Rate the response from 0 (wrong or useless) to 10 (correct and complete). "
                    "Think briefly, then end with a line 'Score: N'.")
REFERENCE_TEMPLATE = ("Grade the response to the question against the reference answer.\n\nQuestion:\n{prompt}\n\n"
                      "Reference answer:\n{reference}\n\nResponse:\n{completion}\n\n"
                      "Rate the response from 0 (wrong) to 10 (agrees with the reference and is complete). "
                      "Think briefly, then end with a line 'Score: N'.")
DEFAULT_PATTERN = r"[Ss]core\s*[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)"
STATS = {"asked": 0, "unparsed": 0}


def parse_score(reply: str, pattern: str | re.Pattern = DEFAULT_PATTERN) -> float | None:
    """Group 1 of the last match of `pattern` in `reply` as a float; None if none (or not finite)."""
    regex = re.compile(pattern) if isinstance(pattern, str) else pattern
    matches = list(regex.finditer(reply))
    if not matches:
        return None
    try:
        value = float(matches[-1].group(1))
    except (IndexError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


@register("reward", "llm_judge")
def llm_judge(prompts, completions, llm: dict, template: str | None = None, pattern: str = DEFAULT_PATTERN,
              scale: float = 1.0, reference_column: str | None = None, system: str | None = None,
              **columns) -> list[float | None]:
    """The judge's score of each completion times `scale`, None where the reply has no score.
    `system`: a system message sent before each question."""
    from ..llm import client
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise UserError("rewards.pattern", f"not a regular expression: {exc}") from None
    if regex.groups < 1:
        raise UserError("rewards.pattern", f"{pattern!r} has no group", r"put the number in (...), e.g. Score: (\d+)")
    template = template or (REFERENCE_TEMPLATE if reference_column else DEFAULT_TEMPLATE)
    if "{completion}" not in template:
        raise UserError("rewards.template", f"{template!r} has no {{completion}}")
    refs = None
    if reference_column:
        refs = columns.get(reference_column)
        if refs is None:
            raise UserError("rewards.reference_column", f"no dataset column {reference_column!r}")
        if "{reference}" not in template:
            raise UserError("rewards.reference_column", f"the template {template!r} has no {{reference}}")
    questions = []
    for i, (p, c) in enumerate(zip(prompts, completions)):
        text = fill(template, "rewards.template", prompt=p, completion=c,
                    **({"reference": refs[i]} if refs is not None else {}))
        questions.append([{"role": "system", "content": system}, {"role": "user", "content": text}]
                         if system else text)
    replies = client(llm, "rewards.llm").complete(questions)
    scores = [parse_score(r, regex) for r in replies]
    STATS["asked"] += len(scores)
    STATS["unparsed"] += sum(s is None for s in scores)
    return [None if s is None else s * scale for s in scores]
