"""Checks against ActiveCampaign made while saving configuration (the "Connect" step).

A short-lived client with few retries: these run inside an HTTP request, which the front end cuts
at 230 s, so a down account must answer "try later" quickly rather than retry for minutes. The
ActiveCampaign client (httpx) is imported here, inside the calls, to keep cold starts light.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from functions.http import ApiError
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.activecampaign import ActiveCampaignClient

_TIMEOUT_SECONDS = 15.0
_ATTEMPTS = 2


@contextmanager
def account(
    settings: Settings, hostname: str, api_key: str, *, connection: str
) -> Iterator[ActiveCampaignClient]:
    """A client for one account; ActiveCampaign errors become API errors naming the connection."""
    from shared.activecampaign import (
        ActiveCampaignClient,
        ActiveCampaignError,
        InvalidApiKey,
        PermissionDenied,
        Unavailable,
        shared_pacer,
    )
    from shared.apikey import ApiKeyInvalid
    from shared.hosts import validate_hostname

    allow_loopback = not settings.running_in_azure
    host = validate_hostname(
        hostname, allowed_suffixes=settings.allowed_host_suffixes, allow_loopback=allow_loopback
    )
    try:
        client = ActiveCampaignClient(
            host,
            api_key,
            pacer=shared_pacer(
                host, settings.requests_per_second, settings.bulk_imports_per_minute, settings.request_share
            ),
            allowed_suffixes=settings.allowed_host_suffixes,
            allow_loopback=allow_loopback,
            timeout=_TIMEOUT_SECONDS,
            max_attempts=_ATTEMPTS,
        )
    except ApiKeyInvalid as exc:
        # A stored key saved before keys were checked: say so instead of failing with a 500.
        raise ApiError(
            400, "InvalidApiKey", f"connection {connection!r}: {exc}; send the key again as apiKey"
        ) from None
    try:
        yield client
    except InvalidApiKey:
        raise ApiError(
            400,
            "InvalidApiKey",
            f"ActiveCampaign at {host} refused the API key of connection {connection!r}: copy the key from "
            "ActiveCampaign (Settings > Developer) and send it as apiKey",
        ) from None
    except PermissionDenied as exc:
        raise ApiError(400, "PermissionDenied", f"connection {connection!r}: {exc}") from None
    except Unavailable as exc:
        raise ApiError(
            503,
            "ActiveCampaignUnavailable",
            f"ActiveCampaign at {host} did not answer ({exc}); try again later",
        ) from None
    except ActiveCampaignError as exc:
        raise ApiError(502, "ActiveCampaignError", f"ActiveCampaign at {host}: {exc}") from None
    finally:
        client.close()
