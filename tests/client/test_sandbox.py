"""The ActiveCampaign sandbox over real HTTP: limits, errors, async batches, opt-outs, faults, shapes.

Shapes are checked against ActiveCampaign's OpenAPI descriptions vendored in tests/reference (see its SOURCES.md).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openapi_schema_validator import OAS30Validator

from sandbox import Fault, FieldSpec, Limits, SandboxServer
from sandbox.httpserver import is_loopback
from sandbox.limits import SlidingWindow
from tests.fixtures.sandbox import (
    CITY_FIELD_ID,
    CUSTOMERS_LIST_ID,
    LOYALTY_TIER_FIELD_ID,
    NEWSLETTER_LIST_ID,
    SANDBOX_API_KEY,
    SCORE_FIELD_ID,
    MakeSandbox,
)
from tests.support.reference import REFERENCE

ROOT = Path(__file__).resolve().parents[2]
WAIT = 10.0  # bound for waits on the batch worker; they end as soon as it is done


# -- helpers -------------------------------------------------------------------------------------


@cache
def _spec(name: str) -> dict[str, Any]:
    with (REFERENCE / f"activecampaign-openapi-{name}.yml").open(encoding="utf-8") as fh:
        doc: dict[str, Any] = yaml.safe_load(fh)
    return doc


def response_schema(name: str, path: str, method: str, status: str) -> dict[str, Any]:
    operation = _spec(name)["paths"][path][method]
    schema: dict[str, Any] = operation["responses"][status]["content"]["application/json"]["schema"]
    return schema


def request_schema(name: str, path: str, method: str) -> dict[str, Any]:
    schema: dict[str, Any] = _spec(name)["paths"][path][method]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    return schema


def assert_conforms(instance: object, schema: dict[str, Any]) -> None:
    OAS30Validator(schema).validate(instance)


@pytest.fixture
def api(ac_sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=ac_sandbox.base_url, headers={"Api-Token": SANDBOX_API_KEY}, follow_redirects=False
    ) as client:
        yield client


def client_for(server: SandboxServer, **kwargs: Any) -> httpx.Client:
    return httpx.Client(
        base_url=server.base_url, headers={"Api-Token": server.api_key}, follow_redirects=False, **kwargs
    )


def contact(email: str, **extra: Any) -> dict[str, Any]:
    return {"email": email, **extra}


def bulk(client: httpx.Client, contacts: list[dict[str, Any]], **extra: Any) -> httpx.Response:
    return client.post("/import/bulk_import", json={"contacts": contacts, **extra})


def import_and_wait(
    server: SandboxServer, client: httpx.Client, contacts: list[dict[str, Any]]
) -> dict[str, Any]:
    response = bulk(client, contacts)
    assert response.status_code == 200, response.text
    assert server.wait_until_idle(WAIT)
    info = client.get("/import/info", params={"batchId": response.json()["batchId"]})
    result: dict[str, Any] = info.json()
    return result


# -- auth ------------------------------------------------------------------------------------------


def test_wrong_or_missing_key_is_403_and_rotation_retires_the_old_key(ac_sandbox, api):
    assert api.get("/users/me").status_code == 200
    wrong = httpx.get(f"{ac_sandbox.base_url}/users/me", headers={"Api-Token": "nope"})
    missing = httpx.get(f"{ac_sandbox.base_url}/users/me")
    assert (wrong.status_code, missing.status_code) == (403, 403)
    assert isinstance(wrong.json()["message"], str)

    ac_sandbox.set_api_key("rotated-key")
    assert api.get("/users/me").status_code == 403
    rotated = httpx.get(f"{ac_sandbox.base_url}/users/me", headers={"Api-Token": "rotated-key"})
    assert rotated.status_code == 200
    assert rotated.json()["user"]["id"] == "1"
    assert ac_sandbox.state.counters()["forbidden"] == 3


# -- account-wide request limit -----------------------------------------------------------------------


def first_refusal(
    client: httpx.Client, path: str, attempts: int = 50
) -> tuple[list[httpx.Response], httpx.Response]:
    """Send requests until one is refused; `attempts` is far more than any 1 s window admits here."""
    admitted: list[httpx.Response] = []
    for _ in range(attempts):
        response = client.get(path)
        if response.status_code != 200:
            return admitted, response
        admitted.append(response)
    raise AssertionError(f"{attempts} requests and none refused")


def test_requests_over_the_per_second_limit_get_429_with_retry_after(make_sandbox: MakeSandbox):
    server = make_sandbox(Limits(requests_per_second=3))
    with client_for(server) as client:
        admitted, refused = first_refusal(client, "/lists")
    assert admitted[0].headers["RateLimit-Limit"] == "3"
    assert admitted[0].headers["RateLimit-Remaining"] == "2"
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit-Limit"] == "3"
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert "message" in refused.json()
    assert server.state.counters()["rate_limited"] == 1
    assert server.state.requests("/api/3/lists")[-1].outcome == "rate_limited"
    # Whatever the timing, the sandbox never admitted more than 3 requests in one second.
    assert server.state.peak_in_window(1.0, "/api/3/lists", outcome="ok") <= 3


def test_sliding_window_admits_limit_per_window_and_frees_slots_as_time_passes():
    window = SlidingWindow(1.0)
    assert [window.try_acquire(10.0 + i * 0.1, 3).allowed for i in range(3)] == [True, True, True]
    refused = window.try_acquire(10.5, 3)
    assert not refused.allowed
    assert refused.retry_after == 1
    assert refused.remaining == 0
    # Refusals are not remembered: the first slot frees one second after the first admitted event.
    assert not window.try_acquire(10.99, 3).allowed
    assert window.try_acquire(11.0, 3).allowed
    assert not window.try_acquire(11.05, 3).allowed
    minute = SlidingWindow(60.0)
    assert minute.try_acquire(0.0, 1).allowed
    assert minute.try_acquire(1.0, 1).retry_after == 59


def test_rate_limit_is_checked_with_the_limits_in_force_now(ac_sandbox, api):
    ac_sandbox.limits.requests_per_second = 1
    _, refused = first_refusal(api, "/lists")
    assert refused.status_code == 429
    assert refused.headers["RateLimit-Limit"] == "1"
    assert ac_sandbox.state.peak_in_window(1.0, "/api/3/lists", outcome="ok") == 1


# -- bulk import limits ---------------------------------------------------------------------------------


def test_bulk_limits_are_separate_for_multi_and_single_contact_requests(make_sandbox: MakeSandbox):
    server = make_sandbox(Limits(requests_per_second=100, bulk_multi_per_minute=2, bulk_single_per_minute=1))
    two = [contact("a@example.com"), contact("b@example.com")]
    with client_for(server) as client:
        multi = [bulk(client, two).status_code for _ in range(3)]
        single = [bulk(client, [contact("c@example.com")]).status_code for _ in range(2)]
        refused = bulk(client, two)
    assert multi == [200, 200, 400]
    assert single == [200, 400]
    assert refused.status_code == 400
    body = refused.json()
    assert body["success"] == 0
    assert body["message"] == "Rate limit exceeded."
    assert isinstance(body["failureReasons"], list)
    assert_conforms(body, response_schema("bulk-import", "/import/bulk_import", "post", "400"))
    assert server.state.counters()["bulk_rate_limited"] == 3
    assert server.state.counters()["batches_queued"] == 3


def test_contact_count_must_be_between_1_and_250(ac_sandbox, api):
    empty = bulk(api, [])
    too_many = bulk(api, [contact(f"p{i}@example.com") for i in range(251)])
    most = bulk(api, [contact(f"p{i}@example.com") for i in range(250)])
    assert (empty.status_code, too_many.status_code, most.status_code) == (400, 400, 200)
    assert empty.json()["success"] == 0
    assert empty.json()["message"]
    assert most.json()["queued_contacts"] == 250
    assert ac_sandbox.state.counters()["batches_queued"] == 1


def test_payload_at_the_byte_limit_is_refused_with_413(make_sandbox: MakeSandbox):
    server = make_sandbox(Limits(requests_per_second=100, max_payload_bytes=2_000))
    padding = "x" * 1_900
    body = json.dumps({"contacts": [contact("big@example.com", first_name=padding)]}).encode()
    body_under = json.dumps({"contacts": [contact("ok@example.com", first_name="x" * 100)]}).encode()
    with client_for(server) as client:
        exact = body + b" " * (2_000 - len(body)) if len(body) < 2_000 else body
        over = client.post("/import/bulk_import", content=exact, headers={"Content-Type": "application/json"})
        under = client.post(
            "/import/bulk_import", content=body_under, headers={"Content-Type": "application/json"}
        )
    assert len(exact) >= 2_000
    assert over.status_code == 413
    assert over.json()["success"] == 0
    assert under.status_code == 200
    assert server.state.counters()["batches_queued"] == 1


def test_one_bad_contact_rejects_the_whole_request_with_indexed_reasons(ac_sandbox, api):
    contacts = [
        contact("good@example.com", subscribe=[{"listid": NEWSLETTER_LIST_ID}]),
        contact("not-an-email"),
        contact("Good@Example.com"),
        contact("field@example.com", fields=[{"id": 9999, "value": "x"}]),
        contact("list@example.com", subscribe=[{"listid": 77}]),
        {"first_name": "No email"},
        contact("fine@example.com"),
    ]
    response = bulk(api, contacts)
    assert response.status_code == 400
    body = response.json()
    assert body["success"] == 0
    reasons = {r["contact"]: r["failureReason"] for r in body["failureReasons"]}
    assert sorted(reasons) == [1, 2, 3, 4, 5]
    assert "duplicate" in reasons[2]
    assert "9999" in reasons[3]
    assert "77" in reasons[4]
    assert_conforms(body, response_schema("bulk-import", "/import/bulk_import", "post", "400"))
    # Nothing queued, nothing applied.
    assert ac_sandbox.state.batches() == []
    assert ac_sandbox.wait_until_idle(WAIT)
    assert ac_sandbox.state.contacts() == []


@pytest.mark.parametrize(
    "email",
    ["plain", "a@b", "a@@example.com", "a b@example.com", "a@example..com", ".a@example.com", "a@-x.com", ""],
)
def test_malformed_emails_are_refused(api, email):
    response = bulk(api, [contact(email)])
    assert response.status_code == 400
    assert response.json()["failureReasons"][0]["contact"] == 0


# -- asynchronous processing -----------------------------------------------------------------------------


def test_batch_waits_until_processed_then_reports_contact_ids(ac_sandbox, api):
    ac_sandbox.pause_processing()
    response = bulk(
        api,
        [
            contact(
                "Ann@Example.com",
                first_name="Ann",
                last_name="Lee",
                phone="+1 555 0100",
                tags=["vip"],
                fields=[
                    {"id": LOYALTY_TIER_FIELD_ID, "value": "gold"},
                    {"id": SCORE_FIELD_ID, "value": "42"},
                ],
                subscribe=[{"listid": NEWSLETTER_LIST_ID}],
            ),
            contact("bob@example.com", subscribe=[{"listid": str(CUSTOMERS_LIST_ID)}]),
        ],
        exclude_automations=True,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["success"] == 1
    assert body["queued_contacts"] == 2
    assert body["message"] == "Contact import queued"
    assert_conforms(body, response_schema("bulk-import", "/import/bulk_import", "post", "200"))
    batch_id = body["batchId"]

    waiting = api.get("/import/info", params={"batchId": batch_id}).json()
    assert waiting == {"status": "waiting", "success": [], "failure": []}
    assert not ac_sandbox.wait_until_idle(0.05)
    assert ac_sandbox.state.list_members(NEWSLETTER_LIST_ID) == {}

    ac_sandbox.resume_processing()
    assert ac_sandbox.wait_until_idle(WAIT)
    info = api.get("/import/info", params={"batchId": batch_id}).json()
    assert_conforms(info, response_schema("bulk-import", "/import/info", "get", "200"))
    ann = ac_sandbox.state.contact("ann@example.com")
    bob = ac_sandbox.state.contact("bob@example.com")
    assert ann is not None
    assert bob is not None
    assert info == {"status": "completed", "success": [str(ann.id), str(bob.id)], "failure": []}
    assert (ann.first_name, ann.last_name, ann.phone, ann.tags) == ("Ann", "Lee", "+1 555 0100", {"vip"})
    assert ann.fields == {LOYALTY_TIER_FIELD_ID: "gold", SCORE_FIELD_ID: "42"}
    assert ac_sandbox.state.list_members(NEWSLETTER_LIST_ID) == {"ann@example.com": 1}
    assert ac_sandbox.state.list_members(CUSTOMERS_LIST_ID) == {"bob@example.com": 1}
    assert ac_sandbox.state.batches()[0].exclude_automations is True


def test_reimport_upserts_by_lower_cased_email(ac_sandbox, api):
    import_and_wait(ac_sandbox, api, [contact("Cy@Example.com", first_name="Cy", tags=["a"])])
    second = [
        contact("cy@example.com", last_name="Ng", tags=["b"], fields=[{"id": SCORE_FIELD_ID, "value": "7"}])
    ]
    import_and_wait(ac_sandbox, api, second)
    contacts = ac_sandbox.state.contacts()
    assert len(contacts) == 1
    cy = contacts[0]
    assert (cy.email, cy.first_name, cy.last_name, cy.tags, cy.fields) == (
        "cy@example.com",
        "Cy",
        "Ng",
        {"a", "b"},
        {SCORE_FIELD_ID: "7"},
    )


def test_info_may_answer_status_false_right_after_the_post(ac_sandbox, api):
    ac_sandbox.limits.info_false_window = 60.0
    response = bulk(api, [contact("d@example.com")])
    batch_id = response.json()["batchId"]
    early = api.get("/import/info", params={"batchId": batch_id}).json()
    assert early["status"] is False
    ac_sandbox.limits.info_false_window = 0.0
    assert ac_sandbox.wait_until_idle(WAIT)
    assert api.get("/import/info", params={"batchId": batch_id}).json()["status"] == "completed"


def test_info_needs_a_known_batch_id(api):
    missing = api.get("/import/info")
    unknown = api.get("/import/info", params={"batchId": "no-such-batch"})
    assert missing.status_code == 400
    assert_conforms(missing.json(), response_schema("bulk-import", "/import/info", "get", "400"))
    assert unknown.status_code == 404
    assert "message" in unknown.json()


def test_processing_delay_holds_batches_then_wait_until_idle_returns(make_sandbox: MakeSandbox):
    server = make_sandbox(Limits(requests_per_second=100, processing_delay=0.2))
    with client_for(server) as client:
        batch_id = bulk(client, [contact("e@example.com")]).json()["batchId"]
        assert server.wait_until_idle(WAIT)
        assert client.get("/import/info", params={"batchId": batch_id}).json()["status"] == "completed"


def test_concurrent_imports_are_all_applied_once(ac_sandbox):
    def send(worker: int) -> list[int]:
        with client_for(ac_sandbox) as client:
            return [
                bulk(
                    client,
                    [contact(f"w{worker}b{b}c{i}@example.com", subscribe=[{"listid": 1}]) for i in range(20)],
                ).status_code
                for b in range(5)
            ]

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = [code for codes in pool.map(send, range(8)) for code in codes]
    assert statuses == [200] * 40
    assert ac_sandbox.wait_for_batches(40, WAIT)
    assert not ac_sandbox.wait_for_batches(41, 0.05)
    assert ac_sandbox.wait_until_idle(WAIT)
    assert len(ac_sandbox.state.list_members(1)) == 800
    assert len({c.id for c in ac_sandbox.state.contacts()}) == 800
    assert ac_sandbox.state.counters()["contacts_applied"] == 800


# -- opt-out protection and exclusions ------------------------------------------------------------------


def test_people_who_unsubscribed_are_never_resubscribed_by_bulk_import(ac_sandbox, api):
    subscribe = [{"listid": NEWSLETTER_LIST_ID}]
    import_and_wait(ac_sandbox, api, [contact("opt@example.com", subscribe=subscribe)])
    ac_sandbox.state.opt_out(NEWSLETTER_LIST_ID, "Opt@Example.com")
    assert ac_sandbox.state.list_members(NEWSLETTER_LIST_ID) == {"opt@example.com": 2}

    info = import_and_wait(ac_sandbox, api, [contact("opt@example.com", subscribe=subscribe, first_name="O")])
    assert info["status"] == "completed"
    assert ac_sandbox.state.list_members(NEWSLETTER_LIST_ID) == {"opt@example.com": 2}
    assert ac_sandbox.state.refused_resubscribes == [(NEWSLETTER_LIST_ID, "opt@example.com")]
    assert ac_sandbox.state.resubscriptions == []
    assert ac_sandbox.state.opted_out(NEWSLETTER_LIST_ID) == {"opt@example.com"}
    # The rest of the contact is still updated.
    found = ac_sandbox.state.contact("opt@example.com")
    assert found is not None
    assert found.first_name == "O"


def test_bulk_unsubscribe_sets_status_2(ac_sandbox, api):
    import_and_wait(ac_sandbox, api, [contact("u@example.com", subscribe=[{"listid": CUSTOMERS_LIST_ID}])])
    import_and_wait(ac_sandbox, api, [contact("u@example.com", unsubscribe=[{"listid": CUSTOMERS_LIST_ID}])])
    assert ac_sandbox.state.list_members(CUSTOMERS_LIST_ID) == {"u@example.com": 2}
    assert ac_sandbox.state.resubscriptions == []


def test_contact_lists_status_1_resubscribes_and_is_recorded(ac_sandbox, api):
    ac_sandbox.state.opt_out(NEWSLETTER_LIST_ID, "back@example.com")
    found = ac_sandbox.state.contact("back@example.com")
    assert found is not None
    link = {"contactList": {"list": NEWSLETTER_LIST_ID, "contact": found.id, "status": 1}}
    assert_conforms(
        {"contactList": {k: str(v) for k, v in link["contactList"].items()}},
        request_schema("contacts", "/contactLists", "post"),
    )
    response = api.post("/contactLists", json=link)
    assert response.status_code == 200
    assert_conforms(response.json(), response_schema("contacts", "/contactLists", "post", "200"))
    assert ac_sandbox.state.list_members(NEWSLETTER_LIST_ID) == {"back@example.com": 1}
    assert ac_sandbox.state.resubscriptions == [(NEWSLETTER_LIST_ID, "back@example.com")]
    bad = api.post("/contactLists", json={"contactList": {"list": 99, "contact": found.id, "status": 1}})
    assert bad.status_code == 422
    assert bad.json()["errors"]


def test_excluded_contacts_are_skipped_and_reported_as_failures(ac_sandbox, api):
    ac_sandbox.state.set_exclusions(["Blocked@Example.com"])
    info = import_and_wait(
        ac_sandbox,
        api,
        [
            contact("blocked@example.com", subscribe=[{"listid": 1}]),
            contact("ok@example.com", subscribe=[{"listid": 1}]),
        ],
    )
    ok = ac_sandbox.state.contact("ok@example.com")
    assert ok is not None
    assert info == {"status": "completed", "success": [str(ok.id)], "failure": ["blocked@example.com"]}
    assert ac_sandbox.state.contact("blocked@example.com") is None
    assert ac_sandbox.state.list_members(1) == {"ok@example.com": 1}


# -- faults ----------------------------------------------------------------------------------------------


def test_status_fault_storm_matches_path_prefix_and_count(ac_sandbox, api):
    ac_sandbox.inject(Fault.http_status(503, path="/api/3/lists", count=2, retry_after=2))
    assert api.get("/fields").status_code == 200  # other paths are untouched
    first, second, third = (api.get("/lists") for _ in range(3))
    assert (first.status_code, second.status_code, third.status_code) == (503, 503, 200)
    assert first.headers["Retry-After"] == "2"
    ac_sandbox.inject(Fault(kind="status", status=429, path="/api/3/import/", body={"message": "slow down"}))
    storm = bulk(api, [contact("f@example.com")])
    assert storm.status_code == 429
    assert storm.json() == {"message": "slow down"}
    assert "Retry-After" not in storm.headers
    assert ac_sandbox.state.counters()["faults"] == 3
    assert ac_sandbox.state.counters()["rate_limited"] == 0  # injected 429s are not the limiter's
    assert ac_sandbox.state.batches() == []


def test_dropped_connection_gives_no_answer(ac_sandbox, api):
    ac_sandbox.inject(Fault.drop_connection(path="/api/3/users/me"))
    with pytest.raises(httpx.RemoteProtocolError):
        api.get("/users/me")
    assert api.get("/users/me").status_code == 200
    assert [r.status for r in ac_sandbox.state.requests("/api/3/users/me")] == [0, 200]


def test_delayed_answer_trips_the_client_timeout(ac_sandbox):
    ac_sandbox.inject(Fault.slow(30.0, path="/api/3/lists"))
    with client_for(ac_sandbox, timeout=0.3) as client, pytest.raises(httpx.ReadTimeout):
        client.get("/lists")


def test_login_page_fault_is_a_200_html_answer(ac_sandbox, api):
    ac_sandbox.inject(Fault.login_page())
    response = api.get("/users/me")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_batch_faults_end_the_next_batches_failed_or_interrupted(ac_sandbox, api):
    ac_sandbox.inject(Fault.batch_failed())
    ac_sandbox.inject(Fault.batch_interrupted(applied=1))
    people = [contact(f"g{i}@example.com", subscribe=[{"listid": 1}]) for i in range(3)]
    failed = import_and_wait(ac_sandbox, api, people)
    interrupted = import_and_wait(ac_sandbox, api, people)
    normal = import_and_wait(ac_sandbox, api, people)
    assert failed == {"status": "failed", "success": [], "failure": []}
    assert interrupted["status"] == "interrupted"
    assert len(interrupted["success"]) == 1
    assert normal["status"] == "completed"
    assert len(normal["success"]) == 3


# -- other endpoints and shapes ---------------------------------------------------------------------------


def test_fields_page_at_most_100_and_report_the_total(ac_sandbox, api):
    schema = response_schema("fields", "/fields", "get", "200")
    default = api.get("/fields").json()
    first = api.get("/fields", params={"limit": 100}).json()
    second = api.get("/fields", params={"limit": 100, "offset": 100}).json()
    capped = api.get("/fields", params={"limit": 500}).json()
    for page in (default, first, second, capped):
        assert_conforms(page, schema)
    assert len(default["fields"]) == 20
    assert (len(first["fields"]), len(second["fields"]), len(capped["fields"])) == (100, 9, 100)
    assert first["meta"]["total"] == "109"
    tier = first["fields"][0]
    assert (tier["id"], tier["perstag"], tier["type"]) == ("1", "LOYALTY_TIER", "dropdown")
    assert {"id": str(CITY_FIELD_ID), "perstag": "CITY"}.items() <= second["fields"][4].items()
    assert "CITY" not in {f["perstag"] for f in first["fields"]}


def test_lists_and_a_missing_list(api):
    all_lists = api.get("/lists").json()
    assert_conforms(all_lists, response_schema("lists", "/lists", "get", "200"))
    assert [(x["id"], x["name"]) for x in all_lists["lists"]] == [("1", "Newsletter"), ("2", "Customers")]
    one = api.get("/lists/2")
    assert one.status_code == 200
    assert_conforms(one.json(), response_schema("lists", "/lists/{id}", "get", "200"))
    missing = api.get("/lists/7")
    assert missing.status_code == 404
    assert missing.json() == {"message": "No Result found for _List with id 7"}
    assert_conforms(missing.json(), response_schema("lists", "/lists/{id}", "get", "404"))


def test_contacts_filters_and_id_ordered_paging(ac_sandbox, api):
    people = [contact(f"h{i:02d}@example.com", subscribe=[{"listid": 1}]) for i in range(25)]
    import_and_wait(ac_sandbox, api, people)
    ac_sandbox.state.opt_out(1, "h03@example.com")
    ids = [c.id for c in ac_sandbox.state.contacts()]

    page = api.get("/contacts", params={"listid": 1, "status": 1, "limit": 10, "orders[id]": "ASC"}).json()
    # The generated description's oneOf branches overlap; a valid answer matches one of them.
    branches = response_schema("contacts", "/contacts", "get", "200")["oneOf"]
    assert any(OAS30Validator(b).is_valid(page) for b in branches)
    assert page["meta"]["total"] == "24"
    assert [c["id"] for c in page["contacts"]] == [str(i) for i in ids[:3] + ids[4:11]]
    after = api.get("/contacts", params={"listid": 1, "id_greater": ids[20], "orders[id]": "ASC"}).json()
    assert [c["id"] for c in after["contacts"]] == [str(i) for i in ids[21:]]
    unsubscribed = api.get("/contacts", params={"listid": 1, "status": 2}).json()
    assert [c["email"] for c in unsubscribed["contacts"]] == ["h03@example.com"]
    by_email = api.get("/contacts", params={"email": "H07@example.com"}).json()
    assert [c["email"] for c in by_email["contacts"]] == ["h07@example.com"]
    capped = api.get("/contacts", params={"limit": 1000}).json()
    assert len(capped["contacts"]) == 25


def test_contact_sync_creates_then_updates(ac_sandbox, api):
    payload = {
        "contact": {
            "email": "Sync@Example.com",
            "firstName": "S",
            "fieldValues": [{"field": "2", "value": "9"}],
        }
    }
    assert_conforms(payload, request_schema("contacts", "/contact/sync", "post"))
    created = api.post("/contact/sync", json=payload)
    updated = api.post("/contact/sync", json={"contact": {"email": "sync@example.com", "lastName": "T"}})
    assert (created.status_code, updated.status_code) == (201, 200)
    assert_conforms(created.json(), response_schema("contacts", "/contact/sync", "post", "201"))
    found = ac_sandbox.state.contact("sync@example.com")
    assert found is not None
    assert (found.first_name, found.last_name, found.fields) == ("S", "T", {SCORE_FIELD_ID: "9"})
    invalid = api.post("/contact/sync", json={"contact": {"email": "nope"}})
    assert invalid.status_code == 422
    assert invalid.json()["errors"]


def test_users_me_unknown_routes_and_no_redirects(api):
    assert "user" in api.get("/users/me").json()
    for path in ("/nowhere", "/lists/", "/contacts/1/nothing"):
        response = api.get(path)
        assert response.status_code == 404, path
        assert "message" in response.json()
    assert api.delete("/lists/1").status_code == 404


def test_documented_bulk_import_shapes_are_accepted(make_sandbox: MakeSandbox):
    operation = _spec("bulk-import")["paths"]["/import/bulk_import"]["post"]
    example = operation["requestBody"]["content"]["application/json"]["examples"]["Request Example"]["value"]
    # The published example sends integer list ids where its schema says string: accept both forms.
    conforming = json.loads(json.dumps(example))
    for key in ("subscribe", "unsubscribe"):
        conforming["contacts"][0][key] = [{"listid": str(x["listid"])} for x in example["contacts"][0][key]]
    conforming["contacts"][0]["email"] = "other@somewhere.com"
    assert_conforms(conforming, request_schema("bulk-import", "/import/bulk_import", "post"))
    server = make_sandbox(
        lists={1: "One", 2: "Two", 3: "Three"}, fields=[FieldSpec(1, "A"), FieldSpec(2, "B")]
    )
    with client_for(server) as client:
        for body in (example, conforming):
            response = client.post("/import/bulk_import", json=body)
            assert response.status_code == 200, response.text
        assert server.wait_until_idle(WAIT)
    for email in ("someone@somewhere.com", "other@somewhere.com"):
        person = server.state.contact(email)
        assert person is not None
        assert person.fields == {1: "foo", 2: "||foo||bar||baz||"}
        assert server.state.memberships_of(email) == {1: 1, 2: 1, 3: 2}
    assert server.state.batches()[0].callback == example["callback"]


# -- request log ------------------------------------------------------------------------------------------


def test_request_log_records_each_answer_with_timestamps(ac_sandbox, api):
    api.get("/lists/1")
    api.get("/lists/9")
    bulk(api, [contact("log@example.com"), contact("log2@example.com")])
    records = ac_sandbox.state.requests("/api/3/")
    assert [(r.method, r.path, r.status) for r in records] == [
        ("GET", "/api/3/lists/1", 200),
        ("GET", "/api/3/lists/9", 404),
        ("POST", "/api/3/import/bulk_import", 200),
    ]
    assert records[0].at <= records[1].at <= records[2].at
    assert records[2].contacts == 2
    assert records[2].body_bytes > 0
    assert isinstance(records[2].response, dict)
    assert records[2].response["success"] == 1
    assert ac_sandbox.state.peak_in_window(60.0, "/api/3/import/bulk_import") == 1


# -- admin routes and CLI ---------------------------------------------------------------------------------


def test_admin_routes_expose_members_stats_and_opt_out_without_a_key(ac_sandbox, api):
    import_and_wait(ac_sandbox, api, [contact("adm@example.com", subscribe=[{"listid": 1}])])
    root = ac_sandbox.root_url
    opted = httpx.post(f"{root}/__sandbox/opt-out", json={"list": 1, "email": "adm@example.com"})
    assert opted.status_code == 200
    members = httpx.get(f"{root}/__sandbox/lists/1/members").json()
    assert members == {"list": 1, "members": {"adm@example.com": 2}}
    stats = httpx.get(f"{root}/__sandbox/stats").json()
    assert stats["batches_queued"] == 1
    assert stats["contacts_applied"] == 1
    assert stats["rate_limited"] == 0
    assert httpx.get(f"{root}/__sandbox/idle", params={"timeout": 1}).json() == {"idle": True}
    listed = httpx.get(f"{root}/__sandbox/contacts").json()["contacts"]
    assert [c["email"] for c in listed] == ["adm@example.com"]
    assert httpx.get(f"{root}/__sandbox/lists/42/members").status_code == 404
    # Admin calls are not API traffic: they do not appear in the request log.
    assert not ac_sandbox.state.requests("/__sandbox/")


@pytest.mark.parametrize(
    ("address", "allowed"), [("127.0.0.1", True), ("::1", True), ("10.0.0.5", False), ("example.com", False)]
)
def test_admin_routes_are_for_loopback_clients_only(address, allowed):
    assert is_loopback(address) is allowed


@pytest.mark.integration  # runs the app as a subprocess
def test_cli_prints_ready_serves_and_exits_0_on_sigterm():
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "--port",
            "0",
            "--api-key",
            "cli-key",
            "--list",
            "3:Leads",
            "--field",
            "TIER",
            "--scale",
            "10",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("READY 127.0.0.1:"), line
        hostname = line.split()[1]
        lists = httpx.get(f"http://{hostname}/api/3/lists", headers={"Api-Token": "cli-key"})
        assert [(x["id"], x["name"]) for x in lists.json()["lists"]] == [("3", "Leads")]
        assert lists.headers["RateLimit-Limit"] == "50"
        fields = httpx.get(f"http://{hostname}/api/3/fields", headers={"Api-Token": "cli-key"}).json()
        assert [f["perstag"] for f in fields["fields"]] == ["TIER"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
