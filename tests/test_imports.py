"""Every module of the package imports on its own, whatever was imported before it: an import
cycle (a module importing a name from a module that is still initialising) shows up only when
the cycle's far end is imported first, e.g. `import rlrecipes.trainer` in a user's script."""
import json
import subprocess
import sys

SCRIPT = """
import importlib, json, pkgutil, sys
import rlrecipes
names = [m.name for m in pkgutil.walk_packages(rlrecipes.__path__, "rlrecipes.")]
failures = {}
for name in names:   # each with none of the package imported before it (torch etc. stay)
    for k in [k for k in sys.modules if k == "rlrecipes" or k.startswith("rlrecipes.")]:
        del sys.modules[k]
    try:
        importlib.import_module(name)
    except ImportError as exc:
        failures[name] = str(exc)
print(json.dumps({"modules": len(names), "failures": failures}))
"""


def test_every_module_imports_first():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["modules"] > 50
    assert not result["failures"], result["failures"]
