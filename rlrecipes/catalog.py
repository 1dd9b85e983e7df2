"""What `list` and `show` print: recipe rows, flattened configs and differences from grpo.yaml."""
from __future__ import annotations

from pathlib import Path

from .config import load_recipe, to_dict
from .errors import UserError
from .rollout.tools import tool_sandbox


def recipe_rows(directory: Path) -> list[dict]:
    """One row per recipes/*.yaml; a recipe that does not validate is listed as `invalid`."""
    rows = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            r = load_recipe(path)
            rows.append({"name": r.name, "path": str(path), "paper": r.paper.title,
                         "arxiv": r.paper.arxiv, "status": r.fidelity.status,
                         "presets": sorted(r.presets), "summary": r.summary, "tool_sandbox": tool_sandbox(r)})
        except UserError as err:
            rows.append({"name": path.stem, "path": str(path), "paper": None, "arxiv": None,
                         "status": "invalid", "presets": [], "summary": str(err), "tool_sandbox": None})
    return rows


def flatten(d, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


IGNORED_IN_DIFF = ("name", "paper", "summary", "fidelity", "sources", "expect")


def diff_from_baseline(recipe, baseline) -> list[tuple[str, object, object]]:
    """(field, baseline value, recipe value) for every algorithmic field that differs."""
    a, b = flatten(to_dict(baseline)), flatten(to_dict(recipe))
    keys = sorted(set(a) | set(b))
    return [(k, a.get(k, "—"), b.get(k, "—")) for k in keys
            if not k.startswith(IGNORED_IN_DIFF) and a.get(k, "—") != b.get(k, "—")]
