"""TON (arXiv 2505.16854): thought dropout, the empty-thought format and the skip-think metric,
with the spec's worked cases (named.md §4 Tests) and our own."""
import random

import pytest

from rlrecipes.rewards.format import format_reward, skip_think
from rlrecipes.rewards.math import accuracy
from rlrecipes.tasks.arith import Arith
from rlrecipes.transforms import thought_dropout

GOLD = "<think>7+8=15;4+3+1=8</think><answer>85</answer>"


def test_dropout_rate_and_exact_empty_thought():
    rng = random.Random(0)
    outs = [thought_dropout("47+38=", GOLD, {}, rng, p=0.5)[1] for _ in range(10_000)]
    empty = [o for o in outs if o != GOLD]
    assert abs(len(empty) / 10_000 - 0.5) <= 0.01
    assert set(empty) == {"<think>\n\n</think><answer>85</answer>"}
    assert thought_dropout("q", GOLD, {}, rng, p=0.0) == ("q", GOLD)
    assert thought_dropout("q", "<answer>3</answer>", {}, rng, p=1.0) == ("q", "<answer>3</answer>")
    with pytest.raises(ValueError):
        thought_dropout("q", GOLD, {}, rng, p=1.5)


def test_format_accepts_the_empty_thought_and_nothing_trailing():
    cases = {"<think>\n\n</think><answer>5</answer>": 1.0, "<answer>5</answer>": 0.0,
             "<think>\n\n</think><answer>5</answer> and more": 0.0, GOLD: 1.0}
    assert format_reward(None, list(cases)) == list(cases.values())
    assert accuracy(None, ["<think>\n\n</think><answer>5</answer>"], answer=["5"]) == [1.0]


def test_skip_think_ratio_by_difficulty():
    comps = ["<think>\n\n</think><answer>5</answer>", "<think> </think><answer>5</answer>", GOLD, "<answer>5</answer>"]
    assert skip_think(None, comps) == [1.0, 1.0, 0.0, 0.0]
    diff = ["trivial", "hard", "trivial", "hard"]
    assert skip_think(None, comps, only="trivial", difficulty=diff) == [1.0, None, 0.0, None]


def test_trivial_mix_is_labelled_and_disjoint():
    t = Arith(trivial_frac=0.25)
    train, test = t.synthetic("train", 2000, 0), t.synthetic("test", 200, 0)
    assert sum(r["difficulty"] == "trivial" for r in test) == 50
    assert all((r["difficulty"] == "trivial") == (min(r["a"], r["b"]) == 0) for r in train + test)
    assert not {(r["a"], r["b"]) for r in train} & {(r["a"], r["b"]) for r in test}


def test_sft_stage_applies_the_transform_to_every_drawn_example(tmp_path, monkeypatch):
    import torch

    import rlrecipes.sft as sft
    from rlrecipes.config import load_recipe
    from rlrecipes.model import load_tokenizer, resolve_path

    seen = []
    real = sft.sft_batch
    monkeypatch.setattr(sft, "sft_batch", lambda tok, prompts, golds, device: seen.append((prompts, golds))
                        or real(tok, prompts, golds, device))
    r = load_recipe("recipes/ton.yaml", "tiny", ["stages=[{kind: sft, steps: 2, batch_size: 8, "
                                                  "transform: {fn: thought_dropout, p: 1.0}}, {kind: rl}]"])
    task, tok = Arith(trivial_frac=0.25), load_tokenizer(r.model)
    rows = task.synthetic("train", 50, 0)
    sft.run_sft(r, r.stages[0], resolve_path(r.model), tok, task, rows, [task.prompt(x) for x in rows],
                tmp_path / "sft", torch.device("cpu"), format_fn=lambda qs, rows=None: ["Q:" + q for q in qs])
    assert len(seen) == 2 and all(len(g) == 8 for _, g in seen)
    assert all(g.startswith("<think>\n\n</think><answer>") for _, golds in seen for g in golds)
    assert all(p.startswith("Q:") and p.endswith("=") for prompts, _ in seen for p in prompts)  # formatted
    assert (tmp_path / "sft" / "config.json").exists()
