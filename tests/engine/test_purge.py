"""Issue 12, finding 12: deleting an export (or a connection with cascade) deletes what the app kept
about it; a retention sweep deletes old rejected rows. Real runs through the queue worker first, so
the blobs purged are the ones a run really leaves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.purge import purge_export, sweep
from tests.fixtures.sandbox import SANDBOX_API_KEY
from tests.support.app import AppEnv, call, create_connection, create_export, deliver, start
from tests.support.segments import profiles, write_ci_snapshot

PERSONAL = "person7@example.com"


@pytest.fixture
def delivered(ac_sandbox, segments, app_env: AppEnv) -> AppEnv:
    """Export `vip` ran once (state, report, rejected rows) and export `other` too, same connection."""
    app_env.monkeypatch.setenv("ACTIVECAMPAIGN_MAIN", SANDBOX_API_KEY)
    create_connection(ac_sandbox.hostname)
    rows = profiles(40)
    rows[3][1] = "not-an-email"  # one rejected row, so rejected.csv holds a row of personal data
    write_ci_snapshot(segments, "Vip", rows)
    for name in ("vip", "other"):
        create_export(segments.container_name, name=name, mode="mirror")
        assert start(name).status == 202
        deliver(app_env)
    names = _blobs(app_env)
    for name in ("vip", "other"):
        assert f"state/{name}/delivered.npz" in names
        assert any(n.startswith(f"runs/{name}/") and n.endswith("/rejected.csv") for n in names)
        assert any(n.startswith(f"runs/{name}/") and n.endswith("/run.json") for n in names)
    return app_env


def _blobs(env: AppEnv) -> set[str]:
    return {b.name for b in env.app.list_blobs()}


def _of(env: AppEnv, export: str) -> set[str]:
    return {n for n in _blobs(env) if n.split("/")[1:2] == [export] or n.endswith(f"/{export}.json")}


def _text_of(env: AppEnv, export: str) -> str:
    return "\n".join(env.app.download_blob(n).readall().decode("utf-8", "replace") for n in _of(env, export))


def test_deleting_an_export_deletes_its_state_checkpoints_runs_and_reports(delivered: AppEnv):
    from shared.decisions import SnapshotClaims

    delivered.app.upload_blob("state/vip/checkpoint.json", b"{}", overwrite=True)  # an unfinished run's
    claims = SnapshotClaims(delivered.app)
    assert claims.claim("vip", "2026/11/20/0600", {"why": "refresh event"})
    resp = call("export_item", "DELETE", "exports/vip", route={"name": "vip"})
    assert resp.status == 204, resp.body
    assert _of(delivered, "vip") == set()
    assert not delivered.app.get_blob_client(SnapshotClaims.blob_name("vip", "2026/11/20/0600")).exists()
    assert _of(delivered, "other")  # another export's data is untouched
    assert call("export_runs", "GET", "x", route={"name": "vip"}).status == 404


def test_keep_history_keeps_counts_and_change_logs_but_no_other_personal_data(delivered: AppEnv):
    (record,) = [n for n in _of(delivered, "vip") if n.endswith("/run.json")]
    # What a mirror run with removals leaves beside its record (emails of who was unsubscribed).
    delivered.app.upload_blob(
        record.replace("run.json", "unsubscribed.csv"), f"{PERSONAL},unsubscribed,\n", overwrite=True
    )
    resp = call("export_item", "DELETE", "exports/vip", route={"name": "vip"}, body={"keepHistory": True})
    assert resp.status == 204, resp.body
    left = _of(delivered, "vip")
    assert left, "the run records and reports were kept"
    assert all(n.endswith(("/run.json", "/report.json", "/changes.csv", "/changes.idx")) for n in left), left
    text = "\n".join(delivered.app.download_blob(n).readall().decode() for n in left if n.endswith(".json"))
    assert '"accepted"' in text  # the counts are there
    assert PERSONAL not in text
    assert "First7" not in text
    # The change log is the history kept: who was sent what, until the retention ends (sweep).
    (changes,) = [n for n in left if n.endswith("/changes.csv")]
    assert PERSONAL in delivered.app.download_blob(changes).readall().decode()
    now = datetime.now(UTC)
    assert sweep(delivered.app, exports={"other"}, rejected_retention=timedelta(days=30), now=now).total == 0
    later = sweep(
        delivered.app, exports={"other"}, rejected_retention=timedelta(days=30), now=now + timedelta(days=31)
    )
    assert not any(n.endswith(("/changes.csv", "/changes.idx")) for n in _of(delivered, "vip"))
    assert later.rejected >= 2


def test_deleting_a_connection_with_cascade_purges_every_export_of_it(delivered: AppEnv):
    resp = call("connection_item", "DELETE", "x", route={"name": "main"}, body={"cascade": True})
    assert resp.status == 204, resp.body
    assert _of(delivered, "vip") == set()
    assert _of(delivered, "other") == set()


def test_the_retention_sweep_deletes_old_rejected_rows_and_leftovers_of_deleted_exports(delivered: AppEnv):
    now = datetime.now(UTC)
    # Nothing is old yet: the sweep keeps every report of existing exports.
    assert (
        sweep(delivered.app, exports={"vip", "other"}, rejected_retention=timedelta(days=30), now=now).total
        == 0
    )
    # A run that wrote after its export was deleted leaves state, rejected rows and a change log
    # (no run record kept): swept at once.
    delivered.app.upload_blob("state/gone/delivered.npz", b"x")
    delivered.app.upload_blob("runs/gone/20260101T000000000000Z-aaaaaa/rejected.csv", b"x")
    delivered.app.upload_blob("runs/gone/20260101T000000000000Z-aaaaaa/changes.csv", b"x")
    swept = sweep(delivered.app, exports={"vip", "other"}, rejected_retention=timedelta(days=30), now=now)
    assert (swept.state, swept.rejected) == (1, 2)
    # 31 days later, the rejected rows of existing exports are due; their records and state stay.
    later = sweep(
        delivered.app,
        exports={"vip", "other"},
        rejected_retention=timedelta(days=30),
        now=now + timedelta(days=31),
    )
    # each export's rejected.csv, unsubscribed.csv (mirror runs), changes.csv and changes.idx
    assert later.rejected == 8
    names = _blobs(delivered)
    assert not any(
        n.endswith(("/rejected.csv", "/unsubscribed.csv", "/changes.csv", "/changes.idx")) for n in names
    )
    assert "state/vip/delivered.npz" in names
    assert any(n.endswith("/run.json") for n in names)


def test_purge_is_idempotent(delivered: AppEnv):
    first = purge_export(delivered.app, "vip")
    assert first.state >= 1
    assert first.rejected == 4  # rejected.csv, unsubscribed.csv, changes.csv and changes.idx
    assert purge_export(delivered.app, "vip").total == 0


def test_the_timer_runs_the_sweep_with_the_retention_setting(delivered: AppEnv):
    from functions import services
    from functions.timer import sweep_retention

    delivered.app.upload_blob("state/gone/delivered.npz", b"x")
    delivered.set("REJECTED_ROWS_RETENTION_DAYS", "1")
    svc = services.get_services()
    assert svc.settings.rejected_rows_retention_days == 1
    sweep_retention(svc)
    names = _blobs(delivered)
    assert "state/gone/delivered.npz" not in names
    assert "state/vip/delivered.npz" in names  # an existing export keeps its state
    assert any(n.endswith("/rejected.csv") for n in names)  # written just now: younger than a day


def test_retention_days_must_be_a_whole_number_of_days():
    from shared.settings import SettingsError, load_settings

    assert load_settings({}).rejected_rows_retention_days == 30
    assert load_settings({"REJECTED_ROWS_RETENTION_DAYS": "7"}).rejected_rows_retention_days == 7
    for bad in ("0", "-1", "1.5", "soon"):
        with pytest.raises(SettingsError, match="REJECTED_ROWS_RETENTION_DAYS"):
            load_settings({"REJECTED_ROWS_RETENTION_DAYS": bad})


@pytest.mark.parametrize(("days", "kept"), [(3, True), (1, False)])
def test_the_timer_deletes_rejected_rows_older_than_the_retention_setting(
    delivered: AppEnv, days: int, kept: bool
):
    # Two days after the runs: within a 3-day retention the rejected rows stay, past a 1-day one the
    # timer's firing deletes them (records, reports and delivered state stay either way).
    from azure.functions.timer import TimerRequest

    from functions import timer
    from tests.support.app import handler

    class TwoDaysLater(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz) + timedelta(days=2)

    delivered.set("REJECTED_ROWS_RETENTION_DAYS", str(days))
    delivered.monkeypatch.setattr(timer, "datetime", TwoDaysLater)
    handler("export_schedule")(TimerRequest(past_due=False))
    names = _blobs(delivered)
    assert any(n.endswith("/rejected.csv") for n in names) is kept
    assert any(n.endswith("/unsubscribed.csv") for n in names) is kept
    assert "state/vip/delivered.npz" in names
    assert any(n.endswith("/run.json") for n in names)
