"""Scenario 8 of `make bench`: the feedback folder for a list of 100,000 contacts with 1% changed.

Azurite and an in-process sandbox (its account state is filled directly: 100,000 contacts on list 1,
last updated 30 days ago, and the export's delivered state naming them all). First a Full refresh
(at 40x the limits: its requests are counted, and its time at ActiveCampaign's real limits is the
requests over the client's paced rate), then 1% change (700 unsubscribe, 300 bounce) and the change
refresh runs at ActiveCampaign's real limits (5 requests/s): requests used and seconds, measured.
`python -m scripts.bench --only-feedback` runs it alone.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np
from azure.storage.blob import BlobServiceClient

from sandbox import Limits, SandboxServer
from scripts.demo import azurite
from shared import feedback
from shared.activecampaign import ActiveCampaignClient, Pacer
from shared.config import ExportConfig, FeedbackTarget, FieldMapping, SegmentSource
from shared.state import StateStore, build_state
from shared.sync import email_keys

FEEDBACK_CONTACTS = 100_000
CHANGED_SHARE = 0.01
REAL_RPS = 5
API_KEY = "bench-feedback-key"


def _client(hostname: str, rps: int) -> ActiveCampaignClient:
    # Its own Pacer: client_for's is per account and process, its rate fixed by the first caller.
    return ActiveCampaignClient(
        hostname, API_KEY, pacer=Pacer(rps, 100), allowed_suffixes=(), allow_loopback=True
    )


def feedback_scenario(contacts: int = FEEDBACK_CONTACTS) -> dict[str, float]:
    emails = [f"person{i}@example.com" for i in range(contacts)]
    limits = Limits(
        requests_per_second=REAL_RPS * 40, bulk_multi_per_minute=6000, bulk_single_per_minute=6000
    )
    with azurite() as storage, SandboxServer(API_KEY, limits=limits, lists={1: "Newsletter"}) as server:
        state = server.state
        month_ago = (datetime.now(UTC) - timedelta(days=30)).isoformat(timespec="seconds")
        for email in emails:
            record, _ = state.sync_contact(email, first_name=None, last_name=None, phone=None, fields=())
            state.set_membership(1, record.id, 1)
        for record in state._by_id.values():  # the bench's account: last touched a month ago
            record.udate = month_ago
        service = BlobServiceClient.from_connection_string(storage)
        app = service.create_container("activecampaign-export")
        keys = email_keys(emails)
        delivered = build_state(
            keys,
            np.zeros(len(keys), dtype=np.uint64),
            [e.encode() for e in emails],
            snapshot_id="bench",
            last_full_sync=None,
        )
        StateStore(app, "vip").save(delivered, expected_etag=None)
        export = ExportConfig(
            name="vip",
            connection="main",
            source=SegmentSource("customer-insights", "", "Vip"),
            list_id=1,
            mapping=FieldMapping(
                email="EmailAddress", first_name=None, last_name=None, phone=None, fields={}, tags=()
            ),
            feedback=FeedbackTarget("activecampaign-feedback", "vip"),
        )

        with _client(server.hostname, REAL_RPS * 40) as fast:
            t0 = time.perf_counter()
            full = feedback.write_feedback(export=export, client=fast, customer=service, app=app)
            full_s = time.perf_counter() - t0

        changed = int(contacts * CHANGED_SHARE)
        unsubscribe, bounce = emails[: changed * 7 // 10], emails[changed * 7 // 10 : changed]
        for email in unsubscribe:
            state.opt_out(1, email)
        for email in bounce:
            state.bounce(email)
        server.limits.requests_per_second = REAL_RPS
        time.sleep(1.0)  # the sandbox's 1 s window forgets the fast refresh's requests
        refused_before = state.counters()["rate_limited"]
        with _client(server.hostname, REAL_RPS) as real:
            t1 = time.perf_counter()
            changes = feedback.write_feedback(export=export, client=real, customer=service, app=app)
            changes_s = time.perf_counter() - t1
        over_limit = state.counters()["rate_limited"] - refused_before
    return {
        "full_rows": full.rows,
        "full_requests": full.requests,
        "full_s_fast": full_s,
        # The client spaces requests at 95% of the limit (DEFAULT_REQUEST_SAFETY_MARGIN).
        "full_s_real_implied": full.requests / (REAL_RPS * 0.95),
        "changed": changed,
        "changes_rows": changes.rows,
        "changes_unsubscribed": changes.counts["unsubscribed"],
        "changes_bounced": changes.counts["bounced"],
        "changes_requests": changes.requests,
        "changes_s": changes_s,
        "over_limit": over_limit,  # 429s during the change refresh, at real limits
    }
