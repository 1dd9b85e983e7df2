import pytest

from rlrecipes.errors import UserError
from rlrecipes.registry import KINDS, call_with, check_params, get, names, register


def test_kinds_and_builtins():
    assert {"reward", "advantage", "loss", "regularizer", "sampler", "task"} <= set(KINDS)
    assert "grpo" in names("advantage") and "dr_grpo" in names("advantage")
    assert "ppo_clip" in names("loss")
    assert {"token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "constant"} <= set(names("aggregation"))
    assert {"kl", "entropy"} <= set(names("regularizer"))
    assert {"accuracy", "format"} <= set(names("reward"))
    assert "uniform" in names("sampler") and "arith" in names("task")


def test_register_and_get_and_duplicate():
    @register("reward", "_test_const")
    def const(prompts, completions, value: float = 1.0, **kw):
        return [value] * len(completions)

    assert get("reward", "_test_const") is const
    with pytest.raises(ValueError, match="registered twice"):
        register("reward", "_test_const")(lambda: None)


def test_unknown_name_lists_a_suggestion():
    with pytest.raises(UserError, match="did you mean grpo"):
        get("advantage", "gpro", "algorithm.advantage.fn")


def test_check_params_against_signature():
    check_params("loss", "ppo_clip", {"eps_low": 0.1}, "algorithm.loss",
                 provided=("logp_NT", "old_logp_NT", "adv_N", "mask_NT"))
    with pytest.raises(UserError, match="algorithm.loss.logp_NT: unknown parameter"):
        check_params("loss", "ppo_clip", {"logp_NT": 1}, "algorithm.loss",
                     provided=("logp_NT", "old_logp_NT", "adv_N", "mask_NT"))


def test_required_parameter_missing():
    @register("regularizer", "_test_needs_coef")
    def needs(mask_NT, coef):
        return mask_NT * coef, {}

    with pytest.raises(UserError, match="reg.coef: required parameter"):
        check_params("regularizer", "_test_needs_coef", {}, "reg", provided=("mask_NT",))


def test_user_reward_by_module_path():
    fn = get("reward", "tests.user_rewards:length_reward")
    assert fn(["p"], ["abc"]) == [3.0]


def test_call_with_passes_only_named_inputs():
    def f(a, x=0, *, y):
        return a, x, y
    assert call_with(f, {"x": 1, "y": 2, "z": 3}, {}, positional=(0,)) == (0, 1, 2)
