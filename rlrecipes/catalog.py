"""What `list` and `show` print: recipe rows, the seed-paper catalogue (every paper of the listing
keeps a row, with recipes or a status and reason), flattened configs and differences from grpo.yaml."""
from __future__ import annotations

import re
from pathlib import Path

from .config import load_recipe, to_dict
from .errors import UserError, did_you_mean
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
# A paper with several recipes counts under the first of its recipes' statuses in this order.
STATUS_ORDER = ("working", "partial", "unverified", "recon", "not-yet", "invalid") + PAPER_STATUS
ENTRY_FIELDS = ("title", "arxiv", "recipes", "status", "reason")
ARXIV_ID = re.compile(r"\d{4}\.\d{4,5}")


def seed_papers(directory: Path, recipe_names: set[str]) -> list[dict]:
    """The seed papers of `directory/papers/seed_papers.yaml` in listing order (none if the file
    is absent). Each entry is checked (see `_check_entry`), and no title, arXiv id or recipe may
    belong to two papers, so every paper keeps exactly one row in `list`."""
    import yaml
    path = directory / SEED_PAPERS
    if not path.exists():
        return []
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(str(path), "is not valid YAML: " + " ".join(str(err).split())) from None
    entries = data.get("papers") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise UserError(str(path), "no `papers:` list", "see recipes/papers/seed_papers.yaml in the repository")
    owner: dict[tuple[str, str], int] = {}   # (field, value) -> index of the entry that has it
    for i, e in enumerate(entries):
        where = f"{path}: papers[{i}]"
        _check_entry(e, where, recipe_names, directory)
        for field, value in [("title", e["title"]), ("arxiv", e.get("arxiv"))] + [("recipes", n) for n in e.get("recipes", [])]:
            if value is not None and (field, value) in owner:
                raise UserError(f"{where}.{field}", f"{value!r} is already papers[{owner[field, value]}]'s",
                                "each paper, arXiv id and recipe belongs to one entry")
            owner[field, value] = i
    return entries


def _check_entry(e, where: str, recipe_names: set[str], directory: Path) -> None:
    """One seed paper: a title, an arXiv id (text) or null, and either `recipes` (names of
    recipes in `directory`) or a `status` (planned | out-of-scope) with a one-line `reason`."""
    if not isinstance(e, dict):
        raise UserError(where, f"{e!r} is not a mapping", "write {title: ..., arxiv: ..., recipes: [...]}")
    for key in e:
        if key not in ENTRY_FIELDS:
            raise UserError(f"{where}.{key}", "unknown field", did_you_mean(str(key), ENTRY_FIELDS))
    if not isinstance(e.get("title"), str) or not e["title"].strip():
        raise UserError(where + ".title", "every paper needs a title")
    arxiv = e.get("arxiv")
    if arxiv is not None and not (isinstance(arxiv, str) and ARXIV_ID.fullmatch(arxiv)):
        raise UserError(where + ".arxiv", f"{arxiv!r} is not an arXiv id as text",
                        'quote it ("2506.05433") or write null when it is not known')
    if ("recipes" in e) == ("status" in e):
        raise UserError(where, "needs either `recipes` or a `status` with a `reason`, not both or neither")
    if "recipes" in e:
        names = e["recipes"] if isinstance(e["recipes"], list) and e["recipes"] else [None]
        unknown = [n for n in names if n not in recipe_names]
        if unknown:
            raise UserError(where + ".recipes", f"{unknown[0]!r} is not a recipe in {directory}/",
                            "a non-empty list of recipe names (file names without .yaml)")
        if "reason" in e:
            raise UserError(where + ".reason", "a paper with recipes takes its status from them", "remove `reason`")
        return
    if e["status"] not in PAPER_STATUS:
        raise UserError(where + ".status", f"{e['status']!r} is not a status for a paper without recipes",
                        f"one of {', '.join(PAPER_STATUS)}")
    reason = e.get("reason")
    if not isinstance(reason, str) or not reason.strip() or "\n" in reason.strip():
        raise UserError(where + ".reason", "a paper without recipes needs a one-line reason",
                        "say why it has no recipe; for planned, the issue that builds it")


def catalogue(directory: Path) -> tuple[list[dict], dict[str, int]]:
    """(`list`'s rows, the seed papers counted by status). Rows: one per recipe, each with `seed`
    (the number of its paper in the seed listing, null for baselines such as grpo and dapo) and
    `paper_status` (that paper's status: its best recipe's), plus one row per seed paper without a
    recipe (name null, the reason in `summary`); baselines first, then in listing order."""
    rows = recipe_rows(directory)
    by_name = {r["name"]: r for r in rows}
    for r in rows:
        r["seed"] = r["paper_status"] = None
    counts: dict[str, int] = {}
    for number, e in enumerate(seed_papers(directory, set(by_name)), start=1):
        if "recipes" in e:
            mine = [by_name[n] for n in e["recipes"]]
            status = min((r["status"] for r in mine), key=lambda s: STATUS_ORDER.index(s) if s in STATUS_ORDER else 99)
        else:
            status = e["status"]
            mine = [{"name": None, "path": None, "paper": e["title"], "arxiv": e.get("arxiv"), "status": status,
                     "presets": [], "summary": e["reason"], "tool_sandbox": None}]
            rows += mine
        for r in mine:
            r["seed"], r["paper_status"] = number, status
        counts[status] = counts.get(status, 0) + 1
    rows.sort(key=lambda r: (r["seed"] or 0, r["name"] or ""))
    order = sorted(counts, key=lambda s: STATUS_ORDER.index(s) if s in STATUS_ORDER else 99)
    return rows, {s: counts[s] for s in order}


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
