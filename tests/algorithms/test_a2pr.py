"""A2PR's regularizer (arXiv 2405.19909, official A2PR.py actor update) as a text analogue: the
behaviour-cloning target and weight worked by hand, and the injected-row input from the loop."""
import json

import pytest
import torch

from rlrecipes.algorithms.regularizers import a2pr, a2pr_targets
from rlrecipes.config import load_recipe
from rlrecipes.errors import UserError
from rlrecipes.run import train

from ..conftest import FAST

# three groups of 4, the gold injected in slot 3 of each
ADV = torch.tensor([0.5, -0.5, 0.2, 1.2,     # best sample 0.5 < gold 1.2: target gold, w = 1 + 1
                    -0.3, 0.9, -0.6, 0.0,    # best 0.9 >= gold 0.0: target row 5, w = 1 + 0 (A_gold not > 0)
                    -1.0, -0.5, -0.2, -0.4])  # best -0.2 >= gold -0.4: target row 10, w = 0 + 0
INJ = torch.tensor([False, False, False, True] * 3)


def test_targets_and_weights_by_hand():
    assert a2pr_targets(ADV, INJ, 4).tolist() == [0, 0, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0]
    assert a2pr_targets(ADV, INJ, 4, gate="none").tolist() == [0, 0, 0, 1] * 3   # TD3+BC: always the gold
    # no gold in the group: the best sample alone (row 3, A 1.2), w = 1[A_best >= 0]
    assert a2pr_targets(ADV[:4], torch.zeros(4, dtype=torch.bool), 4).tolist() == [0, 0, 0, 1]


def test_term_is_weighted_nll_of_the_target():
    logp = torch.full((12, 3), -2.0, requires_grad=True)
    mask = torch.ones(12, 3)
    mask[3, 2] = 0
    term, m = a2pr(logp, ADV, mask, INJ, 4, coef=0.4)
    assert term[3].tolist() == pytest.approx([0.4 * 2 * 2.0, 0.4 * 2 * 2.0, 0.0])
    assert term[5].tolist() == pytest.approx([0.4 * 1 * 2.0] * 3)
    assert term[[0, 1, 2, 4, 6, 7, 8, 9, 10, 11]].abs().sum() == 0
    assert m == {"a2pr/weight": pytest.approx(1.0), "a2pr/gold_target": pytest.approx(1 / 3)}
    term.sum().backward()
    assert logp.grad[3, 0] == pytest.approx(-0.8) and logp.grad[0, 0] == 0


def test_injected_rows_reach_the_regularizer_in_a_run(tmp_path):
    """gt_injection puts the gold in slot 3; the loop passes injected_N; the run logs the share."""
    r = load_recipe("recipes/a2pr.yaml", "tiny", FAST + ["eval.at_start=false", "eval.at_end=false"])
    train(r, str(tmp_path / "run"), say=lambda *a: None)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert [m["injected_frac"] for m in rows] == [0.25, 0.25]   # one of G = 4 per group
    assert all("a2pr/gold_target" in m and m["a2pr/weight"] <= 2 for m in rows)


def test_regularizer_needing_groups_refuses_split_groups():
    with pytest.raises(UserError, match="regularizer 'a2pr' needs whole groups") as e:
        load_recipe("recipes/a2pr.yaml", "tiny", ["train.micro_batch_size=6"])
    assert e.value.where.endswith("train.micro_batch_size")
