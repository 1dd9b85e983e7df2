"""Rollouts: batched generation and prompt samplers. Importing registers the samplers."""
from . import samplers, scaffold, tools  # noqa: F401
from . import anchors, curriculum  # noqa: F401,E402  (DaGRPO anchors, CRAFT-GUI curriculum)
from . import tempsamp  # noqa: F401,E402  (TempSamp-R1 ground-truth injection)
from . import paraphrase  # noqa: F401,E402  (Info-consistent GRPO mixed-prompt groups)
from . import budget  # noqa: F401,E402  (AnytimeReasoner budgeted rollouts)
from .generate import Rollout, generate  # noqa: F401
