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
