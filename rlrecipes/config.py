"""Recipe loading: YAML, presets and `-o a.b=c` overrides, validated against the schema.

A recipe is loaded in this order: `yaml.safe_load` -> merge `presets.NAME` (deep, lists replaced)
-> apply each `-o dotted.key=value` (value parsed as a YAML scalar or list) -> validate the
schema (`schema.py`) -> look up every component name and check its parameters against its
signature. Every failure is a `UserError` naming the file and the dotted field.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from .errors import UserError, did_you_mean
from .schema import (  # noqa: F401  (the models stay importable from here)
    Algorithm, Checkpoint, Component, DataConfig, Eval, Expect, Fidelity, Generation, KLConfig, LoraConfig,
    LossSpec, ModelConfig, Paper, Recipe, Reward, Stage, Strict, TinyConfig, ToolUse, Train,
)


def deep_merge(base: dict, patch: dict) -> dict:
    """`patch` over `base`; nested dicts merge, everything else (lists too) is replaced."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_override(raw: dict, override: str) -> dict:
    """Apply `a.b.c=value` to the raw recipe dict; the value is parsed as a YAML scalar/list."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise UserError(f"-o {override}", "an override is KEY=VALUE", "e.g. -o train.steps=500")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise UserError(f"-o {override}", f"value is not valid YAML: {exc.problem}") from exc
    if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-5 (no dot) as a string
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserError(f"-o {override}", f"{'.'.join(parts[:i + 1])} is not a section")
        node = child
    node[parts[-1]] = value
    return raw


def _pydantic_error(exc: ValidationError) -> UserError:
    err = exc.errors()[0]
    loc = [str(x) for x in err["loc"] if not str(x).startswith("function-after")]
    where = ".".join(loc).replace(".[", "[") or "<recipe>"
    where = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", where)
    if err["type"] == "extra_forbidden":
        parent = Recipe
        for part in loc[:-1]:
            parent = _field_model(parent, part)
        fields = parent.model_fields if parent else {}
        return UserError(where, "unknown field", did_you_mean(loc[-1], fields))
    if err["type"] == "missing":
        return UserError(where, "required field is missing")
    msg = err["msg"].removeprefix("Value error, ")
    if "input" in err and isinstance(err["input"], (str, int, float, bool)):
        msg += f", got {err['input']!r}"
    return UserError(where, msg)


def _field_model(model, name):
    """The pydantic model class of field `name` of `model` (through lists), or None."""
    if model is None or not hasattr(model, "model_fields") or name not in model.model_fields:
        return None if not name.isdigit() else model
    ann = model.model_fields[name].annotation
    for cand in (ann, *getattr(ann, "__args__", ())):
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
    return None


def load_raw(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(str(path), "recipe file not found", "check the path; `rlrecipes list` shows recipes")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(where, f"not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(raw, dict):
        raise UserError(str(path), "a recipe is a YAML mapping (name:, paper:, model:, ...)")
    return raw


def resolve(raw: dict, preset: str | None = None, overrides: list[str] = ()) -> Recipe:
    """Merge a preset and overrides into a raw recipe dict and validate the schema."""
    raw = copy.deepcopy(raw)
    if preset:
        presets = raw.get("presets") or {}
        if preset not in presets:
            raise UserError(f"presets.{preset}", "no such preset", did_you_mean(preset, presets))
        raw = deep_merge(raw, presets[preset])
    for override in overrides:
        raw = apply_override(raw, override)
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise _pydantic_error(exc) from exc


def load_recipe(path: str | Path, preset: str | None = None, overrides: list[str] = (),
                check: bool = True) -> Recipe:
    """Load, merge, validate and (by default) check every component of a recipe file."""
    try:
        recipe = resolve(load_raw(path), preset, overrides)
        if check:
            from .validate import check_components
            check_components(recipe)
        return recipe
    except UserError as err:
        raise (err if err.where.startswith(str(path)) else err.at(str(path))) from err


def to_dict(recipe: Recipe) -> dict:
    return recipe.model_dump(mode="json", exclude={"presets"})
