"""Checks against ActiveCampaign made while saving configuration (the "Connect" step), and the
connection's stored API key: which secret holds it, and to which hosts it may be sent.

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
    from functions.services import Services
    from shared.activecampaign import ActiveCampaignClient
    from shared.config import Connection
    from shared.configstore import ConfigSnapshot

__all__ = ["account", "default_secret_name", "refuse_stored_key_for_another_host", "stored_key"]

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


def default_secret_name(name: str) -> str:
    return f"activecampaign-{name}"


def refuse_stored_key_for_another_host(current: ConfigSnapshot, name: str, connection: Connection) -> None:
    """ApiKeyRequired when no key was sent and the stored one would go to a host it was not given for.

    A stored key was given for the hosts of the connections using its secret. Sending it elsewhere
    on the strength of a hostname alone (moving a connection, or naming another connection's
    apiKeySecret beside a new host) would let anyone who can edit connections collect it at an
    account of their own. A secret no connection uses yet (stored by scripts/deploy.sh) is bound
    to the host of the first connection that names it.
    """
    existing = current.item("connections", name)
    if existing is not None and existing["hostname"] != connection.hostname:
        raise ApiError(
            400,
            "ApiKeyRequired",
            f"connection {name!r} moves from {existing['hostname']} to {connection.hostname}: send the API key "
            "of the new account as apiKey in the same request (the stored key is never sent to another host)",
        )
    # Key Vault secret names are case-insensitive.
    secret = connection.api_key_secret.lower()
    hosts = {c.hostname for c in current.config.connections.values() if c.api_key_secret.lower() == secret}
    if hosts and connection.hostname not in hosts:
        raise ApiError(
            400,
            "ApiKeyRequired",
            f"secret {connection.api_key_secret!r} holds the key of {', '.join(sorted(hosts))}, not of "
            f"{connection.hostname}: send the API key of that account as apiKey (the stored key is never sent "
            "to another host)",
        )


def stored_key(svc: Services, connection: Connection) -> str:
    """The connection's stored key, for its hostname only (a key bound to another host is refused:
    shared/secrets.py); ApiKeyRequired when there is none to send there."""
    from shared.secrets import KeyBoundToAnotherHost, SecretNotFound, connection_key

    name, secret = connection.name, connection.api_key_secret
    try:
        return connection_key(svc.secrets, name, secret, connection.hostname, refresh=True)
    except KeyBoundToAnotherHost as exc:
        raise ApiError(400, "ApiKeyRequired", str(exc)) from None
    except SecretNotFound:
        raise ApiError(
            400,
            "ApiKeyRequired",
            f"no API key is stored for connection {name!r} (secret {secret!r}): send the ActiveCampaign API key "
            "as apiKey",
        ) from None
