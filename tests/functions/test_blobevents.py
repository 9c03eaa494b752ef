"""What a refresh-event message means, without storage: the shapes Event Grid really delivers."""

from __future__ import annotations

import json

import pytest

from shared.blobevents import MalformedEvent, parse_message, same_account

ACCOUNT = "https://segacct.blob.core.windows.net/"


def adls_flush_event(url: str) -> dict[str, object]:
    """A BlobCreated event of a Data Lake (hierarchical namespace) write, as Microsoft documents it:
    the write went through the dfs endpoint, so `data.url` names that endpoint."""
    return {
        "topic": "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/segacct",
        "subject": "/blobServices/default/containers/customer-insights/blobs/CI/BlobExport/model.json",
        "eventType": "Microsoft.Storage.BlobCreated",
        "eventTime": "2026-11-20T06:00:01.1234567Z",
        "id": "831e1650-001e-001b-66ab-eeb76e069631",
        "data": {
            "api": "FlushWithClose",
            "contentType": "application/json",
            "contentLength": 524,
            "contentOffset": 0,
            "blobType": "BlockBlob",
            "url": url,
            "sequencer": "00000000000004420000000000028963",
        },
        "dataVersion": "3",
        "metadataVersion": "1",
    }


def test_a_data_lake_write_names_the_dfs_endpoint_of_the_same_account():
    url = "https://segacct.dfs.core.windows.net/customer-insights/CI/BlobExport/model.json"
    (event,), others = parse_message(json.dumps(adls_flush_event(url)))
    assert (event.container, event.blob, others) == ("customer-insights", "CI/BlobExport/model.json", 0)
    assert same_account(event.url, ACCOUNT)


@pytest.mark.parametrize(
    ("url", "same"),
    [
        ("https://segacct.blob.core.windows.net/c/x/model.json", True),
        ("https://SEGACCT.blob.core.windows.net/c/x/model.json", True),
        ("https://segacct.dfs.core.windows.net/c/x/model.json", True),
        ("https://other.blob.core.windows.net/c/x/model.json", False),
        ("https://other.dfs.core.windows.net/c/x/model.json", False),
        ("https://segacct.dfs.core.chinacloudapi.cn/c/x/model.json", False),  # another cloud
        ("https://segacct.file.core.windows.net/c/x/model.json", False),
    ],
)
def test_same_account_accepts_the_accounts_blob_and_dfs_endpoints_only(url: str, same: bool):
    assert same_account(url, ACCOUNT) is same


def test_same_account_on_azurite_compares_the_account_path():
    azurite = "http://127.0.0.1:10000/devstoreaccount1"
    assert same_account("http://127.0.0.1:10000/devstoreaccount1/c/model.json", azurite)
    assert not same_account("http://127.0.0.1:10000/otheraccount/c/model.json", azurite)
    assert not same_account("http://127.0.0.1:10001/devstoreaccount1/c/model.json", azurite)


def test_a_cloudevents_message_is_malformed_and_says_which_schema_is_expected():
    # The subscription is created with the Event Grid event schema (infra/modules/events-subscriptions.bicep);
    # a subscription made by hand with CloudEvents 1.0 delivers `type`, `source`, `specversion`.
    cloud_event = {
        "specversion": "1.0",
        "type": "Microsoft.Storage.BlobCreated",
        "source": "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/segacct",
        "subject": "/blobServices/default/containers/c/blobs/x/model.json",
        "id": "e-1",
        "time": "2026-11-20T06:00:01.1234567Z",
        "data": {"api": "PutBlob", "url": "https://segacct.blob.core.windows.net/c/x/model.json"},
    }
    with pytest.raises(MalformedEvent, match="expected the Event Grid event schema"):
        parse_message(json.dumps(cloud_event))


def test_the_parser_takes_decoded_text_only():
    # The function decodes a base64 message first (functions/messages.queue_text); the parser itself
    # refuses text still encoded.
    import base64

    event = adls_flush_event(
        "https://segacct.blob.core.windows.net/customer-insights/CI/BlobExport/model.json"
    )
    with pytest.raises(MalformedEvent, match="not JSON text"):
        parse_message(base64.b64encode(json.dumps(event).encode()))
