"""Storage clients for a `StorageConnection`, and the names of the app's own containers and queues.

Connection strings are for Azurite and local runs; in Azure the app uses identity-based
connections (`<NAME>__blobServiceUri` + managed identity), so no account key exists to leak.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from shared.settings import DEFAULT_APP_CONTAINER, DEFAULT_RUNS_QUEUE, SettingsError, StorageConnection

if TYPE_CHECKING:
    # The storage SDK is imported when a client is made, not with the names and paths below, which
    # the function app needs when it registers its triggers (cold start).
    from azure.core.credentials import TokenCredential
    from azure.storage.blob import BlobServiceClient, ContentSettings
    from azure.storage.queue import QueueServiceClient

__all__ = [
    "APP_CONTAINER",
    "CONFIG_BLOB",
    "RUNS_POISON_QUEUE",
    "RUNS_QUEUE",
    "RUN_CANCEL",
    "RUN_CHANGES",
    "RUN_CHANGES_INDEX",
    "RUN_RECORD",
    "RUN_REJECTED",
    "RUN_REPORT",
    "RUN_UNSUBSCRIBED",
    "SEGMENT_EVENTS_POISON_QUEUE",
    "SEGMENT_EVENTS_QUEUE",
    "account_lease_blob",
    "account_waiting_blob",
    "account_waiting_prefix",
    "active_marker_blob",
    "blob_service",
    "checkpoint_blob",
    "decision_blob",
    "event_claim_blob",
    "event_claims_prefix",
    "feedback_state_blob",
    "json_settings",
    "parse_run_blob",
    "poison_queue",
    "queue_service",
    "run_blob",
    "runs_prefix",
    "state_blob",
]

# Everything the app keeps (configuration, delivered state, checkpoints, run reports) lives in this
# container of the AzureWebJobsStorage account. Blob layout: docs/architecture.md.
APP_CONTAINER = DEFAULT_APP_CONTAINER  # the default of APP_CONTAINER (Settings.app_container)
# Run messages for the queue worker; the Functions host moves failures to "<name>-poison".
RUNS_QUEUE = DEFAULT_RUNS_QUEUE  # what the worker's trigger listens on; Settings.runs_queue
RUNS_POISON_QUEUE = RUNS_QUEUE + "-poison"
# Refresh events: Event Grid writes BlobCreated events of the segment account here (infra/), and the
# app adds its own delayed checks of plain CSV folders (functions/events.py).
SEGMENT_EVENTS_QUEUE = "segment-events"
SEGMENT_EVENTS_POISON_QUEUE = SEGMENT_EVENTS_QUEUE + "-poison"


@cache
def json_settings() -> ContentSettings:
    """The content settings of a JSON blob (made on first use: the SDK is not imported before)."""
    from azure.storage.blob import ContentSettings

    return ContentSettings(content_type="application/json")


def poison_queue(queue: str) -> str:
    """Where the Functions host moves a queue's messages after their last retry."""
    return queue + "-poison"


# ------------------------------------------------------------------ paths in the app container
# Built and parsed only here, so the layout in docs/architecture.md has one source.
CONFIG_BLOB = "config/config.json"
RUN_RECORD = "run.json"
RUN_REPORT = "report.json"
RUN_REJECTED = "rejected.csv"
RUN_UNSUBSCRIBED = "unsubscribed.csv"  # mirror runs: who left the segment and what became of them
RUN_CHANGES = "changes.csv"  # one row per contact the run acted on (shared/changes.py)
RUN_CHANGES_INDEX = "changes.idx"  # hashes of the change log's addresses, for lookup (shared/lookup.py)
# A person asked to cancel the run (shared/cancel.py): written by the API or CLI process, read by the
# process running it at each batch boundary. Created once, never changed; deleted with the run.
RUN_CANCEL = "cancel.json"


def state_blob(export: str) -> str:
    """The export's delivered state (what ActiveCampaign accepted)."""
    return f"state/{export}/delivered.npz"


def feedback_state_blob(export: str) -> str:
    """What the export's feedback folder holds and when ActiveCampaign was last read (shared/feedback.py)."""
    return f"feedback/{export}/state.json"


def checkpoint_blob(export: str) -> str:
    """The checkpoint of the export's run in progress."""
    return f"state/{export}/checkpoint.json"


def runs_prefix(export: str) -> str:
    return f"runs/{export}/"


def run_blob(export: str, run_id: str, name: str = RUN_RECORD) -> str:
    """A file of one run: its record, report or rejected rows."""
    return f"runs/{export}/{run_id}/{name}"


def active_marker_blob(export: str) -> str:
    """Names the export's queued or running run; held by that run's lease while it runs."""
    return f"runs/{export}/active.json"


def account_lease_blob(hostname: str) -> str:
    """Leased by the run using an ActiveCampaign account (one at a time: they share its rate budget)."""
    return "locks/" + hostname.strip().lower().replace(":", "_")


def account_waiting_prefix(hostname: str) -> str:
    """Runs waiting for an ActiveCampaign account's lease, one blob each, named by run id (queued order)."""
    return "waiting/" + hostname.strip().lower().replace(":", "_") + "/"


def account_waiting_blob(hostname: str, run_id: str) -> str:
    return f"{account_waiting_prefix(hostname)}{run_id}.json"


def decision_blob(export: str) -> str:
    """What the timer or a refresh event last decided for the export (shared/decisions.py)."""
    return f"schedule/{export}.json"


def event_claims_prefix(export: str) -> str:
    return f"events/{export}/"


def event_claim_blob(export: str, snapshot_id: str) -> str:
    """Created once per export and snapshot by the refresh event that queued its run."""
    import hashlib

    return f"{event_claims_prefix(export)}{hashlib.sha256(snapshot_id.encode()).hexdigest()[:32]}.json"


def parse_run_blob(name: str) -> tuple[str, str, str] | None:
    """(export, run id, file) of a run file's blob name; None for anything else (the active marker)."""
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "runs" or not all(parts[1:]):
        return None
    return parts[1], parts[2], parts[3]


def _credential(conn: StorageConnection) -> TokenCredential:
    # Imported lazily: azure-identity is slow to import and only needed in Azure.
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if conn.client_id:
        return ManagedIdentityCredential(client_id=conn.client_id)
    return DefaultAzureCredential()


def _fail_fast(options: dict[str, Any], retry: Any) -> dict[str, Any]:
    """Client options under which storage that cannot be reached fails in seconds, not 80 s.

    The SDK's default policy retries a refused connection with 15 s + 3^n backoffs. Here a
    connection failure is retried once (connect timeout 3 s, backoff 2-4 s); answers such as 503
    ServerBusy still get three retries. `retry` is the package's ExponentialRetry; anything passed
    in `options` wins.
    """
    defaults: dict[str, Any] = {
        "retry_policy": retry(
            initial_backoff=2, increment_base=2, retry_total=3, random_jitter_range=1, retry_connect=1
        ),
        "connection_timeout": 3,
    }
    return {**defaults, **options}


def blob_service(conn: StorageConnection, **options: Any) -> BlobServiceClient:
    """`options` go to the client (e.g. `retry_total`); see `_fail_fast` for the defaults."""
    from azure.storage.blob import BlobServiceClient, ExponentialRetry

    options = _fail_fast(options, ExponentialRetry)
    if conn.connection_string is not None:
        return BlobServiceClient.from_connection_string(conn.connection_string, **options)
    if not conn.blob_service_uri:
        raise SettingsError(f"{conn.setting}__blobServiceUri is not set; blob storage cannot be reached")
    return BlobServiceClient(conn.blob_service_uri, credential=_credential(conn), **options)


def queue_service(conn: StorageConnection, **options: Any) -> QueueServiceClient:
    from azure.storage.queue import ExponentialRetry, QueueServiceClient

    options = _fail_fast(options, ExponentialRetry)
    if conn.connection_string is not None:
        return QueueServiceClient.from_connection_string(conn.connection_string, **options)
    if not conn.queue_service_uri:
        raise SettingsError(f"{conn.setting}__queueServiceUri is not set; the run queue cannot be reached")
    return QueueServiceClient(conn.queue_service_uri, credential=_credential(conn), **options)
