import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"

# Small, fast settings for tests that run the tiny preset end to end.
FAST = ["stages=[{kind: sft, steps: 20, lr: 3.0e-3, batch_size: 16}, {kind: rl}]",
        "train.steps=2", "train.prompts_per_step=4", "train.group_size=4",
        "eval.samples=2", "eval.k=[1]", "eval.limit=8", "data.test_size=16",
        "generation.max_new_tokens=24",
        # a barely trained model rarely scores on accuracy/format; the parity coin varies within
        # a group, so every step has non-zero advantages (and positives and negatives)
        "rewards=[{fn: accuracy}, {fn: format, weight: 0.1}, "
        "{fn: 'tests.user_rewards:parity_reward', weight: 1.0}]"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _chdir_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
