"""Errors of the feature runtime: each carries its exit code, which is part of the runtime's interface.

Rule: a failure the user can fix in the data or the spec is `bad_input` (exit 65, EX_DATAERR: permanent, the
controller's Job does not retry it); a source or Redis that cannot be reached is `unavailable` (exit 69,
EX_UNAVAILABLE: retried). Anything else is an internal error (exit 70, EX_SOFTWARE), reported by the CLI as
"internal error: <type>: <message>" after a traceback on stderr. Messages are one line and name the data:
the column, the path, the count of bad rows and one example.
"""

from __future__ import annotations

import json
from typing import Any

EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70

EXAMPLE_CHARS = 300


class PipelineError(Exception):
    """A failure of a run with a one-line message and the exit code the process ends with."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(one_line(message))
        self.message = one_line(message)
        self.exit_code = exit_code


class BadInputError(PipelineError):
    """The data or the spec is wrong; retrying the same window cannot help."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EX_DATAERR)


class UnavailableError(PipelineError):
    """A source or sink could not be reached; a retry may succeed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EX_UNAVAILABLE)


def bad_input(message: str) -> BadInputError:
    return BadInputError(message)


def unavailable(message: str) -> UnavailableError:
    return UnavailableError(message)


def internal(exc: BaseException) -> PipelineError:
    return PipelineError(f"internal error: {type(exc).__name__}: {exc}", EX_SOFTWARE)


def one_line(text: str) -> str:
    """Collapse a multi-line message (DuckDB's, pyarrow's) into one line."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def example_row(row: dict[str, Any]) -> str:
    """One row as compact JSON for an error message, cut to a readable length."""
    text = json.dumps(row, default=str, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 3] + "..."
