"""DAPO's dynamic sampling and soft overlong punishment (arXiv 2503.14476, §3.2 and §3.4):
the spec's worked examples (algorithms_a §13) and cases of our own."""
import math

import pytest
import torch

from rlrecipes.rewards.combine import RewardFn, score
from rlrecipes.rewards.length import overlong_penalty
from rlrecipes.rollout.generate import Rollout
from rlrecipes.rollout.samplers import Batch, DynamicSampling


def test_overlong_penalty_worked_example():
    # L_max 20480, L_cache 4096: L = 16384 -> 0, 17408 -> -0.25, 20480 -> -1.0; beyond -> -1
    lengths = [16384, 17408, 20480, 20481, 10]
    out = overlong_penalty(None, [""] * 5, [[0] * n for n in lengths], max_length=20480, cache_length=4096)
    assert out == [0.0, -0.25, -1.0, -1.0, 0.0]
    with pytest.raises(ValueError):
        overlong_penalty(None, [""], [[0]], max_length=10, cache_length=20)


def test_completion_ids_reach_rewards_through_the_loop_contract():
    from rlrecipes.config import Reward
    fn = RewardFn(Reward(fn="overlong_penalty", max_length=4, cache_length=2), 0)
    out = score([fn], ["p", "p"], ["a", "b"], [{"answer": "1"}] * 2, 2, 1, completion_ids=[[1, 2], [1, 2, 3]])
    assert out.flatten().tolist() == [0.0, -0.5]


def _rollout(n, first_id=10):
    ids = torch.arange(first_id, first_id + 2 * n).view(n, 2)
    return Rollout(torch.full((n, 1), 5), torch.ones(n, 1, dtype=torch.long), ids,
                   torch.ones(n, 2, dtype=torch.long), [f"c{i}" for i in range(n)], torch.zeros(n, dtype=torch.bool))


class Refill:
    """generate: completions for fresh prompts; score: reward 1 for even-numbered completions of
    prompts listed in `varied`, else 0 (so their groups have variance)."""

    def __init__(self, varied):
        self.varied, self.calls = varied, 0

    def generate(self, prompts):
        self.calls += 1
        r = _rollout(len(prompts), first_id=100 * self.calls)
        r.texts = list(prompts)
        return r

    def score(self, prompts, rollout, rows):
        return torch.tensor([[float(p in self.varied and i % 2 == 0)] for i, p in enumerate(prompts)])


def _batch(rewards, refill, G=4):
    n = len(rewards)
    rows = [{"prompt": f"q{i}"} for i in range(6)]
    return Batch(step=3, group_size=G, rows=[{"prompt": "old"}] * n, rollout=_rollout(n),
                 rewards_NK=torch.tensor(rewards).view(n, 1), weights=[1.0], generate=refill.generate,
                 score=refill.score, format=lambda q: q, pad_id=0, train_rows=rows,
                 train_prompts=[r["prompt"] for r in rows], question_of=lambda row: row["prompt"])


def test_zero_variance_groups_are_refilled_with_fresh_groups():
    # group 0 has variance and stays; group 1 (all 1) and group 2 (all 0) are refilled from
    # prompts whose groups have variance
    refill = Refill(varied={f"q{i}" for i in range(6)})
    batch = _batch([1.0, 0.0, 0.0, 0.0] + [1.0] * 4 + [0.0] * 4, refill)
    DynamicSampling(num_rows=6, seed=0, max_rounds=3).refine(batch)
    assert batch.metrics == {"ds/kept_frac": pytest.approx(1 / 3), "ds/filled_frac": 1.0, "ds/rounds": 1.0}
    assert batch.rewards_NK.flatten().tolist() == [1.0, 0.0, 0.0, 0.0] + [1.0, 0.0, 1.0, 0.0] * 2
    assert batch.rollout.completion_ids_NT[0].tolist() == [10, 11]            # kept group untouched
    assert batch.rollout.completion_ids_NT[4].tolist() == [100, 101]          # refilled from round 1
    assert batch.question_of(batch.rows[4]) in batch.train_prompts  # the refill's row came along


def test_rounds_are_capped_and_unfilled_slots_keep_their_group():
    refill = Refill(varied=set())            # fresh groups never have variance
    batch = _batch([0.0] * 4 + [1.0, 0.0, 0.0, 0.0], refill)
    DynamicSampling(num_rows=6, seed=0, max_rounds=2).refine(batch)
    assert refill.calls == 2 and batch.metrics["ds/filled_frac"] == 0.5 and batch.metrics["ds/rounds"] == 2.0
    assert batch.rewards_NK.flatten().tolist() == [0.0] * 4 + [1.0, 0.0, 0.0, 0.0]
    assert batch.rollout.completion_ids_NT[0].tolist() == [10, 11]
    none = _batch([0.0] * 4, Refill(varied=set()))
    DynamicSampling(num_rows=6, seed=0, max_rounds=0).refine(none)  # filter off: only the metric
    assert none.metrics["ds/kept_frac"] == 0.0 and none.metrics["ds/rounds"] == 0.0


def test_refill_draws_do_not_move_the_main_prompt_order():
    a, b = DynamicSampling(num_rows=6, seed=0), DynamicSampling(num_rows=6, seed=0)
    a.refine(_batch([0.0] * 4, Refill(varied={"q1"})))
    assert a.next(10) == b.next(10)


def test_metric_names_one_reward_column():
    # two rewards: accuracy constant in the group, a second one varying -> with metric accuracy
    # the group counts as empty; with the weighted total it has variance
    refill = Refill(varied=set())
    batch = _batch([0.0] * 4, refill)
    batch.rewards_NK = torch.tensor([[0.0, 0.1], [0.0, 0.0], [0.0, 0.1], [0.0, 0.0]])
    batch.weights, batch.reward_names = [1.0, 1.0], ["accuracy", "format"]
    refill.score = lambda p, r, rows: torch.zeros(len(p), 2)
    DynamicSampling(num_rows=6, seed=0, max_rounds=1, metric="accuracy").refine(batch)
    assert batch.metrics["ds/kept_frac"] == 0.0
    DynamicSampling(num_rows=6, seed=0, max_rounds=1).refine(batch)
    assert batch.metrics["ds/kept_frac"] == 1.0
    with pytest.raises(ValueError, match="not one of the recipe's rewards"):
        DynamicSampling(num_rows=6, seed=0, metric="acc").refine(batch)


def test_cosine_length_worked_example_and_tag_count():
    # algorithms_a §12 (open-rs CLI defaults, max_len 1000): correct L = 0/250/500/1000 ->
    # 1.0/0.9268/0.75/0.5; wrong -> 0.0/-0.0732/-0.25/-0.5
    from rlrecipes.rewards.length import cosine_length, tag_count
    right = ["<answer>7</answer>".ljust(n, " ") if n else "" for n in (0, 250, 500, 1000)]
    right[0] = "<answer>7</answer>"  # 18 characters: progress 0.018
    out = cosine_length(None, right[1:], answer=["7"] * 3)
    assert out == pytest.approx([0.9268, 0.75, 0.5], abs=1e-4)
    assert cosine_length(None, [right[0]], answer=["7"])[0] == pytest.approx(0.5 + 0.25 * (1 + math.cos(math.pi * 0.018)))
    wrong = ["x" * n for n in (0, 250, 500, 1000, 3000)]
    assert cosine_length(None, wrong, answer=["7"] * 5) == pytest.approx([0.0, -0.0732, -0.25, -0.5, -0.5], abs=1e-4)
    assert cosine_length(None, ["x" * 500], answer=["7"], min_wrong=-1.0) == pytest.approx([-0.75])
    assert cosine_length(None, ["so \\boxed{7}"], answer=["7"], answer_format="boxed")[0] > 0.5
    assert tag_count(None, ["<think>\nx\n</think>\n<answer>1</answer>", "<think>x</think>", "<think>\n<think>\n"]) == [1.0, 0.0, 0.0]
