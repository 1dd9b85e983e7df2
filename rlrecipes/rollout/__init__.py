"""Rollouts: batched generation and prompt samplers. Importing registers the samplers."""
from . import samplers  # noqa: F401
from .generate import Rollout, generate  # noqa: F401
