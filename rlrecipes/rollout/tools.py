"""Tools a multi-turn rollout can call (registry kind `tool`): `tool(query: str) -> str`.

A tool is a class built once per run with its YAML parameters (and the task, for tools that
read task data); calling it returns the observation text. A tool that fails returns an
`error: ...` observation instead of raising: the rollout goes on, as in Search-R1 and ToRL.
"""
from __future__ import annotations

import ast
import json
import operator
import os
import subprocess
import sys
import tempfile

from ..registry import register


@register("tool", "lookup")
class Lookup:
    """Key -> value from a knowledge base: `path` (a JSON object) or the task's `knowledge()`.
    The query is stripped; an unknown key returns `missing`."""

    def __init__(self, task=None, path: str | None = None, missing: str = "not found"):
        if path:
            with open(path) as f:
                self.kb = {str(k): str(v) for k, v in json.load(f).items()}
        elif task is not None and hasattr(task, "knowledge"):
            self.kb = {str(k): str(v) for k, v in task.knowledge().items()}
        else:
            raise ValueError("lookup needs `path` (a JSON object) or a task with knowledge()")
        self.missing = missing

    def __call__(self, query: str) -> str:
        return self.kb.get(query.strip(), self.missing)


_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}


@register("tool", "calculator")
class Calculator:
    """Arithmetic on numbers with + - * / // % ** and parentheses, parsed with `ast` (never
    `eval`): exponents up to `max_exponent`, operands and results up to `max_abs` in size,
    expressions up to `max_chars` long."""

    def __init__(self, task=None, max_exponent: int = 64, max_abs: float = 1e30, max_chars: int = 200):
        self.max_exponent, self.max_abs, self.max_chars = max_exponent, max_abs, max_chars

    def _eval(self, node):
        if isinstance(node, ast.Expression):
            return self._eval(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return self._check(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = self._eval(node.left), self._eval(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > self.max_exponent:
                raise ValueError(f"exponent above {self.max_exponent}")
            return self._check(_BINARY[type(node.op)](left, right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return self._check(_UNARY[type(node.op)](self._eval(node.operand)))
        raise ValueError(f"unsupported expression: {type(node).__name__}")

    def _check(self, value):
        if isinstance(value, complex) or abs(value) > self.max_abs:
            raise ValueError("number out of range")
        return value

    def __call__(self, query: str) -> str:
        if len(query) > self.max_chars:
            return f"error: expression longer than {self.max_chars} characters"
        try:
            value = self._eval(ast.parse(query.strip(), mode="eval"))
        except ZeroDivisionError:
            return "error: division by zero"
        except (SyntaxError, ValueError, TypeError, OverflowError) as exc:
            return f"error: {exc}"
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


# Prepended to every program: sockets fail, so a program cannot reach the network through
# Python (a process-level guard, not a kernel sandbox).
_NO_NETWORK = ("import socket as _s\n"
               "def _blocked(*a, **k):\n    raise OSError('network access is disabled in this sandbox')\n"
               "_s.socket = _blocked; _s.create_connection = _blocked; _s.getaddrinfo = _blocked\n"
               "del _s, _blocked\n")


def _limits(memory_bytes: int, cpu_seconds: int):
    def apply():
        import resource
        os.setsid()  # its own process group, so a timeout kills everything it started
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    return apply


@register("tool", "python")
class Python:
    """Run a Python program in a subprocess (`python -I`, empty environment, a temporary working
    directory) with a wall-time limit, a CPU-time limit, an address-space limit of `memory_mb`
    and sockets disabled; returns its stdout (or the last line of stderr as an error), cut to
    `max_output` characters. POSIX only (resource limits)."""

    def __init__(self, task=None, timeout_s: float = 5.0, memory_mb: int = 512, max_output: int = 1000):
        self.timeout_s, self.memory_mb, self.max_output = timeout_s, memory_mb, max_output

    def __call__(self, code: str) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                proc = subprocess.Popen([sys.executable, "-I", "-c", _NO_NETWORK + code], cwd=tmp, env={},
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        preexec_fn=_limits(self.memory_mb << 20, int(self.timeout_s) + 1))
            except OSError as exc:
                return f"error: could not start python: {exc}"
            try:
                out, err = proc.communicate(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.communicate()
                return f"error: timed out after {self.timeout_s:g}s"
        if proc.returncode != 0:
            lines = [line for line in err.strip().splitlines() if line.strip()]
            reason = lines[-1] if lines else f"killed by signal {-proc.returncode}" if proc.returncode < 0 \
                else f"exit status {proc.returncode}"
            return f"error: {reason}"[:self.max_output]
        return out[:self.max_output]
