"""One line for "the other end never answered" or "storage refused our credentials": which
endpoint, which setting, and the likely cause.

Storage or ActiveCampaign that cannot be reached must fail in seconds with a line a person can act
on, not a minute of silence and a traceback; a storage account that refuses the key, SAS or
identity in a setting must say which setting, not "the request failed unexpectedly". Pure: an
exception (and the settings, to name the one that points there) in, a sentence out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from shared.settings import Settings, StorageConnection

__all__ = ["storage_problem", "storage_refused", "storage_unreachable"]

_HOST_PORT = re.compile(r"host='([^']+)', port=(\d+)")
_LOOPBACK = ("127.", "localhost", "::1")


def _cause(text: str) -> str:
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused (nothing listens there)"
    if "name or service not known" in lowered or "name resolution" in lowered or "getaddrinfo" in lowered:
        return "the host name does not resolve"
    if "timed out" in lowered or "timeout" in lowered:
        return "no answer in time (a firewall or private endpoint may block the way)"
    if "unreachable" in lowered or "no route" in lowered:
        return "no network route there"
    return "the connection failed"


def _endpoints(conn: StorageConnection) -> Iterator[str]:
    """host:port of each service `conn` points at."""
    from urllib.parse import urlsplit

    urls: list[str] = [u for u in (conn.blob_service_uri, conn.queue_service_uri) if u]
    text = conn.connection_string or ""
    parts = dict(p.split("=", 1) for p in text.split(";") if "=" in p)
    if parts.get("UseDevelopmentStorage", "").lower() == "true":
        urls += ["http://127.0.0.1:10000", "http://127.0.0.1:10001"]
    urls += [parts[k] for k in ("BlobEndpoint", "QueueEndpoint") if k in parts]
    if "AccountName" in parts and not any(k in parts for k in ("BlobEndpoint", "QueueEndpoint")):
        suffix = parts.get("EndpointSuffix", "core.windows.net")
        urls += [f"https://{parts['AccountName']}.{svc}.{suffix}" for svc in ("blob", "queue")]
    for url in urls:
        split = urlsplit(url)
        if split.hostname:
            yield f"{split.hostname}:{split.port or (443 if split.scheme == 'https' else 80)}"


def _settings_from_environment() -> Settings | None:
    from shared.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError:
        return None


# Azure Storage's 403 error codes (x-ms-error-code) for credentials and access, with what to check.
_REFUSALS = {
    "AuthenticationFailed": "the account key or SAS token in it is wrong, or the SAS has expired",
    "KeyBasedAuthenticationNotPermitted": "the account refuses account keys: use a managed identity "
    "(the setting's __blobServiceUri form) instead",
    "AuthorizationPermissionMismatch": "the app's identity lacks a data role on the account (Storage Blob "
    "Data Reader for the segments; Storage Blob and Queue Data Contributor for the app's own storage)",
    "AuthorizationFailure": "the account key or SAS token in it is wrong, the account's firewall does "
    "not admit this app, or the identity or SAS may not do this",
    "AuthorizationSourceIPMismatch": "the SAS token does not allow this app's IP address",
    "AuthorizationProtocolMismatch": "the SAS token does not allow this protocol",
    "AuthorizationServiceMismatch": "the SAS token does not cover this service (blob or queue)",
    "AuthorizationResourceTypeMismatch": "the SAS token does not cover this resource type",
    "AuthorizationPermissionMismatchSas": "the SAS token lacks the permission",
    "InsufficientAccountPermissions": "the credentials may not do this on the account",
}


def _matching_setting(endpoint: str, settings: Settings | None) -> str | None:
    if settings is None:
        settings = _settings_from_environment()
    if settings is None:
        return None
    names: list[str] = []
    storage, segments = settings.storage, settings.segments_storage
    if segments is not None and storage is not None and _same(segments, storage):
        segments = None  # SEGMENTS_STORAGE unset (it defaults to AzureWebJobsStorage's value)
    for conn in (storage, segments):
        if conn is not None and endpoint in set(_endpoints(conn)):
            names.append(conn.setting)
    # Two settings may point at one account with different credentials: name both.
    return " or ".join(names) or None


def _same(a: StorageConnection, b: StorageConnection) -> bool:
    return (a.connection_string, a.blob_service_uri) == (b.connection_string, b.blob_service_uri)


def storage_refused(exc: BaseException, settings: Settings | None = None) -> str | None:
    """The line for a storage request refused for its credentials or access (403); None otherwise."""
    from urllib.parse import urlsplit

    from azure.core.exceptions import HttpResponseError

    if not isinstance(exc, HttpResponseError) or exc.status_code != 403:
        return None
    # The Storage SDK sets it (a StorageErrorCode, a str enum); azure-core declares no such attribute.
    raw = getattr(exc, "error_code", None)
    code = str(getattr(raw, "value", raw) or "")
    hint = _REFUSALS.get(code)
    if hint is None:  # not Storage's (Key Vault's 403s have codes of their own)
        return None
    endpoint = "its endpoint"
    request = getattr(exc.response, "request", None)
    if request is not None:
        split = urlsplit(str(request.url))
        if split.hostname:
            endpoint = f"{split.hostname}:{split.port or (443 if split.scheme == 'https' else 80)}"
    setting = _matching_setting(endpoint, settings)
    named = f"storage {setting} at {endpoint}" if setting else f"storage at {endpoint}"
    where = f"check {setting}: " if setting else "check the storage setting: "
    return f"{named} refused the request ({code}); {where}{hint}"


def storage_problem(exc: BaseException, settings: Settings | None = None) -> str | None:
    """The line for storage that never answered or refused the app's credentials; None otherwise."""
    return storage_unreachable(exc, settings) or storage_refused(exc, settings)


def storage_unreachable(exc: BaseException, settings: Settings | None = None) -> str | None:
    """The line for a storage request that got no answer at all; None for any other error.

    `settings` (default: read from the environment) name the setting that points there."""
    from azure.core.exceptions import ServiceRequestError

    if not isinstance(exc, ServiceRequestError):
        return None
    text = str(exc)
    match = _HOST_PORT.search(text)
    endpoint = f"{match.group(1)}:{match.group(2)}" if match else "its endpoint"
    setting = _matching_setting(endpoint, settings) if match else None
    named = f"storage {setting} at {endpoint}" if setting else f"storage at {endpoint}"
    if endpoint.startswith(_LOOPBACK):
        hint = "is Azurite running? (`make serve` starts one; the tests start their own)"
    else:
        hint = "check the account name in the setting and that this network may reach it"
    return f"{named} cannot be reached: {_cause(text)}; {hint}"
