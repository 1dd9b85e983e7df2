"""Recipe loading: presets merge deeply, overrides parse as YAML, the named override keys work."""
from pathlib import Path

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


def test_override_into_a_list_item():
    """`rewards[1].weight=0.5` sets a field of one list item (after the preset); a missing item,
    an item set whole, or a malformed index is a one-line error, never a traceback."""
    r = load_recipe("recipes/grpo.yaml", "tiny", ["rewards[1].weight=0.5", "rewards[-2].weight=2"])
    assert [(x.fn, x.weight) for x in r.rewards] == [("accuracy", 2.0), ("format", 0.5)]
    for override, message in [("rewards[5].weight=1", r"rewards\[5\] does not exist \(rewards is a list of 2\)"),
                              ("rewards[0]=1", "an override sets a field, not a list item"),
                              ("train[0].x=1", r"train\[0\] does not exist \(train is not a list\)"),
                              ("rewards[a].weight=1", "is not a field or name\\[index\\]")]:
        with pytest.raises(UserError, match=message) as err:
            load_recipe("recipes/grpo.yaml", "tiny", [override])
        assert f"-o {override}" in str(err.value)


def test_a_parameter_naming_a_reward_must_name_one():
    with pytest.raises(UserError, match="'nope' is not one of the recipe's rewards") as err:
        load_recipe("recipes/hrpo.yaml", "tiny", ["algorithm.advantage.action_reward=nope"])
    assert str(err.value).split(": ")[1] == "algorithm.advantage.action_reward"
    with pytest.raises(UserError, match="not one of the recipe's rewards"):
        load_recipe("recipes/dapo.yaml", "tiny", ["algorithm.sampler.metric=acc"])


def test_yaml_is_loaded_safely(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_recipe(p)



def test_exponent_numbers_are_floats_everywhere(tmp_path):
    """YAML 1.1 reads 1e-5 (no dot) and 1.0e5 (unsigned exponent) as strings; recipes read the
    number they mean: in schema fields, component parameters, presets and -o overrides."""
    from rlrecipes.config import parse_yaml
    assert parse_yaml("a: 1e-5\nb: 1.0e5\nc: -2E3\nd: .5e1\ne: '1e-5'\nf: 7\ng: 1.5") == \
        {"a": 1e-5, "b": 1e5, "c": -2000.0, "d": 5.0, "e": "1e-5", "f": 7, "g": 1.5}
    text = Path("recipes/grpo.yaml").read_text().replace("lr: 1.0e-6", "lr: 1e-6")
    text = text.replace("eps: 1.0e-4", "eps: 1e-4")
    path = tmp_path / "r.yaml"
    path.write_text(text)
    r = load_recipe(path, "tiny", ["algorithm.loss.eps_high=2e-1"])
    assert r.train.lr == 3e-3 and load_recipe(path).train.lr == 1e-6          # preset, then base
    assert r.algorithm.advantage.params["eps"] == 1e-4                        # component parameter
    assert r.algorithm.loss.params["eps_high"] == 0.2                         # -o override
    assert isinstance(r.algorithm.advantage.params["eps"], float)


def test_duplicate_keys_name_both_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\ntrain:\n  lr: 1\n  steps: 2\n  lr: 3\n")
    with pytest.raises(UserError, match=r"dup.yaml:5: duplicate key 'lr' \(first at line 3\)"):
        load_recipe(path)


def test_best_metric_names_are_what_eval_reports():
    from rlrecipes.evaluate import per_problem, reported, summarize
    values = per_problem([[1, 0, 1, 1], [0, 0, 0, 1]], [["3", "4", "3", "3"], ["1", "2", "2", "1"]], ["3", "1"],
                         [1, 2], lambda a, g: a == g)
    values.update({"tool_calls": [1.0, 2.0], "pred": [0.1, 0.5, ], "label": [0.2, 0.4]})
    got = set(summarize(values))
    assert got == set(reported([1, 2], 4, regression=True, tool_stats=("calls",)))


def test_duplicate_keys_on_one_line_and_in_overrides_but_not_through_merge_keys():
    from rlrecipes.config import parse_yaml
    with pytest.raises(UserError, match=r"line 1: duplicate key 'x' \(first at line 1\)"):
        parse_yaml("a: {x: 1, y: 2, x: 3}")
    with pytest.raises(UserError, match=r"-o algorithm.advantage=.*duplicate key 'fn'"):
        load_recipe("recipes/grpo.yaml", None, ["algorithm.advantage={fn: grpo, fn: rec}"])
    # an explicit key over one merged in with `<<: *anchor` is an override, not a duplicate
    assert parse_yaml("b: &b {x: 1, y: 2}\nc: {<<: *b, x: 3}")["c"] == {"x": 3, "y": 2}
