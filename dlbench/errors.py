"""Errors that the CLI turns into a one-line message and a non-zero exit code (no traceback)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DlbenchError(Exception):
    """A problem the user can fix (bad name, bad value, missing file). Exit code 2."""

    exit_code = 2


class RunsFailed(DlbenchError):
    """Work that ran to the end but failed: some run ended in ``error``, or none ended ok. Exit code 1."""

    exit_code = 1

    def __init__(self, message: str, out_dir: object = None):
        super().__init__(message)
        self.out_dir = out_dir


def did_you_mean(value: object, choices: Iterable[object]) -> str:
    """ "; did you mean 'x'?" for the closest of ``choices`` to ``value`` (difflib), else "". The one copy."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class UnknownChoiceError(DlbenchError, ValueError):
    """A name or option value that is not among the valid ones; the message lists them."""

    def __init__(self, what: str, value: object, choices: Iterable[object]):
        self.what, self.value, self.choices = what, value, tuple(choices)
        valid = ", ".join(str(c) for c in self.choices)
        super().__init__(f"unknown {what} {value!r}{did_you_mean(value, self.choices)}; valid choices: {valid}")


def check_choice(what: str, value: object, choices: Iterable[object]) -> None:
    """Raise :class:`UnknownChoiceError` unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise UnknownChoiceError(what, value, choices)
