"""`wireless`: WirelessMathBench-XL-style problems (WirelessMathLM, arXiv 2509.23219).

Real data: the benchmark's jsonl (`data/S0_test_public.jsonl`) with fields `background,
question_text, equation, options, correct_answer, type`; map the answer with
`data.fields: {answer: correct_answer}`. The prompt follows the benchmark's layout:

    **Background**\\n...\\n\\n**Question**\\n...\\n\\n**Equation**\\n$$...[MASK]...$$\\n\\n
    [**Options**\\nA: ...\\n]---\\n<instruction for the type>

Synthetic data: formula-fill (one or two blanks), multiple-choice and numeric items built from
real wireless formulas (Shannon capacity, free-space path loss, SNR in dB, wavelength, parallel
resistance); every answer is computed from the formula, not typed in.
"""
from __future__ import annotations

import math
import random

from ..registry import register
from ..rewards.boxed import boxed_contents, score_boxed
from .base import Task

FILL = ("Please solve this problem step by step. Fill in the [MASK] placeholder(s) in the equation. "
        "Your final answer should be given at the end in the format: {fmt}")
NUMERIC = ("Please solve this problem step by step. Your final answer should be given at the end in "
           "the format: \\boxed{your_answer}")
SEP = "\n"  # joins a completion's boxed blanks into one vote for maj@k
MCQ = "Please solve this problem step by step. Your final answer should be given as \\boxed{X} where X is the letter of the correct option."

# (background, question, equation with masks, the blanks' answers)
FORMULAS = [
    ("Shannon capacity of an AWGN channel of bandwidth B.", "Complete the capacity formula.",
     "C = B \\log_2(1 + [MASK])", ["SNR"]),
    ("Friis free-space model for received power at distance d.", "Complete the path-loss exponent.",
     "P_r = P_t G_t G_r (\\lambda / (4 \\pi d))^{[MASK]}", ["2"]),
    ("Signal-to-noise ratio expressed in decibels.", "Complete the conversion.",
     "SNR_{dB} = [MASK] \\log_{10}(SNR)", ["10"]),
    ("Carrier wavelength from frequency.", "Complete the wavelength formula.",
     "\\lambda = [MASK] / f", ["c"]),
    ("Two resistors in parallel.", "Complete the equivalent resistance.",
     "R = \\frac{R_1 R_2}{[MASK]}", ["R_1 + R_2"]),
    ("Shannon capacity of an AWGN channel.", "Complete both blanks.",
     "C = [MASK] \\log_2(1 + [MASK])", ["B", "SNR"]),
]
MCQ_ITEMS = [  # (background, question, correct option, distractors)
    ("Shannon capacity.", "Which expression is the capacity of an AWGN channel?",
     "B \\log_2(1 + SNR)", ["B \\log_{10}(1 + SNR)", "B (1 + SNR)", "\\log_2(B + SNR)"]),
    ("Free-space propagation.", "How does received power scale with distance d?",
     "1/d^2", ["1/d", "1/d^3", "d^2"]),
    ("Decibels.", "What is a power ratio of 100 in dB?", "20", ["10", "100", "2"]),
]


def _numeric(rng: random.Random) -> tuple[str, str, str, str]:
    kind = rng.randrange(3)
    if kind == 0:
        b, snr = rng.choice([1, 2, 3, 4, 5]), rng.choice([1, 3, 7, 15])
        return ("Shannon capacity.", f"B = {b} MHz and SNR = {snr}. What is C in Mbit/s?",
                "C = B \\log_2(1 + SNR)", str(round(b * math.log2(1 + snr))))
    if kind == 1:
        k = rng.randrange(1, 6)
        return ("Decibels.", f"P_s / P_n = {10 ** k}. What is the SNR in dB?",
                "SNR_{dB} = 10 \\log_{10}(P_s / P_n)", str(10 * k))
    r1, r2 = rng.choice([(6, 3), (12, 4), (20, 5), (10, 10), (4, 4), (30, 6)])
    return ("Two resistors in parallel.", f"R_1 = {r1} and R_2 = {r2}. What is R?",
            "R = \\frac{R_1 R_2}{R_1 + R_2}", str(r1 * r2 // (r1 + r2)))


@register("task", "wireless")
class Wireless(Task):
    name = "wireless"
    required_fields = ("question_text", "answer")

    def __init__(self, seed: int = 1234, mix: tuple[float, float, float] = (0.5, 0.25, 0.25)):
        if len(mix) != 3 or min(mix) < 0 or sum(mix) <= 0:
            raise ValueError("mix gives the weights of (fill, mcq, numeric) items")
        self.seed, self.mix = seed, tuple(mix)

    def _item(self, rng: random.Random) -> dict:
        kind = rng.choices(["fill", "mcq", "numeric"], weights=self.mix)[0]
        if kind == "fill":
            background, question, equation, blanks = rng.choice(FORMULAS)
            answer = ", ".join(f"\\boxed{{{b}}}" for b in blanks) if len(blanks) > 1 else blanks[0]
            return {"background": background, "question_text": question, "equation": equation,
                    "options": None, "answer": answer, "type": f"fill_blank_{len(blanks)}"}
        if kind == "mcq":
            background, question, right, wrong = rng.choice(MCQ_ITEMS)
            options = [right] + list(wrong)
            rng.shuffle(options)
            letters = "ABCD"
            return {"background": background, "question_text": question, "equation": "",
                    "options": dict(zip(letters, options)), "answer": letters[options.index(right)], "type": "MCQ"}
        background, question, equation, answer = _numeric(rng)
        return {"background": background, "question_text": question, "equation": equation,
                "options": None, "answer": answer, "type": "numeric"}

    def synthetic(self, split: str, n: int, seed: int, test_size: int = 200) -> list[dict]:
        # Items repeat templates by design (few real formulas); train and test draw from
        # separate seeded streams.
        rng = random.Random(self.seed if split == "test" else seed + 7919)
        return [self._item(rng) for _ in range(n)]

    def prompt(self, row: dict) -> str:
        parts = []
        if row.get("background"):
            parts.append(f"**Background**\n{row['background']}")
        parts.append(f"**Question**\n{row['question_text']}")
        if row.get("equation"):
            parts.append(f"**Equation**\n$${row['equation']}$$")
        options = row.get("options")
        if options:
            parts.append("**Options**\n" + "\n".join(f"{k}: {v}" for k, v in options.items() if v is not None))
        if str(row.get("type", "")).upper() == "MCQ":
            instruction = MCQ
        elif "[MASK]" not in str(row.get("equation", "")):
            instruction = NUMERIC
        else:
            k = max(1, str(row.get("equation", "")).count("[MASK]"))
            fmt = "\\boxed{your_answer}" if k == 1 else ", ".join(f"\\boxed{{answer{i}}}" for i in range(1, k + 1)) + \
                f" (for the {k} blanks in order)"
            instruction = FILL.format(fmt=fmt)
        return "\n\n".join(parts) + "\n---\n" + instruction + "\n"

    def gold(self, row: dict) -> str:
        if "completion" in row:
            return row["completion"]
        answer = str(row["answer"])
        return answer if boxed_contents(answer) else f"\\boxed{{{answer}}}"

    def extract(self, completion: str) -> str | None:
        found = boxed_contents(completion)
        return SEP.join(found) if found else None

    def check(self, answer: str | None, row: dict) -> float:
        if answer is None:
            return 0.0
        return score_boxed("".join(f"\\boxed{{{a}}}" for a in answer.split(SEP)), row["answer"])

    def score(self, completion: str, row: dict) -> float:
        return score_boxed(completion, row["answer"])
