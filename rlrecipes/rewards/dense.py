"""Rewards that say where in a completion they were earned (issue 19, mechanism 1: token-level
credit), and the token positions the loop maps them to.

Contract. A reward function may return, for a completion, `PerSegment([(end, value), ...])`
instead of a number: the completion's text cut into consecutive segments (segment i is
text[end_{i-1}:end_i], ends in characters, increasing), each with the reward it earned. It is a
float equal to the sum of its values, so everything that reads plain rewards (the weighted sum,
group advantages, metrics, `rewards_BGK`) reads it as the total. Text after the last end earns
nothing. An advantage estimator that names one of these inputs receives them (B prompts x G
completions of the whole step, gathered over ranks; T = the widest completion):

- `segments_BGK`: nested lists [b][g][k], for reward k either None (it returned a number) or a
  list of (start, end, value) token spans [start, end) of the completion, one per segment;
- `token_rewards_BGT`: sum_k w_k x (each segment's value on its last token; a plain reward's
  value on the completion's last policy token), NaN treated as 0: summed over T it is the
  weighted total reward (a test checks this);
- `mask_BGT` (the loss mask: tokens the policy generated) and `ids_BGT` (completion ids), 0 /
  pad where a row is shorter than T;
- `reward_names_K`: the rewards' display names, to pick a reward by name.

Such an estimator may return `adv_BGT` (one advantage per token) instead of `adv_BG`; the loss
must then accept per-token advantages (its function has `token_advantages = True`; `ppo_clip`
and the losses built on it do), which the recipe check enforces.

Characters map to tokens by decoding: a segment ends on the token whose decoded text completes
its last character. Tokens the texts leave out (EOS, pad, tool-masked positions keep their
text) are handled as `rollout.generate.decode` handles them.
"""
from __future__ import annotations

import bisect
import math

import torch


class PerSegment(float):
    """A reward value with its parts: `parts` = [(end_char, value), ...], ends increasing.
    The float value is the sum of the parts' values (0.0 for no parts)."""

    def __new__(cls, parts):
        parts = [(int(e), float(v)) for e, v in parts]
        ends = [e for e, _ in parts]
        if any(b <= a for a, b in zip(ends, ends[1:])) or any(e < 0 for e in ends):
            raise ValueError(f"PerSegment ends must be increasing and non-negative, got {ends}")
        obj = super().__new__(cls, math.fsum(v for _, v in parts))
        obj.parts = parts
        return obj

    def __repr__(self) -> str:
        return f"PerSegment({self.parts})"


def char_ends(tokenizer, ids: list[int], keep: list[bool]) -> list[int]:
    """For each position of `ids`, the length of the completion's decoded text up to and
    including that token (positions not kept repeat the previous length). Decodes token by
    token when the pieces add up to the whole text (character and most byte-level
    tokenizers), else prefix by prefix."""
    kept = [t for t, k in zip(ids, keep) if k]
    full = tokenizer.decode(kept, skip_special_tokens=False)
    pieces = [tokenizer.decode([t], skip_special_tokens=False) for t in kept]
    if "".join(pieces) == full:
        lengths, total = [], 0
        for p in pieces:
            total += len(p)
            lengths.append(total)
    else:
        lengths = [len(tokenizer.decode(kept[:i + 1], skip_special_tokens=False)) for i in range(len(kept))]
    out, j, last = [], 0, 0
    for k in keep:
        if k:
            last = lengths[j]
            j += 1
        out.append(last)
    return out


def token_spans(ends_T: list[int], keep: list[bool], parts: list[tuple[int, float]]) -> list[tuple[int, int, float]]:
    """(start, end, value) token spans of `parts` (character ends) given each position's
    decoded length `ends_T`: a segment ends on the first kept token reaching its end (the last
    kept token when the text is shorter) and starts where the previous one ended. Segments
    that end inside the same multi-character token share it: the later ones have empty spans
    (start == end) and their values land on that token."""
    spans, start = [], 0
    kept = [t for t, k in enumerate(keep) if k]
    reach = [ends_T[t] for t in kept]   # non-decreasing: search it
    for end_char, value in parts:
        i = bisect.bisect_left(reach, end_char)
        pos = kept[i] if i < len(kept) else (kept[-1] if kept else 0)
        end = max(pos + 1, start)
        spans.append((start, end, value))
        start = end
    return spans


def token_rewards(T: int, spans_K: list, values_K: list[float], weights_K: list[float], last: int) -> torch.Tensor:
    """[T] rewards of one completion: each reward's segment values on the segments' last tokens,
    a plain reward's value on position `last`; weighted, NaN as 0."""
    out = torch.zeros(T)
    for spans, value, w in zip(spans_K, values_K, weights_K):
        if spans is None:
            if not math.isnan(value) and last >= 0:
                out[last] += w * value
            continue
        for _, end, v in spans:
            if end > 0:
                out[min(end, T) - 1] += w * v
    return out
