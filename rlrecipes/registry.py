"""Named components found by kind and name, like verl's `@register_policy_loss`.

    @register("advantage", "grpo")
    def grpo(rewards_BG, scale="group", eps=1e-4): ...

    get("advantage", "grpo")          # the function (or class)
    names("advantage")                # ["grpo", ...]
    check_params("advantage", "grpo", {"scale": "batch"}, field="algorithm.advantage")

Components may ask for loop-provided inputs by parameter name (`logp_NT`, `ref_logp_NT`,
`lengths_N`, `step`, ...). `call_with` passes those the function names, plus the YAML params.
"""
from __future__ import annotations

import importlib
import math
import types
import typing
import inspect
from typing import Any, Callable

from .errors import UserError, did_you_mean

KINDS = ("reward", "advantage", "loss", "aggregation", "regularizer", "sampler", "task", "transform", "tool",
         "rm_data", "llm")
_REGISTRY: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}


def register(kind: str, name: str) -> Callable:
    """Decorator: make `obj` findable as `get(kind, name)`. Names are unique per kind."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown registry kind {kind!r}; kinds: {', '.join(KINDS)}")

    def deco(obj):
        if name in _REGISTRY[kind] and _REGISTRY[kind][name] is not obj:
            raise ValueError(f"{kind} {name!r} is registered twice")
        _REGISTRY[kind][name] = obj
        return obj

    return deco


def _load_builtins() -> None:
    # Importing the component packages runs their @register decorators.
    from . import algorithms, llm, llm_local, rewards, rollout, tasks, transforms  # noqa: F401


def names(kind: str) -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY[kind])


def get(kind: str, name: str, field: str = "") -> Any:
    """The component `name` of `kind`. Rewards may also be `package.module:function`."""
    _load_builtins()
    if kind == "reward" and ":" in name:
        return _import_reward(name, field)
    if name not in _REGISTRY[kind]:
        raise UserError(field or kind, f"unknown {kind} {name!r}", did_you_mean(name, _REGISTRY[kind]))
    return _REGISTRY[kind][name]


def _import_reward(spec: str, field: str) -> Callable:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(field, f"cannot import module {module_name!r}: {exc}",
                        "is the package installed and on PYTHONPATH?") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UserError(field, f"{module_name!r} has no function {attr!r}")
    return fn


def signature_params(obj: Any) -> inspect.Signature:
    """The signature users configure: `__init__` for classes, the function itself otherwise."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    sig = inspect.signature(target)
    params = [p for p in sig.parameters.values() if p.name != "self"]
    return sig.replace(parameters=params)


def check_params(kind: str, name: str, params: dict, field: str, provided: tuple = (),
                 require: bool = True) -> None:
    """Raise if `params` are not named keyword parameters of component `name`.

    `provided` lists the parameters the loop passes itself (tensors, step, ...): users may not set
    them, and they need no value in the YAML. A `**kwargs` catch-all does not make a typo valid.
    With `require`, parameters without a default must be given.
    """
    obj = get(kind, name, f"{field}.fn")
    sig = signature_params(obj)
    settable = {p.name for p in sig.parameters.values()
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in provided}
    hints = _type_hints(obj)
    for key, value in params.items():
        if key not in settable:
            raise UserError(f"{field}.{key}", f"unknown parameter of {kind} {name!r}",
                            did_you_mean(key, settable))
        hint = hints.get(key, _default_type(sig.parameters[key]))
        if hint is not None:
            _check_type(hint, value, f"{field}.{key}")
        _value_rule(key, value, f"{field}.{key}")
    for p in sig.parameters.values():
        if (require and p.default is p.empty and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
                and p.name in settable and p.name not in params):
            raise UserError(f"{field}.{p.name}", f"required parameter of {kind} {name!r} is missing")


def _default_type(param):
    """An unannotated parameter with a number default takes numbers."""
    default = param.default
    if isinstance(default, _NUMBERS) and not isinstance(default, bool):
        return float
    return None


def _type_hints(obj) -> dict:
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        return typing.get_type_hints(target)
    except Exception:  # an annotation we cannot resolve is not checked
        return {}


_NUMBERS = (int, float)


def _check_type(hint, value, where: str) -> None:
    """Check a YAML value against a parameter's annotation: pydantic's rules (1 is a float),
    except that a bool or a string is not a number and a number must be finite."""
    from pydantic import TypeAdapter, ValidationError
    admits = _admits(hint)
    if admits & set(_NUMBERS):
        if isinstance(value, bool) and bool not in admits:
            raise UserError(where, f"expected a number, got {value!r}")
        if isinstance(value, str) and str not in admits:
            raise UserError(where, f"expected a number, got the string {value!r}", "write it without quotes")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(where, f"must be a finite number, got {value!r}")
    try:
        TypeAdapter(hint).validate_python(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UserError(where, f"{err['msg']}, got {value!r}") from None
    except Exception:  # a type pydantic cannot build a validator for is not checked
        return


def _admits(hint) -> set:
    """The plain types a hint accepts at its top level (Optional/Union unpacked; Any: all)."""
    if hint is typing.Any:
        return {bool, str, *_NUMBERS}
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return {a for a in args if isinstance(a, type)}


def _value_rule(name: str, value, where: str) -> None:
    """Ranges that hold by name across every component: an `eps*` parameter (a clip range or a
    stabiliser) is >= 0."""
    if (name == "eps" or name.startswith("eps_")) and isinstance(value, _NUMBERS) and value < 0:
        raise UserError(where, f"must be >= 0, got {value!r}")


def construct(cls, field: str, **kwargs):
    """`cls(**kwargs)` for a component built from YAML parameters: a ValueError from its
    constructor (a parameter out of its range) is the user's, a UserError naming `field`."""
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise UserError(field, str(exc)) from None


def call_with(fn: Callable, available: dict, params: dict, positional: tuple = ()) -> Any:
    """Call `fn(*positional, **params, **{inputs it names from available})`."""
    sig = signature_params(fn)
    wanted = {k: v for k, v in available.items() if k in sig.parameters and k not in params}
    return fn(*positional, **params, **wanted)
