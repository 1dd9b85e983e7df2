import math
import time

import pytest
import torch

from rlrecipes.config import Reward
from rlrecipes.errors import UserError
from rlrecipes.registry import get
from rlrecipes.rewards.combine import RewardFn, check_columns, combine, score


def test_accuracy_and_format_rewards():
    comps = ["<think>x</think><answer>5</answer>", "<answer>5</answer>", "<think></think> <answer>4</answer>"]
    assert get("reward", "accuracy")(["p"] * 3, comps, answer=["5", "5", "5"]) == [1.0, 1.0, 0.0]
    # format: full match of <think>.*?</think>\s*<answer>.*?</answer>; the empty thought counts
    assert get("reward", "format")(["p"] * 3, comps) == [1.0, 0.0, 1.0]


def test_score_passes_columns_and_group_size_and_combine_weights():
    seen = {}

    def spy(prompts, completions, answer, group_size, **kw):
        seen.update(group_size=group_size, answer=answer, extra=kw.get("a"))
        return [1.0, None]

    fns = [RewardFn(Reward(fn="accuracy", weight=1.0), 0), RewardFn(Reward(fn="format", weight=0.5), 1)]
    fns[1].fn = spy
    rows = [{"prompt": "1+1=", "answer": "2", "a": 1}] * 2
    R = score(fns, ["1+1="] * 2, ["<answer>2</answer>", "<answer>3</answer>"], rows, group_size=2, step=1)
    assert seen == {"group_size": 2, "answer": ["2", "2"], "extra": [1, 1]}
    assert R[0].tolist() == [1.0, 1.0] and R[1, 0] == 0.0 and math.isnan(R[1, 1])
    # weighted sum skips None: [1 + 0.5*1, 0 + (None)] = [1.5, 0.0]
    assert combine(R, [1.0, 0.5]).tolist() == [1.5, 0.0]
    assert math.isnan(combine(torch.tensor([[math.nan, math.nan]]), [1.0, 1.0])[0].item())


def test_raising_reward_is_a_user_error_naming_it():
    fn = RewardFn(Reward(fn="tests.user_rewards:broken_reward"), 2)
    with pytest.raises(UserError, match=r"rewards\[2\] \(broken_reward\): reward function raised KeyError"):
        score([fn], ["p"], ["c"], [{"prompt": "p", "answer": "1"}], 1, 1)


def test_a_hanging_reward_times_out_naming_it():
    fn = RewardFn(Reward(fn="tests.user_rewards:hanging_reward", timeout_s=0.3), 1)
    t0 = time.monotonic()
    with pytest.raises(UserError, match=r"^rewards\[1\] \(hanging_reward\): reward function did not return "
                       r"within 0.3 s \(fix it or raise rewards\[1\].timeout_s\)$"):
        score([fn], ["p"] * 2, ["a", "b"], [{"prompt": "p"}] * 2, 2, 1)
    assert time.monotonic() - t0 < 2
    assert Reward(fn="accuracy").timeout_s == 60


def test_prepare_runs_once_outside_the_deadline():
    """A reward's `prepare` (reward_model loads its model there) is not timed: a 0.6 s load with
    timeout_s 0.3 passes, once, with the reward's YAML parameters."""
    from tests import user_rewards
    user_rewards.PREPARED.clear()
    fn = RewardFn(Reward(fn="tests.user_rewards:slow_to_load_reward", timeout_s=0.3, size=2), 0)
    for _ in range(2):
        out = score([fn], ["p"] * 2, ["a", "b"], [{"prompt": "p"}] * 2, 2, 1)
        assert out.tolist() == [[2.0], [2.0]]
    assert user_rewards.PREPARED == [2]


def test_reward_errors_name_the_sample_and_the_reward():
    rows = [{"prompt": "p"}] * 3
    picky = RewardFn(Reward(fn="tests.user_rewards:picky_reward"), 0)
    assert score([picky], ["p"] * 3, ["1", "2.5", "3"], rows, 3, 1)[:, 0].tolist() == [1.0, 2.5, 3.0]
    with pytest.raises(UserError, match=r"rewards\[0\] \(picky_reward\): reward function raised ValueError "
                       r"on sample 2: could not convert"):
        score([picky], ["p"] * 3, ["1", "2", "three"], rows, 3, 1)
    text = RewardFn(Reward(fn="tests.user_rewards:text_reward"), 1)
    with pytest.raises(UserError, match=r"rewards\[1\] \(text_reward\): returned '1.0' for sample 0; a reward is a number"):
        score([text], ["p"] * 3, ["a", "b", "c"], rows, 3, 1)
    short = RewardFn(Reward(fn="tests.user_rewards:short_reward", name="short"), 2)
    with pytest.raises(UserError, match=r"rewards\[2\] \(short\): returned list of length 2; expected a list of 3"):
        score([short], ["p"] * 3, ["a", "b", "c"], rows, 3, 1)


def test_missing_column_for_a_reward():
    fn = RewardFn(Reward(fn="accuracy"), 0)
    with pytest.raises(UserError, match=r"rewards\[0\] \(accuracy\): needs dataset column\(s\) \['answer'\]"):
        check_columns([fn], {"prompt": "p", "solution": "1"})
