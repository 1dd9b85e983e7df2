"""The paper math: advantage estimators, policy losses, aggregations, regularizers.

Importing this package registers every component. Inputs the loop can pass by parameter name:

advantage: rewards_BG (positional), rewards_BGK, group_size, step
loss:      logp_NT, old_logp_NT, adv_N (or adv_NT), mask_NT
regularizer: logp_NT, old_logp_NT, ref_logp_NT, entropy_NT, mask_NT, adv_N, step, total_steps
"""
from . import advantages, kl, losses, regularizers  # noqa: F401

ADVANTAGE_INPUTS = ("rewards_BG", "rewards_BGK", "group_size", "step")
LOSS_INPUTS = ("logp_NT", "old_logp_NT", "adv_N", "adv_NT", "mask_NT")
REGULARIZER_INPUTS = ("logp_NT", "old_logp_NT", "ref_logp_NT", "entropy_NT", "mask_NT", "adv_N",
                      "step", "total_steps")
