"""The seed-paper catalogue (recipes/papers/seed_papers.yaml): each of the 46 papers of the listing
keeps a row in `rlrecipes list` (its recipes, or a status and a reason), the counts by status add
up to 46, the README table says the same, and a malformed entry is a one-line error naming it."""
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlrecipes.catalog import seed_papers
from rlrecipes.cli import app
from rlrecipes.errors import UserError

runner = CliRunner()
RECIPES = Path("recipes")
BASELINES = {"grpo", "dapo", "dr_grpo", "gspo"}   # recipes that are not seed papers (PAPERS.md, last paragraph)
STATUSES = {"working", "partial", "unverified", "recon", "planned", "out-of-scope"}
# Named out of scope in issue 18 (A2PR too, unless issue 19 builds its LLM regularizer).
OUT_OF_SCOPE = ("Solving robust MDPs", "Agnostic Reinforcement Learning", "PARL:", "Deep Reinforcement Learning for Inventory",
                "BQ-NCO:", "SePPO:", "Delving into RL for Image Generation", "Context-Aware Bayesian Network")


@pytest.fixture(scope="module")
def rows():
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def by_seed(rows) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for r in rows:
        if r["seed"] is not None:
            out.setdefault(r["seed"], []).append(r)
    return out


def test_every_seed_paper_has_one_row_and_one_status(rows):
    papers = by_seed(rows)
    assert sorted(papers) == list(range(1, 47))
    for number, mine in papers.items():
        assert len({r["paper_status"] for r in mine}) == 1 and mine[0]["paper_status"] in STATUSES, mine
        bare = [r for r in mine if r["name"] is None]   # a paper has recipes or its own row, not both
        assert (len(bare), len(mine)) == (1, 1) if bare else all(r["name"] for r in mine), mine
    assert {r["name"] for r in rows if r["seed"] is None} == BASELINES
    assert len(rows) == len(BASELINES) + sum(len(m) for m in papers.values())
    assert len(seed_papers(RECIPES, {r["name"] for r in rows if r["name"]})) == 46


def test_recipes_cite_their_paper_and_no_arxiv_id_is_in_both_kinds_of_row(rows):
    entries = seed_papers(RECIPES, {r["name"] for r in rows if r["name"]})
    for number, e in enumerate(entries, start=1):
        if "recipes" in e:   # the recipes cite the paper their seed entry names
            assert {r["arxiv"] for r in rows if r["name"] in e["recipes"]} == {e["arxiv"]}, e["title"]
            assert {r["seed"] for r in rows if r["name"] in e["recipes"]} == {number}
    with_recipe = {r["arxiv"] for r in rows if r["name"]}
    without = {r["arxiv"] for r in rows if r["name"] is None} - {None}
    assert not with_recipe & without, "a paper got a recipe: map its seed entry to it (recipes: [...])"


def test_rows_without_recipe_say_why(rows):
    bare = [r for r in rows if r["name"] is None]
    assert bare and all(r["status"] in ("planned", "out-of-scope") for r in bare)
    for r in bare:
        assert r["summary"].strip() and "\n" not in r["summary"], r["paper"]
        if r["status"] == "planned":
            assert re.search(r"\bissues? 1[89]\b", r["summary"]), r["paper"]
    status = {r["paper"]: r["paper_status"] for r in rows if r["seed"]}
    for prefix in OUT_OF_SCOPE:
        assert [s for p, s in status.items() if p.startswith(prefix)] == ["out-of-scope"], prefix
    a2pr = [r for r in rows if r["paper"].startswith("Adaptive Advantage-Guided Policy Regularization")]
    assert a2pr and (a2pr[0]["name"] or a2pr[0]["status"] == "out-of-scope")


def test_counts_in_the_table_footer_match_the_json(rows):
    counts = Counter(mine[0]["paper_status"] for mine in by_seed(rows).values())
    assert sum(counts.values()) == 46
    table = runner.invoke(app, ["list"], terminal_width=400).output
    footer = table.strip().splitlines()[-1]
    assert footer.startswith("seed papers (46): ")
    said = dict((k, int(n)) for n, k in (part.split(" ") for part in footer.split(": ", 1)[1].split(", ")))
    assert said == dict(counts)


def test_readme_table_matches_list(rows):
    """The README's seed-paper table: one row per paper, `| # | paper | arXiv | status | ... |`."""
    text = Path("README.md").read_text()
    section = text[text.index("| # | seed paper |"):]
    lines = section.splitlines()
    end = next((i for i, line in enumerate(lines) if not line.startswith("|")), len(lines))   # the table only
    table = [line.split(" | ") for line in lines[2:end]]
    listed = {int(c[0].strip("| ")): (c[2], c[3]) for c in table if c[0].strip("| ").isdigit()}
    expect = {n: (m[0]["arxiv"] or "—", m[0]["paper_status"]) for n, m in by_seed(rows).items()}
    assert listed == expect


@pytest.mark.parametrize("entry, field", [
    ("{title: X, arxiv: 2506.05433, recipes: [grpo]}", "papers[0].arxiv"),        # a float, not text
    ("{title: X, arxiv: 'arXiv:2506.05433', recipes: [grpo]}", "papers[0].arxiv"),
    ("{title: X, arxiv: null, recipes: [no_such_recipe]}", "papers[0].recipes"),
    ("{title: X, arxiv: null, recipes: []}", "papers[0].recipes"),
    ("{title: X, arxiv: null, status: planned}", "papers[0].reason"),
    ("{title: X, arxiv: null, status: 'out of scope', reason: r}", "papers[0].status"),
    ("{title: X, arxiv: null, status: planned, reason: \"two\\nlines\"}", "papers[0].reason"),
    ("{title: X, arxiv: null, recipes: [grpo], status: planned, reason: r}", "papers[0]"),
    ("{title: X, arxiv: null, recipes: [grpo], reason: r}", "papers[0].reason"),
    ("{title: X, arxiv: null, status: planned, reasn: r}", "papers[0].reasn"),
    ("{arxiv: null, status: planned, reason: r}", "papers[0].title"),
    ("{title: X, arxiv: '2506.05433', recipes: [grpo]}\n  - {title: Y, arxiv: '2506.05433', status: planned, reason: r}",
     "papers[1].arxiv"),
    ("{title: X, arxiv: null, recipes: [grpo]}\n  - {title: Y, arxiv: null, recipes: [grpo]}", "papers[1].recipes"),
    ("just a title", "papers[0]")])
def test_a_malformed_entry_is_one_line_naming_it(tmp_path, entry, field):
    (tmp_path / "papers").mkdir()
    (tmp_path / "grpo.yaml").write_text(Path("recipes/grpo.yaml").read_text())
    (tmp_path / "papers" / "seed_papers.yaml").write_text(f"papers:\n  - {entry}\n")
    path = tmp_path / "papers" / "seed_papers.yaml"
    with pytest.raises(UserError) as err:
        seed_papers(tmp_path, {"grpo"})
    assert err.value.where == f"{path}: {field}"
    result = runner.invoke(app, ["list", "--dir", str(tmp_path)], terminal_width=1000)
    assert result.exit_code == 2 and f"{path}: {field}:" in result.output
    assert len(result.output.strip().splitlines()) == 1
