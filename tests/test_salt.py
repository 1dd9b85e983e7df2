"""SALT (arXiv 2510.20022) [recon]: the worked examples of papers/next/salt.md §7, the
exactness property (history keys + token-sum aggregation = GRPO's gradient), state keys, and
the loop running it on tool rollouts."""
import json
import math

import pytest
import torch

from rlrecipes.algorithms.advantages import grpo
from rlrecipes.algorithms.losses import ppo_clip, seq_mean_token_mean, seq_mean_token_sum, token_mean
from rlrecipes.algorithms.salt import SALT, action_steps, salt_advantages
from rlrecipes.config import load_recipe
from rlrecipes.errors import UserError
from rlrecipes.run import train
from rlrecipes.tasks.tool_chain import ToolChain

from .conftest import FAST

PAD = 0


def batch(trajectories):
    """ids_BGT and mask_BGT (one group) from trajectories written as strings, one character a
    token: letters are policy tokens (actions), digits observations, e.g. "a1b" = action a,
    observation 1, action b; rows are padded with 0."""
    T = max(map(len, trajectories))
    ids = [[ord(c) for c in s] + [PAD] * (T - len(s)) for s in trajectories]
    mask = [[float(c.isalpha()) for c in s] + [0.0] * (T - len(s)) for s in trajectories]
    return torch.tensor([ids]), torch.tensor([mask])


def per_step(adv_BGT, mask_BGT):
    """Each trajectory's advantage per action step (first token of each run)."""
    return [[adv_BGT[0, g, s].item() for s, _ in action_steps(mask_BGT[0, g].int().tolist())]
            for g in range(mask_BGT.shape[1])]


def population(G):
    """salt's grpo base divides by the unbiased std, the spec's numbers by the population std:
    multiply by std_unbiased / std_population = sqrt(G / (G - 1))."""
    return math.sqrt(G / (G - 1))


def test_action_steps_are_runs_of_policy_tokens():
    assert action_steps([1, 1, 0, 0, 1, 0, 1, 1, 1]) == [(0, 2), (4, 5), (6, 9)]
    assert action_steps([0, 0]) == [] and action_steps([1]) == [(0, 1)]


def test_example_a_shared_first_step_averages():
    """salt.md §7 A: R = [1, 0, 0]; tau1 = a,b; tau2 = a,c; tau3 = d,e (observation 1 after a and
    d). A = [1.414214, -0.707107, -0.707107]; edge a has members {1, 2}: (1.414214 - 0.707107) / 2
    = 0.353553; the second steps and edge d keep their own A."""
    ids, mask = batch(["a1b", "a1c", "d1e"])
    adv, metrics = salt_advantages(torch.tensor([[1.0, 0.0, 0.0]]), mask, ids, eps=0.0)
    got = [[x * population(3) for x in row] for row in per_step(adv, mask)]
    expected = [[0.353553, 1.414214], [0.353553, -0.707107], [-0.707107, -0.707107]]
    assert got == [pytest.approx(row, abs=1e-5) for row in expected]
    assert adv[0, :, 1].tolist() == [0.0, 0.0, 0.0]   # observations get no advantage
    assert metrics["salt/merged_frac"] == pytest.approx(2 / 6)
    assert metrics["salt/edges_per_group"] == 5 and metrics["salt/steps"] == 2
    # RLOO base: A_g = R_g - mean of the others = [1, -0.5, -0.5]; edge a: 0.25
    adv, _ = salt_advantages(torch.tensor([[1.0, 0.0, 0.0]]), mask, ids, base="rloo")
    assert per_step(adv, mask) == [pytest.approx(r) for r in [[0.25, 1.0], [0.25, -0.5], [-0.5, -0.5]]]


def test_example_b_four_trajectories():
    """salt.md §7 B: R = [1, 0, 0, 1] -> A = [1, -1, -1, 1] (population std); edge a = {1, 2, 4}
    -> 1/3; second steps: b after a = {1, 4} -> 1, c -> -1; tau3's d, b -> -1."""
    ids, mask = batch(["a1b", "a1c", "d2b", "a1b"])
    adv, _ = salt_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0]]), mask, ids, eps=0.0)
    got = [[x * population(4) for x in row] for row in per_step(adv, mask)]
    expected = [[1 / 3, 1.0], [1 / 3, -1.0], [-1.0, -1.0], [1 / 3, 1.0]]
    assert got == [pytest.approx(row, abs=1e-6) for row in expected]


def test_example_c_state_keys_change_the_credit():
    """salt.md §7 C, state = the last observation (X = 1, Y = 2): tau1 = a X b (R 1), tau2 =
    d X b, tau3 = a X c, tau4 = d Y c. A = [1.732051, -0.57735 x 3]. History keys keep every
    second step apart; state keys merge (X, b) over tau1 and tau2: (1.732051 - 0.57735) / 2."""
    ids, mask = batch(["a1b", "d1b", "a1c", "d2c"])
    R = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    s, n = 1.732051, -0.57735
    hist, _ = salt_advantages(R, mask, ids, eps=0.0)
    state, _ = salt_advantages(R, mask, ids, merge="state", state="observation", eps=0.0)
    scale = population(4)
    assert [[x * scale for x in r] for r in per_step(hist, mask)] == \
        [pytest.approx(r, abs=1e-5) for r in [[0.57735, s], [n, n], [0.57735, n], [n, n]]]
    assert [[x * scale for x in r] for r in per_step(state, mask)] == \
        [pytest.approx(r, abs=1e-5) for r in [[0.57735, 0.57735], [n, 0.57735], [0.57735, n], [n, n]]]


def test_facts_state_merges_lookup_orders_and_counts_a_trajectory_once():
    """`facts` forgets order: after a->1 then b->2, or b->2 then a->1, the third action c is one
    edge. A trajectory on an edge twice counts once: tau3 = a 1 a 1 a, with observation state
    its second and third actions are both (1, a), shared with tau4's (1, a)."""
    ids, mask = batch(["a1b2c", "b2a1c", "c3"])
    R = torch.tensor([[1.0, 0.0, 0.0]])
    A = grpo(R, eps=1e-6)[0].tolist()
    adv, metrics = salt_advantages(R, mask, ids, merge="state", state="facts")
    assert per_step(adv, mask)[0][2] == pytest.approx((A[0] + A[1]) / 2)
    assert per_step(adv, mask)[1][2] == pytest.approx((A[0] + A[1]) / 2)
    assert metrics["salt/cross_history_frac"] == pytest.approx(2 / 7)   # the two c steps of 7
    hist, metrics = salt_advantages(R, mask, ids)   # history keeps the orders apart
    assert per_step(hist, mask)[0][2] == pytest.approx(A[0]) and metrics["salt/cross_history_frac"] == 0
    ids, mask = batch(["a1a1a", "c1a"])
    R = torch.tensor([[1.0, 0.0]])
    adv, _ = salt_advantages(R, mask, ids, merge="state", state="observation")
    assert per_step(adv, mask)[0] == pytest.approx([grpo(R, eps=1e-6)[0, 0].item(), 0.0, 0.0], abs=1e-6)
    assert per_step(adv, mask)[1] == pytest.approx([grpo(R, eps=1e-6)[0, 1].item(), 0.0], abs=1e-6)


def tabular_logp(W, index, ids_NT):
    """log pi(token_t | all tokens before t) for a tabular policy: one row of logits per distinct
    context (identical contexts share parameters, as in any autoregressive policy)."""
    rows = []
    for ids in ids_NT.tolist():
        logits = torch.stack([W[index.setdefault(tuple(ids[:t]), len(index))] for t in range(len(ids))])
        rows.append(torch.log_softmax(logits, -1).gather(1, torch.tensor(ids)[:, None])[:, 0])
    return torch.stack(rows)


def policy_grad(adv_NT, ids_NT, mask_NT, aggregation):
    W = torch.zeros(64, 128, requires_grad=True)
    torch.manual_seed(0)
    with torch.no_grad():
        W.normal_()
    logp = tabular_logp(W, {}, ids_NT)
    loss_NT, _ = ppo_clip(logp, logp.detach(), adv_NT, mask_NT)
    num, den = aggregation(loss_NT, mask_NT, ids_NT.shape[1])
    (num / den).backward()
    return W.grad


TRAJ = ["a1b2c", "a1b2d", "a1e", "f1b2d", "a1b2c", "f3g"]   # f then 1 reaches a's state
R6 = torch.tensor([[1.0, 0.0, 1.0, 0.0, 1.0, 0.5]])


@pytest.mark.parametrize("aggregation", [token_mean, seq_mean_token_sum])
def test_history_keys_with_token_sums_give_grpos_gradient(aggregation):
    """salt.md §2: merged copies of a history edge have the same tokens in the same context, so
    sum_g A^_e grad log pi = sum_g A_g grad log pi: GRPO's gradient exactly (to float error),
    although the per-token advantages differ."""
    ids, mask = batch(TRAJ)
    salt_adv, metrics = salt_advantages(R6, mask, ids)
    assert metrics["salt/merged_frac"] > 0.5
    grpo_adv = grpo(R6, eps=1e-6)[0][:, None] * mask[0]
    assert not torch.allclose(salt_adv[0], grpo_adv)
    assert torch.allclose(salt_adv[0].sum(), grpo_adv.sum(), atol=1e-5)
    g_salt = policy_grad(salt_adv[0], ids[0], mask[0], aggregation)
    g_grpo = policy_grad(grpo_adv, ids[0], mask[0], aggregation)
    assert (g_salt - g_grpo).abs().max() < 1e-6
    # state keys merge different contexts: the first-order gradient changes
    state_adv, _ = salt_advantages(R6, mask, ids, merge="state", state="observation")
    assert (policy_grad(state_adv[0], ids[0], mask[0], aggregation) - g_grpo).abs().max() > 1e-3


def test_per_sequence_length_normalisation_breaks_the_equivalence():
    """Under seq_mean_token_mean a copy's tokens weigh 1/|o_g|: copies in trajectories of
    different lengths no longer cancel, so history keys change the gradient."""
    ids, mask = batch(TRAJ)
    salt_adv, _ = salt_advantages(R6, mask, ids)
    grpo_adv = grpo(R6, eps=1e-6)[0][:, None] * mask[0]
    diff = policy_grad(salt_adv[0], ids[0], mask[0], seq_mean_token_mean) - \
        policy_grad(grpo_adv, ids[0], mask[0], seq_mean_token_mean)
    assert diff.abs().max() > 1e-3


def test_bad_parameters_are_one_line_errors():
    with pytest.raises(ValueError, match="merge must be one of history, state"):
        SALT(merge="graph")
    with pytest.raises(UserError, match="merge"):
        load_recipe("recipes/salt.yaml", "tiny", ["algorithm.advantage.merge=graph"])


def test_tool_chain_golds_and_metrics():
    task = ToolChain(seed=3)
    rows = task.synthetic("train", 200, seed=0)
    for row in rows[:20]:
        gold = task.gold(row)
        looked = task.sample_metrics(gold, row)
        assert looked["looked_all"] == float(row["sft_skip"] < 0) and looked["guess"] == 1 - looked["looked_all"]
        assert task.score(gold, row) == 1.0 or row["sft_skip"] >= 0
    assert 0.1 < sum(r["sft_skip"] >= 0 for r in rows) / len(rows) < 0.3
    test = {r["prompt"] for r in task.synthetic("test", 50, seed=0)}
    assert not test & {r["prompt"] for r in rows}
    assert task.sample_metrics("<search>x</search>", rows[0]) == {"looked_all": 0.0, "guess": 0.0}


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def test_loop_history_salt_is_grpo_at_the_first_step(tmp_path):
    """On tool rollouts, SALT with history keys and token_mean has GRPO's loss and gradient norm
    at step 1 (same rollouts, ratio 1), although its per-token advantages differ. A cool
    temperature after a short SFT makes some groups share their first actions."""
    runs = {}
    for name, adv in (("grpo", "{fn: grpo, eps: 1.0e-6}"), ("salt", "{fn: salt, merge: history}")):
        r = load_recipe("recipes/salt.yaml", "tiny", FAST + [
            "train.steps=1", "train.group_size=8", f"algorithm.advantage={adv}", "generation.temperature=0.3",
            "stages=[{kind: sft, steps: 120, lr: 3.0e-3, batch_size: 32}, {kind: rl}]"])
        train(r, str(tmp_path / name), say=lambda *a: None)
        runs[name] = _rows(tmp_path / name)[0]
    a, b = runs["grpo"], runs["salt"]
    assert b["salt/merged_frac"] > 0   # some first actions are shared, so the advantages differ
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-7)
    assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5)
