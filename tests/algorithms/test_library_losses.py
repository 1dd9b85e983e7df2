"""Losses and regularizers of the algorithm library, each with the worked example of
../shared/papers/algorithms_{a,b}.md (recomputed there independently) and one case of our own."""
import math

import pytest
import torch

from rlrecipes.algorithms.group_losses import gtpo_weights
from rlrecipes.algorithms.kl import grpo_d_beta
from rlrecipes.algorithms.losses import aggregate
from rlrecipes.algorithms.regularizers import action_segments
from rlrecipes.registry import get

from .test_losses import _trl_loss


def _rec(lp, old, adv, **kw):
    loss, m = get("loss", "rec")(lp, old, adv, torch.ones_like(lp), **kw)
    return loss, m


# ---------------------------------------------------------------- REC (arXiv 2509.24203)

@pytest.mark.parametrize("adv,ratio,mode,kept", [
    (1.0, 1.3, "one-side", False),    # spec: A=+1, rho=1.3, eps_h=0.2 -> masked
    (-1.0, 1.3, "one-side", True),    # spec: A=-1, rho=1.3 -> kept
    (-1.0, 0.7, "one-side", False),   # spec: A=-1, rho=0.7 -> masked
    (1.0, 0.3, "ring", True),         # spec: ring eps'=0.6: A=+1, rho=0.3 <= 0.4 -> kept
    (1.0, 0.3, "two-side", False),    # own: two-side masks rho < 0.8 whatever the sign
    (-1.0, 3.5, "ring", True),        # own: ring, A<0 and rho >= 1 + 2.0 -> kept
    (1.0, 5.0, "none", True),
])
def test_rec_clip_as_mask(adv, ratio, mode, kept):
    lp = torch.tensor([[math.log(ratio)]], requires_grad=True)
    loss, _ = _rec(lp, torch.zeros(1, 1), torch.tensor([adv]), clip_mode=mode)
    loss.sum().backward()
    # l = -A * logp * keep: gradient -A where kept, 0 where masked
    assert lp.grad.item() == pytest.approx(-adv if kept else 0.0)


def test_rec_weights():
    lp = torch.tensor([[math.log(1.5)]])
    old, adv = torch.zeros(1, 1), torch.tensor([2.0])
    for weight, w in [("none", 2.0), ("importance_sampling", 3.0),
                      ("truncated_importance_sampling", 3.0), ("advantage", 2.0 * math.exp(2.0))]:
        loss, _ = _rec(lp, old, adv, clip_mode="none", weight=weight)
        assert loss.item() == pytest.approx(-w * math.log(1.5)), weight
    # TIS truncates at 1 + eps'_h = 3: rho = 4 -> weight 3 A
    loss, _ = _rec(torch.tensor([[math.log(4.0)]]), old, adv, clip_mode="none",
                   weight="truncated_importance_sampling")
    assert loss.item() == pytest.approx(-6.0 * math.log(4.0))


def test_rec_gspo_one_side_uses_the_sequence_ratio():
    # tokens log-ratios [0.5, -0.5]: token ratios 1.65 / 0.61 but sequence ratio exp(0) = 1 -> kept
    lp = torch.tensor([[0.5, -0.5]], requires_grad=True)
    loss, _ = _rec(lp, torch.zeros(1, 2), torch.tensor([1.0]), clip_mode="gspo-one-side")
    loss.sum().backward()
    assert lp.grad.tolist() == [[-1.0, -1.0]]


def test_k2_and_forward_kl():
    term, _ = get("regularizer", "k2")(torch.tensor([[-1.0]]), torch.tensor([[-1.2]]), coef=0.1)
    assert term.item() == pytest.approx(0.004)  # spec: 0.1 * 0.2^2
    term, _ = get("regularizer", "forward_kl")(torch.tensor([[-2.0]]), coef=0.1)
    assert term.item() == pytest.approx(0.2)


# ---------------------------------------------------------------- GSPO (arXiv 2507.18071)

def test_gspo_hand_worked():
    # one sequence, log-ratios [0.1, 0.3] -> s = exp(0.2) = 1.2214, A = 1, clip at 1.2 -> loss -1.2
    lp = torch.tensor([[0.1, 0.3]])
    loss, _ = get("loss", "gspo")(lp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2),
                                  eps_low=0.2, eps_high=0.2)
    assert aggregate("seq_mean_token_mean", loss, torch.ones(1, 2), 2).item() == pytest.approx(-1.2)


def test_gspo_equals_trl_sequence_level():
    # TRL's importance_sampling_level="sequence" with loss_type="grpo" is GSPO
    g = torch.Generator().manual_seed(2)
    N, T = 6, 5
    base = torch.randn(N, T, generator=g) * 0.3 - 1
    old = base + torch.randn(N, T, generator=g) * 0.1
    adv = torch.randn(N, generator=g)
    mask = (torch.arange(T).expand(N, T) < torch.tensor([5, 3, 1, 4, 5, 2]).unsqueeze(1)).float()
    values, grads = [], []
    for which in ("trl", "ours"):
        lp = base.clone().requires_grad_(True)
        if which == "trl":
            value = _trl_loss("grpo", lp, old, old, adv, mask, 0.0, 3e-4, 4e-4, T, level="sequence")
        else:
            loss, _ = get("loss", "gspo")(lp, old, adv, mask)
            value = aggregate("seq_mean_token_mean", loss, mask, T)
        value.backward()
        values.append(value.detach())
        grads.append(lp.grad)
    assert torch.allclose(values[0], values[1], atol=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


# ---------------------------------------------------------------- MDPO, R2VPO, Reg-GRPO

def test_mdpo_worked_example():
    # spec (algorithms_b §4): log rho = [0.2, -0.1, 0], A = [1, -0.5, 0.3], k = 2, K = 10 -> L = -0.29225
    lp = torch.tensor([[0.2], [-0.1], [0.0]])
    loss, m = get("loss", "mdpo")(lp, torch.zeros(3, 1), torch.tensor([1.0, -0.5, 0.3]), torch.ones(3, 1),
                                  step=3, total_steps=10, kl_estimator="rho_log_rho")  # k = step - 1 = 2
    assert m["mdpo_inv_t"] == pytest.approx(1.25)
    assert aggregate("token_mean", loss, torch.ones(3, 1), 1).item() == pytest.approx(-0.29225, abs=1e-5)
    # control variate: KL = 0.051266 - mean(rho - 1) = 0.051266 - (0.22140 - 0.09516 + 0) / 3
    # = 0.009186 -> L = -0.35633 + 1.25 * 0.009186 = -0.34485
    loss, _ = get("loss", "mdpo")(lp, torch.zeros(3, 1), torch.tensor([1.0, -0.5, 0.3]), torch.ones(3, 1),
                                  step=3, total_steps=10)
    assert aggregate("token_mean", loss, torch.ones(3, 1), 1).item() == pytest.approx(-0.34485, abs=1e-4)


def test_mdpo_control_variate_has_no_gradient_at_rho_one_without_advantage():
    lp = torch.zeros(2, 3, requires_grad=True)
    for estimator, expected in (("control_variate", 0.0), ("rho_log_rho", 1.0 / 6)):
        lp.grad = None
        loss, _ = get("loss", "mdpo")(lp, torch.zeros(2, 3), torch.zeros(2), torch.ones(2, 3), step=1,
                                      total_steps=4, kl_estimator=estimator)
        aggregate("token_mean", loss, torch.ones(2, 3), 3).backward()
        assert torch.allclose(lp.grad, torch.full((2, 3), expected)), estimator


def test_mdpo_on_policy_is_policy_gradient():
    # own: rho = 1 -> KL term 0, loss = -mean(A) = -(1 + 3) / 2
    loss, _ = get("loss", "mdpo")(torch.zeros(2, 1), torch.zeros(2, 1), torch.tensor([1.0, 3.0]),
                                  torch.ones(2, 1), step=1, total_steps=5)
    assert aggregate("token_mean", loss, torch.ones(2, 1), 1).item() == pytest.approx(-2.0)


def test_r2vpo_worked_example_and_dual_ascent_state():
    # spec (algorithms_b §7): rho = [1.2, .9, 1.0, 1.1], A = [1,-1,1,-1], lambda 0.5, delta 0.01,
    # eta 1 -> L = -0.04875, lambda_next = 0.5025
    cls = get("loss", "r2vpo")
    fn = cls(delta=0.01, eta=1.0, lambda_init=0.5)
    lp = torch.log(torch.tensor([[1.2], [0.9], [1.0], [1.1]]))
    loss, m = fn(lp, torch.zeros(4, 1), torch.tensor([1.0, -1.0, 1.0, -1.0]), torch.ones(4, 1))
    assert aggregate("token_mean", loss, torch.ones(4, 1), 1).item() == pytest.approx(-0.04875)
    assert m["ratio_var"] == pytest.approx(0.0125)
    assert fn.lam == pytest.approx(0.5025)
    other = cls()
    other.load_state_dict(fn.state_dict())
    assert other.lam == pytest.approx(0.5025)
    # own: variance below delta lowers lambda, never below 0
    fn2 = cls(delta=1.0, eta=1.0, lambda_init=0.2)
    fn2(lp, torch.zeros(4, 1), torch.ones(4), torch.ones(4, 1))
    assert fn2.lam == 0.0


def test_r2vpo_replay_keeps_the_last_k_batches_with_their_behaviour_logprobs():
    from rlrecipes.rollout.generate import Rollout

    def batch(width, value):
        ids = torch.full((2, width), value)
        return (Rollout(torch.ones(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.long), ids,
                        torch.ones(2, width, dtype=torch.long), ["x", "y"], torch.zeros(2, dtype=torch.bool)),
                torch.full((2,), float(value)), torch.full((2, width), -float(value)), torch.full((2,), float(value)))

    fn = get("loss", "r2vpo")(replay=2)
    ro, adv, old, rew = fn.replay_batch(*batch(3, 1), pad_id=0)
    assert len(ro) == 2                                   # nothing kept yet: the fresh batch alone
    ro, adv, old, rew = fn.replay_batch(*batch(2, 2), pad_id=0)
    assert adv.tolist() == [2, 2, 1, 1] and rew.tolist() == [2, 2, 1, 1]
    assert ro.completion_ids_NT.tolist() == [[2, 2, 0], [2, 2, 0], [1, 1, 1], [1, 1, 1]]   # padded to one width
    assert ro.completion_mask_NT[:2, 2].tolist() == [0, 0] and old[:2, 2].tolist() == [0, 0]
    assert old[2:].tolist() == [[-1, -1, -1]] * 2         # the stale batch keeps its own behaviour log-probs
    fn.replay_batch(*batch(2, 3), pad_id=0)
    twin = get("loss", "r2vpo")(replay=2)
    twin.load_state_dict(fn.state_dict())                  # buffer and lambda are checkpointed
    ro, adv, _, _ = twin.replay_batch(*batch(2, 4), pad_id=0)
    assert adv.tolist() == [4, 4, 2, 2, 3, 3]              # K = 2, oldest first: batch 1 has left


def test_reg_grpo_worked_example():
    # spec (algorithms_b §8): rho = [.1, -.2, .05, 0], r = [1,0,1,0] -> L = 0.46330
    lp = torch.tensor([[0.1], [-0.2], [0.05], [0.0]])
    loss, _ = get("loss", "reg_grpo")(lp, torch.zeros(4, 1), torch.ones(4, 1), torch.tensor([1.0, 0, 1, 0]),
                                      group_size=4, eps=1e-8)
    assert aggregate("seq_mean_token_mean", loss, torch.ones(4, 1), 1).item() == pytest.approx(0.46330, abs=1e-4)


def test_reg_grpo_flat_group_is_masked_and_first_step_has_finite_gradient():
    lp = torch.zeros(4, 2, requires_grad=True)  # first update: every rho is 0
    loss, _ = get("loss", "reg_grpo")(lp, torch.zeros(4, 2), torch.ones(4, 2), torch.tensor([1.0, 0, 0, 0]),
                                      group_size=2)
    value = aggregate("seq_mean_token_mean", loss, torch.ones(4, 2), 2)
    value.backward()
    assert torch.isfinite(lp.grad).all()
    assert lp.grad[2:].abs().sum() == 0  # second group r = [0, 0]: no signal, no gradient


# ---------------------------------------------------------------- DisCO (arXiv 2505.12366)

def test_disco_worked_example():
    # spec (algorithms_a §7): s = [-.5(+), -.7(+), -.9(-), -1.1(-)], tau 10, logL -> J = 0.39950
    lp = torch.tensor([[-0.5], [-0.7], [-0.9], [-1.1]])
    r = torch.tensor([1.0, 1.0, 0.0, 0.0])
    loss, m = get("loss", "disco")(lp, lp, torch.ones(4, 1), r, group_size=4, tau=10.0)
    assert m["disco_J"].item() == pytest.approx(0.39950, abs=1e-5)
    assert aggregate("seq_mean_token_mean", loss, torch.ones(4, 1), 1).item() == pytest.approx(-0.39950, abs=1e-5)
    _, mb = get("loss", "disco")(lp, lp, torch.ones(4, 1), r, group_size=4, balanced=True)
    assert mb["disco_J"].item() == pytest.approx(0.4)


def test_disco_kl_penalty_and_one_sided_group():
    # spec: KL = 3e-4, delta 1e-4, beta 1e3 -> penalty 1e3 * (2e-4)^2 = 4e-5; own: a group with
    # only positives contributes no J, so the loss is the penalty alone
    lp = torch.full((2, 1), -1.0)
    old = lp + 3e-4
    loss, _ = get("loss", "disco")(lp, old, torch.ones(2, 1), torch.tensor([1.0, 1.0]), group_size=2)
    assert aggregate("seq_mean_token_mean", loss, torch.ones(2, 1), 1).item() == pytest.approx(4e-5, rel=1e-3)


# ---------------------------------------------------------------- GTPO (arXiv 2508.03772)

def test_gtpo_worked_example():
    # spec (algorithms_a §4): y+ = [5,7,9,2] (A=+1), y- = [5,7,3,2] (A=-1):
    # delta+ = [2,2,1,2], delta- = [0,0,1,0], n_conf = 3; H = 0.5 -> A+ = 0.95, A- = -1.05
    ids, mask = torch.tensor([[5, 7, 9, 2], [5, 7, 3, 2]]), torch.ones(2, 4)
    delta, n_conf = gtpo_weights(ids, mask, torch.tensor([1.0, -1.0]))
    assert delta.tolist() == [[2, 2, 1, 2], [0, 0, 1, 0]] and n_conf.tolist() == [3, 3]
    loss, _ = get("loss", "gtpo")(torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor([1.0, -1.0]), mask,
                                  ids, torch.full((2, 4), 0.5), group_size=2)
    # completion +: -(0.95 * 7 / 4) / 3; completion -: -(-1.05 * 1 / 4) / 3; mean of the two
    expected = (-(0.95 * 7 / 4) / 3 + (1.05 / 4) / 3) / 2
    assert aggregate("seq_mean_token_mean", loss, mask, 4).item() == pytest.approx(expected)


def test_gtpo_right_alignment_and_entropy_filter():
    # own: lengths differ; backward conflict compares last tokens: [4, 8, 2] vs [9, 2] share the
    # final 2 (right-aligned), forward t0 differs (4 vs 9). Completion 2 has entropy 0.9 > 0.7: A=0
    ids = torch.tensor([[4, 8, 2], [9, 2, 0]])
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0]])
    delta, n_conf = gtpo_weights(ids, mask, torch.tensor([1.0, -1.0]))
    assert delta.tolist() == [[1, 1, 2], [1, 0, 0]] and n_conf.tolist() == [1, 1]
    ent = torch.tensor([[0.1, 0.1, 0.1], [0.9, 0.9, 0.0]])
    loss, m = get("loss", "gtpo")(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([1.0, -1.0]), mask,
                                  ids, ent, group_size=2)
    assert m["gtpo_dropped_frac"].item() == 0.5 and loss[1].abs().sum() == 0


# ---------------------------------------------------------------- LLDS, GRPO-D

def test_llds_worked_example():
    # spec (algorithms_a §5): old [-1,-1,-1], logp [-1.2,-0.9,-1.0], A=+1 -> gate 1,
    # penalty (0.2 + 0 + 0)/3 * coef; logp [-1.2,-0.7,-1] (sum +0.1) -> gate 0; A<0 -> 0
    old, mask = torch.full((1, 3), -1.0), torch.ones(1, 3)
    term, _ = get("regularizer", "llds")(torch.tensor([[-1.2, -0.9, -1.0]]), old, torch.tensor([1.0]), mask, coef=0.1)
    assert aggregate("token_mean", term, mask, 3).item() == pytest.approx(0.1 * 0.2 / 3)
    term, _ = get("regularizer", "llds")(torch.tensor([[-1.2, -0.7, -1.0]]), old, torch.tensor([1.0]), mask)
    assert term.abs().sum() == 0
    term, _ = get("regularizer", "llds")(torch.tensor([[-1.2, -0.9, -1.0]]), old, torch.tensor([-1.0]), mask)
    assert term.abs().sum() == 0


def test_llds_action_gate_takes_each_action_between_tool_results():
    # one response, two actions split by a 2-token tool result (mask 0): action 1 has
    # logp - old = [-0.2, +0.1, 0] (sum -0.1: gated, penalty 0.2 on its first token); action 2
    # has [+0.2, 0] (sum +0.2: not gated). The response as a whole rose (+0.1): the response
    # gate penalises nothing, the action gate 0.1 * 0.2.
    old = torch.full((1, 7), -1.0)
    logp = torch.tensor([[-1.2, -0.9, -1.0, -1.0, -1.0, -0.8, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]])
    llds = get("regularizer", "llds")
    term, _ = llds(logp, old, torch.tensor([1.0]), mask, coef=0.1, gate="response")
    assert term.abs().sum() == 0
    term, m = llds(logp, old, torch.tensor([1.0]), mask, coef=0.1, gate="action")
    assert torch.allclose(term, torch.tensor([[0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])) and m["llds_gated_frac"] == 1.0
    # single-turn rollouts: one action, the two gates agree
    single = torch.ones(1, 3)
    a = llds(logp[:, :3], old[:, :3], torch.tensor([1.0]), single, gate="action")[0]
    assert torch.equal(a, llds(logp[:, :3], old[:, :3], torch.tensor([1.0]), single, gate="response")[0])
    assert action_segments(mask).tolist() == [[1, 1, 1, 0, 0, 2, 2]]


def test_grpo_d_schedule():
    # spec (algorithms_b §3): beta_min 0, beta_max 0.02, t 100, w 30
    values = [grpo_d_beta(s, 100, 0.0, 0.02, 0.3) for s in (0, 15, 30, 65, 100)]
    assert values == pytest.approx([0.01, 0.005, 0.0, 0.01, 0.02])
    # own: visual counting range 0.04 -> 0.1; mid 0.07 at s=0
    assert grpo_d_beta(0, 10, 0.04, 0.1) == pytest.approx(0.07)
    term, m = get("regularizer", "grpo_d")(torch.zeros(1, 1), torch.tensor([[math.log(2)]]), torch.ones(1, 1),
                                           step=65, total_steps=100)
    assert m["kl_beta"] == pytest.approx(0.01)
    assert term.item() == pytest.approx(0.01 * (1 - math.log(2)))


# ---------------------------------------------------------------- CAPO (arXiv 2510.00819) [recon]

def test_capo_fisher_quadratic_worked_example():
    # spec (algorithms_b §5): 1 token, V=2, p=[.5,.5], dz=[1,0]: 0.5 - 0.25 = 0.25 -> KL 0.125
    from rlrecipes.algorithms.capo import fisher_quadratic
    q = fisher_quadratic(torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 0.0]]))
    assert q.item() == pytest.approx(0.25) and 0.5 * q.item() == pytest.approx(0.125)


def test_capo_masks_the_sequence_with_the_largest_predicted_shift():
    # own: two one-token sequences, A = +1 both, p uniform over V=2, sampled token 0.
    # coef_s = A (e_0 - p) = [.5, -.5]; h = [1] and [3]: Gram [[1,3],[3,9]]
    # dz_1 = (1 + 3)[.5,-.5] = [2,-2] -> KL = .5 (.5*4 + .5*4 - 0) = 2
    # dz_2 = (3 + 9)[.5,-.5] = [6,-6] -> KL = .5 * 36 = 18: the second is rejected (top 50%)
    from rlrecipes.algorithms.capo import predicted_shift
    h = torch.tensor([[[1.0]], [[3.0]]])
    p = torch.full((2, 1, 2), 0.5)
    ids, adv, mask = torch.zeros(2, 1, dtype=torch.long), torch.tensor([1.0, 1.0]), torch.ones(2, 1)
    kl, dj = predicted_shift(h, p, ids, adv, mask)
    assert kl.tolist() == pytest.approx([2.0, 18.0]) and (dj > 0).all()
    loss, m = get("loss", "capo")(torch.zeros(2, 1), torch.zeros(2, 1), adv, mask, ids, h, p, reject_frac=0.5)
    assert loss[0].item() == pytest.approx(-1.0) and loss[1].item() == 0.0
    assert m["capo_masked_frac"].item() == 0.5
