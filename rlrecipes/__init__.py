"""rlrecipes: one YAML per RL paper, one shared loop."""
__version__ = "0.1.0"
