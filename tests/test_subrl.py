"""SubRL / SubPO (arXiv 2307.13372): the `cover` task's submodular objective and the marginal-gain
segment reward, worked by hand."""
import pytest

from rlrecipes.registry import get
from rlrecipes.rewards.cover import coverage_gain
from rlrecipes.rewards.dense import PerSegment
from rlrecipes.tasks.cover import gains


def test_marginal_gains_diminish():
    """Targets 0, 8, 10, 11, 17, radius 2: a sensor at 9 covers {8, 10, 11} (gain 3), 0 covers
    {0} (1), 15 covers {17} (1); a second sensor at 9 gains nothing; a 4th sensor (k 3) neither."""
    t = [0, 8, 10, 11, 17]
    assert gains(t, [9, 0, 15], 2, 3) == [3, 1, 1]
    assert gains(t, [9, 9, 15], 2, 3) == [3, 0, 1]
    assert gains(t, [9, 0, 15, 3], 2, 3) == [3, 1, 1, 0]


def test_coverage_gain_segments_end_on_each_sensor():
    """"<answer>9,0,15</answer>": the answer text starts at character 8, so the sensors end at
    9, 11 and 14; gains 3, 1, 1 over the best coverage 5."""
    out = coverage_gain(["p"] * 3, ["<answer>9,0,15</answer>", "<answer>9,9</answer>", "no answer"],
                        targets=[[0, 8, 10, 11, 17]] * 3, answer=["5"] * 3, k=[3] * 3, radius=[2] * 3)
    assert isinstance(out[0], PerSegment)
    assert out[0].parts == [(9, 0.6), (11, 0.2), (14, 0.2)] and out[0] == pytest.approx(1.0)
    assert out[1].parts == [(9, 0.6), (11, 0.0)] and out[1] == pytest.approx(0.6)
    assert out[2].parts == [] and out[2] == 0.0


def test_cover_task_best_and_scores():
    task = get("task", "cover")()
    row = {"targets": [0, 8, 10, 11, 17], "answer": str(task.best([0, 8, 10, 11, 17]))}
    assert row["answer"] == "5"   # e.g. 9, 0 (or 1, 2), 15 (or 16..19) covers all five
    assert task.score("<answer>9,0,15</answer>", row) == 1.0
    assert task.score("<answer>9,9,15</answer>", row) == 0.0
    assert task.sample_metrics("<answer>9,9,15</answer>", row) == {"coverage": 0.8}
    assert task.extract("<answer>15,9,0,3</answer>") == "0,9,15"   # first k, sorted: votes agree
    rows = task.synthetic("train", 50, 0)
    test = task.synthetic("test", 20, 0)
    assert not {tuple(r["targets"]) for r in rows} & {tuple(r["targets"]) for r in test}
    assert all(int(r["answer"]) >= sum(gains(r["targets"], task.greedy(r["targets"]), 2, 3)) for r in rows)
