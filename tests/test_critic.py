"""GUI-Critic-R1 / S-GRPO (arXiv 2506.04614): format, verdict and suggestion rewards on the
worked example of next/gui_critic_r1.md §7, the recon weighting of algorithms_b.md §18, the
critic task and its eval metrics (verdict F1, suggestion validity)."""
import math

import pytest
import torch

from rlrecipes.algorithms.advantages import grpo
from rlrecipes.config import load_recipe
from rlrecipes.errors import UserError
from rlrecipes.registry import get
from rlrecipes.rewards.combine import combine
from rlrecipes.rewards.critic import critic_format, critic_suggestion, critic_verdict, parse_critique

from .conftest import RECIPES

# Item "47+38=75?": label Incorrect, gold suggestion 85 (gui_critic_r1.md §7).
G4 = ["<think>7+8=15;4+3+1=8</think><score>Incorrect</score><suggestion>85</suggestion>",   # right critique
      "<think>7+8=15</think><score>Incorrect</score><suggestion>75</suggestion>",           # lazy: no fix
      "<think>ok</think><score>Correct</score><suggestion>85</suggestion>",                 # wrong verdict
      "<score>Incorrect</score><suggestion>85</suggestion>"]                                # no thought
COLS = dict(label=["Incorrect"] * 4, suggestion=["85"] * 4)


def rewards(**suggestion_params):
    return [critic_format(None, G4), critic_verdict(None, G4, **COLS),
            critic_suggestion(None, G4, **COLS, **suggestion_params)]


def test_worked_example_rewards_and_grpo_advantages():
    fmt, verdict, sug = rewards()
    assert (fmt, verdict, sug) == ([1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 1, 0])   # strict: no layout, no credit
    r_G = combine(torch.tensor([fmt, verdict, sug], dtype=torch.float32).T, [1.0, 1.0, 1.0])
    assert r_G.tolist() == [3, 2, 2, 0]
    # mean 1.75, unbiased std sqrt(4.75 / 3) = 1.2583; eps 1e-4
    assert grpo(r_G.view(1, 4)).view(-1).tolist() == pytest.approx([0.9933, 0.1987, 0.1987, -1.3906], abs=1e-4)
    # without the suggestion reward the lazy critique (2) scores as the right one (1)
    r2 = combine(torch.tensor([fmt, verdict], dtype=torch.float32).T, [1.0, 1.0])
    assert r2.tolist() == [2, 2, 1, 0]
    assert grpo(r2.view(1, 4)).view(-1).tolist() == pytest.approx([0.7833, 0.7833, -0.2611, -1.3054], abs=1e-4)


def test_gates_give_none_so_combine_skips_the_term():
    sug = critic_suggestion(None, G4, **COLS, gate="verdict")
    assert sug[:3] == [1.0, 0.0, None]          # critique 3's verdict is wrong: no suggestion term
    assert combine(torch.tensor([[1.0, 0.0, math.nan]]), [1.0, 1.0, 1.0]).item() == 1.0
    assert critic_suggestion(None, G4[:1], label=["Correct"], suggestion=["85"], gate="incorrect") == [None]


def test_recon_weighting_of_the_first_spec():
    """algorithms_b.md §18: r = 0.1 fmt + 1.0 [verdict] + 0.5 [label Incorrect] sim; fmt 1,
    right verdict, label Incorrect, sim 1 -> 1.6."""
    fmt, verdict, sug = (f[0] for f in rewards(gate="incorrect"))
    assert combine(torch.tensor([[fmt, verdict, sug]]), [0.1, 1.0, 0.5]).item() == pytest.approx(1.6)


def test_lenient_parsing_and_matching():
    assert parse_critique(G4[3]) == (None, None)
    assert parse_critique(G4[3], strict=False) == ("Incorrect", "85")
    assert parse_critique("<think></think><score>maybe</score><suggestion>1</suggestion>") == (None, "1")
    assert critic_verdict(None, [G4[3]], label=["Incorrect"], strict=False) == [1.0]
    text = ["<think>x</think><score>Incorrect</score><suggestion>85.0</suggestion>"]
    assert critic_suggestion(None, text, label=["Incorrect"], suggestion=["85"]) == [0.0]
    assert critic_suggestion(None, text, label=["Incorrect"], suggestion=["85"], match="numeric") == [1.0]


def judge_prefix(preds, golds):
    """A stand-in for the authors' LLM judge: "similar" when the first characters agree."""
    return [p[:1] == g[:1] for p, g in zip(preds, golds)]


def test_judge_is_called_once_on_the_parsed_suggestions():
    calls = []

    def spy(preds, golds):
        calls.append(list(preds))
        return judge_prefix(preds, golds)
    import tests.test_critic as me
    me.spy = spy
    out = critic_suggestion(None, G4, **COLS, match="judge", judge="tests.test_critic:spy")
    assert out == [1.0, 0.0, 1.0, 0.0] and calls == [["85", "75", "85"]]   # the unparsed 4th is not asked
    with pytest.raises(ValueError, match="judge"):
        critic_suggestion(None, G4, **COLS, match="judge")


def test_bad_gate_is_a_one_line_error_naming_the_field(tmp_path):
    from rlrecipes.validate import check_components
    path = tmp_path / "gui_critic_r1.yaml"
    path.write_text((RECIPES / "gui_critic_r1.yaml").read_text().replace("gate: none", "gate: sometimes"))
    with pytest.raises(UserError, match=r"rewards\[2\]\.gate") as err:
        check_components(load_recipe(path))
    assert "\n" not in str(err.value)


def test_critic_task_rows_golds_and_metrics():
    task = get("task", "critic_arith")(max_operand=49)
    test = task.synthetic("test", 200, seed=0)
    train = task.synthetic("train", 2000, seed=1)
    assert {(r["a"], r["b"]) for r in test}.isdisjoint({(r["a"], r["b"]) for r in train})
    assert 70 < sum(r["label"] == "Incorrect" for r in test) < 130
    lazy = [r for r in train if r["label"] == "Incorrect" and r["lazy"]]
    assert 0.35 < len(lazy) / sum(r["label"] == "Incorrect" for r in train) < 0.65
    for row in test + train[:200]:
        assert (row["label"] == "Correct") == (int(row["proposed"]) == row["a"] + row["b"])
        assert row["prompt"] == f"{row['a']}+{row['b']}={row['proposed']}?"
        gold = task.gold(row)
        assert critic_format(None, [gold]) == [1.0]
        right = not row["lazy"] or row["label"] == "Correct"
        assert task.score(gold, row) == float(right)
        m = task.sample_metrics(gold, row)
        assert m["verdict_acc"] == 1.0 and m["sv"] == float(right) and m["format"] == 1.0
    row = next(r for r in test if r["label"] == "Correct")
    assert math.isnan(task.sample_metrics(task.gold(row), row)["sv_incorrect"])
    with pytest.raises(ValueError, match="wrong_frac"):
        get("task", "critic_arith")(wrong_frac=0.0)
