"""CRAFT-GUI (arXiv 2508.11360; algorithms_b.md §17 [recon]): the difficulty curriculum sampler
(EMA, staged quantiles, advance rule, checkpoint round trip), the hybrid rule reward
0.5 type + 0.5 param, and the text tool-call task; small numbers worked by hand."""
import pytest
import torch

from rlrecipes.registry import get
from rlrecipes.rewards.combine import combine
from rlrecipes.rewards.tool_call import call_args, call_type
from rlrecipes.rollout.curriculum import DifficultyCurriculum
from rlrecipes.rollout.samplers import Batch
from rlrecipes.tasks.tool_call import ToolCall, canonical, parse_call

ROWS = [{"prompt": f"q{i}", "answer": f"add({i},1)"} for i in range(10)]


def _batch(row_ids, passes, G=2, step=2):
    """A scored batch of ROWS[row_ids], G rows each; passes[k] = 1 or 0 for the k-th completion
    (one reward column, weight 1, success at 1.0)."""
    rows = [ROWS[i] for i in row_ids for _ in range(G)]
    return Batch(step=step, group_size=G, rows=rows, rollout=None,
                 rewards_NK=torch.tensor(passes, dtype=torch.float32).view(-1, 1), weights=[1.0],
                 generate=None, score=None, format=None, pad_id=0, question_of=None, train_rows=ROWS)


def _known(sampler, d):
    sampler.difficulty = torch.tensor(d, dtype=torch.float32)
    return sampler


def test_stage_admits_rows_up_to_its_quantile():
    # d = 0.0, 0.1, ..., 0.9; torch.quantile (linear): q 0.3 -> 0.27, q 0.6 -> 0.54, q 1 -> 0.9
    s = _known(DifficultyCurriculum(num_rows=10, seed=0), [i / 10 for i in range(10)])
    assert s.admitted() == [0, 1, 2]
    s.stage = 1
    assert s.admitted() == [0, 1, 2, 3, 4, 5]
    s.stage = 2
    assert s.admitted() == list(range(10))
    # unscored rows (NaN) are never admitted; draws come from the admitted ones only
    s = _known(DifficultyCurriculum(num_rows=10, seed=0), [0.0, 1.0] + [float("nan")] * 8)
    assert s.admitted() == [0]
    assert set(s.next(5)) == {0}
    s.stage = 2   # quantile 1: every row, the unscored ones too
    assert s.admitted() == list(range(10))
    s = _known(DifficultyCurriculum(num_rows=10, seed=0), [i / 10 for i in range(10)])
    picks = s.next(3)
    assert sorted(picks) == [0, 1, 2]   # three admitted, three drawn: no repeats


def test_ema_update_and_first_step_uses_uniform():
    s = DifficultyCurriculum(num_rows=10, seed=0, alpha=0.5, window=2)
    assert s.next(4) == get("sampler", "uniform")(num_rows=10, seed=0).next(4)   # nothing scored yet
    s.difficulty = torch.full((10,), 0.5)
    s.difficulty[3] = 0.2
    # row 3: 2 of 2 pass -> 1 - 1 = 0; EMA 0.5 * 0 + 0.5 * 0.2 = 0.1.  row 4: 0 of 2 -> 0.5 * 1 + 0.5 * 0.5 = 0.75
    s.refine(_batch([3, 4], [1, 1, 0, 0]))
    assert s.difficulty[3].item() == pytest.approx(0.1) and s.difficulty[4].item() == pytest.approx(0.75)
    assert s.recent == [0.5] and s.stage == 0


def test_first_refine_scores_the_pool_under_the_initial_policy():
    # score_pool: rollout_n = 2 samples of every row; the fake scorer passes rows 0-4, fails 5-9
    s = DifficultyCurriculum(num_rows=10, seed=0, rollout_n=2, window=1, advance_acc=2.0)
    batch = _batch([0, 5], [1, 1, 0, 0])

    class _R:
        def __init__(self, texts):
            self.texts = texts
    batch.draw = lambda idx, n: ([ROWS[i] for i in idx for _ in range(n)], [f"q{i}" for i in idx for _ in range(n)])
    batch.generate = lambda prompts: _R(prompts)
    batch.score = lambda prompts, r, rows: torch.tensor([[float(int(p[1:]) < 5)] for p in prompts])
    s.refine(batch)
    assert s.difficulty.tolist() == [0.0] * 5 + [1.0] * 5
    assert s.admitted() == [0, 1, 2, 3, 4]   # quantile 0.3 of five 0s and five 1s is 0
    assert batch.metrics["curriculum/stage"] == 0.0 and batch.metrics["curriculum/admitted_frac"] == 0.5


def test_advance_on_rolling_accuracy_or_after_max_steps():
    s = _known(DifficultyCurriculum(num_rows=10, seed=0, window=2, advance_acc=0.7, max_stage_steps=5),
               [0.5] * 10)
    s.refine(_batch([0, 1], [1, 1, 1, 1]))        # acc 1.0, but the window needs 2 batches
    assert s.stage == 0
    s.refine(_batch([0, 1], [1, 0, 1, 0]))        # rolling (1.0 + 0.5) / 2 = 0.75 >= 0.7
    assert s.stage == 1 and s.recent == [] and s.stage_steps == 0
    for _ in range(5):                             # acc 0 for 5 steps: max_stage_steps advances
        s.refine(_batch([0, 1], [0, 0, 0, 0]))
    assert s.stage == 2
    for _ in range(3):                             # the last stage stays
        s.refine(_batch([0, 1], [1, 1, 1, 1]))
    assert s.stage == 2


def test_state_round_trip_reproduces_the_draws():
    a = _known(DifficultyCurriculum(num_rows=10, seed=3, window=2), [i / 10 for i in range(10)])
    a.refine(_batch([1, 2], [1, 0, 1, 1]))
    a.next(4)
    b = DifficultyCurriculum(num_rows=10, seed=3, window=2)
    b.load_state_dict(a.state_dict())
    assert torch.equal(torch.nan_to_num(a.difficulty), torch.nan_to_num(b.difficulty))
    assert (b.stage, b.stage_steps, b.recent) == (a.stage, a.stage_steps, a.recent)
    assert [a.next(3) for _ in range(4)] == [b.next(3) for _ in range(4)]
    # the state is a copy: training on after saving leaves the saved dict alone
    saved = a.state_dict()
    a.refine(_batch([1, 2], [0, 0, 0, 0]))
    assert saved["difficulty"][1].item() != a.difficulty[1].item()


def test_bad_parameters_are_value_errors():
    for kw in ({"quantiles": [0.6, 0.3]}, {"quantiles": [0.0, 1.0]}, {"quantiles": []}, {"alpha": 0.0},
               {"window": 0}):
        with pytest.raises(ValueError):
            DifficultyCurriculum(num_rows=4, seed=0, **kw)


def test_hybrid_reward_by_hand():
    gold = ["sub(12,5)"] * 5
    outs = ["sub(12,5)", "sub(5,12)", "add(12,5)", "add(1,2)", "sub 12 5"]
    t, p = call_type(None, outs, gold), call_args(None, outs, gold)
    assert t == [1.0, 1.0, 0.0, 0.0, 0.0] and p == [1.0, 0.0, 1.0, 0.0, 0.0]
    # r = 0.5 type + 0.5 param: 1, 0.5 (right function, args swapped), 0.5 (wrong function), 0, 0
    r = combine(torch.tensor([t, p]).T, [0.5, 0.5])
    assert r.tolist() == [1.0, 0.5, 0.5, 0.0, 0.0]
    assert call_args(None, ["sub( 12 , 5 )"], ["sub(12,5)"]) == [1.0]   # spaces are ignored


def test_tool_call_task():
    assert parse_call("max(7,40,3)") == ("max", ["7", "40", "3"]) and parse_call("max(7") is None
    assert canonical(" add( 1, 2 )") == "add(1,2)" and canonical("add(1,2) extra") is None
    task = ToolCall()
    train, test = task.synthetic("train", 500, 0, test_size=100), task.synthetic("test", 100, 0, test_size=100)
    assert len(train) == 500 and len(test) == 100
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}        # disjoint
    assert len({r["prompt"] for r in train}) == 500                                # no repeats
    assert task.synthetic("test", 100, 0, test_size=100) == test                   # seeded
    row = next(r for r in train if r["prompt"].startswith("take"))
    a, b = row["prompt"][len("take "):-1].split(" from ")   # "take b from a:" is sub(a,b)
    assert row["answer"] == f"sub({b},{a})"
    assert task.score(task.gold(row), row) == 1.0 and task.score("sub(0,0)", row) == 0.0
    assert {r["n_args"] for r in train} == {2, 3, 4}


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    """The curriculum's difficulties, stage and generator are checkpointed: resuming craft_gui's
    tiny preset from the step-2 checkpoint gives steps 3-4 exactly as the uninterrupted run."""
    import json

    from rlrecipes.config import load_recipe

    from ..conftest import FAST, train_and_resume
    overrides = FAST + ["rewards=[{fn: call_type, weight: 0.5}, {fn: call_args, weight: 0.5}]",
                        "data.train_size=12", "algorithm.sampler.rollout_n=2", "algorithm.sampler.pool_size=12",
                        "algorithm.sampler.max_stage_steps=2", "train.steps=4", "checkpoint.every=2",
                        "checkpoint.keep_last=5", "eval.at_start=false", "eval.at_end=false"]
    full, cut = train_and_resume(load_recipe("recipes/craft_gui.yaml", "tiny", overrides), tmp_path, cut_at=4)
    rows = lambda d: {m["step"]: m for m in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())  # noqa: E731
                      if "loss" in m}
    a, b = rows(full), rows(cut)
    assert sorted(b) == [1, 2, 3, 4] and a[3]["curriculum/stage"] == 1.0   # advanced after 2 steps
    for step in (3, 4):
        for key in ("loss", "reward_mean", "curriculum/stage", "curriculum/admitted_frac",
                    "curriculum/difficulty_mean"):
            assert a[step][key] == b[step][key], (step, key)
