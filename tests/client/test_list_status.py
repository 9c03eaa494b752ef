"""List statuses for the feedback folder (issue 26): the sandbox answers the list-status queries as
the contacts reference documents them, and the client walks them, paced, from a given time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from openapi_schema_validator import OAS30Validator

from sandbox import SandboxServer
from shared import liststatus
from tests.client.test_activecampaign import sandbox_client
from tests.client.test_sandbox import response_schema
from tests.fixtures.sandbox import MakeSandbox


def _import(server: SandboxServer, emails: list[str], list_id: int = 1) -> None:
    with httpx.Client(base_url=server.base_url, headers={"Api-Token": server.api_key}) as api:
        contacts = [{"email": e, "subscribe": [{"listid": list_id}]} for e in emails]
        assert api.post("/import/bulk_import", json={"contacts": contacts}).status_code == 200
    assert server.wait_until_idle(10.0)


def _conforms(page: object) -> bool:
    branches = response_schema("contacts", "/contacts", "get", "200")["oneOf"]
    return any(OAS30Validator(b).is_valid(page) for b in branches)


def test_sandbox_filters_by_list_status_and_update_day_and_serves_contact_lists(ac_sandbox: SandboxServer):
    emails = [f"p{i:02d}@example.com" for i in range(6)]
    _import(ac_sandbox, emails)
    state = ac_sandbox.state
    state.opt_out(1, "p01@example.com")
    bounced = state.bounce("p02@example.com")
    assert bounced.bounced_hard == 1
    today = datetime.now(UTC).date()
    with httpx.Client(base_url=ac_sandbox.base_url, headers={"Api-Token": ac_sandbox.api_key}) as api:
        by_status = {
            s: api.get("/contacts", params={"listid": 1, "status": s, "orders[id]": "ASC"}).json()
            for s in (1, 2, 3)
        }
        assert all(_conforms(page) for page in by_status.values())
        assert [c["email"] for c in by_status[2]["contacts"]] == ["p01@example.com"]
        assert [c["email"] for c in by_status[3]["contacts"]] == ["p02@example.com"]
        assert by_status[3]["contacts"][0]["bounced_hard"] == "1"
        assert by_status[3]["contacts"][0]["bounced_date"] == today.isoformat()
        assert by_status[1]["meta"]["total"] == "4"
        yesterday = (today - timedelta(days=1)).isoformat()
        recent = api.get("/contacts", params={"listid": 1, "status": 2, "filters[updated_after]": yesterday})
        assert [c["email"] for c in recent.json()["contacts"]] == ["p01@example.com"]
        none = api.get(
            "/contacts", params={"listid": 1, "status": 2, "filters[updated_after]": today.isoformat()}
        )
        assert none.json()["contacts"] == []  # "after this date": a later day
        refused = api.get("/contacts", params={"listid": 1, "filters[updated_after]": "2026-01-01T00:00:00Z"})
        assert refused.status_code == 400
        contact_id = int(by_status[3]["contacts"][0]["id"])
        lists = api.get(f"/contacts/{contact_id}/contactLists")
        assert lists.status_code == 200
        schema = response_schema("contacts", "/contacts/{id}/contactLists", "get", "200")
        OAS30Validator(schema).validate(lists.json())
        (membership,) = lists.json()["contactLists"]
        assert (membership["list"], membership["status"]) == ("1", "3")
        assert datetime.fromisoformat(membership["udate"]) >= datetime.fromisoformat(bounced.cdate)
        assert api.get("/contacts/999/contactLists").status_code == 404
        # A bulk subscribe leaves a bounced address bounced and an opted-out one unsubscribed.
    _import(ac_sandbox, ["p01@example.com", "p02@example.com"])
    assert state.list_members(1)["p01@example.com"] == 2
    assert state.list_members(1)["p02@example.com"] == 3


def test_admin_bounce_route(ac_sandbox: SandboxServer):
    _import(ac_sandbox, ["b@example.com"])
    with httpx.Client(base_url=ac_sandbox.root_url) as admin:
        answer = admin.post("/__sandbox/bounce", json={"email": "B@example.com"})
        assert answer.status_code == 200
        assert admin.post("/__sandbox/bounce", json={"email": "nobody@example.com"}).status_code == 400
    assert ac_sandbox.state.list_members(1) == {"b@example.com": 3}


def test_client_walks_changed_statuses_in_pages_since_a_time(make_sandbox: MakeSandbox):
    server = make_sandbox()
    _import(server, [f"c{i:03d}@example.com" for i in range(230)])
    state = server.state
    for i in range(0, 230, 2):  # 115 unsubscribed: two pages
        state.opt_out(1, f"c{i:03d}@example.com")
    client = sandbox_client(server)
    everyone = list(liststatus.walk(client, 1, liststatus.UNSUBSCRIBED))
    assert len(everyone) == 115
    assert [s.contact_id for s in everyone] == sorted(s.contact_id for s in everyone)
    newest = max(datetime.fromisoformat(s.updated) for s in everyone)
    # `udate` has whole seconds: the second before `since` is read again (the caller drops repeats).
    assert (
        len(list(liststatus.walk(client, 1, liststatus.UNSUBSCRIBED, since=newest + timedelta(seconds=1))))
        > 0
    )
    since = newest + timedelta(seconds=2)
    assert list(liststatus.walk(client, 1, liststatus.UNSUBSCRIBED, since=since)) == []
    queries = [r.query for r in state.requests("/api/3/contacts", method="GET")]
    # Two pages each time (the day filter reaches two days back, so today's changes are all read
    # again and dropped by their udate), each page walked by id.
    day = (since - timedelta(days=2)).date().isoformat()
    second_page = f"listid=1&status=2&orders[id]=ASC&id_greater={everyone[99].contact_id}&limit=100"
    assert queries[:2] == ["listid=1&status=2&orders[id]=ASC&id_greater=0&limit=100", second_page]
    assert queries[4:] == [
        f"listid=1&status=2&orders[id]=ASC&id_greater=0&limit=100&filters[updated_after]={day}",
        f"{second_page}&filters[updated_after]={day}",
    ]
    assert client.request_counts().get("GET /contacts") == 6
