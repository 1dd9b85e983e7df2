"""One measurement in a fresh Python process (its imports and peak memory its own): the
benchmarks run their own script again with worker arguments, and the worker prints one line
`RESULT {json}`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run_result(cmd: list[str], what: str) -> dict:
    """The `RESULT` JSON that `cmd` prints, run from the repository root; exits with the
    command's stderr tail, naming `what`, if it fails or prints none."""
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        sys.exit(f"{what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])
