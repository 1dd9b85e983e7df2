"""P3O, unlikeliness and OBLR-PO advantages and the P3O loss: the specs' worked examples
(algorithms_a §9, §11; algorithms_b §10) and cases of our own."""
import torch

from rlrecipes.registry import get


def test_p3o_worked_example_and_shift_invariance():
    # r = (1.0, 0.2): A = +-(1.0 - 0.2) / 2 = +-0.4; adding 5 to both changes nothing
    p3o = get("advantage", "p3o")
    assert torch.allclose(p3o(torch.tensor([[1.0, 0.2]])), torch.tensor([[0.4, -0.4]]))
    assert torch.allclose(p3o(torch.tensor([[6.0, 5.2]])), torch.tensor([[0.4, -0.4]]))


def test_p3o_is_the_mean_pairwise_difference_and_zero_without_a_pair():
    # G = 3, r = [3, 0, 0]: A_0 = ((3-0)/2 + (3-0)/2) / 2 = 1.5; A_1 = ((0-3)/2 + 0) / 2 = -0.75
    p3o = get("advantage", "p3o")
    assert torch.allclose(p3o(torch.tensor([[3.0, 0.0, 0.0]])), torch.tensor([[1.5, -0.75, -0.75]]))
    assert torch.equal(p3o(torch.tensor([[1.0], [0.0]])), torch.zeros(2, 1))


def test_p3o_loss_clips_each_sequence_ratio_per_pair():
    # G = 2, r = (1, 0): d_01 = 0.5, d_10 = -0.5. Sequence 0: log-ratio 0.1 + 0.2 over its two
    # tokens -> rho_0 = e^0.3 = 1.3499, clipped at 1.2: min(1.3499 * 0.5, 1.2 * 0.5) = 0.6 -> l_0 = -0.6.
    # Sequence 1: rho_1 = e^-0.1 = 0.9048 (inside the clip): l_1 = -(0.9048 * -0.5) = 0.4524.
    loss = get("loss", "p3o")
    logp = torch.tensor([[0.1, 0.2], [-0.1, 0.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    out, m = loss(logp, torch.zeros(2, 2), mask, torch.tensor([1.0, 0.0]), group_size=2, eps=0.2)
    assert torch.allclose(out[:, 0], torch.tensor([-0.6, 0.5 * torch.exp(torch.tensor(-0.1)).item()]), atol=1e-6)
    assert m["clip_frac"] == 0.5
    out[:, 0].sum().backward()
    assert torch.equal(logp.grad[0], torch.zeros(2))   # clipped: no gradient
    assert logp.grad[1, 0] != 0 and logp.grad[1, 1] == 0   # masked token: no gradient


def test_p3o_loss_with_mixed_pairs_differs_from_one_min_on_the_mean_advantage():
    # G = 3, r = [1, 2, 0] and rho_0 = 1.5 (beyond 1 + eps): completion 0 is worse than 1
    # (d = -0.5) and better than 2 (d = +0.5). Per pair: min(1.5 * -0.5, 1.2 * -0.5) = -0.75 and
    # min(1.5 * 0.5, 1.2 * 0.5) = 0.6 -> l_0 = -(-0.75 + 0.6) / 2 = 0.075. One min on the mean
    # advantage (A_0 = 0) would give 0.
    loss = get("loss", "p3o")
    logp = torch.tensor([[torch.log(torch.tensor(1.5)).item()], [0.0], [0.0]])
    out, _ = loss(logp, torch.zeros(3, 1), torch.ones(3, 1), torch.tensor([1.0, 2.0, 0.0]), group_size=3)
    assert abs(out[0, 0].item() - 0.075) < 1e-6


def test_unlikeliness_worked_example():
    # r = [1,1,0,1], token-mean log-probs [-0.2,-0.9,-0.5,-0.4] -> ranks [3,0,1,2]
    # -> r~ = [0.8125, 1, 0, 0.875] -> A = [0.3093, 0.7217, -1.4778, 0.4468]
    unl = get("advantage", "unlikeliness")
    lengths = torch.tensor([[10.0, 20.0, 5.0, 8.0]])
    seq = torch.tensor([[-0.2, -0.9, -0.5, -0.4]]) * lengths   # sums, as the loop passes them
    adv = unl(torch.tensor([[1.0, 1.0, 0.0, 1.0]]), seq, lengths)
    assert torch.allclose(adv, torch.tensor([[0.3093, 0.7217, -1.4778, 0.4468]]), atol=1e-4)


def test_unlikeliness_own_cases_beta_zero_is_grpo_and_group_of_one():
    unl, grpo = get("advantage", "unlikeliness"), get("advantage", "grpo")
    r = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    seq, lengths = torch.randn(2, 3), torch.ones(2, 3)
    assert torch.allclose(unl(r, seq, lengths, beta_rank=0.0), grpo(r, eps=1e-6))
    # G = 1: rank 0 keeps the full reward; mean 0, std 1 -> A = r / (1 + eps)
    assert torch.allclose(unl(torch.tensor([[1.0]]), torch.tensor([[-3.0]]), torch.ones(1, 1)), torch.tensor([[1.0]]))


def test_oblr_length_weighted_baseline_worked_example_and_uniform():
    # r = [1,0,1,0], lengths [100,300,200,400]: b = (100 + 200) / 1000 = 0.3 -> A = [0.7,-0.3,0.7,-0.3]
    oblr = get("advantage", "oblr")()
    r, lengths = torch.tensor([[1.0, 0.0, 1.0, 0.0]]), torch.tensor([[100.0, 300.0, 200.0, 400.0]])
    assert torch.allclose(oblr(r, lengths), torch.tensor([[0.7, -0.3, 0.7, -0.3]]))
    uniform = get("advantage", "oblr")(weight="uniform")
    assert torch.allclose(uniform(r, lengths), torch.tensor([[0.5, -0.5, 0.5, -0.5]]))


def test_oblr_snr_learning_rate_factor():
    # micro-batch shares [1, 0] and [0, 1] (M = 2): estimates g_i = M * share = [2, 0], [0, 2];
    # g = [1, 1], ||g||^2 = 2; ||g_i - g||^2 = 2 each, mean 2, / M = 1 -> SNR 2 -> factor 2/3
    oblr = get("advantage", "oblr")()
    factor, m = oblr.lr_scale([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])])
    assert abs(factor - 2 / 3) < 1e-9 and abs(m["oblr/snr"] - 2.0) < 1e-9
    # identical shares: no noise -> rate unchanged; one micro-batch: nothing to estimate
    assert oblr.lr_scale([torch.tensor([1.0, 2.0])] * 3)[0] == 1.0
    assert oblr.lr_scale([torch.tensor([1.0, 2.0])]) == (1.0, {})
    assert get("advantage", "oblr")(snr_lr=False).lr_scale([torch.ones(2), torch.zeros(2)]) == (1.0, {})
