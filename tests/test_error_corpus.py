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
    assert len(CORPUS) >= 20


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
