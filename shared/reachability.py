"""One line for "the other end never answered": which endpoint, and the likely cause.

Storage or ActiveCampaign that cannot be reached must fail in seconds with a line a person can act
on, not a minute of silence and a traceback. Pure: an exception (and the settings, to name the one
that points there) in, a sentence out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from shared.settings import Settings, StorageConnection

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


def storage_unreachable(exc: BaseException, settings: Settings | None = None) -> str | None:
    """The line for a storage request that got no answer at all; None for any other error.

    `settings` (default: read from the environment) name the setting that points there."""
    from azure.core.exceptions import ServiceRequestError

    if not isinstance(exc, ServiceRequestError):
        return None
    text = str(exc)
    match = _HOST_PORT.search(text)
    endpoint = f"{match.group(1)}:{match.group(2)}" if match else "its endpoint"
    setting = None
    if settings is None:
        settings = _settings_from_environment()
    if settings is not None and match:
        for conn in (settings.storage, settings.segments_storage):
            if conn is not None and endpoint in set(_endpoints(conn)):
                setting = conn.setting
                break
    named = f"storage {setting} at {endpoint}" if setting else f"storage at {endpoint}"
    if endpoint.startswith(_LOOPBACK):
        hint = "is Azurite running? (`make serve` starts one; the tests start their own)"
    else:
        hint = "check the account name in the setting and that this network may reach it"
    return f"{named} cannot be reached: {_cause(text)}; {hint}"
