"""The blockwise chosen-token log-softmax equals the plain formula, values and gradients."""
import pytest
import torch

import rlrecipes.logprobs as lp


def _plain(logits, ids, temperature):
    x = logits / temperature
    lse = torch.logsumexp(x, -1)
    return x.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - lse, lse - (torch.softmax(x, -1) * x).sum(-1)


@pytest.mark.parametrize("block", [1 << 24, 20, 3])  # whole sequences per block; token blocks; one row
def test_values_and_gradients_match_the_plain_formula(monkeypatch, block):
    monkeypatch.setattr(lp, "BLOCK_ELEMENTS", block)
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 7, (3, 5))
    assert torch.autograd.gradcheck(lambda z: lp._ChosenLogSoftmax.apply(z, ids, 0.7, True), (logits,))
    ours, ent = lp.chosen_logprobs(logits, ids, 0.7, entropy="grad")
    ref, ref_ent = _plain(logits, ids, 0.7)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(ent, ref_ent)
    w = torch.randn(3, 5, dtype=torch.float64)
    g = torch.autograd.grad((ours * w).sum() - ent.sum(), logits)[0]
    g_ref = torch.autograd.grad((ref * w).sum() - ref_ent.sum(), logits)[0]
    torch.testing.assert_close(g, g_ref)


def test_worked_example_and_dtypes():
    # logits [0, ln 3] at temperature 1: p = [1/4, 3/4]; log p(token 1) = ln 0.75,
    # H = -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.5623351
    logits = torch.tensor([[[0.0, 1.0986123]]], dtype=torch.bfloat16, requires_grad=True)
    logp, ent = lp.chosen_logprobs(logits, torch.tensor([[1]]), entropy="log")
    assert logp.dtype == torch.float32 and not ent.requires_grad
    assert abs(logp.item() - torch.log(torch.tensor(0.75)).item()) < 5e-3
    assert abs(ent.item() - 0.5623351) < 5e-3
    logp.sum().backward()
    # d log p_1 / dx = [0, 1] - p = [-1/4, 1/4]; the gradient keeps the logits' dtype
    assert logits.grad.dtype == torch.bfloat16
    torch.testing.assert_close(logits.grad.float(), torch.tensor([[[-0.25, 0.25]]]), atol=5e-3, rtol=0)
