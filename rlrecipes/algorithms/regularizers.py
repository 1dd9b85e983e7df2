"""Regularizers: `fn(<inputs by name>, **params) -> (term_NT, metrics)`; the term is added to the
per-token policy loss before aggregation. Names of the inputs: see `algorithms/__init__.py`."""
from __future__ import annotations


from ..registry import register


@register("regularizer", "entropy")
def entropy_bonus(entropy_NT, mask_NT, coef: float = 0.001):
    """Entropy bonus -coef * H(pi(.|s_t)) per token (Mnih et al. 2016, arXiv 1602.01783, eq. 4;
    verl `entropy_coeff`). `entropy_NT` carries gradient here."""
    return -coef * entropy_NT, {}
