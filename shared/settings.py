"""The one place where app settings (environment variables) are read, parsed and validated.

Every other module receives a `Settings` object instead of reading `os.environ`, so a bad value is
reported once, at start, with the name of the setting to fix. `SETTINGS_READ` lists every name read
here; a test cross-checks it against the Bicep template and `local.settings.sample.json`.
"""

from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from shared.auth import parse_auth_mode
from shared.errors import TerminalError

__all__ = [
    "DEFAULT_ALLOWED_HOST_SUFFIXES",
    "DEFAULT_APP_CONTAINER",
    "DEFAULT_BULK_IMPORTS_PER_MINUTE",
    "DEFAULT_CSV_QUIET_SECONDS",
    "DEFAULT_EXPORT_SCHEDULE",
    "DEFAULT_REJECTED_ROWS_RETENTION_DAYS",
    "DEFAULT_REQUESTS_PER_SECOND",
    "DEFAULT_REQUEST_SHARE",
    "DEFAULT_RUNS_KEPT_PER_EXPORT",
    "DEFAULT_RUNS_QUEUE",
    "DEFAULT_RUN_LEASE_SECONDS",
    "DEFAULT_RUN_TIME_BUDGET_SECONDS",
    "DEFAULT_SECRET_CACHE_SECONDS",
    "EASY_AUTH_MARKER",
    "SETTINGS_READ",
    "Settings",
    "SettingsError",
    "StorageConnection",
    "load_settings",
    "mask_connection_string",
    "normalise_origin",
    "storage_connection",
]

# How often the timer checks the exports (and the schedule of `scheduled` exports naming none).
DEFAULT_EXPORT_SCHEDULE = "0 */5 * * * *"
# How long a plain CSV folder (no model.json marks it complete) must see no new file before its
# snapshot is taken as complete and onRefresh exports of it are queued.
DEFAULT_CSV_QUIET_SECONDS = 300.0
DEFAULT_REQUESTS_PER_SECOND = 5.0
DEFAULT_BULK_IMPORTS_PER_MINUTE = 100.0
# The share of the account's request rate the app takes: other integrations on the account (forms,
# shop connectors, other syncs) share the same 5 requests/s and must not be starved.
DEFAULT_REQUEST_SHARE = 0.8
DEFAULT_RUN_TIME_BUDGET_SECONDS = 25 * 60.0
DEFAULT_SECRET_CACHE_SECONDS = 300.0
DEFAULT_RUNS_KEPT_PER_EXPORT = 100
DEFAULT_REJECTED_ROWS_RETENTION_DAYS = 30
# How long a run's hold on its export and account lasts without renewal (a blob lease: 15-60 s). A
# run whose process died stops blocking them this long after its last renewal.
DEFAULT_RUN_LEASE_SECONDS = 60
# Where the app keeps its own data, and the run queue. Settings so that tests (and side-by-side local
# runs) can each use their own. The worker's trigger binding names the default queue at import time,
# so on Azure another RUNS_QUEUE is refused (load_settings).
DEFAULT_APP_CONTAINER = "activecampaign-export"
DEFAULT_RUNS_QUEUE = "export-runs"
_STORAGE_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")
# ActiveCampaign's API hosts (see SECURITY.md); ACTIVECAMPAIGN_ALLOWED_HOST_SUFFIXES adds more.
DEFAULT_ALLOWED_HOST_SUFFIXES: tuple[str, ...] = (".api-us1.com", ".api-eu1.com", ".activehosted.com")

SETTINGS_READ: tuple[str, ...] = (
    "AzureWebJobsStorage",
    "SEGMENTS_STORAGE",
    "KEY_VAULT_URL",
    "AZURE_CLIENT_ID",
    "ACTIVECAMPAIGN_REQUESTS_PER_SECOND",
    "ACTIVECAMPAIGN_BULK_IMPORTS_PER_MINUTE",
    "ACTIVECAMPAIGN_REQUEST_SHARE",
    "ACTIVECAMPAIGN_ALLOWED_HOST_SUFFIXES",
    "EXPORT_SCHEDULE",
    "CSV_QUIET_SECONDS",
    "AUTH_MODE",
    "RUN_TIME_BUDGET_SECONDS",
    "SECRET_CACHE_SECONDS",
    "RUNS_KEPT_PER_EXPORT",
    "REJECTED_ROWS_RETENTION_DAYS",
    "RUN_LEASE_SECONDS",
    "APP_CONTAINER",
    "RUNS_QUEUE",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "ALLOWED_ORIGINS",
)
# Also read, but not app settings one sets: WEBSITE_INSTANCE_ID (the platform's), TEST_CRASH_AT (tests).

# Set by App Service / Functions on every Azure host, never locally.
_AZURE_MARKERS = ("WEBSITE_INSTANCE_ID", "WEBSITE_SITE_NAME")
# Set by the platform (not by us) to "True" when App Service Authentication is enabled on the app.
EASY_AUTH_MARKER = "WEBSITE_AUTH_ENABLED"
_IDENTITY_SUFFIXES = ("blobServiceUri", "queueServiceUri", "accountName", "credential", "clientId")


# The parts of a storage or Application Insights connection string that let their holder in.
_SECRET_PARTS = re.compile(
    r"\b(AccountKey|SharedAccessSignature|SharedAccessKey|InstrumentationKey|sig)=[^;]*", re.IGNORECASE
)


def mask_connection_string(text: str) -> str:
    """`text` with its key, SAS and signature values replaced by `***` (names and endpoints kept)."""
    return _SECRET_PARTS.sub(lambda m: f"{m.group(1)}=***", text)


class SettingsError(TerminalError, ValueError):
    """A setting is missing or malformed; the message names it and says what to fix."""

    code = "AppMisconfigured"
    http_status = 500


@dataclass(frozen=True)
class StorageConnection:
    """How to reach one storage account: a connection string, or identity-based service URIs.

    `setting` is the name it came from (e.g. `AzureWebJobsStorage`), kept for error messages.
    """

    setting: str
    # A connection string may hold the account key or a SAS: shown only with them masked.
    connection_string: str | None = field(default=None, repr=False)
    blob_service_uri: str | None = None
    queue_service_uri: str | None = None
    client_id: str | None = None

    def __repr__(self) -> str:
        shown = None if self.connection_string is None else mask_connection_string(self.connection_string)
        return (
            f"StorageConnection(setting={self.setting!r}, connection_string={shown!r}, "
            f"blob_service_uri={self.blob_service_uri!r}, queue_service_uri={self.queue_service_uri!r}, "
            f"client_id={self.client_id!r})"
        )

    @property
    def uses_identity(self) -> bool:
        return self.connection_string is None


@dataclass(frozen=True)
class Settings:
    storage: StorageConnection | None
    segments_storage: StorageConnection | None
    key_vault_url: str | None = None
    managed_identity_client_id: str | None = None
    requests_per_second: float = DEFAULT_REQUESTS_PER_SECOND
    bulk_imports_per_minute: float = DEFAULT_BULK_IMPORTS_PER_MINUTE
    request_share: float = DEFAULT_REQUEST_SHARE
    allowed_host_suffixes: tuple[str, ...] = DEFAULT_ALLOWED_HOST_SUFFIXES
    export_schedule: str = DEFAULT_EXPORT_SCHEDULE
    csv_quiet_seconds: float = DEFAULT_CSV_QUIET_SECONDS
    auth_mode: Literal["key", "entra"] = "key"
    run_time_budget_seconds: float = DEFAULT_RUN_TIME_BUDGET_SECONDS
    secret_cache_seconds: float = DEFAULT_SECRET_CACHE_SECONDS
    runs_kept_per_export: int = DEFAULT_RUNS_KEPT_PER_EXPORT
    rejected_rows_retention_days: int = DEFAULT_REJECTED_ROWS_RETENTION_DAYS
    run_lease_seconds: int = DEFAULT_RUN_LEASE_SECONDS
    app_container: str = DEFAULT_APP_CONTAINER
    runs_queue: str = DEFAULT_RUNS_QUEUE
    running_in_azure: bool = False
    appinsights_connection_string: str | None = field(default=None, repr=False)
    easy_auth_enabled: bool = False
    # Origins besides the app's own whose pages may change data (a front end on another host name).
    allowed_origins: tuple[str, ...] = ()
    # Which instance this process is, for run records and log lines (where a run is): the platform's
    # WEBSITE_INSTANCE_ID on Azure, "<machine>:<pid>" locally.
    instance_id: str = ""
    # Tests only (shared/faults.py): named points where the process stops dead. Refused on Azure.
    test_crash_at: frozenset[str] = frozenset()

    def require_storage(self) -> StorageConnection:
        if self.storage is None:
            raise SettingsError(
                "AzureWebJobsStorage is not set: set it to a storage connection string "
                "(UseDevelopmentStorage=true for Azurite) or set AzureWebJobsStorage__blobServiceUri "
                "and AzureWebJobsStorage__queueServiceUri for a managed identity"
            )
        return self.storage

    def require_segments_storage(self) -> StorageConnection:
        if self.segments_storage is None:
            raise SettingsError(
                "SEGMENTS_STORAGE is not set and there is no AzureWebJobsStorage to default to: "
                "set SEGMENTS_STORAGE to the connection string of the account holding the segments, "
                "or SEGMENTS_STORAGE__blobServiceUri for a managed identity"
            )
        return self.segments_storage


def _storage(env: Mapping[str, str], name: str) -> StorageConnection | None:
    value = env.get(name, "").strip()
    if value:
        if "=" not in value:
            raise SettingsError(
                f"{name} must be a storage connection string such as 'UseDevelopmentStorage=true' or "
                f"'DefaultEndpointsProtocol=https;AccountName=...;...'; for a managed identity leave it "
                f"unset and set {name}__blobServiceUri instead"
            )
        return StorageConnection(setting=name, connection_string=value)
    parts = {suffix: env.get(f"{name}__{suffix}", "").strip() for suffix in _IDENTITY_SUFFIXES}
    blob_uri = parts["blobServiceUri"]
    if not blob_uri and parts["accountName"]:
        blob_uri = f"https://{parts['accountName']}.blob.core.windows.net"
    queue_uri = parts["queueServiceUri"]
    if not queue_uri and parts["accountName"]:
        queue_uri = f"https://{parts['accountName']}.queue.core.windows.net"
    if not blob_uri and not queue_uri:
        return None
    for key, uri in (("blobServiceUri", blob_uri), ("queueServiceUri", queue_uri)):
        if uri and not uri.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise SettingsError(f"{name}__{key} must be an https:// URI, got {uri!r}")
    return StorageConnection(
        setting=name,
        blob_service_uri=blob_uri or None,
        queue_service_uri=queue_uri or None,
        client_id=parts["clientId"] or None,
    )


def storage_connection(name: str, env: Mapping[str, str] | None = None) -> StorageConnection | None:
    """The storage connection app setting `name` describes (a binding's `connection`), or None if unset."""
    return _storage(os.environ if env is None else env, name)


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a positive number, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise SettingsError(f"{name} must be a positive number, got {raw!r}")
    return value


def _share(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 1):
        raise SettingsError(
            f"{name} must be a share of the account's request rate above 0 and at most 1 "
            f"(e.g. 0.8 for 80%), got {raw!r}"
        )
    return value


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdecimal() or int(raw) < 1:
        raise SettingsError(f"{name} must be a whole number of at least 1, got {raw!r}")
    return int(raw)


def _schedule(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    from shared.schedules import ScheduleError, validate

    try:
        return validate(raw)
    except ScheduleError as exc:
        raise SettingsError(f"{name}: {exc}") from None


def _storage_name(env: Mapping[str, str], name: str, default: str, kind: str) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not _STORAGE_NAME.match(raw):
        raise SettingsError(
            f"{name} must be a {kind} name: 3-63 lower-case letters, digits and single hyphens, "
            f"starting and ending with a letter or digit; got {raw!r} (the default is {default!r})"
        )
    return raw


def _lease_seconds(env: Mapping[str, str]) -> int:
    value = _positive_int(env, "RUN_LEASE_SECONDS", DEFAULT_RUN_LEASE_SECONDS)
    if not 15 <= value <= 60:
        raise SettingsError(
            f"RUN_LEASE_SECONDS must be 15-60 (a blob lease's range), got {value}; the default is 60"
        )
    return value


def normalise_origin(text: str) -> str | None:
    """`scheme://host[:port]` in lower case without a default port, or None when `text` is no such
    origin (a path, credentials, a query, `null`)."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.username or parts.password:
        return None
    if parts.path or parts.query or parts.fragment or text.strip().endswith(("?", "#")):
        return None
    default = 443 if parts.scheme == "https" else 80
    host = parts.hostname.lower()
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def _origins(env: Mapping[str, str]) -> tuple[str, ...]:
    origins = []
    for raw in env.get("ALLOWED_ORIGINS", "").split(","):
        item = raw.strip()
        if not item:
            continue
        origin = normalise_origin(item)
        if origin is None or (origin.startswith("http://") and not _loopback_origin(origin)):
            raise SettingsError(
                "ALLOWED_ORIGINS must be a comma-separated list of origins such as 'https://portal.example.com' "
                f"(https, no path, no wildcard; http only for localhost), got {item!r}"
            )
        origins.append(origin)
    return tuple(origins)


def _loopback_origin(origin: str) -> bool:
    return urlsplit(origin).hostname in ("localhost", "127.0.0.1", "::1")


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Parse settings from `env` (default: the process environment). Raises SettingsError."""
    env = os.environ if env is None else env
    storage = _storage(env, "AzureWebJobsStorage")
    segments = _storage(env, "SEGMENTS_STORAGE") or (
        StorageConnection(
            setting="SEGMENTS_STORAGE",
            connection_string=storage.connection_string,
            blob_service_uri=storage.blob_service_uri,
            queue_service_uri=storage.queue_service_uri,
            client_id=storage.client_id,
        )
        if storage is not None
        else None
    )

    vault = env.get("KEY_VAULT_URL", "").strip() or None
    if vault is not None and not vault.startswith("https://"):
        raise SettingsError(
            f"KEY_VAULT_URL must start with https:// (e.g. https://myvault.vault.azure.net), got {vault!r}"
        )

    running_in_azure = any(env.get(marker) for marker in _AZURE_MARKERS)
    runs_queue = _storage_name(env, "RUNS_QUEUE", DEFAULT_RUNS_QUEUE, "queue")
    if running_in_azure and runs_queue != DEFAULT_RUNS_QUEUE:
        # Runs would be queued where no trigger listens, and wait there unnoticed.
        raise SettingsError(
            f"RUNS_QUEUE is {runs_queue!r}, but on Azure the worker's trigger listens on "
            f"{DEFAULT_RUNS_QUEUE!r} (it is named when the app starts): remove the RUNS_QUEUE app setting"
        )

    auth_mode = parse_auth_mode(env.get("AUTH_MODE"))
    if auth_mode is None:
        raise SettingsError(f"AUTH_MODE must be 'key' or 'entra', got {env.get('AUTH_MODE', '').strip()!r}")

    suffixes = list(DEFAULT_ALLOWED_HOST_SUFFIXES)
    for raw in env.get("ACTIVECAMPAIGN_ALLOWED_HOST_SUFFIXES", "").split(","):
        item = raw.strip().lower()
        if not item:
            continue
        if "/" in item or ":" in item or " " in item or item.strip(".").count(".") < 1:
            raise SettingsError(
                "ACTIVECAMPAIGN_ALLOWED_HOST_SUFFIXES must be a comma-separated list of domain suffixes "
                f"such as '.api-us2.com', got {raw.strip()!r}"
            )
        suffixes.append(item if item.startswith(".") else "." + item)

    return Settings(
        storage=storage,
        segments_storage=segments,
        key_vault_url=vault,
        managed_identity_client_id=env.get("AZURE_CLIENT_ID", "").strip() or None,
        requests_per_second=_positive_float(
            env, "ACTIVECAMPAIGN_REQUESTS_PER_SECOND", DEFAULT_REQUESTS_PER_SECOND
        ),
        bulk_imports_per_minute=_positive_float(
            env, "ACTIVECAMPAIGN_BULK_IMPORTS_PER_MINUTE", DEFAULT_BULK_IMPORTS_PER_MINUTE
        ),
        request_share=_share(env, "ACTIVECAMPAIGN_REQUEST_SHARE", DEFAULT_REQUEST_SHARE),
        allowed_host_suffixes=tuple(suffixes),
        export_schedule=_schedule(env, "EXPORT_SCHEDULE", DEFAULT_EXPORT_SCHEDULE),
        csv_quiet_seconds=_positive_float(env, "CSV_QUIET_SECONDS", DEFAULT_CSV_QUIET_SECONDS),
        auth_mode=auth_mode,
        run_time_budget_seconds=_positive_float(
            env, "RUN_TIME_BUDGET_SECONDS", DEFAULT_RUN_TIME_BUDGET_SECONDS
        ),
        secret_cache_seconds=_positive_float(env, "SECRET_CACHE_SECONDS", DEFAULT_SECRET_CACHE_SECONDS),
        runs_kept_per_export=_positive_int(env, "RUNS_KEPT_PER_EXPORT", DEFAULT_RUNS_KEPT_PER_EXPORT),
        rejected_rows_retention_days=_positive_int(
            env, "REJECTED_ROWS_RETENTION_DAYS", DEFAULT_REJECTED_ROWS_RETENTION_DAYS
        ),
        run_lease_seconds=_lease_seconds(env),
        app_container=_storage_name(env, "APP_CONTAINER", DEFAULT_APP_CONTAINER, "container"),
        runs_queue=runs_queue,
        running_in_azure=running_in_azure,
        appinsights_connection_string=env.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip() or None,
        easy_auth_enabled=env.get(EASY_AUTH_MARKER, "").strip().lower() == "true",
        allowed_origins=_origins(env),
        instance_id=_instance_id(env),
        test_crash_at=_crash_points(env, running_in_azure),
    )


def _instance_id(env: Mapping[str, str]) -> str:
    platform = env.get("WEBSITE_INSTANCE_ID", "").strip()
    if platform:
        return platform[:16]  # a 64-hex-digit id: its first 16 tell instances apart in logs and records
    return f"{socket.gethostname()}:{os.getpid()}"


def _crash_points(env: Mapping[str, str], running_in_azure: bool) -> frozenset[str]:
    points = frozenset(p.strip() for p in env.get("TEST_CRASH_AT", "").split(",") if p.strip())
    if points and running_in_azure:
        raise SettingsError("TEST_CRASH_AT is for tests only (it stops the process on purpose): remove it")
    return points
