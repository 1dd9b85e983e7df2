"""GUI-Critic-R1 / S-GRPO rewards (arXiv 2506.04614): format, verdict and suggestion.

The critic reads a task and a proposed action and writes a thought, a verdict and a suggestion,
in the layout of the authors' test prompts (X-PLUG/MobileAgent, GUI-Critic-R1/test.py; their
`<thinking>` is `<think>` here, one token in the tiny tokenizer):

    <think>...</think><score>Correct|Incorrect</score><suggestion>...</suggestion>

S-GRPO is GRPO whose reward adds a suggestion reward to the format and verdict rewards. The
paper's weights and the suggestion reward's gating were not at hand [recon]: the recipe uses
r = format + verdict + suggestion (next/gui_critic_r1.md §2); `gate` and the YAML weights give
the other reading, 0.1*format + verdict + 0.5*[label Incorrect]*suggestion (algorithms_b.md §18).
With `strict` (default) the verdict and suggestion count only in a well-formed critique, as the
authors' scorer (`statistic.py`) gives 0 when it cannot parse `<score>`/`<suggestion>`.
"""
from __future__ import annotations

import re
from typing import Literal

from ..registry import get, register

LAYOUT = r"<think>.*?</think>\s*<score>(.*?)</score>\s*<suggestion>(.*?)</suggestion>"
VERDICTS = ("Correct", "Incorrect")
_SPACE = re.compile(r"\s+")


def parse_critique(completion: str, strict: bool = True) -> tuple[str | None, str | None]:
    """(verdict, suggestion), each stripped; a verdict other than Correct/Incorrect is None.
    `strict`: both None unless the whole completion is the layout; otherwise the last
    <score>/<suggestion> anywhere."""
    text = completion.strip()
    if strict:
        m = re.fullmatch(LAYOUT, text, re.DOTALL)
        if not m:
            return None, None
        verdict, suggestion = m.group(1).strip(), m.group(2).strip()
    else:
        scores = re.findall(r"<score>(.*?)</score>", text, re.DOTALL)
        suggestions = re.findall(r"<suggestion>(.*?)</suggestion>", text, re.DOTALL)
        verdict = scores[-1].strip() if scores else None
        suggestion = suggestions[-1].strip() if suggestions else None
    return (verdict if verdict in VERDICTS else None), suggestion


def same_suggestion(pred: str | None, gold, match: str = "exact") -> bool:
    """exact: equal after collapsing whitespace; numeric: equal as numbers (1e-6 relative)."""
    if pred is None:
        return False
    a, b = _SPACE.sub(" ", pred).strip(), _SPACE.sub(" ", str(gold)).strip()
    if match == "numeric":
        try:
            x, y = float(a), float(b)
        except ValueError:
            return a == b
        return abs(x - y) <= 1e-6 * max(1.0, abs(y))
    return a == b


@register("reward", "critic_format")
def critic_format(prompts, completions, pattern: str = LAYOUT, **columns) -> list[float]:
    """GUI-Critic-R1 format reward (arXiv 2506.04614, S-GRPO; layout of the authors' test
    prompts): 1.0 when the whole completion is thought, verdict and suggestion, else 0.0."""
    regex = re.compile(pattern, re.DOTALL)
    return [1.0 if regex.fullmatch(c.strip()) else 0.0 for c in completions]


@register("reward", "critic_verdict")
def critic_verdict(prompts, completions, label, strict: bool = True, **columns) -> list[float]:
    """GUI-Critic-R1 judgment-accuracy reward (arXiv 2506.04614, S-GRPO): 1.0 when the verdict
    equals the `label` column (Correct / Incorrect), else 0.0."""
    return [float(parse_critique(c, strict)[0] == str(gold).strip()) for c, gold in zip(completions, label)]


@register("reward", "critic_suggestion")
def critic_suggestion(prompts, completions, suggestion, label, match: Literal["exact", "numeric", "judge"] = "exact",
                      gate: Literal["none", "verdict", "incorrect"] = "none", strict: bool = True,
                      judge: str | None = None, **columns) -> list[float | None]:
    """GUI-Critic-R1 suggestion reward, the S in S-GRPO (arXiv 2506.04614): 1.0 when the
    critique's suggestion matches the gold `suggestion` column, else 0.0. `match: judge` asks
    `judge` ("package.module:function", called with the lists of suggestions and golds, returning
    one truth value each), as the authors' evaluation asks Qwen2.5-72B whether two actions are
    similar. `gate` (None, so `combine` skips the term): verdict: where the verdict is wrong;
    incorrect: on items labelled Correct [which gating the paper uses is recon]."""
    parsed = [parse_critique(c, strict) for c in completions]
    preds = [s for _, s in parsed]
    if match == "judge":
        if not judge:
            raise ValueError("match: judge needs judge: 'package.module:function'")
        asked = [i for i, p in enumerate(preds) if p is not None]
        said = list(get("reward", judge, "critic_suggestion.judge")([preds[i] for i in asked],
                                                                   [suggestion[i] for i in asked]))
        if len(said) != len(asked):
            raise ValueError(f"judge returned {len(said)} answers for {len(asked)} suggestions")
        hits = dict(zip(asked, (bool(s) for s in said)))
    else:
        hits = {i: same_suggestion(p, suggestion[i], match) for i, p in enumerate(preds)}
    out: list[float | None] = []
    for i, (verdict, _) in enumerate(parsed):
        gold_label = str(label[i]).strip()
        if (gate == "verdict" and verdict != gold_label) or (gate == "incorrect" and gold_label != "Incorrect"):
            out.append(None)
        else:
            out.append(float(hits.get(i, False)))
    return out
