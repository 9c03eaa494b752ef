"""One failure taxonomy: every error the engine raises says, by its class, whether retrying can help.

- `TerminalError`: a person must fix something (configuration, a missing list, a wrong key, corrupt
  stored state, a guard that tripped). Running the same run again gives the same answer, so the
  worker fails the run at once, the API answers 4xx and the CLI exits with `EXIT_TERMINAL`.
- `TransientError`: try again later (network, 5xx, a busy account, a sustained rate limit, lost
  ownership). A `retry_after` in seconds marks a *wait*: the engine knows how long, so waiting is not
  a failure and uses up no retry (the worker re-queues the message with that delay, the CLI sleeps).
- Anything else is *unexpected* (a bug, a storage outage): treated as transient at most
  `UNEXPECTED_ATTEMPTS` times, then reported with its type.

Families (`EngineError` subclasses that are neither, such as `ActiveCampaignError`) only group
errors for `except` clauses; every concrete error derives from exactly one of the two kinds
(tests/engine/test_errors.py walks the classes). Callers decide with `classify`, never with lists of
classes: one place, so a new error cannot fall between two hand-kept lists.

The root of the taxonomy imports nothing of the project; the one line a person reads about an
error is `shared.error_text.describe`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

__all__ = [
    "RESET_HINT",
    "UNEXPECTED_ATTEMPTS",
    "AccountBusy",
    "EngineError",
    "GuardTripped",
    "Kind",
    "OwnershipLost",
    "RunFailed",
    "StateConflict",
    "StoredFormatTooNew",
    "StoredStateCorrupt",
    "TerminalError",
    "TransientError",
    "classify",
]

Kind = Literal["terminal", "transient", "unexpected"]
# An unexpected exception is retried this many attempts in all before the run is failed with it.
UNEXPECTED_ATTEMPTS = 3
# How a person resets an export's stored progress (named by every StoredStateCorrupt message).
RESET_HINT = (
    "reset it with `python -m shared.cli reset {export} --config FILE --what {what}` or "
    'POST /api/exports/{export}/reset with {{"what": "{what}"}} (administrators)'
)


class EngineError(Exception):
    """Root of the engine's own errors. `code` is stable: the API's error code and the log's tag."""

    code: ClassVar[str] = "EngineError"
    terminal: ClassVar[bool | None] = None  # None: a family, not a kind (see the module docstring)
    http_status: ClassVar[int] = 500
    # Seconds to wait before trying again, when the engine knows (a transient wait); None otherwise.
    retry_after: float | None = None


class TerminalError(EngineError):
    """A person must fix something; retrying cannot help. The message says what to fix."""

    code = "RunFailed"
    terminal = True
    http_status = 422


class TransientError(EngineError):
    """Try again later; nothing is wrong with the configuration or the stored state."""

    code = "TryAgainLater"
    terminal = False
    http_status = 503


class RunFailed(TerminalError):
    """A run cannot go on; the message says why and what to fix (never a secret)."""


class GuardTripped(RunFailed):
    """A safety guard stopped the run before anything was sent (removal share, cap, empty snapshot)."""

    code = "GuardTripped"


class StoredStateCorrupt(TerminalError):
    """A stored state or checkpoint blob cannot be read: never silently resent from scratch or skipped."""

    code = "StoredStateCorrupt"
    http_status = 409

    def __init__(self, blob: str, problem: str, *, export: str, what: str) -> None:
        super().__init__(
            f"the stored {_WHAT[what]} {blob!r} of export {export!r} {problem}; "
            + RESET_HINT.format(export=export, what=what)
        )
        self.blob = blob
        self.export = export
        self.what = what


_WHAT = {"checkpoint": "checkpoint", "state": "delivered state"}


class StoredFormatTooNew(StoredStateCorrupt):
    """A blob written by a newer version of the app: refused rather than misread."""

    code = "StoredFormatTooNew"

    def __init__(self, blob: str, found: int, supported: int, *, export: str, what: str) -> None:
        TerminalError.__init__(
            self,
            f"the stored {_WHAT[what]} {blob!r} of export {export!r} has format {found}, newer than the "
            f"{supported} this version reads: deploy the newer version again, or "
            + RESET_HINT.format(export=export, what=what),
        )
        self.blob = blob
        self.export = export
        self.what = what


class AccountBusy(TransientError):
    """Another run holds this ActiveCampaign account's lease (they share one rate budget).

    `retry_after`: when the holder expects to be done (shared/handover.py); `account`: its hostname,
    so the waiting run can take its place in the account's line."""

    code = "AccountBusy"
    http_status = 409
    retry_after = 60.0

    def __init__(self, message: str, *, account: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.account = account
        if retry_after is not None:
            self.retry_after = retry_after


class OwnershipLost(TransientError):
    """The run could not renew its hold on the export or the account: it stopped sending at once."""

    code = "OwnershipLost"


class StateConflict(TransientError):
    """The delivered state changed during the run (another run wrote it): plan again from the new one."""

    code = "StateConflict"


def classify(exc: BaseException) -> Kind:
    """What to do about `exc`, from its class alone."""
    if isinstance(exc, EngineError):
        # A bare family error (no kind of its own) is terminal: it says something was refused.
        return "transient" if exc.terminal is False else "terminal"
    return "unexpected"
