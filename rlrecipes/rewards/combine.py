"""Call the recipe's reward functions on one step's completions and combine them."""
from __future__ import annotations

import functools
import inspect
import math
import numbers
import signal
import threading

import torch

from ..errors import UserError
from ..registry import get
from .dense import PerSegment

LOOP_ARGS = ("prompts", "completions", "completion_ids", "group_size", "step")


class RewardFn:
    """One configured reward: the function, its YAML params bound, its weight and display name."""

    def __init__(self, spec, index: int, run_dir=None):
        self.field = f"rewards[{index}]"
        fn = get("reward", spec.fn, f"{self.field}.fn")
        # a reward that names `run_dir` (reward_model's `model: rm`) is given the run directory
        bound = {"run_dir": run_dir} if "run_dir" in inspect.signature(fn).parameters else {}
        self.fn = functools.partial(fn, **spec.params, **bound)
        # `fn.prepare(**params)`, when a reward has one (reward_model: load the model), runs once
        # before the first call and outside the deadline: a slow load is not a hung reward
        prepare = getattr(fn, "prepare", None)
        self._prepare = None if prepare is None else functools.partial(prepare, **spec.params, **bound)
        self.name = spec.label
        self.weight = spec.weight
        self.timeout_s = spec.timeout_s
        self.parts: list = []

    def required_columns(self) -> set[str]:
        """Named parameters without a default that the loop does not pass: dataset columns."""
        sig = inspect.signature(self.fn)
        return {p.name for p in sig.parameters.values()
                if p.default is p.empty and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
                and p.name not in LOOP_ARGS and p.name != "run_dir"}

    def __call__(self, prompts, completions, columns: dict, group_size: int, step: int,
                 completion_ids: list[list[int]] | None = None) -> list:
        kwargs = dict(prompts=prompts, completions=completions, group_size=group_size, step=step,
                      **({} if completion_ids is None else {"completion_ids": completion_ids}), **columns)
        try:
            out = self._call(kwargs)
        except UserError as exc:   # the reward's own one-line error; `rewards.x` names this entry
            where = exc.where.replace("rewards", self.field, 1) if exc.where.startswith("rewards.") else self.where
            raise UserError(where, exc.what, exc.hint) from None
        except RewardTimeout:
            raise UserError(self.where, f"reward function did not return within {self.timeout_s:g} s",
                            f"fix it or raise {self.field}.timeout_s") from None
        except Exception as exc:
            i = self._failing_sample(kwargs, type(exc), len(completions))
            at = f" on sample {i}" if i is not None else ""
            raise UserError(self.where, f"reward function raised {type(exc).__name__}{at}: {exc}") from exc
        if not isinstance(out, (list, tuple)) or len(out) != len(completions):
            raise UserError(self.where, f"returned {type(out).__name__} of length "
                            f"{len(out) if hasattr(out, '__len__') else '?'}; expected a list of "
                            f"{len(completions)} floats or None")
        # segment credit of the last call (rewards/dense.py), for estimators that ask for it
        self.parts = [v.parts if isinstance(v, PerSegment) else None for v in out]
        return [self._number(v, i) for i, v in enumerate(out)]

    @property
    def where(self) -> str:
        return f"{self.field} ({self.name})"

    def _call(self, kwargs: dict):
        if self._prepare is not None:
            prepare, self._prepare = self._prepare, None
            prepare()
        with Deadline(self.timeout_s):
            return self.fn(**kwargs)

    def _failing_sample(self, kwargs: dict, error: type, n: int) -> int | None:
        """The first sample that raises `error` on its own (the batch call named none)."""
        for i in range(n):
            one = {k: v[i:i + 1] if isinstance(v, (list, tuple)) and len(v) == n else v
                   for k, v in kwargs.items()}
            try:
                self._call(one)
            except error:
                return i
            except RewardTimeout:
                return None
            except Exception:  # noqa: S112  (another failure on its own says nothing about sample i)
                continue
        return None

    def _number(self, value, i: int) -> float:
        """A reward value as float (NaN for None); anything else is an error naming the sample."""
        if value is None:
            return math.nan
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if not isinstance(value, numbers.Real):   # inf passes: the loop's non-finite guard handles it
            raise UserError(self.where, f"returned {value!r} for sample {i}; a reward is a number, "
                            f"or None where it does not apply")
        return float(value)


class RewardTimeout(BaseException):
    """A BaseException, so that a reward's own `except Exception:` cannot swallow it."""


# A real-time signal no library is likely to use (SIGALRM is math-verify's).
_TIMEOUT_SIGNAL = signal.SIGRTMIN + 3 if hasattr(signal, "SIGRTMIN") else signal.SIGUSR2


class Deadline:
    """`with Deadline(s):` raises RewardTimeout in the block once it has run `s` seconds.

    In the main thread a timer thread sends the main thread a signal whose handler raises: this
    interrupts sleeps and blocking I/O (not a single long C call, which raises when it returns).
    Elsewhere (no signal handlers off the main thread) it is a no-op."""

    def __init__(self, seconds: float):
        self.seconds, self.armed = seconds, False

    def _fire(self, signum, frame):
        if self.armed:
            self.armed = False
            raise RewardTimeout

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        self.old = signal.signal(_TIMEOUT_SIGNAL, self._fire)
        self.timer = threading.Timer(self.seconds, signal.pthread_kill,
                                     (threading.main_thread().ident, _TIMEOUT_SIGNAL))
        self.timer.daemon, self.armed = True, True
        self.timer.start()
        return self

    def __exit__(self, *exc):
        if hasattr(self, "timer"):
            self.armed = False
            self.timer.cancel()
            self.timer.join()
            signal.signal(_TIMEOUT_SIGNAL, self.old)
        return False


def check_columns(reward_fns: list[RewardFn], row: dict) -> None:
    for fn in reward_fns:
        shadowed = sorted(set(fn.fn.keywords) & (set(row) - {"prompt"}))
        if shadowed:   # the column would silently replace the YAML value on every call
            raise UserError(f"{fn.field}.{shadowed[0]}", f"a parameter of reward {fn.name!r} has the name of a "
                            f"dataset column, which would replace its value", "rename the column with data.fields")
        missing = fn.required_columns() - set(row)
        if missing:
            raise UserError(f"{fn.field} ({fn.name})", f"needs dataset column(s) {sorted(missing)}",
                            "columns: " + ", ".join(sorted(row)) + "; map them with data.fields")


def score(reward_fns, prompts, completions, rows, group_size: int, step: int,
          completion_ids: list[list[int]] | None = None) -> torch.Tensor:
    """rewards_NK (float32, NaN where a reward returned None) for N completions of `rows`.
    `completion_ids` (each completion's tokens up to and including EOS, as TRL passes them)
    reach reward functions as the keyword `completion_ids`."""
    columns = {k: [row[k] for row in rows] for k in rows[0] if k != "prompt"} if rows else {}
    cols = []
    for fn in reward_fns:
        values = fn(prompts, completions, columns, group_size, step, completion_ids)
        cols.append(values)
    return torch.tensor(cols, dtype=torch.float32).T.reshape(len(completions), len(reward_fns))


def combine(rewards_NK: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """Weighted sum over rewards, skipping None (NaN); all-None rows stay NaN (as TRL)."""
    w_K = torch.tensor(weights, dtype=torch.float32)
    total_N = (rewards_NK * w_K).nansum(-1)
    total_N[torch.isnan(rewards_NK).all(-1)] = math.nan
    return total_N
