"""Every malformed recipe under tests/malformed/ gives one line naming the field, exit code 2,
and no traceback. Each file states the field path it must name in its `# expect:` line and
the extra CLI arguments in `# args:`."""
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlrecipes.cli import app

CORPUS = sorted((Path(__file__).parent / "malformed").glob("*.yaml"))


def _header(path: Path, key: str) -> str:
    for line in path.read_text().splitlines():
        if line.startswith(f"# {key}:"):
            return line.split(":", 1)[1].strip()
    return ""


def test_corpus_is_big_enough():
    assert len(CORPUS) >= 70


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_malformed_recipe(path):
    args = ["validate", str(path), *shlex.split(_header(path, "args"))]
    result = CliRunner().invoke(app, args)
    out = result.output
    assert result.exit_code == 2, out
    assert _header(path, "expect") in out
    assert str(path) in out.replace("\n", "")
    assert "Traceback" not in out
    assert len(out.strip().splitlines()) <= 3  # one message (rich may wrap a long line)


def test_real_process_prints_one_line_and_no_traceback():
    path = Path(__file__).parent / "malformed" / "loss_param_typo.yaml"
    proc = subprocess.run([sys.executable, "-m", "rlrecipes", "validate", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "algorithm.loss.eps_hgh: unknown parameter of loss 'ppo_clip' (did you mean eps_high?)" in \
        proc.stderr.replace("\n", "")


def test_debug_shows_the_traceback():
    path = Path(__file__).parent / "malformed" / "loss_param_typo.yaml"
    proc = subprocess.run([sys.executable, "-m", "rlrecipes", "--debug", "validate", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


def _one_line_error(args) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 3
    return result.output.replace("\n", "")


def test_a_recipe_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert f"{path}: not UTF-8 text (byte 9) (save the file as UTF-8)" in _one_line_error(["validate", str(path)])


def test_a_directory_is_not_a_recipe(tmp_path):
    assert f"{tmp_path}: is a directory, not a recipe file" in _one_line_error(["validate", str(tmp_path)])
    assert "is a directory" in _one_line_error(["train", str(tmp_path)])


def test_nesting_past_the_recursion_limit(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("name: x\nextra: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested deeper than 64 levels" in _one_line_error(["validate", str(path)])
