"""Reward functions with TRL's contract: `fn(prompts, completions, **columns) -> list[float | None]`.

`columns` are the dataset row's other fields, one value per completion (groups are consecutive),
plus `group_size`. A user's TRL reward function works unchanged (`fn: my_pkg.rewards:func`).
Importing this package registers the built-in rewards.
"""
from . import boxed, format, length, math, otc, rapo, reward_model  # noqa: F401
from . import clinical, critic  # noqa: F401,E402  (Clinical-R1, GUI-Critic-R1)
from . import tool_call  # noqa: F401,E402  (CRAFT-GUI hybrid rule reward)
from . import interval  # noqa: F401,E402  (TempSamp-R1 IoU and soft shaping)
from . import cover  # noqa: F401,E402  (SubRL marginal coverage gains)
from . import mas_plan  # noqa: F401,E402  (MasHost outcome and rationality)
from . import llm_judge  # noqa: F401,E402  (LLM-as-judge through an llm client)
from . import info_consistency  # noqa: F401,E402  (Info-consistent GRPO stability, helpfulness)
