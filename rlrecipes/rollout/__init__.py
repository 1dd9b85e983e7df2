"""Rollouts: batched generation and prompt samplers. Importing registers the samplers."""
from . import samplers, scaffold, tools  # noqa: F401
from .generate import Rollout, generate  # noqa: F401
