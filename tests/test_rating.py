"""Aes-R1 / RAPO (named.md §1): the absolute and rank rewards with the spec's numbers, the
parser, the `rating` task, and the PLCC/SRCC eval metrics."""
import math

import pytest
import torch

from rlrecipes.evaluate import correlations, ranks, summarize
from rlrecipes.registry import get
from rlrecipes.tasks.rating import Rating, parse_score


def test_rapo_absolute_worked_values_and_fallback():
    # exp(-0.5 (0.1/0.1)^2) + 1e-5 = 0.6065; exp(-0.5 (0.05/0.1)^2) + 1e-5 = 0.8825
    ab = get("reward", "rapo_absolute")
    out = ab(None, ["<answer>0.5</answer>", "<think>x</think><answer>0.55</answer>", "no number"],
             answer=["0.6", "0.6", "0.6"])
    assert out[:2] == [0.6065, 0.8825]
    assert out[2] == 0.0   # fallback 3.0 (mean of the reference's randint(1, 5)): 1e-5 rounds to 0
    assert ab(None, ["no number"], answer=["0.6"], fallback=0.6) == [1.0]


def test_rapo_rank_worked_example_is_symmetric():
    # prompt i: preds [0.6, 0.8], MOS 0.7; prompt z: preds [0.2, 0.4], MOS 0.3; v_i = v_z = 0.02
    rank = get("reward", "rapo_rank")
    texts = [f"<answer>{p}</answer>" for p in (0.6, 0.8, 0.2, 0.4)]
    out = rank(None, texts, answer=["0.7", "0.7", "0.3", "0.3"], group_size=2)
    assert out == pytest.approx([0.9670, 0.9979, 0.9979, 0.9670], abs=1e-4)


def test_rapo_rank_own_cases_wrong_order_one_prompt_and_no_variance():
    rank = get("reward", "rapo_rank")
    # labels swapped (z is better) while i still scores higher: P ~ Phi(1.5) with gt = 0
    # -> f = sqrt(1e-6) + sqrt(1 - 0.93319 + 1e-6) = 0.2595 for i's first sample
    texts = [f"<answer>{p}</answer>" for p in (0.6, 0.8, 0.2, 0.4)]
    out = rank(None, texts, answer=["0.3", "0.3", "0.7", "0.7"], group_size=2)
    assert out[0] == pytest.approx(0.001 + math.sqrt(1 - 0.9331928 + 1e-6), abs=1e-5)
    assert rank(None, texts[:2], answer=["0.7", "0.7"], group_size=2) == [0.0, 0.0]   # no other prompt
    assert rank(None, texts[:2], answer=["0.7", "0.3"], group_size=1) == [0.0, 0.0]   # G = 1: NaN -> 0


def test_parser_and_format():
    assert parse_score("<answer>Score: 0.73/1</answer>") == 0.73
    assert parse_score("<answer>a</answer> then 0.4") is None          # the last answer block has no number
    assert parse_score("I think 0.4 or 0.5") == 0.4                   # no answer block: whole text
    fmt = get("reward", "format")
    assert fmt(None, ["<think>a</think> <answer>0.5</answer>", "<answer>0.5</answer>"]) == [1.0, 0.0]


def test_rating_task_rows_gold_and_judging():
    task = Rating()
    train, test = task.synthetic("train", 500, seed=0), task.synthetic("test", 50, seed=0)
    assert not {r["item"] for r in train} & {r["item"] for r in test}
    row = {"prompt": "rate 3849:", "answer": "0.67", "item": "3849"}
    assert task.quality("3849") == 0.67 and task.gold(row) == "<think>3+8+4+9=24</think><answer>0.67</answer>"
    assert task.score("<answer>0.6</answer>", row) == 1.0 and task.score("<answer>0.5</answer>", row) == 0.0
    assert task.predicted(["0.5", None, "0.7"]) == pytest.approx(0.6) and math.isnan(task.predicted([None]))


def test_correlations_hand_worked_and_in_summaries():
    # pred [1, 2, 3, 5], label [1, 2, 3, 4]: Spearman 1 (same order); Pearson 0.9827
    out = correlations([1.0, 2.0, 3.0, 5.0], [1.0, 2.0, 3.0, 4.0])
    assert out["srcc"] == pytest.approx(1.0) and out["plcc"] == pytest.approx(0.98270763, abs=1e-6)
    assert all(math.isfinite(out[k]) and out[k] >= 0 for k in ("plcc_ci", "srcc_ci"))
    assert torch.equal(ranks(torch.tensor([3.0, 1.0, 3.0])), torch.tensor([2.5, 1.0, 2.5]))
    s = summarize({"mean@n": [1.0, 0.0, 1.0, 0.0], "pred": [0.1, float("nan"), 0.3, 0.2], "label": [0.1, 0.9, 0.5, 0.2]})
    assert "pred" not in s and s["scored_frac"] == 0.75 and s["srcc"] == pytest.approx(1.0)
