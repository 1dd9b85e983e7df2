"""Tools a multi-turn rollout can call (registry kind `tool`): `tool(query: str) -> str`.

A tool is a class built once per run with its YAML parameters (and the task, for tools that
read task data); calling it returns the observation text. A tool that fails returns an
`error: ...` observation instead of raising: the rollout goes on, as in Search-R1 and ToRL.
"""
from __future__ import annotations

import ast
import json
import operator
from typing import Literal

from ..errors import UserError
from ..registry import register
from ..sandbox import Limits, SandboxUnavailable, check_host, run_python


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


@register("tool", "python")
class Python:
    """Run model-written Python in a fresh sandboxed interpreter per call (`rlrecipes.sandbox`:
    bubblewrap namespaces, a private read-only root with only the standard library, a scratch
    tmpfs of `scratch_mb` MB and `max_files` files, seccomp, rlimits); returns its stdout (or the
    last line of stderr as an error), cut to `max_output` characters. Limits: `timeout_s` wall
    time (the call returns within it plus a fraction of a second), the same in CPU seconds,
    `memory_mb` of address space. `sandbox: unsafe_local` runs the program with rlimits only,
    no isolation: for hosts without bubblewrap and code you trust; the run's manifest, log and
    `rlrecipes list` say so."""

    def __init__(self, task=None, timeout_s: float = 5.0, memory_mb: int = 512, max_output: int = 1000,
                 max_files: int = 64, scratch_mb: int = 16, sandbox: Literal["bwrap", "unsafe_local"] = "bwrap"):
        self.limits = Limits(timeout_s=timeout_s, memory_mb=memory_mb, max_output=max_output,
                             max_files=max_files, scratch_mb=scratch_mb)
        self.sandbox = sandbox
        if sandbox == "bwrap":
            require_sandbox()

    def __call__(self, code: str) -> str:
        res = run_python(code, self.limits, self.sandbox)
        if res.timed_out:
            return f"error: timed out after {self.limits.timeout_s:g}s"
        if res.output_over:
            return f"error: output over {self.limits.output_limit} bytes; the program was stopped"
        if res.returncode != 0:
            lines = [line for line in res.stderr_tail.strip().splitlines() if line.strip()]
            reason = lines[-1] if lines else f"killed by signal {-res.returncode}" if res.returncode < 0 \
                else f"exit status {res.returncode}"
            return f"error: {reason}"[:self.limits.max_output]
        return res.stdout


def require_sandbox() -> None:
    """A one-line UserError unless this host can run the python tool's sandbox."""
    try:
        check_host()
    except SandboxUnavailable as exc:
        raise UserError("generation.tools.tool", str(exc)) from None


def tool_sandbox(recipe) -> str | None:
    """How the recipe's tool runs model-written code: `bwrap`, `unsafe_local`, or None (no code tool)."""
    tools = recipe.generation.tools
    if tools is None or tools.tool.fn != "python":
        return None
    return tools.tool.params.get("sandbox", "bwrap")
