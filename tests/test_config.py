"""Recipe loading: presets merge deeply, overrides parse as YAML, the named override keys work."""
import pytest

from rlrecipes.config import apply_override, deep_merge, load_recipe
from rlrecipes.errors import UserError


def test_deep_merge_replaces_lists_and_merges_dicts():
    base = {"a": {"x": 1, "y": 2}, "l": [1, 2]}
    assert deep_merge(base, {"a": {"y": 3}, "l": [9]}) == {"a": {"x": 1, "y": 3}, "l": [9]}
    assert base == {"a": {"x": 1, "y": 2}, "l": [1, 2]}  # not mutated


def test_override_values_are_yaml():
    raw = {"train": {"steps": 1}}
    apply_override(raw, "train.steps=500")
    apply_override(raw, "eval.k=[1, 4]")
    apply_override(raw, "train.lr=1e-5")
    apply_override(raw, "model.name_or_path=tiny")
    assert raw == {"train": {"steps": 500, "lr": 1e-5}, "eval": {"k": [1, 4]},
                   "model": {"name_or_path": "tiny"}}


@pytest.mark.parametrize("override,check", [
    ("train.steps=7", lambda r: r.train.steps == 7),
    ("train.prompts_per_step=3", lambda r: r.train.prompts_per_step == 3),
    ("train.group_size=5", lambda r: r.train.group_size == 5),
    ("train.lr=2.0e-5", lambda r: r.train.lr == 2e-5),
    ("train.seed=11", lambda r: r.train.seed == 11),
    ("generation.max_new_tokens=9", lambda r: r.generation.max_new_tokens == 9),
    ("generation.temperature=0.7", lambda r: r.generation.temperature == 0.7),
    ("model.adapter=qlora", lambda r: r.model.adapter == "qlora"),
    ("model.adapter=none", lambda r: r.model.adapter == "none"),
    ("checkpoint.every=4", lambda r: r.checkpoint.every == 4),
    ("eval.every=10", lambda r: r.eval.every == 10),
    ("eval.samples=16", lambda r: r.eval.samples == 16),
])
def test_named_override_keys(override, check):
    assert check(load_recipe("recipes/grpo.yaml", "tiny", [override]))


def test_preset_merges_over_base():
    base = load_recipe("recipes/grpo.yaml")
    tiny = load_recipe("recipes/grpo.yaml", "tiny")
    assert base.model.name_or_path == "Qwen/Qwen2.5-Math-1.5B"
    assert tiny.model.name_or_path == "tiny"
    assert tiny.model.lora.r == base.model.lora.r  # untouched keys survive the merge
    assert tiny.algorithm.kl.beta == base.algorithm.kl.beta


def test_overrides_apply_after_preset():
    r = load_recipe("recipes/grpo.yaml", "tiny", ["train.steps=3"])
    assert r.train.steps == 3


def test_override_through_a_scalar_is_an_error():
    with pytest.raises(UserError, match="train.steps is not a section"):
        load_recipe("recipes/grpo.yaml", None, ["train.steps.x=1"])


def test_yaml_is_loaded_safely(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_recipe(p)
