"""Per-token log-probabilities (and entropies) of completions under a model."""
from __future__ import annotations

import torch


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as `generate` computes them."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def token_logprobs(model, prompt_ids_NP, prompt_mask_NP, completion_ids_NT, completion_mask_NT,
                   temperature: float = 1.0, entropy: str | None = None, extras: dict | None = None):
    """(logp_NT, entropy_NT or None) of each completion token given everything before it.

    `entropy`: None (skip), "log" (no gradient, for metrics) or "grad" (for a regularizer).
    `extras`: a dict to receive, detached, `hidden_NTD` (the LM head's input) and `probs_NTV`,
    for losses that model the last layer (CAPO); only computed when a dict is passed.

    Logits are divided by the sampling temperature, as TRL does, so the log-probs are those of
    the distribution the tokens were drawn from.
    """
    input_ids = torch.cat([prompt_ids_NP, completion_ids_NT], dim=1)
    attn = torch.cat([prompt_mask_NP, completion_mask_NT], dim=1)
    T = completion_ids_NT.shape[1]
    hook = None
    if extras is not None:
        head = getattr(model, "module", model).get_output_embeddings()
        hook = head.register_forward_hook(lambda mod, inp, out: extras.__setitem__("hidden_NTD", inp[0].detach()))
    try:
        logits = model(input_ids=input_ids, attention_mask=attn, position_ids=position_ids(attn),
                       logits_to_keep=T + 1, use_cache=False).logits[:, :-1].float()
    finally:
        if hook is not None:
            hook.remove()
    logits = logits / temperature
    if extras is not None:
        extras["hidden_NTD"] = extras["hidden_NTD"][:, -(T + 1):-1]
        extras["probs_NTV"] = torch.softmax(logits.detach(), -1)
    logz_NT = torch.logsumexp(logits, dim=-1)
    logp_NT = torch.gather(logits, -1, completion_ids_NT.unsqueeze(-1)).squeeze(-1) - logz_NT
    entropy_NT = None
    if entropy:
        with torch.set_grad_enabled(entropy == "grad" and torch.is_grad_enabled()):
            src = logits if entropy == "grad" else logits.detach()
            entropy_NT = torch.logsumexp(src, -1) - (torch.softmax(src, -1) * src).sum(-1)
    return logp_NT, entropy_NT
