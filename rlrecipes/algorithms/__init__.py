"""The paper math: advantage estimators, policy losses, aggregations, regularizers.

Importing this package registers every component. Inputs the loop can pass by parameter name:

advantage: see ADVANTAGE_INPUTS below
loss, regularizer: see LOSS_INPUTS below
"""
from . import advantages, capo, group_losses, kl, losses, pairwise, regularizers, token_credit, trackers  # noqa: F401
from . import tempsamp  # noqa: F401,E402  (TempSamp-R1 advantage anchoring)
from . import salt  # noqa: F401,E402  (SALT trajectory-graph step advantages)
from . import brpo  # noqa: F401,E402  (AnytimeReasoner budget advantages)

# What the loop can give advantage estimators, by parameter name (B prompts x G completions of
# the whole step, gathered over ranks): combined rewards (positional) and per reward function,
# the reward weights, group size, RL step, completion lengths in sampled tokens, the training-row
# index of each prompt as the sampler drew it (a refining sampler that swaps prompts, such as
# dynamic_sampling, is not reflected), and (computed only for an estimator that names it) each
# completion's summed log-prob under the behaviour policy.
# Token-level credit (rewards/dense.py, credit.py): segment spans of rewards that return
# PerSegment, per-token rewards, loss mask and ids [B, G, T]; such an estimator may return adv_BGT.
ADVANTAGE_INPUTS = ("rewards_BG", "rewards_BGK", "reward_weights_K", "group_size", "step", "lengths_BG",
                    "row_ids_B", "seq_logp_BG",
                    "segments_BGK", "token_rewards_BGT", "mask_BGT", "ids_BGT", "reward_names_K",
                    # branch rows (rlrecipes/branches.py: budget summaries); such an estimator
                    # returns (advantages of the B x G rows, one per branch)
                    "branch_rewards_M", "branch_parent_M", "branch_slot_M", "branch_pool_M", "branch_cut_M")
# What the loop can give losses and regularizers, by parameter name (N = B*G rows of this
# micro-batch): log-probs now / at rollout / under the reference, entropy, completion mask and
# token ids, advantage and combined reward per row, group size, RL step and total steps.
LOSS_INPUTS = ("logp_NT", "old_logp_NT", "ref_logp_NT", "entropy_NT", "mask_NT", "ids_NT", "adv_N",
               "rewards_N", "group_size", "step", "total_steps",
               # rows whose completion was injected (Batch.inject: a gold, an anchor), bool [N]
               "injected_N",
               # only computed for a loss that names them (last-layer models such as CAPO):
               "hidden_NTD", "probs_NTV")
REGULARIZER_INPUTS = LOSS_INPUTS
