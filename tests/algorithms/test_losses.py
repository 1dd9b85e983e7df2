"""PPO-clip, aggregations and KL: hand-worked numbers, and equality with TRL's GRPO loss
(`GRPOTrainer._compute_loss` itself, run on fixed tensors) for grpo, dapo, dr_grpo and bnpo."""
import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from rlrecipes.algorithms.kl import kl_estimate
from rlrecipes.algorithms.losses import aggregate
from rlrecipes.registry import get


def test_ppo_clip_hand_worked():
    # One sequence, 3 tokens, A = +1 and A = -1 rows. ratios exp(0)=1, exp(ln 1.5)=1.5, exp(ln .5)=.5
    lp = torch.log(torch.tensor([[1.0, 1.5, 0.5], [1.0, 1.5, 0.5]]))
    old = torch.zeros(2, 3)
    adv = torch.tensor([1.0, -1.0])
    loss, m = get("loss", "ppo_clip")(lp, old, adv, torch.ones(2, 3), eps_low=0.2, eps_high=0.28)
    # A=+1: -min(r, clip(r, .8, 1.28)) = -[1, 1.28, 0.5]
    # A=-1: -min(-r, -clip(r)) = max(r, clip(r)) = [1, 1.5, 0.8]
    assert torch.allclose(loss, torch.tensor([[-1.0, -1.28, -0.5], [1.0, 1.5, 0.8]]))
    # clipped tokens: (A>0, r>1.28) -> token 2 of row 0; (A<0, r<0.8) -> token 3 of row 1
    assert m["clip_frac"].item() == pytest.approx(2 / 6)


def test_ppo_dual_clip_bounds_negative_advantage():
    # A = -1, ratio 5: standard loss = max(5, 1.2) = 5; dual clip c=3 caps it at -(3 * -1) = 3
    lp = torch.log(torch.tensor([[5.0]]))
    loss, _ = get("loss", "ppo_clip")(lp, torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1),
                                      dual_clip=3.0)
    assert loss.item() == pytest.approx(3.0)


def test_aggregations_dr_grpo_worked_example():
    # algorithms_a §14: two sequences of length 2 and 4, per-token loss 1, T_max 4:
    # constant = 6 / (2*4) = 0.75; seq-mean-token-mean = 1.0; token-mean = 6/6 = 1.0;
    # seq-mean-token-sum = (2 + 4) / 2 = 3.0
    loss = torch.ones(2, 4)
    mask = torch.tensor([[1.0, 1, 0, 0], [1, 1, 1, 1]])
    assert aggregate("constant", loss, mask, 4).item() == pytest.approx(0.75)
    assert aggregate("seq_mean_token_mean", loss, mask, 4).item() == pytest.approx(1.0)
    assert aggregate("token_mean", loss, mask, 4).item() == pytest.approx(1.0)
    assert aggregate("seq_mean_token_sum", loss, mask, 4).item() == pytest.approx(3.0)


def test_aggregations_own_case_unequal_losses():
    # seq A: losses [1, 3] (len 2), seq B: [2, 2, 2, 6] (len 4)
    loss = torch.tensor([[1.0, 3, 9, 9], [2, 2, 2, 6]])
    mask = torch.tensor([[1.0, 1, 0, 0], [1, 1, 1, 1]])
    assert aggregate("token_mean", loss, mask, 8).item() == pytest.approx(16 / 6)
    assert aggregate("seq_mean_token_mean", loss, mask, 8).item() == pytest.approx((2 + 3) / 2)
    assert aggregate("constant", loss, mask, 8).item() == pytest.approx(16 / 16)


def test_kl_estimators_hand_worked():
    # log r = ref - logp = ln 2: k1 = -ln 2, k2 = (ln 2)^2 / 2, k3 = 2 - 1 - ln 2
    lp, ref = torch.tensor([0.0]), torch.tensor([math.log(2)])
    assert kl_estimate(lp, ref, "k1").item() == pytest.approx(-math.log(2))
    assert kl_estimate(lp, ref, "k2").item() == pytest.approx(math.log(2) ** 2 / 2)
    assert kl_estimate(lp, ref, "k3").item() == pytest.approx(1 - math.log(2))


def test_kl_regularizer_scales_by_beta():
    lp, ref = torch.zeros(1, 2), torch.tensor([[math.log(2), 0.0]])
    term, m = get("regularizer", "kl")(lp, ref, torch.ones(1, 2), beta=0.04)
    assert torch.allclose(term, 0.04 * torch.tensor([[1 - math.log(2), 0.0]]))
    assert m["kl"].item() == pytest.approx((1 - math.log(2)) / 2)


# ---------------------------------------------------------------- equality with TRL

def _trl_loss(loss_type, logp, old, ref, adv, mask, beta, eps_low, eps_high, max_len, level="token"):
    from trl.trainer.grpo_trainer import GRPOTrainer
    N, T = logp.shape
    acc = SimpleNamespace(gather=lambda x: x.reshape(-1), reduce=lambda x, reduction: x,
                          gather_for_metrics=lambda x: x, num_processes=1, sync_gradients=True)
    fake = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros_like(logp), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level=level,
        beta=beta, args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        loss_type=loss_type, epsilon_low=eps_low, epsilon_high=eps_high, use_vllm=False,
        model=SimpleNamespace(training=True), current_gradient_accumulation_steps=1,
        max_completion_length=max_len, _entropy_bonus_enabled=False, aux_loss_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)), accelerator=acc)
    inputs = {"prompt_ids": torch.zeros(N, 1, dtype=torch.long), "prompt_mask": torch.ones(N, 1),
              "completion_ids": torch.zeros(N, T, dtype=torch.long), "completion_mask": mask,
              "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref,
              "num_items_in_batch": mask.sum()}
    return GRPOTrainer._compute_loss(fake, None, inputs)


def _ours(aggregation, logp, old, ref, adv, mask, beta, eps_low, eps_high, max_len):
    loss_NT, _ = get("loss", "ppo_clip")(logp, old, adv, mask, eps_low=eps_low, eps_high=eps_high)
    if beta:
        loss_NT = loss_NT + get("regularizer", "kl")(logp, ref, mask, beta=beta)[0]
    return aggregate(aggregation, loss_NT, mask, max_len)


@pytest.mark.parametrize("loss_type,aggregation,beta,eps_high", [
    ("grpo", "seq_mean_token_mean", 0.04, 0.2),
    ("dapo", "token_mean", 0.0, 0.28),
    ("bnpo", "token_mean", 0.04, 0.2),
    ("dr_grpo", "constant", 0.0, 0.2),
])
def test_ppo_clip_equals_trl_loss_and_gradient(loss_type, aggregation, beta, eps_high):
    g = torch.Generator().manual_seed(1)
    N, T, max_len = 6, 5, 7
    base = torch.randn(N, T, generator=g) * 0.3 - 1.0
    old = base + torch.randn(N, T, generator=g) * 0.2   # ratios spread across the clip range
    ref = base + torch.randn(N, T, generator=g) * 0.2
    adv = torch.randn(N, generator=g)
    mask = (torch.arange(T).expand(N, T) < torch.tensor([5, 3, 1, 4, 5, 2]).unsqueeze(1)).float()
    grads = []
    values = []
    for fn, name in ((_trl_loss, loss_type), (_ours, aggregation)):
        logp = base.clone().requires_grad_(True)
        value = fn(name, logp, old, ref, adv, mask, beta, 0.2, eps_high, max_len)
        value.backward()
        values.append(value.detach())
        grads.append(logp.grad)
    assert torch.allclose(values[0], values[1], atol=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
