"""DaGRPO (arXiv 2512.06337; algorithms_b.md §11 [recon]): the distinctiveness-masked pairwise
advantage with hand-worked numbers, the off-policy anchors of all-fail groups, and the
injected-completion path they use (rollout/inject.py): tokens as if sampled, re-scored, and
behaviour log-probs pi_old := pi_theta.detach() (ratio 1 at the first update)."""
from types import SimpleNamespace

import pytest
import torch

from rlrecipes.algorithms.losses import ppo_clip
from rlrecipes.algorithms.pairwise import DaGRPO, dagrpo, p3o
from rlrecipes.logprobs import token_logprobs
from rlrecipes.registry import get
from rlrecipes.rollout.anchors import OffPolicyAnchors, lowest
from rlrecipes.rollout.generate import Rollout
from rlrecipes.rollout.samplers import Batch
from rlrecipes.tiny import build_model, build_tokenizer
from rlrecipes.update import fixed_logprobs


def test_spec_example():
    # algorithms_b.md §11: f = [1.0, 0.95, 0.0], delta 0.1. Pair (0, 1) differs by 0.05 < 0.1 and
    # is masked: A_0 = (1 - 0) = 1.0, A_1 = (0.95 - 0) = 0.95, A_2 = ((0 - 1) + (0 - 0.95)) / 2 = -0.975
    adv = dagrpo(torch.tensor([[1.0, 0.95, 0.0]]), delta=0.1)
    assert adv[0].tolist() == pytest.approx([1.0, 0.95, -0.975], abs=1e-6)
    assert get("advantage", "dagrpo") is DaGRPO
    assert DaGRPO(delta=0.1)(torch.tensor([[1.0, 0.95, 0.0]]))[0].tolist() == pytest.approx([1.0, 0.95, -0.975])


def test_exact_delta_counts_and_homogeneous_groups_are_masked():
    # accuracy + 0.1 format: f = [1.1, 1.0, 0.1, 0.0]; |1.1 - 1.0| = 0.1 = delta counts (float32
    # rounding allowed): A_0 = (0.1 + 1.0 + 1.1) / 3 = 0.7333, A_1 = (-0.1 + 0.9 + 1.0) / 3 = 0.6,
    # A_2 = (-1.0 - 0.9 + 0.1) / 3 = -0.6, A_3 = (-1.1 - 1.0 - 0.1) / 3 = -0.7333
    adv = dagrpo(torch.tensor([[1.1, 1.0, 0.1, 0.0]]), delta=0.1)
    assert adv[0].tolist() == pytest.approx([2.2 / 3, 0.6, -0.6, -2.2 / 3], abs=1e-5)
    # every pair closer than delta: all masked, A = 0 (GRPO would give +-0.87 here)
    assert dagrpo(torch.tensor([[0.50, 0.52, 0.55, 0.51]]), delta=0.1).abs().max() == 0
    # a constant group and a NaN score: no pair, A = 0
    assert dagrpo(torch.tensor([[1.0, 1.0, 1.0]])).abs().max() == 0
    assert dagrpo(torch.tensor([[float("nan"), 1.0, 0.0]]))[0].tolist() == pytest.approx([0.0, 1.0, -1.0])


def test_delta_zero_is_twice_p3o_and_shift_invariant():
    # delta 0 keeps every pair j != i: A_i = mean_{j != i}(f_i - f_j) = 2 * P3O's (r_i - r_j) / 2 mean
    r = torch.tensor([[0.3, 1.0, 0.0, 0.7], [2.0, 2.0, 5.0, 1.0]])
    assert torch.allclose(dagrpo(r, delta=0.0), 2 * p3o(r), atol=1e-6)
    assert torch.allclose(dagrpo(r + 5.0), dagrpo(r), atol=1e-5)
    with pytest.raises(ValueError, match="delta"):
        DaGRPO(delta=-0.1)


# ---- the injected-completion path and the anchors on it ----

TOK = build_tokenizer()


def _rollout(prompts, completions):
    enc = TOK(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    ids = [TOK(c, add_special_tokens=False)["input_ids"] + [TOK.eos_token_id] for c in completions]
    T = max(map(len, ids))
    c = torch.tensor([i + [TOK.pad_token_id] * (T - len(i)) for i in ids])
    m = torch.tensor([[1] * len(i) + [0] * (T - len(i)) for i in ids])
    return Rollout(enc["input_ids"], enc["attention_mask"], c, m, list(completions), torch.zeros(len(ids), dtype=torch.bool))


def _score(prompts, rollout, rows):
    """accuracy (the text holds the row's answer) and a 0/1 format column"""
    acc = [float(f"<answer>{r['answer']}</answer>" in t) for t, r in zip(rollout.texts, rows)]
    fmt = [float(t.startswith("<think>")) for t in rollout.texts]
    return torch.tensor([acc, fmt]).T


def _batch(completions, rows, G):
    prompts = [r["prompt"] for r in rows]
    rollout = _rollout(prompts, completions)
    return Batch(step=1, group_size=G, rows=rows, rollout=rollout, rewards_NK=_score(prompts, rollout, rows),
                 weights=[1.0, 0.1], generate=None, score=_score, format=lambda qs, rows=None: list(qs),
                 pad_id=TOK.pad_token_id, question_of=lambda row: row["prompt"], reward_names=["accuracy", "format"],
                 tokenizer=TOK, gold_of=lambda row: f"<think>{row['a']}+{row['b']}</think><answer>{row['answer']}</answer>")


ROW_A = {"prompt": "2+3=", "answer": "5", "a": 2, "b": 3}
ROW_B = {"prompt": "40+4=", "answer": "44", "a": 40, "b": 4}


def test_anchor_replaces_the_lowest_rollout_of_all_fail_groups_only():
    # group A: every accuracy 0, totals [0.1, 0, 0.1] -> slot 1 (the lowest) gets the gold;
    # group B has a success and is left alone
    comps = ["<think>x</think><answer>6</answer>", "<answer>7</answer>", "<think>y</think><answer>1</answer>",
             "<answer>44</answer>", "<answer>3</answer>", "<answer>9</answer>"]
    batch = _batch(comps, [ROW_A] * 3 + [ROW_B] * 3, G=3)
    before = batch.rollout
    OffPolicyAnchors(num_rows=2, seed=0, metric="accuracy").refine(batch)
    gold = "<think>2+3</think><answer>5</answer>"
    assert batch.injected == [1]
    assert batch.rollout.texts == [comps[0], gold] + comps[2:]
    # tokens: the tokenised gold plus EOS, as a sampled completion would hold them, then padding
    want = TOK(gold, add_special_tokens=False)["input_ids"] + [TOK.eos_token_id]
    row = batch.rollout.completion_ids_NT[1]
    assert row[:len(want)].tolist() == want and (row[len(want):] == TOK.pad_token_id).all()
    assert batch.rollout.completion_mask_NT[1].sum() == len(want) and batch.rollout.loss_mask()[1].sum() == len(want)
    assert not batch.rollout.truncated_N[1]
    # the prompt is kept (left padding may widen, the tokens do not change)
    assert torch.equal(batch.rollout.prompt_ids_NP[1][batch.rollout.prompt_mask_NP[1].bool()],
                       before.prompt_ids_NP[1][before.prompt_mask_NP[1].bool()])
    # re-scored: accuracy 1, format 1; the other rows keep theirs
    assert batch.rewards_NK[1].tolist() == [1.0, 1.0]
    assert batch.rewards_NK[[0, 2, 3, 4, 5], 0].tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert batch.metrics["anchor/all_fail_frac"] == 0.5 and batch.metrics["anchor/reward"] == pytest.approx(1.1)
    # the group now has a positive: f = [0.1, 1.1, 0.1]; with dagrpo the anchor gets
    # mean(1.1 - 0.1, 1.1 - 0.1) = 1.0 and each failure only its pair with the anchor (the two
    # failures are 0 apart, masked): 0.1 - 1.1 = -1.0
    from rlrecipes.rewards.combine import combine
    adv = dagrpo(combine(batch.rewards_NK, batch.weights).view(2, 3))
    assert adv[0].tolist() == pytest.approx([-1.0, 1.0, -1.0], abs=1e-6)


def test_metric_unset_judges_the_total_and_ties_take_the_earliest():
    # with the weighted total as the judge, group A's format points (0.1) are a "success": no anchor
    comps = ["<think>x</think><answer>6</answer>", "<answer>7</answer>", "<answer>1</answer>"]
    batch = _batch(comps, [ROW_A] * 3, G=3)
    OffPolicyAnchors(num_rows=1, seed=0).refine(batch)
    assert batch.injected == [] and batch.metrics["anchor/all_fail_frac"] == 0.0
    assert lowest(torch.tensor([0.0, 0.0, float("nan"), 0.0]), 2) == [2, 0]
    with pytest.raises(ValueError, match="not one of the recipe's rewards"):
        OffPolicyAnchors(num_rows=1, seed=0, metric="acc").refine(_batch(comps, [ROW_A] * 3, G=3))


def test_injected_logprobs_are_teacher_forced_and_the_first_ratio_is_one():
    # pi_old := pi_theta.detach(): the trainer computes the behaviour log-probs of every row with
    # the current policy before the first update (fixed_logprobs), so for the injected row they
    # equal the log-probs the loss sees at the first update and the PPO ratio is exactly 1.
    torch.manual_seed(0)
    model = build_model(TOK, hidden_size=32, layers=1, heads=2, kv_heads=1, intermediate_size=64, seed=0)
    comps = ["<answer>6</answer>", "<answer>7</answer>"]
    batch = _batch(comps, [ROW_A] * 2, G=2)
    OffPolicyAnchors(num_rows=1, seed=0, metric="accuracy").refine(batch)
    r, i = batch.rollout, batch.injected[0]
    ctx = SimpleNamespace(recipe=SimpleNamespace(generation=SimpleNamespace(temperature=1.0),
                                                 train=SimpleNamespace(prefix_sharing=False)))
    old_NT = fixed_logprobs(ctx, model, r, [[0, 1]])
    logp_NT, _ = token_logprobs(model, r.prompt_ids_NP, r.prompt_mask_NP, r.completion_ids_NT, r.completion_mask_NT)
    # teacher forcing by hand: log-softmax over prompt + gold + EOS, read at each gold token
    p = TOK(ROW_A["prompt"], add_special_tokens=False)["input_ids"]
    c = TOK(batch.rollout.texts[i], add_special_tokens=False)["input_ids"] + [TOK.eos_token_id]
    with torch.no_grad():
        logits = model(torch.tensor([p + c])).logits[0].float()
    by_hand = torch.log_softmax(logits[len(p) - 1:-1], -1).gather(1, torch.tensor(c)[:, None])[:, 0]
    n = len(c)
    assert torch.allclose(logp_NT[i, :n].detach(), by_hand, atol=1e-5)
    assert torch.allclose(old_NT[i, :n], logp_NT[i, :n].detach(), atol=0)
    mask = r.loss_mask().float()
    adv = torch.tensor([-1.0, 1.0]) if i == 1 else torch.tensor([1.0, -1.0])
    loss_NT, m = ppo_clip(logp_NT, old_NT, adv, mask)
    assert m["ratio_mean"].item() == pytest.approx(1.0, abs=1e-6) and m["clip_frac"].item() == 0.0
    # with ratio 1 the surrogate's gradient is that of -A * logp (on-policy policy gradient)
    g1 = torch.autograd.grad((loss_NT * mask).sum(), model.parameters(), retain_graph=True, allow_unused=True)
    g2 = torch.autograd.grad((-adv[:, None] * logp_NT * mask).sum(), model.parameters(), allow_unused=True)
    assert all((a is None and b is None) or torch.allclose(a, b, atol=1e-6) for a, b in zip(g1, g2))


def test_inject_without_tokenizer_is_an_error():
    batch = _batch(["<answer>6</answer>", "<answer>7</answer>"], [ROW_A] * 2, G=2)
    batch.tokenizer = None
    with pytest.raises(RuntimeError, match="tokenizer"):
        batch.inject([0], ["<answer>5</answer>"])
