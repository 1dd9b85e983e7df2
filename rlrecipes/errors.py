"""User-facing errors: one line that says what, where and how to fix, and exit code 2.

Anything raised as `UserError` is a mistake the user can fix (a recipe field, a missing file,
a dataset column, a reward that raised). The CLI prints `str(err)` on one line and exits 2;
`--debug` shows the traceback. Every other exception is a bug in rlrecipes and keeps its traceback.
"""
from __future__ import annotations

import difflib


class UserError(Exception):
    """A mistake in the user's input. `where` is a file, a dotted YAML field path or a sample."""

    def __init__(self, where: str, what: str, hint: str | None = None):
        self.where, self.what, self.hint = where, what, hint
        msg = f"{where}: {what}" if where else what
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)

    def at(self, prefix: str) -> "UserError":
        """The same error with a file name (or outer field path) in front of `where`."""
        where = f"{prefix}: {self.where}" if self.where else prefix
        return UserError(where, self.what, self.hint)


def did_you_mean(word: str, choices) -> str:
    """A 'did you mean X?' hint, or the list of valid choices when nothing is close."""
    choices = sorted(str(c) for c in choices)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]}?"
    return "valid: " + ", ".join(choices) if choices else "nothing is registered"
