"""CRAFT-GUI's hybrid rule reward on a text tool call (Nong et al., arXiv 2508.11360, abstract:
"a reward function that combines simple rule-based signals with model-judged evaluation";
weights and the text analogue from algorithms_b.md §17 [recon]):

    r = 0.5 * type + 0.5 * param

`type` = the called function's name matches the gold's (the GUI action type), `param` = its
argument list matches exactly (the GUI click-in-bbox / exact-text check). The two are separate
rewards so that the recipe states the weights (`rewards: [{fn: call_type, weight: 0.5},
{fn: call_args, weight: 0.5}]`) and each is logged. A completion that is not one call scores 0
on both. The paper's LLM judge for free-text arguments is left out (no argument here is free
text; an `llm` client is issue 19's mechanism 5).
"""
from __future__ import annotations

from ..registry import register
from ..tasks.tool_call import parse_call


def _pairs(completions, answer):
    return [(parse_call(c), parse_call(a)) for c, a in zip(completions, answer)]


@register("reward", "call_type")
def call_type(prompts, completions, answer, **columns) -> list[float]:
    """1.0 when the completion is one call to the gold's function (CRAFT-GUI action-type match,
    arXiv 2508.11360), else 0.0."""
    return [float(got is not None and gold is not None and got[0] == gold[0]) for got, gold in _pairs(completions, answer)]


@register("reward", "call_args")
def call_args(prompts, completions, answer, **columns) -> list[float]:
    """1.0 when the completion is one call whose arguments equal the gold's, in order and as
    written (spaces ignored), else 0.0 (CRAFT-GUI parameter match, arXiv 2508.11360). Scored
    whatever the function name, as the spec's r = 0.5 type + 0.5 param adds the two."""
    return [float(got is not None and gold is not None and got[1] == gold[1]) for got, gold in _pairs(completions, answer)]
