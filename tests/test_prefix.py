"""Prefix Grouper's shared-prefix forward (arXiv 2506.05433; rlrecipes/prefix.py): the packing
worked by hand, log-probs and gradients equal to the plain forward, and a tiny GRPO run whose
losses do not change when it is on."""
import json

import pytest
import torch

from rlrecipes.config import load_recipe
from rlrecipes.logprobs import token_logprobs
from rlrecipes.prefix import packed_inputs
from rlrecipes.rollout.generate import completion_mask, encode_prompts
from rlrecipes.run import train
from rlrecipes.tiny import build_model, build_tokenizer

from .conftest import FAST


def test_packing_worked_by_hand():
    # one group: prompt [5, 6] (left-padded by one), completions [7, 8] and [9] (then padding);
    # a second group: prompt [4], completion [3, 2]
    prompt = torch.tensor([[0, 5, 6], [0, 5, 6], [0, 0, 4]])
    pmask = torch.tensor([[0, 1, 1], [0, 1, 1], [0, 0, 1]])
    comp = torch.tensor([[7, 8], [9, 0], [3, 2]])
    cmask = torch.tensor([[1, 1], [1, 0], [1, 1]])
    ids, pos, layout, source = packed_inputs(prompt, pmask, comp, cmask)
    assert (layout.P, layout.G, layout.T) == (2, 2, 2)      # prompt slot 2, 2 completion slots of 2
    assert ids.tolist() == [[5, 6, 7, 8, 9, 0], [4, 0, 3, 2, 0, 0]]
    assert pos.tolist() == [[0, 1, 2, 3, 2, 3], [0, 1, 1, 2, 4, 5]]   # completions continue the prompt; the
    # second group's empty slot keeps placeholder positions (its outputs are never read)
    assert layout.prefix_mask[:, 0].int().tolist() == [[[1, 0], [1, 1]],   # 5; 6 sees 5
                                                        [[1, 0], [1, 1]]]   # 4; padding (never read): 4 and itself
    # each completion: the group's real prompt tokens, then causal over its own slot
    assert layout.completion_mask[:, 0].int().tolist() == [[[1, 1, 1, 0], [1, 1, 1, 1]]] * 2 + \
        [[[1, 0, 1, 0], [1, 0, 1, 1]]] * 2
    # token 7 is predicted at the prompt's last position (1), 8 at 7's (2); 9 at 1, its padding at 4;
    # 3 at 6 + 0 (the second row's prompt end), 2 at 3's position 8
    assert source.tolist() == [[1, 2], [1, 4], [6, 8]]


def _batch(tok):
    prompts = ["12+34=", "7+8=?", "What is 100+250? Answer:"]
    ids, mask = encode_prompts(tok, [p for p in prompts for _ in range(3)], "cpu")
    comp = torch.randint(20, 60, (9, 7), generator=torch.Generator().manual_seed(0))
    comp[0, 2] = comp[4, 5] = comp[8, 0] = tok.eos_token_id     # completions of 3, 6, 1 and 7 tokens
    return ids, mask, comp, completion_mask(comp, tok.eos_token_id)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_logprobs_and_gradients_equal_the_plain_forward(attn):
    tok = build_tokenizer()
    model = build_model(tok, seed=1)
    model.config._attn_implementation = attn
    ids, mask, comp, cmask = _batch(tok)
    weights = torch.rand(comp.shape, generator=torch.Generator().manual_seed(1))
    results = []
    for share in (False, True):
        model.zero_grad()
        logp, ent = token_logprobs(model, ids, mask, comp, cmask, 0.7, entropy="grad", share_prefix=share)
        ((logp * weights + 0.1 * ent) * cmask).sum().backward()
        results.append((logp.detach(), ent.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (a, ea, ga), (b, eb, gb) = results
    keep = cmask.bool()
    assert torch.allclose(a[keep], b[keep], atol=1e-5) and torch.allclose(ea[keep], eb[keep], atol=1e-5)
    assert (b[~keep] == 0).all()
    for name in ga:
        assert torch.allclose(ga[name], gb[name], atol=1e-5), name


def test_last_layer_extras_equal_the_plain_forward():
    """What CAPO's loss reads (`extras`: the LM head's input and the probabilities at each
    completion position) is the same from the packed forward."""
    tok = build_tokenizer()
    model = build_model(tok, seed=1)
    ids, mask, comp, cmask = _batch(tok)
    got = []
    for share in (False, True):
        extras = {}
        with torch.no_grad():
            token_logprobs(model, ids, mask, comp, cmask, 0.7, extras=extras, share_prefix=share)
        got.append(extras)
    keep = cmask.bool()
    for key in ("hidden_NTD", "probs_NTV"):
        assert got[0][key].shape == got[1][key].shape, key
        assert torch.allclose(got[0][key][keep], got[1][key][keep], atol=1e-5), key


def test_a_grpo_run_logs_the_same_losses_with_prefix_sharing(tmp_path):
    losses = []
    for share in ("false", "true"):
        # float32 pinned: equality to 1e-4 is a float32 claim (dtype auto is bf16 on a GPU)
        r = load_recipe("recipes/grpo.yaml", "tiny", FAST + ["train.steps=3", "eval.at_start=false", "model.dtype=float32",
                        "eval.at_end=false", "algorithm.kl.beta=0.04", f"train.prefix_sharing={share}"])
        train(r, str(tmp_path / share), say=lambda *a: None)
        rows = [json.loads(line) for line in (tmp_path / share / "metrics.jsonl").read_text().splitlines()]
        losses.append([v for m in rows if "loss" in m for v in (m["loss"], m["kl"])])
    assert len(losses[0]) == 6 and max(losses[0][3::2]) > 0   # KL moved off zero: the reference ran
    assert losses[0] == pytest.approx(losses[1], abs=1e-4)
