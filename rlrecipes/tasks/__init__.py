"""Tasks: what a problem looks like, its gold completion, and how a completion is judged.

A task separates *evaluate* (`score`: the correctness check used by eval) from *reward*
(the recipe's reward functions), as nanochat does. Importing this package registers them.
"""
from . import arith, images, polar_arith, rating, safe_arith, tool_arith, wireless  # noqa: F401
from . import critic_arith, mcq_arith  # noqa: F401,E402
from . import tool_call  # noqa: F401,E402  (CRAFT-GUI text tool calls)
from . import span  # noqa: F401,E402  (TempSamp-R1 interval grounding)
from . import cover  # noqa: F401,E402  (SubRL coverage)
from . import paraphrase  # noqa: F401,E402  (Info-consistent GRPO paraphrased sums)
from . import mas_plan  # noqa: F401,E402  (MasHost team plans)
from . import tool_chain  # noqa: F401,E402  (SALT multi-lookup sums)
from .base import Task  # noqa: F401
from .loaders import load_splits  # noqa: F401
