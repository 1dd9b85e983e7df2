"""Per-call cost of the `python` tool's sandbox, against the same program run unsandboxed.

Runs `--calls` short programs (`print(sum(range(100)))`) three ways, in one process, interleaved:
the tool with `sandbox: bwrap` (namespaces, seccomp, limits), the tool with
`sandbox: unsafe_local` (rlimits only), and a bare `python -I -S -c` subprocess (the floor any
out-of-process tool pays). Prints the mean and median per call of each and the ratios.
Not a test: the numbers depend on the machine.

    python benchmarks/sandbox_overhead.py [--calls 100]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from rlrecipes.registry import get

CODE = "print(sum(range(100)))"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=100)
    args = ap.parse_args()
    tool = get("tool", "python")
    runners = {"bwrap": tool(sandbox="bwrap"), "unsafe_local": tool(sandbox="unsafe_local"),
               "bare subprocess": lambda code: subprocess.run([sys.executable, "-I", "-S", "-c", code],
                                                              capture_output=True, text=True).stdout}
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.calls):
        for name, run in runners.items():
            t0 = time.perf_counter()
            out = run(CODE)
            times[name].append(time.perf_counter() - t0)
            assert out.strip() == "4950", (name, out)
    floor = statistics.mean(times["bare subprocess"])
    print(f"{args.calls} calls of {CODE!r} each, interleaved")
    for name, ts in times.items():
        mean = statistics.mean(ts)
        print(f"  {name:16s} mean {mean * 1e3:6.1f} ms  median {statistics.median(ts) * 1e3:6.1f} ms  "
              f"x{mean / floor:.2f} of bare subprocess")


if __name__ == "__main__":
    main()
