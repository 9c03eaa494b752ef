"""Issue 20 over real HTTP: the change log and lookup served by `scripts.serve` (the real function
app, its queue worker) against Azurite and the sandbox, compared with what the sandbox received."""

from __future__ import annotations

import csv
import io
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from sandbox import Limits
from tests.fixtures.sandbox import SANDBOX_API_KEY
from tests.fixtures.serve import StartServe, base_env
from tests.support.app import AppEnv
from tests.support.segments import FOLDER, profiles, write_ci_snapshot

POLL_S = 0.2
pytestmark = pytest.mark.slow  # runs the served host, three runs or a 10,000-contact one


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll until `check()` returns something truthy (readiness detection, bounded)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(POLL_S)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def set_up(client: httpx.Client, hostname: str, container: str, **options: Any) -> None:
    connection = {"displayName": "Sandbox", "hostname": hostname, "dataPrivacyConsent": True}
    resp = client.put("/connections/main", json={**connection, "apiKey": SANDBOX_API_KEY})
    assert resp.status_code in (200, 201), resp.text
    export = {
        "connection": "main",
        "source": {"container": container, "folder": FOLDER, "segment": "Vip"},
        "listId": 1,
        "mapping": {
            "email": "EmailAddress",
            "firstName": "FirstName",
            "fields": {"LOYALTY_TIER": "LoyaltyTier"},
        },
        "trigger": "manual",
        **options,
    }
    resp = client.put("/exports/vip", json=export)
    assert resp.status_code in (200, 201), resp.text


def run_to_end(client: httpx.Client, timeout: float = 90) -> dict[str, Any]:
    resp = client.post("/exports/vip/runs", json={})
    assert resp.status_code == 202, resp.text
    return finish(client, resp.json()["runId"], timeout)


def finish(client: httpx.Client, run_id: str, timeout: float = 90) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        run: dict[str, Any] = client.get(f"/exports/vip/runs/{run_id}").json()
        return run if run["status"] in ("succeeded", "failed") else None

    run: dict[str, Any] = wait_for(done, timeout, f"run {run_id} to finish")
    assert run["status"] == "succeeded", run
    return run


def changes(client: httpx.Client, run_id: str, **filters: str) -> list[dict[str, str]]:
    """Every row of a run's change log, following the `Link: rel="next"` pages."""
    url: str | None = f"/exports/vip/runs/{run_id}/changes"
    params: dict[str, str] | None = {"limit": "97", **filters}
    rows: list[dict[str, str]] = []
    while url:
        resp = client.get(url, params=params)
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"] == "text/csv; charset=utf-8"
        page = list(csv.DictReader(io.StringIO(resp.text)))
        rows += page
        link = resp.headers.get("Link")
        url, params = (link.split(";")[0].strip("<>").removeprefix("/api"), None) if link else (None, None)
    return rows


def lookup(client: httpx.Client, email: str) -> dict[str, Any]:
    resp = client.post("/exports/vip/lookup", json={"email": email})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def test_the_change_log_is_what_the_sandbox_received_and_lookup_finds_it(
    serve: StartServe, app_env: AppEnv, segments, make_sandbox
) -> None:
    sandbox = make_sandbox()
    rows = profiles(300)
    rows[3][1] = "not-an-email"  # rejected before sending
    rows[4][1] = ""  # rejected: no address
    write_ci_snapshot(segments, "Vip", rows)
    sandbox.state.set_exclusions(["person7@example.com"])  # ActiveCampaign reports it failed
    served = serve(base_env(app_env.azurite))
    with httpx.Client(base_url=served.api, timeout=30) as client:
        set_up(client, sandbox.hostname, segments.container_name, mode="mirror", maxRemovalShare=0.5)
        first = run_to_end(client)["runId"]
        logged = changes(client, first)
        assert sandbox.wait_until_idle(10)
        received = Counter(c.email for b in sandbox.state.batches() for c in b.contacts)
        members = {e for e, status in sandbox.state.list_members(1).items() if status == 1}
        accepted = {
            r["email"] for r in logged if r["action"] in ("add", "update") and r["outcome"] == "accepted"
        }
        assert accepted == members == set(received) - {"person7@example.com"}
        assert len(accepted) == 297
        assert [(r["email"], r["outcome"], r["reason"]) for r in logged if r["outcome"] != "accepted"] == [
            ("person7@example.com", "failed", "failed")
        ]
        rejected = client.get(f"/exports/vip/runs/{first}/rejected").text
        rejected_rows = list(csv.DictReader(io.StringIO(rejected)))
        assert {r["reason"] for r in rejected_rows} == {
            "invalid_email",
            "missing_email",
            "activecampaign_failed",
        }
        assert not accepted & {r.get("EmailAddress") for r in rejected_rows}
        assert not {"not-an-email", ""} & {r["email"] for r in logged}

        # Mirror: 100 leave (removed), then come back (re-subscribed, as this export removed them).
        write_ci_snapshot(segments, "Vip", profiles(200), time_folder="2026/11/21/0600")
        second = run_to_end(client)["runId"]
        removed = changes(client, second, action="remove")
        assert sorted(r["email"] for r in removed) == sorted(
            f"person{i}@example.com" for i in range(200, 300)
        )
        assert {r["outcome"] for r in removed} == {"accepted"}
        unsubscribed = {e for e, status in sandbox.state.list_members(1).items() if status == 2}
        assert {r["email"] for r in removed} == unsubscribed
        write_ci_snapshot(segments, "Vip", profiles(300), time_folder="2026/11/22/0600")
        third = run_to_end(client)["runId"]
        back = changes(client, third)
        assert {(r["action"], r["outcome"]) for r in back if r["email"] != "person7@example.com"} == {
            ("resubscribe", "accepted")
        }
        resubscribed = {email for _list, email in sandbox.state.resubscriptions}
        assert {r["email"] for r in back if r["action"] == "resubscribe"} == resubscribed
        assert len(resubscribed) == 100

        # Lookup: a sent address shows each run, newest first; an unknown one is not found.
        found = lookup(client, "Person250@example.com")
        assert found["found"] is True
        assert [(h["runId"], h["action"]) for h in found["history"]] == [
            (third, "resubscribe"),
            (second, "remove"),
            (first, "add"),
        ]
        assert (found["inSnapshot"], found["inDeliveredState"]) == (True, True)
        assert lookup(client, "nobody@example.com") == {
            "found": False,
            "history": [],
            "inSnapshot": False,
            "inDeliveredState": False,
        }
    assert "nobody@example.com" not in served.log()
    assert served.stop() == 0


def test_kill_9_mid_run_then_a_resume_logs_no_contact_twice(
    serve: StartServe, app_env: AppEnv, segments, make_sandbox
) -> None:
    # 40 batches at 600 bulk imports a minute: about 4 s of sending, time enough to kill it midway.
    sandbox = make_sandbox(limits=Limits(requests_per_second=200, bulk_multi_per_minute=600))
    write_ci_snapshot(segments, "Vip", profiles(10_000), partitions=3)
    env = base_env(
        app_env.azurite,
        RUN_LEASE_SECONDS="15",
        ACTIVECAMPAIGN_BULK_IMPORTS_PER_MINUTE="550",
    )
    served = serve(env, name="killed")
    with httpx.Client(base_url=served.api, timeout=30) as client:
        set_up(client, sandbox.hostname, segments.container_name)
        resp = client.post("/exports/vip/runs", json={})
        assert resp.status_code == 202, resp.text
        killed = resp.json()["runId"]
        # Killed once its change log holds rows (ActiveCampaign reported some batches).
        wait_for(lambda: client.get(f"/exports/vip/runs/{killed}/changes").text.count("\n") > 1, 60, "rows")
        served.proc.kill()  # SIGKILL: no clean-up of any kind
        served.proc.wait(30)
    assert sandbox.wait_until_idle(30)
    sent_before = {c.email for b in sandbox.state.batches() for c in b.contacts}
    assert 0 < len(sent_before) < 10_000

    again = serve(env, name="resumed")
    with httpx.Client(base_url=again.api, timeout=30) as client:
        # The killed run holds the export until its lease lapses (RUN_LEASE_SECONDS): 409 until then.
        def started() -> str | None:
            resp = client.post("/exports/vip/runs", json={})
            assert resp.status_code in (202, 409), resp.text
            return str(resp.json()["runId"]) if resp.status_code == 202 else None

        resumed = wait_for(started, 60, "the killed run's hold to lapse")
        run = finish(client, resumed, 120)
        assert run["counts"]["accepted"] == 10_000  # the checkpoint's counts carried over
        old = changes(client, killed)
        new = changes(client, resumed)
        abandoned = client.get(f"/exports/vip/runs/{killed}").json()
        assert abandoned["status"] == "failed"
        assert abandoned["changesBlob"] == f"runs/vip/{killed}/changes.csv"
        # The killed run's log covers what it logged before it died; the resumption logs the rest.
        assert old, "the killed run logged nothing before it died"
        both = Counter((r["email"], r["action"]) for r in old + new)
        assert max(both.values()) == 1, [k for k, n in both.items() if n > 1][:5]
        assert {r["outcome"] for r in old + new} == {"accepted"}
        assert sandbox.wait_until_idle(30)
        members = sandbox.state.list_members(1)
        assert members == {f"person{i}@example.com": 1 for i in range(10_000)}
        assert {email for email, _action in both} == set(members)
        assert {r["email"] for r in old} <= sent_before
        # Lookup finds a contact in the killed run's log too (read without an index).
        someone = old[0]["email"]
        history = lookup(client, someone)["history"]
        assert [h["runId"] for h in history] == [killed]
    assert again.stop() == 0
