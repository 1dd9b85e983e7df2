"""Clinical-R1 / CRPO rewards (arXiv 2512.00601): multiple-choice accuracy, format, English.

CRPO trains with GRPO on a weighted sum of rule-based rewards (recipes/clinical_r1.yaml):

    r = 10 * accuracy + format + 0.5 * english

`crpo_accuracy`, `crpo_format` and `english_ratio` follow the authors' verl reward file
(github.com/BoyangGu1/Clinical-R1-3B, `verl/utils/reward_score/medical_rule_based.py`, the
repository the paper links): `calculate_accuracy_reward`, `calculate_format_reward` and
`calculate_english_percentage`, and the weights 10 / 1 / 0.5 of its `compute_score` (training
questions; development questions score accuracy alone). Completions are stripped and `<\\think>`,
`<\\answer>` are read as the closing tags, as `compute_score` does first.

The paper's faithfulness and comprehensiveness objectives are not in that file, and the paper
text was not at hand: `crpo_faithfulness` and `crpo_comprehensiveness` are our rule-based,
annotation-free reconstructions [recon], for use as weight-0 metrics or pluggable terms.
"""
from __future__ import annotations

import re

from ..registry import register

LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
BOX = re.compile(r"\\boxed\{(.*?)\}")
CRPO_LAYOUT = re.compile(r"^<think>.*?</think>\s*<answer>(.*?)</answer>$", re.DOTALL)
THOUGHT = re.compile(r"<think>(.*?)</think>", re.DOTALL)
# The authors' "English" characters: ASCII letters, digits, common punctuation, space and newline.
ENGLISH = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,!?;:'\"()[]{}<>-_/\\|`~@#$%^&*+=~0123456789 \n")


def clean(completion: str) -> str:
    """`compute_score`'s first steps: strip, and accept `<\\think>` / `<\\answer>` as closing tags."""
    return completion.strip().replace("<\\think>", "</think>").replace("<\\answer>", "</answer>")


def accuracy_score(completion: str, gold: str) -> float:
    """`calculate_accuracy_reward`: with exactly one `\\boxed`, 1.0 when its content is the gold
    letter, 0.0 for another letter, -0.5 for content that is not one capital letter, -1.0 when
    it has no `{...}`; with n != 1 boxes, -n (no box at all: 0)."""
    n = completion.count("\\boxed")
    if n != 1:
        return float(-n)
    m = BOX.search(completion)
    if not m:
        return -1.0
    if m.group(1) not in LETTERS:
        return -0.5
    return 1.0 if m.group(1) == str(gold).strip() else 0.0


def chosen_letter(completion: str) -> str | None:
    """The letter of the one `\\boxed{X}` (the choice `crpo_accuracy` judges); None otherwise."""
    if completion.count("\\boxed") != 1:
        return None
    m = BOX.search(completion)
    return m.group(1) if m and m.group(1) in LETTERS else None


def format_score(completion: str) -> float:
    """`calculate_format_reward`: 1.0 when the text is `<think>...</think> <answer>...</answer>`
    and nothing else, +0.5 when the answer holds exactly one `\\boxed{}` and something besides it
    (a summary); else 0.0."""
    m = CRPO_LAYOUT.search(completion)
    if not m:
        return 0.0
    answer = m.group(1).strip()
    boxes = re.findall(r"(\\boxed\{.*?\})", answer)
    return 1.5 if len(boxes) == 1 and boxes[0] != answer else 1.0


def english_share(completion: str) -> float:
    """`calculate_english_percentage`: the share of characters in the English set (0.0 when empty)."""
    if not completion:
        return 0.0
    return sum(c in ENGLISH for c in completion) / len(completion)


@register("reward", "crpo_accuracy")
def crpo_accuracy(prompts, completions, answer, **columns) -> list[float]:
    """CRPO accuracy reward (Clinical-R1, arXiv 2512.00601; authors' `medical_rule_based.py`):
    1 / 0 for the right / wrong boxed letter, -0.5 for a box that is not a letter, -1 for a
    `\\boxed` without braces, -n for n != 1 boxes. Weight 10 in the training reward."""
    return [accuracy_score(clean(c), a) for c, a in zip(completions, answer)]


@register("reward", "crpo_format")
def crpo_format(prompts, completions, **columns) -> list[float]:
    """CRPO format reward (arXiv 2512.00601; authors' `calculate_format_reward`): 1.0 for the
    think/answer layout, 1.5 when the answer also summarises besides its single box, else 0."""
    return [format_score(clean(c)) for c in completions]


@register("reward", "english_ratio")
def english_ratio(prompts, completions, **columns) -> list[float]:
    """CRPO language reward (arXiv 2512.00601; authors' `calculate_english_percentage`): the
    share of English characters in [0, 1], against language mixing. Weight 0.5."""
    return [english_share(clean(c)) for c in completions]


def mentions(text: str, option: str) -> list[int]:
    """Where `option` occurs in `text` as a whole token (case-insensitive; `85` not inside `185`)."""
    pattern = r"(?<![\w.])" + re.escape(str(option).strip()) + r"(?![\w])"
    return [m.start() for m in re.finditer(pattern, text, re.IGNORECASE)]


def _thought_and_options(completion: str, options) -> tuple[str, dict[str, str]] | None:
    m = THOUGHT.search(completion)
    if options is None or not m:
        return None
    return m.group(1), {chr(ord("A") + i): str(o) for i, o in enumerate(options)}


@register("reward", "crpo_faithfulness")
def crpo_faithfulness(prompts, completions, options=None, **columns) -> list[float | None]:
    """[recon] Faithfulness of the answer to the reasoning (CRPO's second objective, arXiv
    2512.00601; its exact rule is not in the authors' released reward file): 1.0 when the option
    the thought mentions last (by its text) is the option the answer boxes, else 0.0; None
    without an `options` column (a list of option texts, A first) or a <think> block."""
    out: list[float | None] = []
    for i, c in enumerate(completions):
        c = clean(c)
        parsed = _thought_and_options(c, None if options is None else options[i])
        if parsed is None:
            out.append(None)
            continue
        thought, by_letter = parsed
        last = {letter: max(mentions(thought, text), default=-1) for letter, text in by_letter.items()}
        concluded = max(last, key=last.get)
        out.append(float(last[concluded] >= 0 and concluded == chosen_letter(c)))
    return out


@register("reward", "crpo_comprehensiveness")
def crpo_comprehensiveness(prompts, completions, options=None, **columns) -> list[float | None]:
    """[recon] Comprehensiveness (CRPO's third objective, arXiv 2512.00601; not in the released
    reward file): the share of the options the thought considers (mentions by text), as in a
    differential diagnosis that rules each option in or out. None without `options` or <think>.
    (The authors evaluate comprehensiveness as cognitive behaviours counted by an LLM marker,
    `evaluation/cognitive_behavior_evaluation.py`; this rule is an annotation-free stand-in.)"""
    out: list[float | None] = []
    for i, c in enumerate(completions):
        parsed = _thought_and_options(clean(c), None if options is None else options[i])
        if parsed is None:
            out.append(None)
            continue
        thought, by_letter = parsed
        seen = [bool(mentions(thought, text)) for text in by_letter.values()]
        out.append(sum(seen) / len(seen))
    return out
