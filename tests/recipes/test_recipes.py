"""Every recipe in recipes/: validates with each preset, cites its sources for real fields, and
its tiny preset takes two RL steps offline with a finite loss and moving weights."""
import json
import math
from pathlib import Path

import pytest
import yaml

from rlrecipes.catalog import flatten
from rlrecipes.config import load_recipe, to_dict
from rlrecipes.registry import get
from rlrecipes.run import train

from ..conftest import FAST, RECIPES

ALL = sorted(RECIPES.glob("*.yaml"))
VLM = [p for p in ALL if "tiny_vlm" in (yaml.safe_load(p.read_text()).get("presets") or {})]
# A model after 20 SFT steps has mean token entropy above GTPO's 0.7 filter, so every completion
# would be dropped (A = 0) and nothing would move; lift the filter to exercise the gradient path.
# SPO's offline values sample every training prompt at the first step: keep that set small.


def _short_rm_stages(name: str) -> list[str]:
    """Recipes that score with a learned reward model keep their tiny preset's stages (rm
    templates, inits, labels) and rewards, with 20 SFT and 3 rm steps on small batches."""
    preset = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())["presets"]["tiny"]
    stages = []
    for stage in preset["stages"]:
        if stage["kind"] == "sft":
            stage = {**stage, "steps": 20, "batch_size": 16}
        if stage["kind"] == "rm":
            stage = {**stage, "steps": 3, "batch_size": 8, "rm": {**stage["rm"], "eval_size": 8}}
        stages.append(stage)
    rewards = preset.get("rewards") or yaml.safe_load((RECIPES / f"{name}.yaml").read_text())["rewards"]
    return ["stages=" + json.dumps(stages), "rewards=" + json.dumps(rewards)]


def _own_rewards(name: str) -> list[str]:
    """Recipes whose point is their reward (segment credit) keep it in place of FAST's."""
    return ["rewards=" + json.dumps(yaml.safe_load((RECIPES / f"{name}.yaml").read_text())["rewards"])]


EXTRA = {"subrl": _own_rewards("subrl"), "hrpo": _own_rewards("hrpo"), "gtpo": ["algorithm.loss.entropy_threshold=100.0"],
         "spo": ["data.train_size=12", "algorithm.advantage.offline_n=2"],
         "safe_mogrpo": _short_rm_stages("safe_mogrpo"), "polar": _short_rm_stages("polar")}


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_recipe_validates_and_cites_real_fields(path):
    raw = yaml.safe_load(path.read_text())
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    assert recipe.paper.arxiv and recipe.paper.title
    metric, task = recipe.expect.tiny.get("metric"), get("task", recipe.data.task)
    sampler = get("sampler", recipe.algorithm.sampler.fn)
    own = sampler.eval_names(**recipe.algorithm.sampler.params) if hasattr(sampler, "eval_names") else []
    assert metric in ("pass@1", "srcc", "plcc", *task.metrics, *own) and recipe.expect.tiny.get("min_gain") is not None
    if metric in ("srcc", "plcc"):  # correlation metrics need a regression task
        assert task.regression
    fields = flatten(to_dict(recipe))
    for key in recipe.sources:  # a source must name a field (or a section) the recipe has
        assert key in fields or any(f.startswith(key + ".") for f in fields) or key in raw, key
    for preset in raw.get("presets", {}):
        load_recipe(path, preset)
    if recipe.fidelity.status in ("recon", "unverified", "partial"):
        assert recipe.fidelity.notes, "a recipe that is not fully faithful says why"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_tiny_preset_takes_two_steps(path, tmp_path):
    if any(s.get("kind") == "practice" for s in yaml.safe_load(path.read_text())["presets"]["tiny"].get("stages", [])):
        pytest.skip("a practice stage trains no weights; tests/test_practice.py runs and resumes it")
    r = load_recipe(path, "tiny", FAST + ["eval.at_start=false", "eval.at_end=false"] + EXTRA.get(path.stem, []))
    train(r, str(tmp_path / "run"), say=lambda *a: None)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "loss" in row]
    assert len(steps) == 2 and all(math.isfinite(row["loss"]) for row in steps)
    assert all(row["skipped_updates"] == 0 for row in steps)
    from safetensors.torch import load_file
    weights = load_file(Path(tmp_path / "run" / "final" / "adapter_model.safetensors"))
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)  # B starts at 0
    if any(s.kind == "rm" for s in r.stages):   # the run's reward model was trained and scored the steps
        assert (tmp_path / "run" / "rm-model" / "rlrecipes_rm.json").exists()
        assert all(math.isfinite(row["reward_mean"]) for row in steps)


@pytest.mark.parametrize("path", VLM, ids=lambda p: p.stem)
def test_tiny_vlm_preset_takes_two_steps_on_images(path, tmp_path):
    """The image mode: the tiny Qwen2-VL trains on synthetic images (LoRA on the language model)."""
    r = load_recipe(path, "tiny_vlm", FAST + ["eval.at_start=false", "eval.at_end=false", "data.train_size=64"])
    assert r.model.vision is not None and get("task", r.data.task).name in ("squares", "image_rating")
    train(r, str(tmp_path / "run"), say=lambda *a: None)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "loss" in row]
    assert len(steps) == 2 and all(math.isfinite(row["loss"]) and row["skipped_updates"] == 0 for row in steps)
    from safetensors.torch import load_file
    weights = load_file(Path(tmp_path / "run" / "final" / "adapter_model.safetensors"))
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)
    assert not any(".visual." in k for k in weights)   # the vision tower stays frozen
    assert (tmp_path / "run" / "final" / "preprocessor_config.json").exists()
