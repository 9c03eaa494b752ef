"""ActiveCampaign: its errors, its wire rules and the client's pacing, importable without an HTTP
library; the client itself (httpx, tenacity) is loaded on first use of one of its names, so
`function_app.py` and shared/discovery.py import no HTTP client.

- errors.py: what ActiveCampaign's answers become (terminal or transient).
- wire.py: limits, the bulk-import body, ids as ActiveCampaign spells them, answer shapes.
- pacing.py: the per-account token buckets (`Pacer`, `shared_pacer`).
- client.py: `ActiveCampaignClient` and `client_for`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.activecampaign.errors import (
    ActiveCampaignError,
    BatchNotFound,
    BulkImportRejected,
    InvalidApiKey,
    ListNotFound,
    PermissionDenied,
    RateLimited,
    Refused,
    RequestNotSent,
    Unavailable,
    UnexpectedResponse,
)
from shared.activecampaign.pacing import (
    BULK_WINDOW_SECONDS,
    DEFAULT_REQUEST_SAFETY_MARGIN,
    DEFAULT_SAFETY_MARGIN,
    Pacer,
    shared_pacer,
)
from shared.activecampaign.wire import (
    CHOICE_FIELD_TYPES,
    CONTACTS_PAGE_SIZE,
    FIELDS_PAGE_SIZE,
    MAX_BULK_BODY_BYTES,
    MAX_BULK_CONTACTS,
    BulkImportQueued,
    CustomField,
    ImportInfo,
    ListStatus,
    bulk_import_body,
    custom_field,
    int_id,
    object_in,
    options_by_field,
    request_kind,
)

if TYPE_CHECKING:
    from shared.activecampaign.client import (
        CONNECT_ATTEMPTS,
        CONNECT_TIMEOUT_SECONDS,
        DEFAULT_MAX_RETRY_SECONDS,
        SETTINGS_HINT,
        ActiveCampaignClient,
        client_for,
        connect_failure,
    )

__all__ = [
    "BULK_WINDOW_SECONDS",
    "CHOICE_FIELD_TYPES",
    "CONNECT_ATTEMPTS",
    "CONNECT_TIMEOUT_SECONDS",
    "CONTACTS_PAGE_SIZE",
    "DEFAULT_MAX_RETRY_SECONDS",
    "DEFAULT_REQUEST_SAFETY_MARGIN",
    "DEFAULT_SAFETY_MARGIN",
    "FIELDS_PAGE_SIZE",
    "MAX_BULK_BODY_BYTES",
    "MAX_BULK_CONTACTS",
    "SETTINGS_HINT",
    "ActiveCampaignClient",
    "ActiveCampaignError",
    "BatchNotFound",
    "BulkImportQueued",
    "BulkImportRejected",
    "CustomField",
    "ImportInfo",
    "InvalidApiKey",
    "ListNotFound",
    "ListStatus",
    "Pacer",
    "PermissionDenied",
    "RateLimited",
    "Refused",
    "RequestNotSent",
    "Unavailable",
    "UnexpectedResponse",
    "bulk_import_body",
    "client_for",
    "connect_failure",
    "custom_field",
    "int_id",
    "object_in",
    "options_by_field",
    "request_kind",
    "shared_pacer",
]

_CLIENT_NAMES = frozenset(
    {
        "CONNECT_ATTEMPTS",
        "CONNECT_TIMEOUT_SECONDS",
        "DEFAULT_MAX_RETRY_SECONDS",
        "SETTINGS_HINT",
        "ActiveCampaignClient",
        "client_for",
        "connect_failure",
    }
)


def __getattr__(name: str) -> Any:
    # The client's names on first use: importing httpx costs a cold start what most imports never use.
    if name in _CLIENT_NAMES:
        from shared.activecampaign import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
