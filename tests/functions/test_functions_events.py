"""Refresh events: a real-schema BlobCreated event on the real Azurite queue queues each onRefresh
export of the snapshot once; duplicates, unrelated blobs and malformed events queue nothing."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.storage.blob import ContainerClient

from tests.support.app import AppEnv, call, create_connection, create_export, handler
from tests.support.events import blob_created_event, event_message
from tests.support.segments import FOLDER, profiles, write_ci_snapshot


def deliver_event(env: AppEnv, body: str) -> None:
    """Put `body` on the event queue as Event Grid does and hand it to the function as the host does."""
    env.events.send_message(body)
    deliver_next(env)


def deliver_next(env: AppEnv) -> None:
    message = env.receive(env.events)
    handler("segment_events")(message)  # never raises for these messages: nothing to retry
    env.delete(message, env.events)


def queued(env: AppEnv) -> Counter[str]:
    return Counter(m["export"] for m in env.messages())


def decision(name: str) -> Any:
    return call("export_item", "GET", f"exports/{name}", route={"name": name}).body["lastDecision"]


@pytest.fixture
def refresh(app_env: AppEnv, ac_sandbox, segments: ContainerClient) -> ContainerClient:
    create_connection(ac_sandbox.hostname)
    container = segments.container_name
    write_ci_snapshot(segments, "Vip", profiles(3))  # before the exports: saving checks the columns
    create_export(container, name="vip-a")  # onRefresh is the default
    create_export(container, name="vip-b", listId=2)
    create_export(container, name="vip-scheduled", trigger="scheduled")
    create_export(container, name="vip-manual", trigger="manual")
    create_export(container, name="vip-off", enabled=False)
    other = {"container": container, "folder": "CustomerInsights_other/BlobExport", "segment": "Vip"}
    create_export(container, name="elsewhere", source=other)
    return segments


def test_model_json_event_queues_each_matching_export_once(app_env: AppEnv, refresh: ContainerClient):
    write_ci_snapshot(refresh, "Vip", profiles(4), time_folder="2026/11/21/0600")  # a refresh
    event = blob_created_event(refresh, f"{FOLDER}/model.json", api="PutBlockList")
    deliver_event(app_env, event_message(event))

    assert queued(app_env) == Counter({"vip-a": 1, "vip-b": 1})
    runs = call("export_runs", "GET", "exports/vip-a/runs", route={"name": "vip-a"}).body["runs"]
    assert [(r["trigger"], r["status"]) for r in runs] == [("event", "queued")]
    made = decision("vip-a")
    assert (made["outcome"], made["source"], made["runId"]) == ("queued", "event", runs[0]["runId"])
    assert made["snapshotId"] == "2026/11/21/0600"
    assert event["id"] in made["reason"]
    assert decision("vip-scheduled") is None  # the event is not for them: the timer decides
    assert decision("elsewhere") is None

    # Event Grid delivers at least once: the same event again queues nothing.
    deliver_event(app_env, event_message(event))
    assert queued(app_env) == Counter({"vip-a": 1, "vip-b": 1})
    # Nor does another event of the same snapshot (model.json rewritten) once the first runs are
    # over without having exported it (failed): the claim, not the active run, stops it.
    for message in app_env.queue.receive_messages(max_messages=32):
        app_env.queue.delete_message(message)
    for run in ("vip-a", "vip-b"):
        _finish_active_run(app_env, run)
    deliver_event(app_env, event_message(blob_created_event(refresh, f"{FOLDER}/model.json")))
    assert queued(app_env) == Counter()
    assert "already queued by an earlier event (duplicate)" in decision("vip-a")["reason"]

    # A newer snapshot is a new run.
    write_ci_snapshot(refresh, "Vip", profiles(5), time_folder="2026/11/22/0600")
    deliver_event(app_env, event_message(blob_created_event(refresh, f"{FOLDER}/model.json")))
    assert queued(app_env) == Counter({"vip-a": 1, "vip-b": 1})


def _finish_active_run(env: AppEnv, export: str) -> None:
    from functions.services import get_services

    svc = get_services()
    (record,) = svc.runs.list(export, limit=1)
    record.fail("stopped by the test")
    svc.runs.finish(record)


def test_unrelated_blobs_and_other_accounts_queue_nothing(app_env: AppEnv, refresh: ContainerClient, azurite):
    from azure.storage.blob import BlobServiceClient

    unrelated = [
        f"{FOLDER}/Vip/2026/11/20/0600/readme.txt",  # not a CSV
        f"{FOLDER}/Other/2026/11/20/0600/Other_1.csv",  # another segment's data
        "CustomerInsights_unknown/BlobExport/model.json",  # a folder no export reads
    ]
    for blob in unrelated:
        refresh.upload_blob(blob, b"x", overwrite=True)
        deliver_event(app_env, event_message(blob_created_event(refresh, blob)))
    # A CSV of a Customer Insights folder: the model.json event will mark the snapshot complete.
    deliver_event(
        app_env, event_message(blob_created_event(refresh, f"{FOLDER}/Vip/2026/11/20/0600/Vip_1.csv"))
    )
    # Another container of the same account.
    other = BlobServiceClient.from_connection_string(azurite).create_container(refresh.container_name + "x")
    other.upload_blob(f"{FOLDER}/model.json", b"{}")
    deliver_event(app_env, event_message(blob_created_event(other, f"{FOLDER}/model.json")))
    # The same container name and path, in another storage account.
    foreign = blob_created_event(refresh, f"{FOLDER}/model.json")
    foreign["data"]["url"] = (
        f"https://someoneelse.blob.core.windows.net/{refresh.container_name}/{FOLDER}/model.json"
    )
    deliver_event(app_env, event_message(foreign))
    # Another event type of the same blob.
    deleted = blob_created_event(refresh, f"{FOLDER}/model.json")
    deleted["eventType"] = "Microsoft.Storage.BlobDeleted"
    deliver_event(app_env, event_message(deleted))

    assert queued(app_env) == Counter()
    assert app_env.messages(app_env.events) == []  # no check of a plain folder was planned either
    assert decision("vip-a") is None


@pytest.mark.parametrize(
    ("body", "logged"),
    [
        ("not json at all", "not JSON text"),
        ("[" * 40_000, "not JSON text (TooDeep)"),  # about the most a queue message holds
        (json.dumps({"subject": "/blobServices/default/containers/c/blobs/model.json"}), "no eventType"),
        (
            json.dumps({"eventType": "Microsoft.Storage.BlobCreated", "id": "e1", "subject": "/x"}),
            "subject is not",
        ),
        (
            json.dumps(
                {
                    "eventType": "Microsoft.Storage.BlobCreated",
                    "id": "e2",
                    "subject": "/blobServices/default/containers/c/blobs/model.json",
                    "eventTime": "2026-11-20T06:00:00Z",
                }
            ),
            "data.url missing",
        ),
        (json.dumps([1, 2]), "event 0: not a JSON object"),
    ],
    ids=["text", "deep", "no-type", "bad-subject", "no-url", "not-objects"],
)
def test_a_malformed_event_is_logged_and_dropped(
    app_env: AppEnv, refresh: ContainerClient, caplog, body, logged
):
    caplog.set_level(logging.ERROR, logger="functions.events")
    deliver_event(app_env, body)
    assert queued(app_env) == Counter()
    (record,) = [r for r in caplog.records if r.name == "functions.events"]
    assert "dropped message" in record.getMessage()
    assert logged in record.getMessage()
    assert app_env.messages(app_env.events) == []  # deleted, not retried


def test_an_oversized_message_is_refused_before_parsing(app_env: AppEnv, caplog):
    from functions.events import handle_message
    from functions.services import get_services

    caplog.set_level(logging.ERROR, logger="functions.events")
    handle_message(get_services(), b"[" * 200_000, message_id="big")
    (record,) = [r for r in caplog.records if r.name == "functions.events"]
    assert "message of 200000 bytes" in record.getMessage()


def test_plain_csv_folder_is_queued_only_after_its_quiet_time(app_env: AppEnv, ac_sandbox, segments):
    from functions.events import handle_message
    from functions.services import get_services
    from shared.blobevents import QuietCheck

    app_env.set("CSV_QUIET_SECONDS", "120")
    create_connection(ac_sandbox.hostname)
    folder, header = "exports/plain", b"EmailAddress,FirstName,LastName,LoyaltyTier\r\n"
    segments.upload_blob(f"{folder}/Vip/part-1.csv", header + b"a@example.com,A,B,gold\r\n")
    source = {"container": segments.container_name, "folder": folder, "segment": "Vip"}
    create_export(segments.container_name, name="plain", source=source)
    segments.upload_blob(f"{folder}/Vip/part-2.csv", header + b"b@example.com,C,D,gold\r\n")
    deliver_event(app_env, event_message(blob_created_event(segments, f"{folder}/Vip/part-2.csv")))

    assert queued(app_env) == Counter()
    assert decision("plain")["reason"].startswith(
        "plain CSV folder: waiting until no file is added for 120 s"
    )
    assert app_env.messages(app_env.events) == []  # the check waits invisible on the queue...
    assert app_env.events.get_queue_properties().approximate_message_count == 1  # ...for 120 s

    svc = get_services()
    check = QuietCheck("plain").to_json().encode()
    written = segments.get_blob_client(f"{folder}/Vip/part-2.csv").get_blob_properties()
    landed = written.last_modified
    handle_message(svc, check, message_id="early", now=landed + timedelta(seconds=119))
    assert queued(app_env) == Counter()  # written 119 s ago: not quiet yet, looked at again later
    assert app_env.events.get_queue_properties().approximate_message_count == 2

    handle_message(svc, check, message_id="due", now=landed + timedelta(seconds=121))
    assert queued(app_env) == Counter({"plain": 1})
    assert decision("plain")["outcome"] == "queued"
    handle_message(svc, check, message_id="late", now=landed + timedelta(seconds=300))
    assert queued(app_env) == Counter({"plain": 1})  # the other checks of the same snapshot: nothing


def test_an_event_started_run_records_when_its_snapshot_landed_and_first_contacts_were_queued(
    app_env: AppEnv, ac_sandbox, segments: ContainerClient
):
    from tests.fixtures.sandbox import SANDBOX_API_KEY

    app_env.monkeypatch.setenv("ACTIVECAMPAIGN_MAIN", SANDBOX_API_KEY)
    create_connection(ac_sandbox.hostname)
    write_ci_snapshot(segments, "Vip", profiles(3))
    create_export(segments.container_name, name="fresh")
    write_ci_snapshot(segments, "Vip", profiles(20), time_folder="2026/11/21/0600")
    landed = segments.get_blob_client(f"{FOLDER}/model.json").get_blob_properties().last_modified
    deliver_event(app_env, event_message(blob_created_event(segments, f"{FOLDER}/model.json")))
    message = app_env.receive()
    handler("export_worker")(message)
    app_env.delete(message)

    (run,) = call("export_runs", "GET", "exports/fresh/runs", route={"name": "fresh"}).body["runs"]
    assert (run["status"], run["trigger"]) == ("succeeded", "event")
    snapshot_landed = datetime.fromisoformat(run["snapshotLandedAt"].replace("Z", "+00:00"))
    first_queued = datetime.fromisoformat(run["firstContactQueuedAt"].replace("Z", "+00:00"))
    assert snapshot_landed == landed
    assert landed <= first_queued <= datetime.now(UTC)
    report = json.loads(app_env.app.download_blob(run["reportBlob"]).readall())
    assert report["snapshot_landed_at"] == run["snapshotLandedAt"]
    assert report["first_contact_queued_at"] == run["firstContactQueuedAt"]


def test_a_failing_message_is_retried_and_its_last_delivery_dropped_not_poisoned(app_env: AppEnv, caplog):
    from azure.functions.queue import QueueMessage as HostQueueMessage

    from functions import events
    from shared.storage import CONFIG_BLOB
    from tests.support.app import ROOT

    host = json.loads((ROOT / "host.json").read_text())
    assert host["extensions"]["queues"]["maxDequeueCount"] == events.MAX_DEQUEUE_COUNT
    app_env.app.upload_blob(CONFIG_BLOB, b"{not json", overwrite=True)  # every read of it fails
    body = json.dumps(
        {
            "id": "e-1",
            "eventType": "Microsoft.Storage.BlobCreated",
            "subject": "/blobServices/default/containers/c1/blobs/x/model.json",
            "eventTime": "2026-11-20T06:00:00.0000000Z",
            "data": {"url": "http://127.0.0.1:1/devstoreaccount1/c1/x/model.json"},
        }
    ).encode()

    def delivery(count: int) -> HostQueueMessage:
        return HostQueueMessage(id="m-1", body=body, dequeue_count=count)  # type: ignore[no-untyped-call]

    with pytest.raises(Exception, match="not valid JSON"):
        handler("segment_events")(delivery(1))  # the host retries it
    caplog.set_level(logging.ERROR, logger="functions.events")
    handler("segment_events")(delivery(events.MAX_DEQUEUE_COUNT))  # the last one ends here
    (record,) = [r for r in caplog.records if "is dropped" in r.getMessage()]
    assert "timer's catch-up" in record.getMessage()


def test_a_deleted_and_recreated_export_is_queued_again_by_the_same_snapshot(
    app_env: AppEnv, refresh: ContainerClient
):
    event = event_message(blob_created_event(refresh, f"{FOLDER}/model.json"))
    deliver_event(app_env, event)
    assert queued(app_env)["vip-a"] == 1
    for message in app_env.queue.receive_messages(max_messages=32):
        app_env.queue.delete_message(message)
        # An export with a queued run is deleted once the run is cancelled (DELETE refuses before).
        run = json.loads(message.content)
        route = {"name": run["export"], "runId": run["runId"]}
        assert call("export_run_cancel", "POST", "x", route=route, body={}).status == 202
    assert call("export_item", "DELETE", "exports/vip-a", route={"name": "vip-a"}).status == 204
    assert list(app_env.app.list_blobs(name_starts_with="events/vip-a/")) == []
    create_export(refresh.container_name, name="vip-a")
    deliver_event(app_env, event)
    assert queued(app_env) == Counter({"vip-a": 1})  # vip-b's claim still stands


# --- issue 23: either message encoding, and SFTP uploads ----------------------------------------


@pytest.mark.parametrize("encoding", ["base64", "plain JSON"])
def test_an_event_queues_the_run_whichever_way_event_grid_encodes_it(
    app_env: AppEnv, refresh: ContainerClient, encoding: str
):
    # Microsoft's pages disagree on how Event Grid writes to a storage queue: both must work.
    from azure.storage.queue import QueueClient

    from shared.storage import SEGMENT_EVENTS_QUEUE

    write_ci_snapshot(refresh, "Vip", profiles(4), time_folder="2026/11/21/0600")
    text = event_message(blob_created_event(refresh, f"{FOLDER}/model.json", api="PutBlockList"))
    if encoding == "base64":
        app_env.events.send_message(text)  # its client base64-encodes
    else:
        QueueClient.from_connection_string(app_env.azurite, SEGMENT_EVENTS_QUEUE).send_message(text)
    raw = QueueClient.from_connection_string(app_env.azurite, SEGMENT_EVENTS_QUEUE).peek_messages()[0].content
    assert raw.startswith("{") == (encoding == "plain JSON")  # what the host hands the function
    deliver_next(app_env)
    assert queued(app_env) == Counter({"vip-a": 1, "vip-b": 1})
    assert app_env.messages(app_env.poison) == []


def sftp_commit_event(account: str, container: str, blob: str, url: str) -> dict[str, Any]:
    """A BlobCreated event of a file uploaded over SFTP, shaped as Microsoft documents it (Event Grid
    schema, "SFTP events" of "Azure Blob Storage as an Event Grid source"): `data.api` is SftpCommit
    and `data.identity` the SFTP local user."""
    return {
        "topic": f"/subscriptions/0/resourceGroups/Storage/providers/Microsoft.Storage/storageAccounts/{account}",
        "subject": f"/blobServices/default/containers/{container}/blobs/{blob}",
        "eventType": "Microsoft.Storage.BlobCreated",
        "eventTime": "2026-11-21T06:00:00.1522383Z",
        "id": "831e1650-001e-001b-66ab-eeb76e069631",
        "data": {
            "api": "SftpCommit",
            "clientRequestId": "b934bda2-c573-4a7e-8cda-33d86c6c3df1",
            "requestId": "831e1650-001e-001b-66ab-eeb76e000000",
            "eTag": "0x8DA27FC0B2C8EA2",
            "contentType": "application/octet-stream",
            "contentLength": 48,
            "blobType": "BlockBlob",
            "url": url,
            "sequencer": "00000000000000000000000000001B7500000000000EA5BD",
            "identity": "localuser",
            "storageDiagnostics": {"batchId": "b4be6baa-5a0a-41bb-95a1-71cbd6ecb64a"},
        },
        "dataVersion": "",
        "metadataVersion": "1",
    }


def _passes_subscription_filter(event: dict[str, Any], container: str) -> bool:
    """The refresh subscription's filter (infra/modules/events-subscriptions.bicep) applied to an event
    as Event Grid applies it: string filters are case-insensitive."""
    from tests.support.app import ROOT

    bicep = (ROOT / "infra" / "modules" / "events-subscriptions.bicep").read_text()
    apis = re.search(r"key: 'data\.api'\s*values: \[(.*?)\]", bicep, re.DOTALL)
    assert apis is not None
    allowed = {v.lower() for v in re.findall(r"'([^']+)'", apis.group(1))}
    subject = event["subject"].lower()
    return (
        event["eventType"] == "Microsoft.Storage.BlobCreated"
        and subject.startswith(f"/blobservices/default/containers/{container}/blobs/".lower())
        and subject.endswith(("/model.json", ".csv"))
        and event["data"]["api"].lower() in allowed
    )


def test_a_csv_uploaded_over_sftp_starts_the_quiet_time_of_a_plain_csv_folder(
    app_env: AppEnv, ac_sandbox, segments: ContainerClient
):
    app_env.set("CSV_QUIET_SECONDS", "120")
    create_connection(ac_sandbox.hostname)
    folder, header = "sftp/plain", b"EmailAddress,FirstName,LastName,LoyaltyTier\r\n"
    segments.upload_blob(f"{folder}/Vip/part-1.csv", header + b"a@example.com,A,B,gold\r\n")
    source = {"container": segments.container_name, "folder": folder, "segment": "Vip"}
    create_export(segments.container_name, name="plain", source=source)
    blob = f"{folder}/Vip/part-2.csv"
    segments.upload_blob(blob, header + b"b@example.com,C,D,gold\r\n")
    account = segments.account_name or "devstoreaccount1"
    event = sftp_commit_event(account, segments.container_name, blob, f"{segments.url}/{blob}")
    assert _passes_subscription_filter(event, segments.container_name)

    deliver_event(app_env, event_message(event))
    assert decision("plain")["reason"].startswith(
        "plain CSV folder: waiting until no file is added for 120 s"
    )
    assert app_env.events.get_queue_properties().approximate_message_count == 1  # the quiet check


def test_a_message_in_the_poison_queue_is_logged_without_its_text_and_dropped(caplog):
    from azure.functions.queue import QueueMessage as HostQueueMessage

    body = b'{"subject": "/blobServices/default/containers/c/blobs/person@example.com.csv"}'
    caplog.set_level(logging.ERROR, logger="functions.events")
    message = HostQueueMessage(id="m-9", body=body, dequeue_count=5)  # type: ignore[no-untyped-call]
    handler("segment_events_poison")(message)  # never raises: the host would poison it again
    (record,) = caplog.records
    assert "m-9" in record.getMessage()
    assert "segment-events-poison" in record.getMessage()
    assert "person" not in record.getMessage()
