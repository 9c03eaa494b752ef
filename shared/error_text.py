"""The one line a person reads about an error: in a run record, a log line, the CLI's stderr.

Kept apart from the taxonomy (shared/errors.py), which imports nothing of the project: saying
*why* storage failed needs the settings (shared/reachability.py), and every line is scrubbed of
secrets and personal data (shared/redact.py).
"""

from __future__ import annotations

from shared.errors import classify
from shared.reachability import storage_problem
from shared.redact import scrub

__all__ = ["describe"]


def describe(exc: BaseException) -> str:
    """A one-line account of `exc` for a run record or a log: unexpected ones carry their type."""
    problem = storage_problem(exc)
    if problem is not None:
        return problem
    text = scrub(str(exc)) or "(no message)"
    if classify(exc) == "unexpected":
        return f"unexpected {type(exc).__name__}: {text}"
    return text
