"""Storage clients for a `StorageConnection`, and the names of the app's own containers and queues.

Connection strings are for Azurite and local runs; in Azure the app uses identity-based
connections (`<NAME>__blobServiceUri` + managed identity), so no account key exists to leak.
"""

from __future__ import annotations

from azure.core.credentials import TokenCredential
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from shared.settings import SettingsError, StorageConnection

# Everything the app keeps (configuration, delivered state, checkpoints, run reports) lives in this
# container of the AzureWebJobsStorage account. Blob layout: docs/architecture.md.
APP_CONTAINER = "activecampaign-export"
# Run messages for the queue worker; the Functions host moves failures to "<name>-poison".
RUNS_QUEUE = "export-runs"
RUNS_POISON_QUEUE = RUNS_QUEUE + "-poison"


def _credential(conn: StorageConnection) -> TokenCredential:
    # Imported lazily: azure-identity is slow to import and only needed in Azure.
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if conn.client_id:
        return ManagedIdentityCredential(client_id=conn.client_id)
    return DefaultAzureCredential()


def blob_service(conn: StorageConnection) -> BlobServiceClient:
    if conn.connection_string is not None:
        return BlobServiceClient.from_connection_string(conn.connection_string)
    if not conn.blob_service_uri:
        raise SettingsError(f"{conn.setting}__blobServiceUri is not set; blob storage cannot be reached")
    return BlobServiceClient(conn.blob_service_uri, credential=_credential(conn))


def queue_service(conn: StorageConnection) -> QueueServiceClient:
    if conn.connection_string is not None:
        return QueueServiceClient.from_connection_string(conn.connection_string)
    if not conn.queue_service_uri:
        raise SettingsError(f"{conn.setting}__queueServiceUri is not set; the run queue cannot be reached")
    return QueueServiceClient(conn.queue_service_uri, credential=_credential(conn))
