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


def train_and_resume(recipe, tmp_path, cut_at: int) -> tuple[Path, Path]:
    """Train `recipe` into tmp_path/full; copy it to tmp_path/cut without the step-`cut_at`
    checkpoint and the final outputs (a run killed after the checkpoint before it) and resume the
    copy. Returns (full, cut), whose metrics.jsonl an exact resume makes equal."""
    import shutil
    from rlrecipes import checkpoint
    from rlrecipes.run import train
    full, cut = tmp_path / "full", tmp_path / "cut"
    train(recipe, str(full), say=lambda *a: None)
    shutil.copytree(full, cut)
    shutil.rmtree(checkpoint.step_dir(cut, cut_at))
    for leftover in ("final", "summary.json"):
        path = cut / leftover
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    train(recipe, None, say=lambda *a: None, resume=str(cut))
    return full, cut
