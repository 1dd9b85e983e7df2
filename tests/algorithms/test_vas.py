"""MMR1 Variance-Aware Sampling (arXiv 2509.21268): the spec's worked example (algorithms_a §10)
and cases of our own, with a fake scorer so the pass rates are known."""
import torch

from rlrecipes.rollout.generate import Rollout
from rlrecipes.rollout.samplers import Batch, VarianceAware

PASSES = {"q0": 0, "q1": 2, "q2": 4, "q3": 8}   # passes out of 8 scoring rollouts


def _batch(step):
    rows = [{"prompt": q} for q in PASSES]

    def generate(prompts):
        n = len(prompts)
        return Rollout(torch.ones(n, 1, dtype=torch.long), torch.ones(n, 1, dtype=torch.long),
                       torch.ones(n, 1, dtype=torch.long), torch.ones(n, 1, dtype=torch.long), list(prompts),
                       torch.zeros(n, dtype=torch.bool))

    seen: dict[str, int] = {}   # across chunks

    def score(prompts, rollout, rows_):
        assert len(prompts) <= 16
        out = []
        for p in prompts:  # the first PASSES[p] of each prompt's 8 rollouts pass
            seen[p] = seen.get(p, 0) + 1
            out.append([1.0 if seen[p] <= PASSES[p] else 0.0])
        return torch.tensor(out)

    # rows: a 16-completion training step, so the 32 scoring rollouts go in 2 chunks of 16
    return Batch(step=step, group_size=8, rows=[{}] * 16, rollout=generate([]), rewards_NK=torch.zeros(0, 1),
                 weights=[1.0], generate=generate, score=score, format=lambda q: q, pad_id=0, question_of=lambda row: row["prompt"],
                 train_rows=rows, train_prompts=[r["prompt"] for r in rows])


def test_worked_example_weights_and_draw_probabilities():
    # p = [0, 2/8, 4/8, 8/8] -> p(1-p) = [0, 0.1875, 0.25, 0] -> draw probs [0, 0.4286, 0.5714, 0]
    vas = VarianceAware(num_rows=4, seed=0, pool_size=4, mix=1.0)
    b = _batch(step=1)
    vas.refine(b)
    assert torch.allclose(vas.weights, torch.tensor([0.0, 0.1875, 0.25, 0.0]))
    assert b.metrics["vas/pool_pass_rate"] == (0 + 0.25 + 0.5 + 1) / 4
    draws = torch.tensor(vas.next(7000))
    assert set(draws.tolist()) == {1, 2}
    assert abs((draws == 1).float().mean().item() - 0.4286) < 0.02


def test_mixture_schedule_momentum_and_state_round_trip():
    vas = VarianceAware(num_rows=4, seed=0, pool_size=4, mix=0.5, update_every=4, momentum=0.5)
    assert torch.equal(vas.weights, torch.full((4,), 0.25))          # unscored: the maximum
    vas.refine(_batch(step=2))                                        # not an update step
    assert torch.equal(vas.weights, torch.full((4,), 0.25))
    vas.refine(_batch(step=5))                                        # steps 1, 5, 9, ... update
    assert torch.allclose(vas.weights, torch.tensor([0.125, 0.21875, 0.25, 0.125]))  # 0.5 old + 0.5 new
    batch = vas.next(8)                                               # 4 weighted + 4 uniform, interleaved
    assert len(batch) == 8 and sorted(batch[1::2]) == [0, 1, 2, 3]   # the uniform part is one epoch
    state = vas.state_dict()
    twin = VarianceAware(num_rows=4, seed=0, pool_size=4, mix=0.5)
    twin.load_state_dict(state)
    assert vas.next(8) == twin.next(8)
