"""The errors ActiveCampaign's answers become: each terminal or transient (shared.errors).

No HTTP library here: the discovery code and the sandbox's tests name these without the client.
"""

from __future__ import annotations

from shared.errors import EngineError, TerminalError, TransientError

__all__ = [
    "ActiveCampaignError",
    "BatchNotFound",
    "BulkImportRejected",
    "InvalidApiKey",
    "ListNotFound",
    "PermissionDenied",
    "RateLimited",
    "Refused",
    "RequestNotSent",
    "Unavailable",
    "UnexpectedResponse",
]


class ActiveCampaignError(EngineError):
    """ActiveCampaign refused or failed a request; `status` is the HTTP status when there was one.

    A family: each concrete error below is terminal or transient (shared.errors).
    """

    code = "ActiveCampaignError"
    http_status = 502

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Refused(ActiveCampaignError, TerminalError):
    """ActiveCampaign refused the request (a 4xx without a more specific meaning)."""

    code = "ActiveCampaignRefused"
    http_status = 502


class RequestNotSent(ActiveCampaignError, TerminalError):
    """httpx refused to send the request (a header or URL it cannot encode): sending again cannot help."""

    code = "RequestNotSent"


class InvalidApiKey(ActiveCampaignError, TerminalError):
    """The API key is wrong, revoked, or its user was deleted (HTTP 401/403)."""

    code = "InvalidApiKey"
    http_status = 502


class PermissionDenied(ActiveCampaignError, TerminalError):
    """HTTP 403 for a valid key whose user lacks a permission ("You do not have permission to view
    lists."): not a wrong key, so re-reading or replacing the key does not help."""

    code = "PermissionDenied"
    http_status = 502


class ListNotFound(ActiveCampaignError, TerminalError):
    """The list does not exist on the account (HTTP 404 on GET /lists/{id})."""

    code = "ListNotFound"
    http_status = 422

    def __init__(self, message: str, *, list_id: int, status: int | None = 404) -> None:
        super().__init__(message, status=status)
        self.list_id = list_id


class Unavailable(ActiveCampaignError, TransientError):
    """Retries ran out: ActiveCampaign kept rate limiting, failing, or not answering."""

    code = "ActiveCampaignUnavailable"
    http_status = 503

    def __init__(self, message: str, *, status: int | None, attempts: int) -> None:
        super().__init__(message, status=status)
        self.attempts = attempts


class RateLimited(Unavailable):
    """The account's bulk-import budget stayed spent through every retry (another tool importing into
    the same account): a wait, not a failure. The run checkpoints and continues after `retry_after`."""

    code = "RateLimited"

    def __init__(self, message: str, *, attempts: int, retry_after: float) -> None:
        super().__init__(message, status=400, attempts=attempts)
        self.retry_after = retry_after


class BatchNotFound(ActiveCampaignError, TransientError):
    """import/info answered 404 for a batch bulk_import queued: its result is unknown (unconfirmed)."""

    code = "BatchNotFound"


class UnexpectedResponse(ActiveCampaignError, TerminalError):
    """Neither a success nor a documented error: a redirect, a non-JSON body, a body of the wrong shape."""

    code = "UnexpectedResponse"


class BulkImportRejected(ActiveCampaignError, TerminalError):
    """HTTP 400 on bulk_import: one or more contacts are malformed and nothing was queued.

    `failures` holds (index of the contact in the request, reason) pairs.
    """

    def __init__(self, message: str, *, failures: list[tuple[int, str]]) -> None:
        super().__init__(message, status=400)
        self.failures = failures
