"""A user's TRL-style reward function, loaded by `package.module:function` in tests."""


def length_reward(prompts, completions, **kwargs):
    return [float(len(c)) for c in completions]


def broken_reward(prompts, completions, **kwargs):
    raise KeyError("score")
