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
from typing_extensions import is_typeddict

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


MAX_DEPTH = 64   # nesting levels a recipe may use (a real one needs about 5)


class RecipeLoader(yaml.SafeLoader):
    """`yaml.safe_load`, except that numbers in exponent form without a dot or a signed
    exponent (`1e-5`, `1.0e5`), which YAML 1.1 reads as strings, are floats (as in YAML 1.2),
    and a key given twice in one mapping is an error naming both lines."""

    def compose_mapping_node(self, anchor):
        # Checked as composed, before merge keys (`<<: *base`) are flattened into the mapping,
        # so an explicit key overriding a merged one is not a duplicate, and by key rather
        # than by line, so `{a: 1, a: 2}` on one line is one.
        node = super().compose_mapping_node(anchor)
        seen: dict = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
            if key in seen:
                raise UserError(f"line {line}", f"duplicate key {key_node.value!r} (first at line {seen[key]})",
                                "keep one of them")
            seen[key] = line
        return node


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def parse_yaml(text: str):
    """Parse recipe text with `RecipeLoader`; refuse nesting deeper than MAX_DEPTH."""
    try:
        value = yaml.load(text, Loader=RecipeLoader)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError:
        raise UserError("", f"nested deeper than {MAX_DEPTH} levels", "flatten the YAML") from None
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > MAX_DEPTH:
                raise UserError("", f"nested deeper than {MAX_DEPTH} levels", "flatten the YAML")
            stack += [(child, depth + 1) for child in (node.values() if isinstance(node, dict) else node)]
    return value


def apply_override(raw: dict, override: str) -> dict:
    """Apply `a.b.c=value` to the raw recipe dict; the value is parsed as YAML (`parse_yaml`)."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise UserError(f"-o {override}", "an override is KEY=VALUE", "e.g. -o train.steps=500")
    try:
        value = parse_yaml(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise UserError(f"-o {override}", f"value is not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    except UserError as err:
        raise err.at(f"-o {override}") from None
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        name, index = _indexed(part, override)
        child = node.get(name)
        if index is not None:   # `rewards[0].weight=...`: an item of a list
            if not isinstance(child, list) or not -len(child) <= index < len(child):
                size = f"a list of {len(child)}" if isinstance(child, list) else "not a list"
                raise UserError(f"-o {override}", f"{name}[{index}] does not exist ({name} is {size})",
                                f"set the whole list, e.g. -o '{name}=[...]'")
            child = child[index]
        elif child is None:
            child = node[name] = {}
        if not isinstance(child, dict):
            raise UserError(f"-o {override}", f"{'.'.join(parts[:i + 1])} is not a section")
        node = child
    name, index = _indexed(parts[-1], override)
    if index is not None:
        raise UserError(f"-o {override}", "an override sets a field, not a list item",
                        f"set the whole list, e.g. -o '{name}=[...]', or a field of the item, {parts[-1]}.FIELD=...")
    node[name] = value
    return raw


def _indexed(part: str, override: str) -> tuple[str, int | None]:
    """`name[i]` -> (name, i); `name` -> (name, None)."""
    m = re.fullmatch(r"([^\[\]]+)\[(-?\d+)\]", part)
    if m:
        return m.group(1), int(m.group(2))
    if "[" in part or "]" in part:
        raise UserError(f"-o {override}", f"{part!r} is not a field or name[index]", "e.g. -o rewards[0].weight=0.5")
    return part, None


def _pydantic_error(exc: ValidationError) -> UserError:
    err = exc.errors()[0]
    # pydantic names the member of a union it tried ("literal['synthetic']", "list[str]"): not a field
    loc = [str(x) for x in err["loc"] if not ("[" in str(x) and not str(x).startswith("["))] or \
        [str(x) for x in err["loc"]]
    where = ".".join(loc).replace(".[", "[") or "<recipe>"
    where = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", where)
    if err["type"] == "extra_forbidden":
        parent = Recipe
        for part in loc[:-1]:
            parent = _field_model(parent, part)
        fields = (getattr(parent, "model_fields", None) or getattr(parent, "__annotations__", {})) if parent else {}
        return UserError(where, "unknown field", did_you_mean(loc[-1], fields))
    if err["type"] == "missing":
        return UserError(where, "required field is missing")
    msg = err["msg"].removeprefix("Value error, ")
    if "input" in err and isinstance(err["input"], (str, int, float, bool)):
        msg += f", got {err['input']!r}"
    hint = _FIXES.get(err["type"])
    if isinstance(err.get("input"), bool) and err["type"] != "bool_type":
        hint = "YAML reads yes/no/on/off/true/false as booleans; " + (hint or "write the value itself")
    return UserError(where, msg, hint)


_FIXES = {  # how to mend the common type errors (the field path says where)
    "int_type": "write a whole number such as 8, without quotes",
    "float_type": "write a number such as 0.5 or 1e-5, without quotes",
    "finite_number": "use a finite number, not .inf or .nan",
    "bool_type": "write true or false",
    "too_short": "give at least one value",
}


def _field_model(model, name):
    """The pydantic model (or TypedDict) class of field `name` of `model` (through lists), or None."""
    if model is None or not hasattr(model, "model_fields") or name not in model.model_fields:
        return None if not name.isdigit() else model
    ann = model.model_fields[name].annotation
    for cand in (ann, *getattr(ann, "__args__", ())):
        if isinstance(cand, type) and (issubclass(cand, BaseModel) or is_typeddict(cand)):
            return cand
    return None


def load_raw(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise UserError(str(path), "is a directory, not a recipe file", "give a .yaml file, e.g. recipes/grpo.yaml")
    if not path.is_file():
        raise UserError(str(path), "recipe file not found", "check the path; `rlrecipes list` shows recipes")
    try:
        raw = parse_yaml(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(str(path), f"not UTF-8 text (byte {exc.start})", "save the file as UTF-8") from None
    except UserError as err:
        where = f"{path}:{err.where.removeprefix('line ')}" if err.where.startswith("line ") else str(path)
        raise UserError(where, err.what, err.hint) from None
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
    presets = raw.get("presets") or {}
    if not isinstance(presets, dict):
        raise UserError("presets", f"a mapping of preset names to overrides, got {type(presets).__name__}")
    for name, value in presets.items():
        if not isinstance(value, dict):
            raise UserError(f"presets.{name}", f"a preset is a mapping of fields to override, got "
                            f"{type(value).__name__}", "e.g. tiny: {train: {steps: 60}}")
    if preset is not None:
        if preset not in presets:
            raise UserError(f"presets.{preset}" if preset else "--preset ''", "no such preset",
                            did_you_mean(preset, presets))
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
        if err.where.startswith(str(path)):   # about the file itself (YAML, presets: shape)
            raise
        # name the preset: `validate` without --preset checks every one, and a value can be
        # wrong only once a preset is merged
        named = preset and not err.where.startswith(("presets", "--preset"))
        raise err.at(f"{path} (preset {preset})" if named else str(path)) from err


def to_dict(recipe: Recipe) -> dict:
    return recipe.model_dump(mode="json", exclude={"presets"})
