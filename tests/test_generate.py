import torch

from rlrecipes.config import Generation
from rlrecipes.logprobs import token_logprobs
from rlrecipes.rollout.generate import completion_mask, encode_prompts, generate
from rlrecipes.tiny import build_model, build_tokenizer


def test_completion_mask_includes_first_eos_only():
    ids = torch.tensor([[5, 1, 7, 1], [5, 6, 7, 8], [1, 0, 0, 0]])
    assert completion_mask(ids, eos_id=1).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_logprobs_ignore_left_padding():
    tok, model = build_tokenizer(), build_model(build_tokenizer(), seed=0).eval()
    ids, mask = encode_prompts(tok, ["1+2=", "10+20="], "cpu")  # the first is left-padded by 2
    comp = tok(["<answer>3", "<answer>3"], return_tensors="pt", add_special_tokens=False)["input_ids"]
    cmask = torch.ones_like(comp)
    padded, _ = token_logprobs(model, ids, mask, comp, cmask)
    alone_ids, alone_mask = encode_prompts(tok, ["1+2="], "cpu")
    alone, _ = token_logprobs(model, alone_ids, alone_mask, comp[:1], cmask[:1])
    assert torch.allclose(padded[0], alone[0], atol=1e-5)


def test_generate_groups_are_consecutive_and_logprobs_match_sampling():
    torch.manual_seed(0)
    tok, model = build_tokenizer(), build_model(build_tokenizer(), seed=0)
    gen = Generation(max_new_tokens=6, temperature=0.7)
    r = generate(model, tok, ["1+2=", "33+4="], gen, "cpu", repeat=3)
    assert len(r) == 6 and r.prompt_ids_NP.shape[0] == 6
    assert torch.equal(r.prompt_ids_NP[0], r.prompt_ids_NP[2]) and not torch.equal(r.prompt_ids_NP[0], r.prompt_ids_NP[3])
    # log-probs recomputed at the sampling temperature equal those generate sampled from
    torch.manual_seed(1)
    out = model.generate(input_ids=r.prompt_ids_NP, attention_mask=r.prompt_mask_NP, do_sample=True,
                         temperature=0.7, top_k=0, max_new_tokens=4,
                         output_scores=True, return_dict_in_generate=True,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    comp = out.sequences[:, r.prompt_ids_NP.shape[1]:]
    scores = torch.stack(out.scores, 1).log_softmax(-1).gather(-1, comp.unsqueeze(-1)).squeeze(-1)
    cmask = completion_mask(comp, tok.eos_token_id)
    ours, _ = token_logprobs(model, r.prompt_ids_NP, r.prompt_mask_NP, comp, cmask, 0.7)
    keep = cmask.bool()
    assert keep.sum() >= 6
    assert torch.allclose(ours[keep], scores[keep], atol=1e-4)
