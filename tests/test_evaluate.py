"""pass@k (unbiased, Chen et al. 2021, arXiv 2107.03374 eq. 1), maj@k and the intervals."""
import math

import pytest

from rlrecipes.evaluate import majority, mean_ci, pass_at_k, per_problem, summarize


def test_pass_at_k_hand_worked():
    # n=5, c=2: pass@1 = c/n = 0.4; pass@2 = 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 3, 3) == 1.0  # n - c < k: every k-subset holds a correct sample


def test_pass_at_k_large_n_does_not_overflow():
    # n=200, c=1, k=100: 1 - C(199,100)/C(200,100) = 1 - 100/200 = 0.5
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5, abs=1e-12)
    # against exact integer binomials for a spread of cases
    for n, c, k in [(200, 7, 100), (200, 50, 10), (1000, 3, 500), (64, 20, 8)]:
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-9)


def test_pass_at_k_rejects_impossible_input():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_majority_tie_goes_to_the_first_seen_and_none_does_not_vote():
    assert majority(["3", "4", "4", "3"]) == "3"   # 2-2 tie: "3" appeared first
    assert majority([None, "5", None, "6", "6"]) == "6"
    assert majority([None, None]) is None


def test_per_problem_and_summary():
    correct = [[1, 0, 0, 1], [0, 0, 0, 0]]
    answers = [["7", "8", "8", "7"], ["1", None, "2", "2"]]
    golds = [{"answer": "7"}, {"answer": "2"}]
    check = lambda a, row: float(a == row["answer"])
    values = per_problem(correct, answers, golds, [1, 2, 4], check)
    assert values["mean@n"] == [0.5, 0.0]
    assert values["pass@2"] == pytest.approx([1 - 1 / 6, 0.0])      # 1 - C(2,2)/C(4,2)
    # maj@2: first two answers ["7","8"] tie -> "7" (correct); ["1", None] -> "1" (wrong)
    assert values["maj@2"] == [1.0, 0.0]
    # maj@4: "7"/"8" tie -> "7"; ["1", None, "2", "2"] -> "2" (correct)
    assert values["maj@4"] == [1.0, 1.0]
    s = summarize(values)
    assert s["problems"] == 2 and s["pass@1"] == pytest.approx(0.25)


def test_mean_ci_normal_interval():
    mean, half = mean_ci([0.0, 1.0, 1.0, 0.0])
    # sample std = sqrt(1/3); half width = 1.96 * sqrt(1/3) / 2
    assert mean == 0.5 and half == pytest.approx(1.96 * math.sqrt(1 / 3) / 2)
