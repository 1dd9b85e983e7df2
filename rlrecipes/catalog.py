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


SEED_PAPERS = Path("papers") / "seed_papers.yaml"   # under the recipe folder
PAPER_STATUS = ("planned", "out-of-scope")


def seed_papers(directory: Path, recipe_names: set[str]) -> list[dict]:
    """The seed papers of `directory/papers/seed_papers.yaml` (none if the file is absent), each
    checked: a title, an arXiv id or null, and either `recipes` (names in `directory`) or a
    `status` (planned | out-of-scope) with a one-line `reason`."""
    import yaml
    path = directory / SEED_PAPERS
    if not path.exists():
        return []
    entries = (yaml.safe_load(path.read_text()) or {}).get("papers")
    if not isinstance(entries, list):
        raise UserError(str(path), "no `papers:` list", "see recipes/papers/seed_papers.yaml in the repository")
    for i, e in enumerate(entries):
        where = f"{path}: papers[{i}]"
        if not isinstance(e, dict) or not isinstance(e.get("title"), str) or not e["title"].strip():
            raise UserError(where + ".title", "every paper needs a title")
        if e.get("arxiv") is not None and not isinstance(e["arxiv"], str):
            raise UserError(where + ".arxiv", f"{e['arxiv']!r} is not text", 'quote it ("2506.05433") or write null')
        if "recipes" in e:
            unknown = [n for n in e["recipes"] or [None] if n not in recipe_names]
            if unknown:
                raise UserError(where + ".recipes", f"{unknown[0]!r} is not a recipe in {directory}/")
        elif e.get("status") not in PAPER_STATUS or not str(e.get("reason") or "").strip():
            raise UserError(where + ".status", "a paper without recipes needs a status and a reason",
                            f"status: one of {', '.join(PAPER_STATUS)}; reason: one line")
    return entries


def paper_rows(directory: Path, rows: list[dict]) -> tuple[list[dict], dict]:
    """(rows for the seed papers without a recipe, counts of the seed papers by status: a paper
    with recipes counts under its best recipe's status)."""
    by_name = {r["name"]: r for r in rows}
    order = ["working", "partial", "unverified", "recon", "not-yet", "planned", "out-of-scope"]
    extra, counts = [], {}
    for e in seed_papers(directory, set(by_name)):
        if "recipes" in e:
            status = min((by_name[n]["status"] for n in e["recipes"]), key=lambda s: order.index(s) if s in order else 99)
        else:
            status = e["status"]
            extra.append({"name": None, "path": None, "paper": e["title"], "arxiv": e.get("arxiv"), "status": status,
                          "presets": [], "summary": e["reason"], "tool_sandbox": None})
        counts[status] = counts.get(status, 0) + 1
    return extra, counts


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
