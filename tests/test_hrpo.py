"""MasHost HRPO (arXiv 2506.08507) on the mas_plan task: the executor's rules, the two reward
levels, the estimator's uncentred variant, and the token spans a plan's decisions land on."""
import math

import pytest
import torch

from rlrecipes.algorithms.token_credit import hrpo
from rlrecipes.rewards.dense import char_ends, token_spans
from rlrecipes.rewards.mas_plan import mas_outcome, mas_rationality
from rlrecipes.tasks.mas_plan import MasPlan, accuracy, decisions, needed, rationality
from rlrecipes.tiny import build_tokenizer


def test_executor_needs_roles_by_query_shape():
    assert needed("12+5") == ["sol"]
    assert needed("7*8") == ["cal", "sol"]
    assert needed("3+4-5") == ["pln", "sol"]
    assert needed("7*8+3") == ["pln", "cal", "sol", "ver"]


def test_rationality_and_accuracy_by_hand():
    """Query 7*8 needs cal, sol. Plan ver, cal, sol, cal, crt, xyz: ver before any solver (-1),
    cal ok, sol ok, cal again (-1), crt unneeded (-1), xyz unknown (-1). Accuracy 1: cal and
    sol are there (the early verifier would not have counted anyway)."""
    need = ["cal", "sol"]
    roles = ["ver", "cal", "sol", "cal", "crt", "xyz"]
    assert rationality(roles, need) == [-1, 0, 0, -1, -1, -1]
    assert accuracy(roles, need) == 1.0
    # a verifier counts only after a solver: ver, sol misses the needed verifier
    assert accuracy(["pln", "cal", "ver", "sol"], needed("7*8+3")) == 0.0
    assert accuracy(["pln", "cal", "sol", "ver"], needed("7*8+3")) == 1.0


def test_decisions_end_on_each_role():
    text = "ok<answer>sol, cal</answer>"
    #        0123456789012345678
    # block text "sol, cal" starts at 10: "sol" ends at 13, " cal" at 18
    assert decisions(text) == [("sol", 13), ("cal", 18)]
    assert decisions("<answer> </answer>") == [] and decisions("sol") is None


def test_rewards_outcome_and_segments():
    """R = acc - 0.1 x agents; rationality one segment per decision."""
    comps = ["<answer>cal,sol</answer>", "<answer>cal,sol,sol</answer>", "<answer>sol</answer>", "none"]
    need = ["cal,sol"] * 4
    assert mas_outcome(None, comps, need) == pytest.approx([0.8, 0.7, -0.1, 0.0])
    segs = mas_rationality(None, comps, need)
    assert [s.parts for s in segs] == [[(11, 0.0), (15, 0.0)], [(11, 0.0), (15, 0.0), (19, -1.0)],
                                       [(11, 0.0)], []]
    assert segs[1] == -1.0
    with pytest.raises(ValueError, match="cost"):
        mas_outcome(None, comps, need, cost=-1)


def test_hrpo_uncentred_action_reward():
    """action_baseline none: the action term is lam x a_{g,t} itself. Group R = [1, 0, 2]: the
    GRPO part (R - 1) / (1 + 1e-4); scores g0 [1, -1], g1 [0], g2 [-1, 0, 0]; lam 0.5 (same
    numbers as tests/test_credit.py's centred example). g0: +0.5 on tokens 0-1, -0.5 on 2-3;
    g2: -0.5 on token 0, and its lone third decision now counts (0 x 0.5 = 0)."""
    mask = torch.ones(1, 3, 6)
    seg = [[[None, [(0, 2, 1.0), (2, 4, -1.0)]], [None, [(0, 3, 0.0)]],
            [None, [(0, 1, -1.0), (1, 2, 0.0), (2, 6, 0.0)]]]]
    adv = hrpo(torch.tensor([[1.0, 0.0, 2.0]]), seg, mask, ["acc", "ration"], "ration", lam=0.5,
               action_baseline="none")
    g = 1 / (1 + 1e-4)
    assert adv[0, 0].tolist() == pytest.approx([0.5, 0.5, -0.5, -0.5, 0, 0])
    assert adv[0, 1].tolist() == pytest.approx([-g] * 6)
    assert adv[0, 2].tolist() == pytest.approx([g - 0.5, g, g, g, g, g])
    with pytest.raises(ValueError, match="action_baseline"):
        hrpo(torch.zeros(1, 3), seg, mask, ["acc", "ration"], "ration", action_baseline="mean")


def test_plan_decisions_map_to_their_role_tokens():
    """With the character tokenizer, "<answer>" is one token: the plan <answer>sol,sol</answer>
    has tokens [<answer>, s, o, l, ',', s, o, l, </answer>]; decision 0 ends on the first 'l'
    (position 3), decision 1 on the second (7); the closing tag is in no decision."""
    tok = build_tokenizer()
    text = "<answer>sol,sol</answer>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    keep = [True] * len(ids)
    parts = mas_rationality(None, [text], ["sol"])[0].parts
    assert parts == [(11, 0.0), (15, -1.0)]
    assert token_spans(char_ends(tok, ids, keep), keep, parts) == [(0, 4, 0.0), (4, 8, -1.0)]


def test_task_splits_golds_and_metrics():
    task = MasPlan(noisy_gold_frac=0.4)
    train, test = task.synthetic("train", 500, 0), task.synthetic("test", 100, 0)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    noisy = [r for r in train if r["gold_team"] != r["needed"]]
    assert 0.3 < len(noisy) / len(train) < 0.5
    for r in noisy:   # one extra role, the needed ones kept in order
        extra = r["gold_team"].split(",")
        assert len(extra) == len(r["needed"].split(",")) + 1
        assert accuracy(extra, r["needed"].split(",")) == 1.0
    row = {"needed": "cal,sol", "answer": "cal,sol"}
    assert task.score("<answer>cal,sol</answer>", row) == 1.0
    assert task.score("<answer>cal,sol,crt</answer>", row) == 0.0
    m = task.sample_metrics("<answer>cal,sol,crt</answer>", row)
    assert m["acc"] == 1.0 and m["agents"] == 3 and m["redundant"] == pytest.approx(1 / 3) and m["any_redundant"] == 1
    assert math.isnan(task.sample_metrics("nothing", row)["redundant"])
    with pytest.raises(ValueError, match="noisy_gold_frac"):
        MasPlan(noisy_gold_frac=2.0)
