"""GRPO and Dr.GRPO advantages: hand-worked numbers and equality with TRL's computation."""
import pytest
import torch

from rlrecipes.registry import get


def test_grpo_worked_example():
    # Dr.GRPO paper example (algorithms_a §14): r = [1,0,0,0]; mean 0.25; unbiased std 0.5
    # -> A = [0.75, -0.25, -0.25, -0.25] / (0.5 + 1e-4)
    adv = get("advantage", "grpo")(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    expected = torch.tensor([[0.75, -0.25, -0.25, -0.25]]) / 0.5001
    assert torch.allclose(adv, expected, atol=1e-7)


def test_grpo_own_case_two_groups_and_constant_group():
    # group 1: r = [2, 4]: mean 3, unbiased std sqrt(2) -> A = [-1, 1] / (1.41421 + eps)
    # group 2: all equal -> A = 0 (std 0, numerator 0; eps keeps it from being 0/0)
    adv = get("advantage", "grpo")(torch.tensor([[2.0, 4.0], [5.0, 5.0]]), eps=1e-4)
    assert torch.allclose(adv[0], torch.tensor([-1.0, 1.0]) / (2 ** 0.5 + 1e-4))
    assert torch.equal(adv[1], torch.zeros(2))


def test_grpo_batch_scale_uses_std_of_all_rewards():
    r = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # centred per group: [0.5, -0.5], [0, 0]; batch std of [1,0,1,1] (unbiased) = 0.5
    adv = get("advantage", "grpo")(r, scale="batch", eps=0.0)
    assert torch.allclose(adv, torch.tensor([[1.0, -1.0], [0.0, 0.0]]))


def test_dr_grpo_worked_example():
    adv = get("advantage", "dr_grpo")(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    assert torch.allclose(adv, torch.tensor([[0.75, -0.25, -0.25, -0.25]]))


def trl_advantages(rewards_flat, G, scale):
    """The lines of TRL's GRPOTrainer._generate_and_score_completions (sum_then_normalize) that
    turn rewards into advantages, with TRL's own nanstd."""
    from trl.trainer.utils import nanstd
    mean_g = torch.nanmean(rewards_flat.view(-1, G), dim=1).repeat_interleave(G, dim=0)
    if scale in ("group", "none"):
        std = nanstd(rewards_flat.view(-1, G), dim=1).repeat_interleave(G, dim=0)
    else:
        std = nanstd(rewards_flat).expand_as(rewards_flat)
    adv = rewards_flat - mean_g
    if scale != "none":
        adv = adv / (std + 1e-4)
    return adv


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_equals_trl(scale):
    g = torch.Generator().manual_seed(0)
    rewards_BG = torch.rand(6, 8, generator=g).round(decimals=1)
    ours = get("advantage", "grpo")(rewards_BG, scale=scale)
    theirs = trl_advantages(rewards_BG.reshape(-1), 8, scale).view(6, 8)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_dr_grpo_equals_trl_scale_none():
    rewards_BG = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.2, 0.4, 0.0, 0.0]])
    theirs = trl_advantages(rewards_BG.reshape(-1), 4, "none").view(2, 4)
    assert torch.allclose(get("advantage", "dr_grpo")(rewards_BG), theirs, atol=1e-6)


def trl_normalize_then_sum(rewards_per_func, G, weights):
    """TRL 1.16 GRPOTrainer, multi_objective_aggregation="normalize_then_sum" (GDPO), copied
    step for step from `_generate_and_score_completions`, with TRL's own nanstd."""
    from trl.trainer.utils import nanstd
    K = rewards_per_func.shape[1]
    unscorable = torch.isnan(rewards_per_func).all(dim=1)
    grouped = rewards_per_func.view(-1, G, K)
    mean_k = torch.nanmean(grouped, dim=1, keepdim=True)
    std_k = nanstd(grouped, dim=1, keepdim=True)
    reward_k = ((grouped - mean_k) / (std_k + 1e-4)).view(-1, K)
    rewards = (reward_k * weights.unsqueeze(0)).nansum(dim=1)
    rewards[unscorable] = torch.nan
    std = nanstd(rewards).expand_as(rewards)
    return torch.nan_to_num((rewards - torch.nanmean(rewards)) / (std + 1e-4), nan=0.0)


def test_gdpo_worked_examples():
    # algorithms_a §1: G=4, K=2, w=1; r1=[1,0,0,0], r2=[1,1,1,0] -> [1.2247, 0, 0, -1.2247]
    gdpo = get("advantage", "gdpo")
    R = torch.tensor([[[1.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 0.0]]])
    adv = gdpo(R.sum(-1), R, torch.ones(2))
    assert torch.allclose(adv, torch.tensor([[1.2247, 0.0, 0.0, -1.2247]]), atol=1e-4)
    # B=2: add r1=[1,1,0,0], r2=[1,1,1,1] (r2 constant: contributes 0)
    R2 = torch.cat([R, torch.tensor([[[1.0, 1.0], [1.0, 1.0], [0.0, 1.0], [0.0, 1.0]]])])
    adv = gdpo(R2.sum(-1), R2, torch.ones(2))
    expected = torch.tensor([[1.5953, 0.0, 0.0, -1.5953], [0.6908, 0.6908, -0.6908, -0.6908]])
    assert torch.allclose(adv, expected, atol=1e-4)
    # own case: YAML weights [1, 0] override the recipe's and keep reward 1 alone:
    # A_1 = [1.4997, -0.4999 x3] (mean 0, std 0.99985) -> batch-normalised [1.4999, -0.5 x3]
    adv_w = gdpo(R.sum(-1), R, torch.ones(2), weights=[1.0, 0.0])
    assert torch.allclose(adv_w, torch.tensor([[1.4999, -0.5, -0.5, -0.5]]), atol=1e-4)
    # K = 1 is GRPO
    one = torch.tensor([[[2.0], [4.0]]])
    assert torch.allclose(gdpo(one[..., 0], one, torch.ones(1)), get("advantage", "grpo")(one[..., 0]))


def test_gdpo_equals_trl_normalize_then_sum():
    g = torch.Generator().manual_seed(1)
    R = torch.rand(5, 4, 3, generator=g).round(decimals=1)
    R[1, 2, 0] = float("nan")            # one reward returned None
    R[3, 1, :] = float("nan")            # a completion no reward scored
    w = torch.tensor([1.0, 0.5, 2.0])
    ours = get("advantage", "gdpo")(torch.zeros(5, 4), R, w)
    theirs = trl_normalize_then_sum(R.view(-1, 3), 4, w).view(5, 4)
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert ours[3, 1] == 0


def test_rec_asymre_opmd_worked_examples():
    # algorithms_a §6: r = [1,0,0,1]
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    assert torch.allclose(get("advantage", "rec")(r), torch.tensor([[0.5, -0.5, -0.5, 0.5]]))
    assert torch.allclose(get("advantage", "asymre")(r), torch.tensor([[0.6, -0.4, -0.4, 0.6]]))
    opmd = get("advantage", "opmd")(r, baseline="logavgexp")
    assert torch.allclose(opmd, torch.tensor([[0.3799, -0.6201, -0.6201, 0.3799]]), atol=1e-4)
    assert torch.allclose(get("advantage", "opmd")(r), get("advantage", "rec")(r))


def test_rec_population_std_and_red_drop():
    # own case: r = [1,0,0,0]; mean 0.25, population std sqrt(0.1875) = 0.4330
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    adv = get("advantage", "rec")(r, std_normalize=True)
    assert torch.allclose(adv, torch.tensor([[0.75, -0.25, -0.25, -0.25]]) / (0.1875 ** 0.5 + 1e-6))
    # RED-Drop: 1 positive, 3 negatives -> 2 negatives dropped (A = 0); kept [1, 0]: mean 0.5
    torch.manual_seed(0)
    adv = get("advantage", "rec")(r, drop="balance")
    assert adv[0, 0] == 0.5 and sorted(adv[0, 1:].tolist()) == [-0.5, 0.0, 0.0]
    # balanced group: nothing dropped
    assert torch.equal(get("advantage", "rec")(torch.tensor([[1.0, 0.0]]), drop="balance"), torch.tensor([[0.5, -0.5]]))


def test_bnpo_worked_examples():
    # algorithms_a §3: groups [1,1,1,0], [1,0,0,0], [1,1,0,0] -> p = [.75, .25, .5], mu 0.5,
    # v 0.0625 -> alpha = beta = 1.5; f(.75) = f(.25) = 1.1027, f(.5) = 1.2732
    r = torch.tensor([[1.0, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]])
    adv = get("advantage", "bnpo")(r)
    expected = torch.tensor([[0.2267, 0.2267, 0.2267, -0.6802], [0.6802, -0.2267, -0.2267, -0.2267],
                             [0.3927, 0.3927, -0.3927, -0.3927]])
    assert torch.allclose(adv, expected, atol=1e-4)
    # B = 2 (first two groups): v = 0.125 -> alpha = beta = 1.1667, f = 1.0466
    adv2 = get("advantage", "bnpo")(r[:2])
    assert torch.allclose(adv2[0], torch.tensor([0.2389, 0.2389, 0.2389, -0.7166]), atol=1e-4)


def test_bnpo_own_cases():
    # all-0 and all-1 groups get A = 0 (f(0) = 0 would blow 1/f up; s - p is 0 there)
    r = torch.tensor([[0.0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 1, 0]])
    adv = get("advantage", "bnpo")(r)
    assert torch.equal(adv[:2], torch.zeros(2, 4)) and torch.isfinite(adv).all()
    # one group: mu 0, v 1 -> k = -1, alpha = beta = 1 -> f = 1: plain group-mean baseline;
    # rewards in [-1, 1] are mapped to [0, 1] first
    one = torch.tensor([[1.0, -1.0, -1.0, -1.0]])
    assert torch.allclose(get("advantage", "bnpo")(one, min_value=-1.0), torch.tensor([[0.75, -0.25, -0.25, -0.25]]))


def test_bnpo_rejects_rewards_outside_its_range():
    from rlrecipes.errors import UserError
    with pytest.raises(UserError, match="bnpo needs rewards in"):
        get("advantage", "bnpo")(torch.tensor([[1.1, 0.0], [0.0, 1.0]]))
