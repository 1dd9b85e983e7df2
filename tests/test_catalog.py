"""The seed-paper catalogue (recipes/papers/seed_papers.yaml): every one of the 46 papers has one
row, with recipes or a status and reason; `list` shows the papers without a recipe and the counts;
a malformed entry is a one-line error naming it."""
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlrecipes.catalog import paper_rows, recipe_rows, seed_papers
from rlrecipes.cli import app
from rlrecipes.errors import UserError

runner = CliRunner()
RECIPES = Path("recipes")


def test_every_seed_paper_has_exactly_one_row():
    rows = recipe_rows(RECIPES)
    papers = seed_papers(RECIPES, {r["name"] for r in rows})
    assert len(papers) == 46 and len({p["title"] for p in papers}) == 46
    ids = [p["arxiv"] for p in papers if p["arxiv"]]
    assert len(ids) == len(set(ids))
    recipe_ids = {r["arxiv"] for r in rows}
    for p in papers:
        assert ("recipes" in p) != ("status" in p), p["title"]
        if "recipes" in p:   # the recipes cite the paper the row names
            assert {r["arxiv"] for r in rows if r["name"] in p["recipes"]} == {p["arxiv"]}, p["title"]
        else:
            assert p["reason"].strip() and p.get("arxiv") not in recipe_ids, p["title"]
    extra, counts = paper_rows(RECIPES, rows)
    assert sum(counts.values()) == 46 and counts["out-of-scope"] == 9
    assert len(extra) == counts["planned"] + counts["out-of-scope"]


def test_list_shows_papers_without_recipes():
    out = runner.invoke(app, ["list", "--json"]).output
    rows = json.loads(out)
    bare = [r for r in rows if r["name"] is None]
    assert any(r["paper"].startswith("Submodular Reinforcement Learning") and r["status"] == "planned" for r in bare)
    assert all(r["summary"] for r in bare)
    table = runner.invoke(app, ["list"], terminal_width=250).output
    assert "seed papers (46):" in table and "9 out-of-scope" in table


@pytest.mark.parametrize("entry, field", [
    ("{title: X, arxiv: 2506.05433, recipes: [grpo]}", "papers[0].arxiv"),
    ("{title: X, arxiv: null, recipes: [no_such_recipe]}", "papers[0].recipes"),
    ("{title: X, arxiv: null, status: planned}", "papers[0].status"),
    ("{arxiv: null, status: planned, reason: r}", "papers[0].title")])
def test_a_malformed_entry_names_it(tmp_path, entry, field):
    (tmp_path / "papers").mkdir()
    (tmp_path / "grpo.yaml").write_text(Path("recipes/grpo.yaml").read_text())
    (tmp_path / "papers" / "seed_papers.yaml").write_text(f"papers:\n  - {entry}\n")
    with pytest.raises(UserError, match=field.replace("[", r"\[").replace("]", r"\]")):
        seed_papers(tmp_path, {"grpo"})
    result = runner.invoke(app, ["list", "--dir", str(tmp_path)])
    assert result.exit_code == 2 and field in result.output
