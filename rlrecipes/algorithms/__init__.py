"""The paper math: advantage estimators, policy losses, aggregations, regularizers.

Importing this package registers every component. Inputs the loop can pass by parameter name:

advantage: rewards_BG (positional), rewards_BGK, reward_weights_K, group_size, step
loss, regularizer: see LOSS_INPUTS below
"""
from . import advantages, capo, group_losses, kl, losses, regularizers  # noqa: F401

ADVANTAGE_INPUTS = ("rewards_BG", "rewards_BGK", "reward_weights_K", "group_size", "step")
# What the loop can give losses and regularizers, by parameter name (N = B*G rows of this
# micro-batch): log-probs now / at rollout / under the reference, entropy, completion mask and
# token ids, advantage and combined reward per row, group size, RL step and total steps.
LOSS_INPUTS = ("logp_NT", "old_logp_NT", "ref_logp_NT", "entropy_NT", "mask_NT", "ids_NT", "adv_N",
               "rewards_N", "group_size", "step", "total_steps",
               # only computed for a loss that names them (last-layer models such as CAPO):
               "hidden_NTD", "probs_NTV")
REGULARIZER_INPUTS = LOSS_INPUTS
