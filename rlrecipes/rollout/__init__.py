"""Rollouts: batched generation and prompt samplers. Importing registers the samplers."""
from . import samplers, scaffold, tools  # noqa: F401
from . import anchors, curriculum  # noqa: F401,E402  (DaGRPO anchors, CRAFT-GUI curriculum)
from .generate import Rollout, generate  # noqa: F401
