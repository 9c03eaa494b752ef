"""ActiveCampaign's refusals quote the contact they refuse; the app keeps a category and positions
only (shared/refusals.py, issue 23 item 3). Names, phone numbers and street addresses are planted
in the sandbox's error bodies, and must reach no run record, stored blob, API answer or log line."""

from __future__ import annotations

import logging

import pytest

from sandbox.faults import Fault
from shared import refusals
from tests.fixtures.sandbox import SANDBOX_API_KEY
from tests.support.app import (
    AppEnv,
    call,
    create_connection,
    create_export,
    deliver,
    export_body,
    run_status,
    start,
)
from tests.support.segments import profiles, write_ci_snapshot

PLANTED = "Zebulon Quixote, +1 415 555 0199, 742 Evergreen Terrace, Springfield"
TRACES = ("Zebulon", "Quixote", "415 555", "0199", "Evergreen", "Springfield")


def _clean(text: str) -> None:
    found = [t for t in TRACES if t in text]
    assert found == [], f"planted personal data {found} in: {text[:300]}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"Invalid phone for {PLANTED}", "invalid phone"),
        (f"{PLANTED}: Field 'email' incorrect format", "invalid email (field email)"),
        (f"Contact {PLANTED} already exists", "duplicate"),
        (f"Custom field id 12 does not exist for {PLANTED}", "not found (field 12)"),
        (f"{PLANTED} is on the exclusion list", "excluded"),
        (PLANTED, "unrecognised reason"),
    ],
)
def test_a_refusal_is_reduced_to_its_category_and_positions(text, expected):
    assert refusals.reason(text) == expected


def test_a_422_keeps_pointers_made_of_our_own_field_names():
    errors = [
        {"title": f"{PLANTED} is invalid", "code": "field_invalid", "source": {"pointer": "/contact/phone"}},
        {"title": "Bad", "source": {"pointer": "/contact/Zebulon Quixote/0"}},
    ]
    described = refusals.describe_errors(errors)
    assert described == "invalid at /contact/phone; invalid at /contact/*/0"


@pytest.fixture
def ready(ac_sandbox, segments, app_env: AppEnv) -> AppEnv:
    app_env.monkeypatch.setenv("ACTIVECAMPAIGN_MAIN", SANDBOX_API_KEY)
    create_connection(ac_sandbox.hostname)
    write_ci_snapshot(segments, "Vip", profiles(20))
    create_export(segments.container_name)
    return app_env


def _stored_text(env: AppEnv) -> str:
    """Everything the app stored: run records, reports, checkpoints, rejected rows, change logs."""
    return "\n".join(
        env.app.download_blob(b.name).readall().decode("utf-8", "replace")
        for b in env.app.list_blobs()
        if not b.name.endswith(".npz")
    )


def test_planted_personal_data_in_refusals_reaches_no_record_answer_or_log(
    ready: AppEnv, ac_sandbox, segments, caplog
):
    caplog.set_level(logging.DEBUG)
    # 1. A bulk import refused for two contacts, with reasons quoting them: the run goes on without them.
    refused = {
        "success": 0,
        "message": f"Contacts of {PLANTED} did not pass validation",
        "failureReasons": [
            {"contact": 0, "failureReason": f"Invalid phone for {PLANTED}"},
            {"contact": 1, "failureReason": f"{PLANTED}: Field 'email' incorrect format"},
        ],
    }
    ac_sandbox.inject(Fault.http_status(400, path="/api/3/import/bulk_import", body=refused))
    location = start(body={}).headers["Location"]
    for _ in range(10):
        deliver(ready)
        if not ready.messages():
            break
    first = run_status(location)
    assert first.body["status"] == "succeeded", first.body
    assert first.body["counts"]["failed"] == 2
    _clean(str(first.body))

    # 2. A refusal that fails the run: its error quotes the list's owner.
    quoting = {"message": f"List owned by {PLANTED} cannot be read"}
    ac_sandbox.inject(Fault.http_status(400, path="/api/3/lists/", body=quoting))
    location = start(body={}).headers["Location"]
    deliver(ready)
    failed = run_status(location).body
    assert failed["status"] == "failed"
    assert failed["error"].endswith("(HTTP 400): invalid list")
    _clean(str(failed))

    # 3. The same refusal answering an API request (saving an export checks its list).
    ac_sandbox.inject(Fault.http_status(422, path="/api/3/lists/", body={"errors": [{"title": PLANTED}]}))
    answer = call(
        "export_item", "PUT", "exports/vip", route={"name": "vip"}, body=export_body(segments.container_name)
    )
    assert answer.status >= 400
    _clean(str(answer.body))

    _clean(_stored_text(ready))
    _clean("\n".join(record.getMessage() for record in caplog.records))
