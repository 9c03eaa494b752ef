"""Cancel and withdraw over real HTTP: `python -m scripts.serve` (its queue worker) against Azurite and
the sandbox. When requests are answered is decided by the test (the sandbox's `Fault.hold`), and what
happened is read from the run records and the sandbox's own record of imports, never guessed from time.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from azure.storage.blob import BlobServiceClient

from sandbox import Fault, SandboxServer
from tests.fixtures.sandbox import SANDBOX_API_KEY
from tests.fixtures.serve import StartServe, base_env
from tests.support.app import AppEnv
from tests.support.segments import FOLDER, profiles, write_ci_snapshot

BULK = "/api/3/import/bulk_import"
ENDED = ("succeeded", "failed", "cancelled")


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll until `check()` is truthy (a readiness check with a bound, not a sleep standing in for one)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def clean_monitor(azurite: str) -> None:
    """No timer status left by an earlier host in this session (it would make a start past due)."""
    container = BlobServiceClient.from_connection_string(azurite).get_container_client("azure-webjobs-hosts")
    if container.exists():
        for blob in container.list_blobs(name_starts_with="timers/"):
            container.delete_blob(blob.name)


def set_up(client: httpx.Client, sandbox: SandboxServer, container: str, **export: Any) -> None:
    connection = {
        "displayName": "Sandbox",
        "hostname": sandbox.hostname,
        "dataPrivacyConsent": True,
        "apiKey": SANDBOX_API_KEY,
    }
    assert client.put("/connections/main", json=connection).status_code == 201
    body = {
        "connection": "main",
        "source": {"container": container, "folder": FOLDER, "segment": "Vip"},
        "listId": 1,
        "mapping": {"email": "EmailAddress", "firstName": "FirstName"},
        "trigger": "manual",
        **export,
    }
    resp = client.put("/exports/vip", json=body)
    assert resp.status_code == 201, resp.text


def start(client: httpx.Client, **options: Any) -> str:
    resp = client.post("/exports/vip/runs", json=options)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["runId"])


def ended(client: httpx.Client, run_id: str, timeout: float = 90) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        run: dict[str, Any] = client.get(f"/exports/vip/runs/{run_id}").json()
        return run if run["status"] in ENDED else None

    result: dict[str, Any] = wait_for(check, timeout, f"run {run_id} to end")
    return result


def changes(client: httpx.Client, run_id: str) -> list[dict[str, str]]:
    """Every row of a run's change log (GET .../changes, as CSV)."""
    resp = client.get(f"/exports/vip/runs/{run_id}/changes", params={"limit": 10000})
    assert resp.status_code == 200, resp.text
    assert "Link" not in resp.headers  # one page holds them all
    return list(csv.DictReader(io.StringIO(resp.text)))


def sent_emails(sandbox: SandboxServer, *, unsubscribe: bool) -> list[str]:
    """Every contact of every bulk import the sandbox queued, in order (subscribes or unsubscribes)."""
    return [
        c.email
        for batch in sandbox.state.batches()
        for c in batch.contacts
        if bool(c.unsubscribe) == unsubscribe
    ]


def test_a_run_cancelled_mid_send_stops_after_the_queued_batches_and_the_next_run_finishes_it(
    serve: StartServe, app_env: AppEnv, segments, ac_sandbox: SandboxServer, clean_monitor
):
    everyone = {f"person{i}@example.com" for i in range(1000)}
    write_ci_snapshot(segments, "Vip", profiles(1000))  # 4 batches of 250
    hold = Fault.hold(path=BULK)  # the run's first bulk import waits for the test
    ac_sandbox.inject(hold)
    served = serve(base_env(app_env.azurite))
    with httpx.Client(base_url=served.api, timeout=30) as client:
        set_up(client, ac_sandbox, segments.container_name)
        run_id = start(client)
        assert hold.arrived is not None
        assert hold.arrived.wait(60), served.log()
        # Two requests in flight: the first held, the second queued; the third waits for the first.
        assert ac_sandbox.state.wait_for_batches(1, 30)
        resp = client.post(f"/exports/vip/runs/{run_id}/cancel", json={})
        assert resp.status_code == 202, resp.text
        assert resp.json()["status"] == "running"  # it stops at its next batch boundary
        assert resp.headers["Location"] == f"/api/exports/vip/runs/{run_id}"
        hold.release()
        run = ended(client, run_id)
        assert run["status"] == "cancelled", run
        assert "cancelled by api:" in run["error"]
        assert "checkpoint is kept" in run["error"]
        # Nothing went out after the cancel beyond the two batches already sent, and both were confirmed.
        assert len(ac_sandbox.state.batches()) == 2
        first = sent_emails(ac_sandbox, unsubscribe=False)
        assert len(first) == len(set(first)) == 500
        assert ac_sandbox.wait_until_idle(10)
        assert set(ac_sandbox.state.list_members(1)) == set(first)
        assert run["counts"]["accepted"] == 500
        # The batches confirmed after the cancel are in the run's change log, each contact once.
        logged = changes(client, run_id)
        assert sorted(row["email"] for row in logged) == sorted(first)
        assert {(row["action"], row["outcome"]) for row in logged} == {("add", "accepted")}
        again = client.post(f"/exports/vip/runs/{run_id}/cancel", json={})
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "RunNotActive"
        assert "cancelled" in again.json()["error"]["message"]

        # The next run goes on from the checkpoint: only the other 500, and the list is exact.
        second = ended(client, start(client))
        assert second["status"] == "succeeded", second
        report = client.get(f"/exports/vip/runs/{second['runId']}/report").json()
        assert report["resumed_from"] == 500
    assert ac_sandbox.wait_until_idle(10)
    sent = sent_emails(ac_sandbox, unsubscribe=False)
    assert len(sent) == len(set(sent)) == 1000
    assert ac_sandbox.state.list_members(1) == dict.fromkeys(everyone, 1)
    assert served.stop() == 0


def test_withdraw_unsubscribes_exactly_the_exports_own_subscribers_and_a_later_run_brings_them_back(
    serve: StartServe, app_env: AppEnv, segments, ac_sandbox: SandboxServer, clean_monitor
):
    people = [f"person{i}@example.com" for i in range(300)]
    write_ci_snapshot(segments, "Vip", profiles(300))
    served = serve(base_env(app_env.azurite))
    with httpx.Client(base_url=served.api, timeout=30) as client:
        set_up(client, ac_sandbox, segments.container_name)
        assert ended(client, start(client))["status"] == "succeeded"
        assert ac_sandbox.wait_until_idle(10)
        # Two people leave the list on their own; someone the export never sent is on it too.
        themselves = people[:2]
        for email in themselves:
            resp = httpx.post(ac_sandbox.root_url + "/__sandbox/opt-out", json={"list": 1, "email": email})
            assert resp.status_code < 300, resp.text
        outsider, _ = ac_sandbox.state.sync_contact(
            "outsider@example.com", first_name=None, last_name=None, phone=None, fields=()
        )
        ac_sandbox.state.set_membership(1, outsider.id, 1)
        batches_before = len(ac_sandbox.state.batches())

        # The guard: a withdrawal is far above maxRemovalShare, so it needs force (even to try it dry).
        guarded = ended(client, start(client, withdraw=True, dryRun=True))
        assert guarded["status"] == "failed"
        assert "maxRemovalShare" in guarded["error"]
        assert "force" in guarded["error"]
        dry = ended(client, start(client, withdraw=True, dryRun=True, force=True))
        assert dry["status"] == "succeeded", dry
        assert dry["withdraw"] is True
        report = client.get(f"/exports/vip/runs/{dry['runId']}/report").json()
        assert (report["to_remove"], report["left_unsubscribed"]) == (298, 2)
        assert len(ac_sandbox.state.batches()) == batches_before  # a dry run sends nothing

        withdrawn = ended(client, start(client, withdraw=True, force=True))
        assert withdrawn["status"] == "succeeded", withdrawn
        assert withdrawn["counts"]["removed"] == 298
        assert ac_sandbox.wait_until_idle(10)
        unsubscribes = sent_emails(ac_sandbox, unsubscribe=True)
        assert sorted(unsubscribes) == sorted(
            people[2:]
        )  # each once; not the self-unsubscribed, not the outsider
        members = ac_sandbox.state.list_members(1)
        assert {e for e, status in members.items() if status == 1} == {"outsider@example.com"}
        listed = client.get(f"/exports/vip/runs/{withdrawn['runId']}/unsubscribed").json()
        assert {item["outcome"] for item in listed["unsubscribed"]} == {"unsubscribed"}
        assert len(listed["unsubscribed"]) == 298
        removals = changes(client, withdrawn["runId"])
        assert sorted(row["email"] for row in removals) == sorted(people[2:])
        assert {(row["action"], row["outcome"]) for row in removals} == {("remove", "accepted")}

        # The delivered state says nobody is subscribed by the export: a normal run brings back
        # everyone it withdrew (explicitly: bulk import cannot), never those who left on their own.
        back = ended(client, start(client))
        assert back["status"] == "succeeded", back
        assert back["counts"]["resubscribed"] == 298
    assert ac_sandbox.wait_until_idle(10)
    members = ac_sandbox.state.list_members(1)
    assert {e for e, status in members.items() if status == 2} == set(themselves)
    assert sorted(email for _, email in ac_sandbox.state.resubscriptions) == sorted(people[2:])
    assert served.stop() == 0
