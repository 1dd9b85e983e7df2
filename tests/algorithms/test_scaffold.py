"""Scaf-GRPO hint scaffolding (arXiv 2510.19807): the spec's worked examples (named.md §3 Tests
a-e) and cases of our own, on a fake generator and scorer so every number is known."""
import pytest
import torch

from rlrecipes.registry import get
from rlrecipes.rollout.generate import Rollout
from rlrecipes.rollout.samplers import Batch
from rlrecipes.rollout.generate import replace_rows
from rlrecipes.rollout.scaffold import ScaffoldHints, hint_levels, hinted_question, lowest_success
from rlrecipes.tasks.arith import Arith

PAD = 0
ROW = {"prompt": "q", "answer": "7",
       "knowledge_components_parts": ["k1", "k2", "k3", "k4"],
       "planning_skeleton_parts": ["p1", "p2", "p3", "p4"],
       "solution_breakdown_parts": ["s1", "s2", "s3", "s4"]}


def _rollout(n: int, prompt_len: int = 2, comp_len: int = 3, first_id: int = 10) -> Rollout:
    ids = torch.arange(first_id, first_id + n * comp_len).view(n, comp_len)
    return Rollout(torch.full((n, prompt_len), 5), torch.ones(n, prompt_len, dtype=torch.long), ids,
                   torch.ones(n, comp_len, dtype=torch.long), [f"c{i}" for i in range(n)],
                   torch.zeros(n, dtype=torch.bool))


class Fake:
    """generate: one completion per prompt, text = the prompt, so `score` can see the hint level;
    the hinted prompt is 5 tokens long; score: 1 for prompts whose hint level is in `wins`."""

    def __init__(self, wins):
        self.wins, self.calls = wins, []

    def generate(self, prompts):
        self.calls.append(prompts)
        r = _rollout(len(prompts), prompt_len=5, comp_len=2, first_id=100)
        r.texts = list(prompts)
        return r

    def score(self, prompts, rollout, rows):
        return torch.tensor([[1.0 if any(w in t for w in self.wins) else 0.0] for t in rollout.texts])


def _batch(rewards, fake, step=60, G=8):
    n = len(rewards)
    return Batch(step=step, group_size=G, rows=[ROW] * n, rollout=_rollout(n),
                 rewards_NK=torch.tensor(rewards, dtype=torch.float32).view(n, 1), weights=[1.0],
                 generate=fake.generate, score=fake.score, format=lambda qs, rows=None: qs, pad_id=PAD,
                 question_of=lambda row: row["prompt"])


def _sampler(**kw):
    return ScaffoldHints(num_rows=10, seed=0, **kw)


def test_levels_follow_the_code_layout():
    levels = hint_levels(ROW)  # code default: knowledge 1-4 then solution 1-4 (planning off)
    assert [(t, k) for t, k, _ in levels] == [("knowledge", k) for k in range(1, 5)] + [("solution", k) for k in range(1, 5)]
    assert levels[2][2] == "k1 k2 k3"
    assert hinted_question("What is 2+5?", "solution", "s1 s2") == "Question: What is 2+5?\nSolution Hints: s1 s2"
    assert len(hint_levels(ROW, ("knowledge", "planning", "solution"))) == 12  # the paper's 3 tiers
    assert hint_levels({**ROW, "solution_breakdown_parts": ["a", "b"]}, ("solution",)) == [
        ("solution", 1, "a"), ("solution", 2, "a b")]


def test_spec_a_replacement_and_verl_advantages():
    # (a) 8 failures; the level-6 (solution 2) sample is right -> rewards [1,0,...,0] with the
    # replacement at index 0; verl GRPO (eps 1e-6): mean 0.125, unbiased std 0.35355 ->
    # A = 2.4749 for it and -0.35355 for the others
    fake, batch = Fake(wins=["s1 s2"]), _batch([0.0] * 8, Fake([]))
    batch.generate, batch.score = fake.generate, fake.score
    _sampler(start_step=50).refine(batch)
    assert batch.rewards_NK.flatten().tolist() == [1.0] + [0.0] * 7
    adv = get("advantage", "grpo")(batch.rewards_NK.view(1, 8), eps=1e-6)
    assert adv[0, 0].item() == pytest.approx(2.4749, abs=1e-4)
    assert adv[0, 1:].tolist() == pytest.approx([-0.35355] * 7, abs=1e-5)
    assert batch.rollout.texts[0] == "Question: q\nSolution Hints: s1 s2"  # the lowest winner (s1 s2 k...)
    assert batch.metrics["scaf/all_fail_frac"] == 1.0 and batch.metrics["scaf/all_fail_after"] == 0.0
    assert batch.metrics["scaf/level_mean"] == 6.0 and batch.metrics["scaf/rescued_by/solution"] == 1.0


def test_spec_b_no_hints_until_the_exemption_ends():
    fake = Fake(wins=["s1"])
    batch = _batch([0.0] * 8, fake, step=50)
    _sampler(start_step=50).refine(batch)
    assert fake.calls == [] and batch.rewards_NK.sum() == 0
    assert batch.metrics == {"scaf/all_fail_frac": 1.0, "scaf/all_fail_after": 1.0}


def test_spec_c_groups_with_a_success_are_untouched():
    fake = Fake(wins=["k1"])
    rewards = [0.0] * 8 + [0.0] * 7 + [1.0]   # group 0 all-fail, group 1 solved once
    batch = _batch(rewards, fake)
    before = batch.rollout
    _sampler(start_step=0).refine(batch)
    assert len(fake.calls) == 1 and len(fake.calls[0]) == 8  # 8 levels of group 0 only, one generate
    assert batch.rewards_NK.flatten().tolist() == [1.0] + [0.0] * 14 + [1.0]
    assert torch.equal(batch.rollout.completion_ids_NT[8:, :3], before.completion_ids_NT[8:])
    assert batch.metrics["scaf/all_fail_frac"] == 0.5 and batch.metrics["scaf/level_mean"] == 1.0


def test_spec_d_lowest_successful_level_wins():
    assert lowest_success([0, 0, 1, 1, 0, 1]) == 2  # level 3 (one-based)
    assert lowest_success([0, float("nan"), 0]) is None
    assert lowest_success([0.05, 0.5], threshold=0.1) == 1


def test_no_success_leaves_the_group_failing():
    batch = _batch([0.0] * 8, Fake(wins=[]))
    _sampler(start_step=0).refine(batch)
    assert batch.rewards_NK.sum() == 0 and batch.metrics["scaf/hint_success"] == 0.0
    assert batch.rollout.texts[0] == "c0"


def test_spec_e_hint_tokens_are_prompt_and_stay_out_of_the_loss():
    # the replaced row carries the 5-token hinted prompt (left-padded batch of width 5) and only
    # its 2 response tokens in the completion mask; the other rows are re-padded, not changed
    batch = _batch([0.0] * 8, Fake(wins=["k1"]))
    _sampler(start_step=0).refine(batch)
    r = batch.rollout
    assert r.prompt_ids_NP.shape == (8, 5) and r.completion_ids_NT.shape == (8, 3)
    assert r.prompt_mask_NP[0].tolist() == [1] * 5 and r.prompt_mask_NP[1].tolist() == [0, 0, 0, 1, 1]
    assert r.completion_ids_NT[0].tolist() == [100, 101, PAD] and r.completion_mask_NT[0].tolist() == [1, 1, 0]
    assert r.completion_ids_NT[1].tolist() == [13, 14, 15] and r.completion_mask_NT[1].tolist() == [1, 1, 1]


def test_replace_hint_prompt_and_replace_num_two():
    batch = _batch([0.0] * 8, Fake(wins=["k1"]))
    _sampler(start_step=0, replace_hint_prompt=True).refine(batch)
    assert batch.rollout.prompt_mask_NP[0].tolist() == [0, 0, 0, 1, 1]  # original prompt kept
    assert batch.rollout.completion_ids_NT[0, :2].tolist() == [100, 101]
    batch = _batch([0.0] * 8, Fake(wins=["k1"]))
    _sampler(start_step=0, replace_num=2).refine(batch)   # "6+1+1"
    assert batch.rewards_NK.flatten().tolist() == [1.0, 1.0] + [0.0] * 6
    assert batch.rollout.prompt_mask_NP[0].sum() == 5 and batch.rollout.prompt_mask_NP[1].sum() == 2


def test_replace_rows_own_case_wider_original():
    base, src = _rollout(2, prompt_len=4, comp_len=5), _rollout(1, prompt_len=2, comp_len=1, first_id=90)
    out = replace_rows(base, [1], src, [0], PAD)
    assert out.prompt_mask_NP[1].tolist() == [0, 0, 1, 1] and out.completion_ids_NT[1].tolist() == [90, 0, 0, 0, 0]
    assert torch.equal(out.completion_ids_NT[0], base.completion_ids_NT[0])


def test_joiner_and_template_for_the_tiny_scratchpad_layout():
    row = {"prompt": "864+394=", **Arith.hint_parts(864, 394)}
    levels = hint_levels(row, ("solution",), joiner="")
    assert [h for *_, h in levels] == ["<think>4+4=8", "<think>4+4=8;6+9=15", "<think>4+4=8;6+9=15;8+3+1=12",
                                       "<think>4+4=8;6+9=15;8+3+1=12;0+0+1=1"]
    assert hinted_question("864+394=", "solution", levels[1][2], "{question}{hints}") == "864+394=<think>4+4=8;6+9=15"


def test_replacements_flow_through_the_real_loop(tmp_path):
    # every unhinted group fails and level 1 always succeeds: 4 groups replaced per step, their
    # longer hinted prompts re-padded into the batch, then old/new log-probs and an update
    import json
    import math

    from rlrecipes.config import load_recipe
    from rlrecipes.run import train

    from ..conftest import FAST
    overrides = FAST + ["eval.at_start=false", "eval.at_end=false", "algorithm.sampler.start_step=0",
                        "rewards=[{fn: 'tests.user_rewards:hinted_prompt_reward'}]"]
    train(load_recipe("recipes/scaf_grpo.yaml", "tiny", overrides), str(tmp_path / "run"), say=lambda *a: None)
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "loss" in s]
    assert len(steps) == 2
    for s in steps:
        assert s["scaf/all_fail_frac"] == 1.0 and s["scaf/hint_success"] == 1.0 and s["scaf/all_fail_after"] == 0.0
        assert s["scaf/level_mean"] == 1.0 and s["reward_mean"] == 0.25  # one of each group's 4
        assert math.isfinite(s["loss"]) and s["grad_norm"] > 0
    assert (tmp_path / "run" / "plots" / "scaffold.png").exists()


def test_authors_parquet_layout_loads_with_hints(tmp_path):
    # verl-style parquet as in hkuzxc/scaf-grpo-dataset: a chat-list prompt, the answer nested in
    # reward_model, hint parts as list columns; the loader maps them and the sampler reads them
    import datasets

    from rlrecipes.config import DataConfig
    from rlrecipes.errors import UserError
    from rlrecipes.tasks.base import Task
    from rlrecipes.tasks.loaders import load_splits
    rows = [{"data_source": "deepscaler", "prompt": [{"role": "system", "content": "Reason step by step."},
                                                     {"role": "user", "content": f"What is {i}+{i}?"}],
             "reward_model": {"ground_truth": str(2 * i), "style": "rule"},
             "knowledge_components_parts": ["k1", "k2"], "planning_skeleton_parts": ["p1"],
             "solution_breakdown_parts": ["s1", "s2", "s3"]} for i in range(6)]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "train.parquet"))
    data = DataConfig(task="arith", source={"path": str(tmp_path / "train.parquet")},
                      fields={"answer": "reward_model.ground_truth"}, test_size=2)
    train, test = load_splits(data, Task(), seed=0)
    row = train[0]
    assert row["prompt"].startswith("What is ") and row["answer"] == str(2 * int(row["prompt"].split()[2].split("+")[0]))
    assert [h for *_, h in hint_levels(row)] == ["k1", "k1 k2", "s1", "s1 s2", "s1 s2 s3"]
    bad = DataConfig(task="arith", source={"path": str(tmp_path / "train.parquet")},
                     fields={"answer": "reward_model.truth"}, test_size=2)
    with pytest.raises(UserError, match="data.fields.answer: 'reward_model.truth' does not lead to a value"):
        load_splits(bad, Task(), seed=0)
