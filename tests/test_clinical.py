"""Clinical-R1 / CRPO (arXiv 2512.00601): the three rewards of the authors' verl file
`medical_rule_based.py`, their weighted sum 10*acc + format + 0.5*english (the spec's worked
examples, algorithms_b.md §2), the reconstructed faithfulness/comprehensiveness terms, and the
multiple-choice task."""
import pytest
import torch

from rlrecipes.config import load_recipe
from rlrecipes.registry import get
from rlrecipes.rewards.clinical import (accuracy_score, crpo_comprehensiveness, crpo_faithfulness,
                                        english_share, format_score)
from rlrecipes.rewards.combine import combine

from .conftest import RECIPES


@pytest.mark.parametrize("text, gold, expected", [
    ("<answer>\\boxed{B}</answer>", "B", 1.0),
    ("<answer>\\boxed{C}</answer>", "B", 0.0),
    ("\\boxed{85}", "B", -0.5),                      # boxed, but not a letter
    ("\\boxed{b}", "B", -0.5),                       # lower case is not a letter in the authors' list
    ("the answer is \\boxed B", "B", -1.0),          # one \boxed, no braces: the regex fails
    ("\\boxed{B} or \\boxed{C}", "B", -2.0),         # n = 2 boxes: -n
    ("B", "B", 0.0),                                 # no box: -0
])
def test_accuracy_follows_the_authors_rule(text, gold, expected):
    assert accuracy_score(text, gold) == expected


@pytest.mark.parametrize("text, expected", [
    ("<think>x</think><answer>85 \\boxed{B}</answer>", 1.5),     # a summary besides the one box
    ("<think>x</think>\n<answer>\\boxed{B}</answer>", 1.0),      # the box alone: no bonus
    ("<think>x</think><answer>85</answer>", 1.0),                # no box: layout only
    ("<think>x</think><answer>\\boxed{A} \\boxed{B}</answer>", 1.0),
    ("<answer>\\boxed{B}</answer>", 0.0),                        # no thought
    ("<think>x</think><answer>85 \\boxed{B}</answer> more", 0.0),  # text after the answer
])
def test_format_reward_and_its_summary_bonus(text, expected):
    assert format_score(text) == expected


def test_english_share_counts_characters():
    assert english_share("") == 0.0
    assert english_share("abc d") == 1.0
    assert english_share("ab\u00e9\u00e9") == 0.5          # 2 of 4 characters are outside the set


def weighted(reward_list) -> float:
    """The recipe's own weights (recipes/clinical_r1.yaml) applied to one sample's rewards."""
    weights = [r.weight for r in load_recipe(RECIPES / "clinical_r1.yaml").rewards]
    row = torch.tensor([reward_list + [float("nan")] * (len(weights) - len(reward_list))])
    return combine(row, weights).item()


def test_training_reward_is_10_acc_plus_format_plus_half_english():
    """algorithms_b.md §2: (acc 1, fmt 1.5, eng 1) -> 12.0; (0, 1.0, 0.9) -> 1.45; (-1, 0, 1.0) -> -9.5.
    Each triple is produced by a real completion, then summed with the recipe's weights."""
    fns = [get("reward", n) for n in ("crpo_accuracy", "crpo_format", "english_ratio")]
    right = "<think>7+8=15;4+3+1=8;85</think><answer>85 \\boxed{B}</answer>"
    # 50 characters, 5 of them outside the English set: english = 45/50 = 0.9
    wrong = "<think>" + "\u00e9" * 5 + "xxxx" + "</think><answer>\\boxed{A}</answer>"
    no_braces = "the answer is \\boxed B"
    cases = [(right, [1.0, 1.5, 1.0], 12.0), (wrong, [0.0, 1.0, 0.9], 1.45), (no_braces, [-1.0, 0.0, 1.0], -9.5)]
    for text, parts, total in cases:
        got = [fn([""], [text], answer=["B"])[0] for fn in fns]
        assert got == pytest.approx(parts), text
        assert weighted(got) == pytest.approx(total)


def test_faithfulness_is_the_last_option_the_thought_reaches():
    options = [["75", "85", "95", "84"]] * 4
    texts = ["<think>7+8=15;4+3+1=8;85</think><answer>\\boxed{B}</answer>",    # concludes 85 = B, boxes B
             "<think>7+8=15;4+3+1=8;85</think><answer>\\boxed{C}</answer>",    # concludes B, boxes C
             "<think>75? no, 85</think><answer>\\boxed{B}</answer>",           # 75 first, 85 last
             "<think>185</think><answer>\\boxed{B}</answer>"]                  # 85 inside 185 is no mention
    assert crpo_faithfulness(None, texts, options=options) == [1.0, 0.0, 1.0, 0.0]
    assert crpo_faithfulness(None, texts[:1]) == [None]                        # no options column
    assert crpo_faithfulness(None, ["<answer>\\boxed{B}</answer>"], options=options[:1]) == [None]


def test_comprehensiveness_is_the_share_of_options_considered():
    options = [["75", "85", "95", "84"]] * 3
    texts = ["<think>85</think><answer>\\boxed{B}</answer>",
             "<think>not 75, not 95, 84 is off by one, so 85</think><answer>\\boxed{B}</answer>",
             "<think></think><answer>\\boxed{B}</answer>"]
    assert crpo_comprehensiveness(None, texts, options=options) == [0.25, 1.0, 0.0]


def test_mcq_task_is_seeded_disjoint_and_its_gold_earns_every_reward():
    task = get("task", "mcq_arith")()
    test = task.synthetic("test", 200, seed=0)
    train = task.synthetic("train", 3000, seed=1)
    assert {(r["a"], r["b"]) for r in test}.isdisjoint({(r["a"], r["b"]) for r in train})
    assert task.synthetic("test", 200, seed=5) == test                 # the test split ignores the seed
    for row in test[:50]:
        values = [int(v) for v in row["options"]]
        assert len(set(values)) == 4 and values["ABCD".index(row["answer"])] == row["a"] + row["b"]
        assert f"{row['a'] + row['b']}:{row['answer']}" in row["prompt"]
        assert len({v % 10 for v in values}) == 4                       # no two options share a last digit
        gold = task.gold(row)
        assert task.score(gold, row) == 1.0 and task.extract(gold) == row["answer"]
        assert format_score(gold) == 1.5
        assert crpo_faithfulness(None, [gold], options=[row["options"]]) == [1.0]
    letters = [r["answer"] for r in test]
    assert all(letters.count(x) > 25 for x in "ABCD")                  # the right letter's place varies
    row = test[0]
    wrong = "ABCD"[("ABCD".index(row["answer"]) + 1) % 4]
    assert task.score(f"<answer>\\boxed{{{wrong}}}</answer>", row) == 0.0
    assert task.score(f"\\boxed{{{row['answer']}}}\\boxed{{{row['answer']}}}", row) == 0.0   # two boxes


def test_bad_option_count_is_refused():
    with pytest.raises(ValueError, match="options"):
        get("task", "mcq_arith")(options=9)
