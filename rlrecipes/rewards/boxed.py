"""`\\boxed{...}` answers: extraction with brace matching and a blank-by-blank verifier.

WirelessMathLM (arXiv 2509.23219) trains with a binary verifier reward: 1 when the boxed
answer(s) equal the reference (MCQ: the letter; fill-in: each blank equivalent, in order), else 0.
The paper does not say which verifier it used for equations [unverified]; ours is:
  1. normalise both sides: strip `$`, `\\left`/`\\right`, thin spaces (`\\,` `\\!` `\\ `),
     whitespace and a trailing period; equal strings match;
  2. a reference that is one option letter (A-E) matches the same letter, also written `(B)`;
  3. otherwise math-verify (sympy) decides: `verify(parse(gold), parse(pred))`, so `\\frac{1}{2}`
     equals `0.5` and `\\frac{R_L r_i}{R_L + r_i}` equals `\\frac{r_i R_L}{r_i + R_L}`. Note that
     math-verify lower-cases symbols and reads `SNR` as the product s*n*r.
"""
from __future__ import annotations

import re

from ..registry import register

_SPACES = re.compile(r"\\[,!;: ]|\\left|\\right|\s+")
_LETTER = re.compile(r"^\(?([A-Ea-e])\)?$")


def boxed_contents(text: str) -> list[str]:
    """The contents of every `\\boxed{...}` in `text`, in order, with nested braces matched
    (`\\boxed{\\frac{a}{b}}` gives `\\frac{a}{b}`); an unclosed box ends the scan."""
    out, i = [], 0
    while (start := text.find("\\boxed{", i)) != -1:
        depth, j = 1, start + len("\\boxed{")
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        if depth:
            break
        out.append(text[start + len("\\boxed{"):j - 1])
        i = j
    return out


def normalise(s: str) -> str:
    return _SPACES.sub("", str(s).replace("$", "")).rstrip(".")


def same_blank(pred: str, gold: str) -> bool:
    p, g = normalise(pred), normalise(gold)
    if p == g:
        return True
    letter = _LETTER.match(g)
    if letter:
        other = _LETTER.match(p)
        return bool(other) and other.group(1).upper() == letter.group(1).upper()
    try:
        from math_verify import parse, verify
        return bool(verify(parse(f"${gold}$"), parse(f"${pred}$")))
    except Exception:  # math-verify raises on some inputs; unparseable means unequal
        return False


def score_boxed(completion: str, gold: str) -> float:
    """1.0 when the completion's last k boxes match the k blanks of `gold` in order (a `gold`
    without boxes is one blank), else 0.0."""
    blanks = boxed_contents(str(gold)) or [str(gold)]
    found = boxed_contents(completion)
    if len(found) < len(blanks):
        return 0.0
    return float(all(same_blank(p, g) for p, g in zip(found[-len(blanks):], blanks)))


@register("reward", "boxed_answer")
def boxed_answer(prompts, completions, answer, **columns) -> list[float]:
    """Binary verifier reward of WirelessMathLM (arXiv 2509.23219, §3): every blank of the
    `answer` column must be matched, in order, by the completion's final `\\boxed{}` answers."""
    return [score_boxed(c, a) for c, a in zip(completions, answer)]
