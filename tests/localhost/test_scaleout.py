"""Scale-out: several `scripts.serve` processes on one Azurite behave like several instances of one app.

- one timer occurrence fires in one process only (the listener lock), and when that process stops
  another takes the timer over;
- however often the timers fire, a snapshot is exported by exactly one run;
- runs of one ActiveCampaign account hand the account over within seconds, in the order they were
  queued, while the processes take work for other accounts;
- a process killed between any two writes of a run start leaves no phantom run.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from itertools import pairwise
from typing import Any

import httpx
import pytest

from sandbox.limits import Limits
from tests.fixtures.sandbox import SANDBOX_API_KEY
from tests.fixtures.serve import Served, StartServe, base_env
from tests.support.app import AppEnv
from tests.support.segments import FOLDER, profiles, write_ci_snapshot

pytestmark = pytest.mark.slow  # each test runs two or three app processes for up to a minute

POLL_S = 0.2
# Every run of these tests sends at most this many contacts a second (sandbox and app agree).
BULK_PER_MINUTE = 120  # 2 imports/s of 250 contacts
# The most an account may sit idle between two runs that wait for it ("within a few seconds"; the
# machine the suite runs on may be busy with other work).
HANDOVER_S = 8.0


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(POLL_S)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def connection_body(hostname: str) -> dict[str, Any]:
    return {"displayName": hostname, "hostname": hostname, "dataPrivacyConsent": True}


def export_body(
    container: str, connection: str, segment: str, folder: str = FOLDER, **options: Any
) -> dict[str, Any]:
    return {
        "connection": connection,
        "source": {"container": container, "folder": folder, "segment": segment},
        "listId": 1,
        "mapping": {"email": "EmailAddress", "firstName": "FirstName"},
        **options,
    }


def runs_of(client: httpx.Client, export: str) -> list[dict[str, Any]]:
    resp = client.get(f"/exports/{export}/runs")
    assert resp.status_code == 200, resp.text
    runs: list[dict[str, Any]] = resp.json()["runs"]
    return runs


def at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def timer_firings(served: Served) -> list[float]:
    """When this process fired the timer (the invocation's reason: 'Timer fired at <time>')."""
    return [
        datetime.fromisoformat(m).timestamp()
        for m in re.findall(r"Reason='Timer fired at ([0-9T:.+\-]+)", served.log())
    ]


def keys_env(app_env: AppEnv, **settings: str) -> dict[str, str]:
    # Every process gets the same keys from its environment (no Key Vault: README).
    return base_env(
        app_env.azurite,
        ACTIVECAMPAIGN_A=SANDBOX_API_KEY,
        ACTIVECAMPAIGN_B=SANDBOX_API_KEY,
        ACTIVECAMPAIGN_BULK_IMPORTS_PER_MINUTE=str(BULK_PER_MINUTE),
        ACTIVECAMPAIGN_REQUESTS_PER_SECOND="50",
        RUN_LEASE_SECONDS="15",
        **settings,
    )


def put_connection(client: httpx.Client, name: str, hostname: str) -> None:
    resp = client.put(f"/connections/{name}", json=connection_body(hostname))
    assert resp.status_code in (200, 201), resp.text


def test_one_timer_occurrence_fires_in_one_process_and_a_snapshot_is_exported_once(
    serve: StartServe, app_env: AppEnv, segments, make_sandbox
):
    sandbox = make_sandbox(Limits(requests_per_second=50, bulk_multi_per_minute=BULK_PER_MINUTE))
    write_ci_snapshot(segments, "Vip", profiles(1500))  # three seconds of sending: many ticks race its end
    env = keys_env(app_env, EXPORT_SCHEDULE="* * * * * *")
    first, second = serve(env, name="first"), serve(env, name="second")
    with httpx.Client(base_url=first.api, timeout=30) as client:
        put_connection(client, "a", sandbox.hostname)
        resp = client.put("/exports/vip", json=export_body(segments.container_name, "a", "Vip"))
        assert resp.status_code == 201, resp.text

        def succeeded() -> list[dict[str, Any]]:
            return [r for r in runs_of(client, "vip") if r["status"] == "succeeded"]

        wait_for(succeeded, 90, "the timer's run to succeed")
        # Ticks after the end of the run (every second) queue nothing more for the snapshot.
        holder = first if timer_firings(first) and not timer_firings(second) else second
        fired = len(timer_firings(holder))
        wait_for(lambda: len(timer_firings(holder)) >= fired + 3, 30, "three more ticks")
        runs = runs_of(client, "vip")
    assert [r["status"] for r in runs] == ["succeeded"], runs
    assert runs[0]["instance"]
    assert len(sandbox.state.list_members(1)) == 1500
    # One process fired every occurrence; none fired in both.
    firings = {"first": timer_firings(first), "second": timer_firings(second)}
    assert sorted(name for name, times in firings.items() if times) == [
        "first" if holder is first else "second"
    ], {k: len(v) for k, v in firings.items()}
    occurrences = Counter(int(t) for times in firings.values() for t in times)
    assert max(occurrences.values()) == 1, occurrences

    # The holder stops: the other process takes the timer over within one lock period (15 s).
    other = second if holder is first else first
    stopped = time.time()
    assert holder.stop() == 0
    wait_for(lambda: [t for t in timer_firings(other) if t > stopped], 30, "the other process to fire")
    assert "timer listener lock" in other.log()


def test_runs_of_one_account_hand_over_within_seconds_in_queue_order(
    serve: StartServe, app_env: AppEnv, segments, make_sandbox
):
    busy = make_sandbox(Limits(requests_per_second=50, bulk_multi_per_minute=BULK_PER_MINUTE))
    other = make_sandbox(Limits(requests_per_second=50, bulk_multi_per_minute=BULK_PER_MINUTE))
    names = ["a1", "a2", "a3", "a4"]
    for i, name in enumerate([*names, "b1"]):
        # Each export reads its own Customer Insights folder (one model.json each).
        write_ci_snapshot(segments, "Vip", profiles(1000, start=i * 1000), folder=f"ci-{name}")
    env = keys_env(app_env)
    hosts = [serve(env, name=f"host{i}") for i in range(3)]
    with httpx.Client(base_url=hosts[0].api, timeout=30) as client:
        put_connection(client, "a", busy.hostname)
        put_connection(client, "b", other.hostname)
        for name in [*names, "b1"]:
            connection = name[0]
            body = export_body(segments.container_name, connection, "Vip", f"ci-{name}", trigger="manual")
            assert client.put(f"/exports/{name}", json=body).status_code == 201
        queued = {}
        for name in [*names, "b1"]:  # queued in this order, a1 first
            resp = client.post(f"/exports/{name}/runs", json={})
            assert resp.status_code == 202, resp.text
            queued[name] = resp.json()["runId"]

        def all_done() -> dict[str, dict[str, Any]] | None:
            runs = {name: runs_of(client, name)[0] for name in queued}
            return runs if all(r["status"] in ("succeeded", "failed") for r in runs.values()) else None

        runs = wait_for(all_done, 120, "every run to end")
    assert {name: r["status"] for name, r in runs.items()} == dict.fromkeys(queued, "succeeded"), {
        n: r["error"] for n, r in runs.items()
    }
    # When account a received each run's batches (the sandbox's clock): export i sent persons i*1000...
    sent: dict[str, list[float]] = {}
    for batch in busy.state.batches():
        for contact in batch.contacts:
            number = int(contact.email.removeprefix("person").split("@")[0])
            sent.setdefault(names[number // 1000], []).append(batch.posted_at)
    spans = {name: (min(times), max(times)) for name, times in sent.items()}
    order = sorted(names, key=lambda n: spans[n][0])
    # One run after another (never two at once), each starting within seconds of the previous one:
    # the gap spans the previous run's last confirmations and state save, the hand-over, and the
    # next run's pass 1 and first request (2-4 s here; a minute before issue 24).
    gaps = [spans[after][0] - spans[before][1] for before, after in pairwise(order)]
    assert min(gaps) > 0, (order, gaps)
    assert max(gaps) <= HANDOVER_S, (order, gaps)
    # The runs that waited took the account in the order they were queued.
    waited = order[1:]
    assert waited == sorted(waited, key=lambda n: queued[n]), (order, queued)
    # The instances took work for the other account meanwhile: b1 did not wait for account a's line.
    b1 = [batch.posted_at for batch in other.state.batches()]
    assert min(b1) < spans[order[-1]][0], (min(b1), spans)
    assert len(busy.state.list_members(1)) == 4000


@pytest.mark.parametrize("point", ["start:claimed", "start:prepared", "start:recorded"])
def test_a_process_killed_between_the_writes_of_a_run_start_leaves_no_phantom(
    point: str, serve: StartServe, app_env: AppEnv, segments, make_sandbox
):
    sandbox = make_sandbox(Limits(requests_per_second=50, bulk_multi_per_minute=6000))
    write_ci_snapshot(segments, "Vip", profiles(50))
    survivor = serve(keys_env(app_env), name="survivor")
    doomed = serve(keys_env(app_env, TEST_CRASH_AT=point), name="doomed")
    with httpx.Client(base_url=survivor.api, timeout=30) as client:
        put_connection(client, "a", sandbox.hostname)
        body = export_body(segments.container_name, "a", "Vip", trigger="manual")
        assert client.put("/exports/vip", json=body).status_code == 201
        with pytest.raises(httpx.TransportError):  # the process dies inside the request
            httpx.post(f"{doomed.api}/exports/vip/runs", json={}, timeout=30)
        assert doomed.proc.wait(10) == 137
        assert f"crash point {point} reached" in doomed.log()

        def start_or_finished() -> list[dict[str, Any]]:
            runs = runs_of(client, "vip")
            if any(r["status"] == "succeeded" for r in runs):
                return runs
            if not any(r["status"] in ("queued", "running") for r in runs):
                resp = client.post("/exports/vip/runs", json={})
                assert resp.status_code in (202, 409), resp.text
            return []

        # Within one start lease (15 s) plus a run, the export runs again through the normal rules.
        runs = wait_for(start_or_finished, 60, "a run of the export to succeed")
    # Nothing but the run that succeeded: no queued record without a message, no deleted leftovers.
    assert [r["status"] for r in runs] == ["succeeded"], runs
    assert len(sandbox.state.list_members(1)) == 50
    container = app_env.app
    assert [b.name for b in container.list_blobs(name_starts_with="runs/vip/active")] == []
    assert survivor.stop() == 0
