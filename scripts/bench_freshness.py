"""`make bench` scenario 5: how soon after a refresh the first contact is queued at ActiveCampaign.

Azurite, the ActiveCampaign sandbox at its real limits and the local host (`python -m scripts.serve`,
the same function app as in Azure: queue triggers polled with the host's back-off, here capped at
2 s as `make serve` does) run as separate processes. An onRefresh export is configured; a 10,000-profile
Customer Insights snapshot is uploaded, and the moment its `model.json` is (re)written, a
`Microsoft.Storage.BlobCreated` event of the real Event Grid schema is put on the `segment-events`
queue, as Event Grid would. The figure is the time from that upload to the run record's
`firstContactQueuedAt` (ActiveCampaign answered the first bulk import): event queue polling, the
event function, run queue polling, the worker's start, pass 1 and the first request, all included.
The timer is set never to fire, so only the event can start the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime

from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from scripts.demo import DEMO_API_KEY, ROOT, azurite, sandbox
from scripts.serve_stack import read_ready
from shared.config import config_to_document
from shared.configstore import ConfigStore
from shared.runs import RunStore
from shared.storage import APP_CONTAINER, SEGMENT_EVENTS_QUEUE
from tests.support.events import blob_created_event
from tests.support.exports import EXPORT, make_config
from tests.support.segments import FOLDER, profiles, write_ci_snapshot

FRESH_ROWS = 10_000
TARGET_FRESHNESS_S = 10.0
WAIT_S = 90.0
NEVER = "0 0 0 1 1 *"  # 1 January: the timer's catch-up stays out of the measurement


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def freshness_scenario(rows: int = FRESH_ROWS) -> dict[str, float]:
    with azurite() as storage, sandbox(1) as hostname, tempfile.TemporaryDirectory() as scratch:
        service = BlobServiceClient.from_connection_string(storage)
        segments = service.create_container("customer-insights")
        app = service.get_container_client(APP_CONTAINER)
        app.create_container()
        config = make_config(hostname, "customer-insights")  # export "vip", trigger onRefresh (default)
        ConfigStore(app, allowed_suffixes=(), allow_loopback=True).update(
            lambda _: config_to_document(config)
        )
        events = QueueClient.from_connection_string(
            storage, SEGMENT_EVENTS_QUEUE, message_encode_policy=TextBase64EncodePolicy()
        )
        events.create_queue()
        host_log = os.path.join(scratch, "host.log")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("WEBSITE_", "KEY_VAULT_URL"))},
            "AzureWebJobsStorage": storage,
            # Without Key Vault a secret is read from the variable named after it.
            config.connections["main"].api_key_secret.upper().replace("-", "_"): DEMO_API_KEY,
            "EXPORT_SCHEDULE": NEVER,
            "AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "00:00:02",
        }
        with open(host_log, "w") as log_file:
            host = subprocess.Popen(
                [sys.executable, "-m", "scripts.serve", "--port", "0", "--grace", "5"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
            )
            try:
                read_ready(host, "the function app (scripts.serve)")
                write_ci_snapshot(segments, "Vip", profiles(rows), partitions=2)
                model = f"{FOLDER}/model.json"
                body = segments.download_blob(model).readall()
                time.sleep(2.5)  # let the host's empty polls back off to their 2 s cap: the worst case
                uploaded = datetime.now(UTC)
                segments.upload_blob(model, body, overwrite=True)  # the refresh completes
                events.send_message(json.dumps(blob_created_event(segments, model, api="PutBlockList")))
                runs = RunStore(app)
                deadline = time.monotonic() + WAIT_S
                while True:
                    found = runs.list(EXPORT, limit=1)
                    record = found[0] if found else None
                    if record is not None and record.first_contact_queued_at:
                        break
                    if record is not None and record.status == "failed":
                        raise RuntimeError(f"the event-started run failed: {record.error}")
                    if time.monotonic() > deadline:
                        with open(host_log) as f:
                            tail = f.read()[-3000:]
                        raise RuntimeError(
                            f"no contact queued {WAIT_S:.0f} s after the refresh; host log:\n{tail}"
                        )
                    time.sleep(0.05)
            finally:
                host.terminate()
                try:
                    host.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    host.kill()
                    host.wait()
        first = _parse(record.first_contact_queued_at)
        return {
            "freshness_s": (first - uploaded).total_seconds(),
            "run_queued_s": (_parse(record.queued_at) - uploaded).total_seconds(),
            "worker_started_s": (_parse(record.started_at) - uploaded).total_seconds()
            if record.started_at
            else -1.0,
            "landed_recorded": 1.0 if record.snapshot_landed_at else 0.0,
            "trigger_event": 1.0 if record.trigger == "event" else 0.0,
        }


if __name__ == "__main__":
    print(json.dumps(freshness_scenario()))
