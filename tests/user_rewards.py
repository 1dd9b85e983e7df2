"""A user's TRL-style reward function, loaded by `package.module:function` in tests."""


def length_reward(prompts, completions, **kwargs):
    return [float(len(c)) for c in completions]


def broken_reward(prompts, completions, **kwargs):
    raise KeyError("score")


def slow_length_reward(prompts, completions, **kwargs):
    """Like length_reward, but slow enough that a test can kill the run between two steps."""
    import time
    time.sleep(0.4)
    return [float(len(c)) for c in completions]


def infinite_reward(prompts, completions, **kwargs):
    """Makes every advantage NaN (inf - inf), to exercise the non-finite guard."""
    return [float("inf")] * len(completions)


def parity_reward(prompts, completions, **kwargs):
    """A deterministic coin per completion (CRC-32 parity): binary and varied within a group, so
    barely trained models still get positives and negatives (what DisCO-style losses need)."""
    import zlib
    return [float(zlib.crc32(c.encode()) % 2) for c in completions]


def hinted_prompt_reward(prompts, completions, **kwargs):
    """1.0 exactly when the prompt carries a Scaf-GRPO scratchpad hint: every unhinted group
    fails and every hinted sample succeeds, so the loop's replacement path always runs."""
    return [1.0 if "<think>" in p else 0.0 for p in prompts]


def hanging_reward(prompts, completions, **kwargs):
    """Never returns (unless interrupted); a bare `except Exception` must not hide the timeout."""
    import time
    try:
        time.sleep(3600)
    except Exception:
        return [0.0] * len(completions)


def picky_reward(prompts, completions, **kwargs):
    """Fails on the one completion that is not a number: the error must name its sample."""
    return [float(c) for c in completions]


def text_reward(prompts, completions, **kwargs):
    return ["1.0"] * len(completions)


def short_reward(prompts, completions, **kwargs):
    return [1.0] * (len(completions) - 1)


PREPARED = []


def slow_to_load_reward(prompts, completions, size: int = 1, **kwargs):
    """Fast to call once `prepare` (slow, like loading a large reward model) has run."""
    assert PREPARED, "prepare runs before the first call"
    return [float(size)] * len(completions)


def _slow_prepare(size: int = 1, **kwargs):
    import time
    time.sleep(0.6)
    PREPARED.append(size)


slow_to_load_reward.prepare = _slow_prepare
