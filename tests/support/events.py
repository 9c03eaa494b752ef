"""Event Grid `Microsoft.Storage.BlobCreated` events in the real event schema, for tests and the bench.

Built from the blob as it is in Azurite (its ETag and length), shaped as Event Grid writes one event
to a storage queue (EventGridSchema, one JSON object per message).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from azure.storage.blob import ContainerClient


def blob_created_event(container: ContainerClient, blob: str, *, api: str = "PutBlob") -> dict[str, Any]:
    props = container.get_blob_client(blob).get_blob_properties()
    account = container.account_name or "devstoreaccount1"
    return {
        "topic": (
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-segments/providers/"
            f"Microsoft.Storage/storageAccounts/{account}"
        ),
        "subject": f"/blobServices/default/containers/{container.container_name}/blobs/{blob}",
        "eventType": "Microsoft.Storage.BlobCreated",
        # Event Grid writes seven fractional digits.
        "eventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "1Z",
        "id": str(uuid.uuid4()),
        "data": {
            "api": api,
            "clientRequestId": str(uuid.uuid4()),
            "requestId": str(uuid.uuid4()),
            "eTag": str(props.etag).strip('"'),
            "contentType": props.content_settings.content_type or "application/octet-stream",
            "contentLength": props.size,
            "blobType": "BlockBlob",
            "url": f"{container.url}/{quote(blob)}",
            "sequencer": "0000000000000000000000000000" + uuid.uuid4().hex[:8],
            "storageDiagnostics": {"batchId": str(uuid.uuid4())},
        },
        "dataVersion": "",
        "metadataVersion": "1",
    }


def event_message(event: dict[str, Any]) -> str:
    return json.dumps(event)
