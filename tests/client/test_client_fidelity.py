"""The client against ActiveCampaign's reference: field types and options kept, exclude_automations at
both levels, sourceid 4 on re-subscribes, permission 403s told apart from wrong keys; and the sandbox
following each of them over real HTTP."""

from __future__ import annotations

import json

import httpx
import pytest

from sandbox import FieldSpec, SandboxServer
from shared.activecampaign import (
    ActiveCampaignClient,
    InvalidApiKey,
    PermissionDenied,
    bulk_import_body,
)
from shared.mapping import Contact, contact_payload
from shared.settings import DEFAULT_ALLOWED_HOST_SUFFIXES
from tests.client.test_activecampaign import HOST, KEY, free_pacer, sandbox_client
from tests.fixtures.sandbox import (
    BIRTHDAY_FIELD_ID,
    INTERESTS_FIELD_ID,
    LOYALTY_TIER_FIELD_ID,
    NEWSLETTER_LIST_ID,
    SANDBOX_API_KEY,
)


def mock_client(handler: httpx.MockTransport) -> ActiveCampaignClient:
    return ActiveCampaignClient(
        HOST,
        KEY,
        pacer=free_pacer(),
        transport=handler,
        max_attempts=1,
        allowed_suffixes=DEFAULT_ALLOWED_HOST_SUFFIXES,
        allow_loopback=False,
    )


def contact(n: int) -> dict[str, object]:
    return {"email": f"p{n}@example.com", "subscribe": [{"listid": 1}]}


def test_exclude_automations_true_is_sent_at_both_levels_false_at_neither_in_contacts() -> None:
    on = json.loads(bulk_import_body([contact(1), contact(2)], exclude_automations=True))
    off = json.loads(bulk_import_body([contact(1)], exclude_automations=False))

    assert on["exclude_automations"] is True
    assert [c["exclude_automations"] for c in on["contacts"]] == [True, True]
    assert off["exclude_automations"] is False
    assert "exclude_automations" not in off["contacts"][0]


def test_pipeline_payloads_carry_the_contact_level_flag_so_batch_sizes_include_it() -> None:
    payload = contact_payload(Contact("a@x.org"), list_id=3, exclude_automations=True)
    assert payload == {"email": "a@x.org", "subscribe": [{"listid": "3"}], "exclude_automations": True}
    assert "exclude_automations" not in contact_payload(Contact("a@x.org"), list_id=3)


def test_resubscribe_sends_sourceid_4() -> None:
    sent: list[object] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json={"contactList": {}})

    with mock_client(httpx.MockTransport(answer)) as client:
        client.subscribe(3, 7)

    assert sent == [{"contactList": {"list": 3, "contact": 7, "status": 1, "sourceid": 4}}]


@pytest.mark.parametrize(
    "body",
    [
        {"message": "Forbidden", "detail": "You do not have permission to view lists."},
        {"message": "You do not have permission to view lists."},
        {"errors": [{"title": "You do not have permission to view lists."}]},
    ],
)
def test_permission_403_is_permission_denied_in_activecampaigns_words(body: dict[str, object]) -> None:
    with (
        mock_client(httpx.MockTransport(lambda r: httpx.Response(403, json=body))) as client,
        pytest.raises(PermissionDenied) as raised,
    ):
        client.get_list(1)

    assert not isinstance(raised.value, InvalidApiKey)
    assert str(raised.value).startswith(
        f"ActiveCampaign at {HOST} refused GET /lists/1 (HTTP 403): 'You do not have permission to view lists.'"
    )
    assert "lacks this permission" in str(raised.value)
    assert raised.value.code == "PermissionDenied"


def test_a_plain_403_is_still_a_wrong_key() -> None:
    answer = httpx.MockTransport(lambda r: httpx.Response(403, json={"message": "Forbidden"}))
    with mock_client(answer) as client, pytest.raises(InvalidApiKey, match="refused the API key"):
        client.get_list(1)


def test_list_fields_keeps_type_and_options_in_order() -> None:
    body = {
        "fieldOptions": [
            {"field": "2", "value": "B", "orderid": 2, "id": "11"},
            {"field": "2", "value": "A", "orderid": 1, "id": "10"},
            {"field": "9", "value": "elsewhere", "orderid": 1, "id": "12"},
            {"field": "2", "orderid": 3},  # no value: skipped
        ],
        "fields": [
            {"id": "1", "perstag": "NOTE", "title": "Note", "type": "textarea"},
            {"id": "2", "perstag": "TIER", "title": "Tier", "type": "Dropdown", "options": ["10", "11"]},
        ],
        "meta": {"total": "2"},
    }
    with mock_client(httpx.MockTransport(lambda r: httpx.Response(200, json=body))) as client:
        fields = client.list_fields()
    assert [(f.id, f.perstag, f.title, f.type, f.options) for f in fields] == [
        (1, "NOTE", "Note", "textarea", ()),
        (2, "TIER", "Tier", "dropdown", ("A", "B")),
    ]


# --------------------------------------------------------------------------------------------- sandbox


def test_sandbox_serves_field_types_and_options(ac_sandbox: SandboxServer) -> None:
    with sandbox_client(ac_sandbox) as client:
        fields = {f.id: f for f in client.list_fields()}
    assert (fields[LOYALTY_TIER_FIELD_ID].type, fields[LOYALTY_TIER_FIELD_ID].options) == (
        "dropdown",
        ("gold", "silver", "platinum"),
    )
    assert fields[BIRTHDAY_FIELD_ID].type == "date"
    assert fields[INTERESTS_FIELD_ID].options == ("Books", "Music", "Travel")


@pytest.mark.parametrize(
    ("field_id", "value", "reason"),
    [
        (BIRTHDAY_FIELD_ID, "6/15/1990", "Field 'BIRTHDAY' (date) must be a date as YYYY-MM-DD"),
        (LOYALTY_TIER_FIELD_ID, "Gold", "Field 'LOYALTY_TIER' (dropdown) must be one of its options"),
        (
            INTERESTS_FIELD_ID,
            "Books;Music",
            "Field 'INTERESTS' (checkbox) takes several values as ||option 1||option 2||",
        ),
    ],
)
def test_sandbox_refuses_values_not_in_their_types_documented_form(
    ac_sandbox: SandboxServer, field_id: int, value: str, reason: str
) -> None:
    bad = {**contact(1), "fields": [{"id": field_id, "value": value}]}
    response = httpx.post(
        f"{ac_sandbox.base_url}/import/bulk_import",
        headers={"Api-Token": SANDBOX_API_KEY},
        content=json.dumps({"contacts": [contact(2), bad]}),
    )
    assert response.status_code == 400
    assert response.json()["failureReasons"] == [{"contact": 1, "failureReason": reason}]


@pytest.mark.parametrize(
    ("top", "each", "excluded"), [(True, False, True), (False, True, True), (False, False, False)]
)
def test_sandbox_takes_exclude_automations_at_either_level(
    ac_sandbox: SandboxServer, top: bool, each: bool, excluded: bool
) -> None:
    contacts = [{**contact(n), "exclude_automations": each} for n in (1, 2)]
    response = httpx.post(
        f"{ac_sandbox.base_url}/import/bulk_import",
        headers={"Api-Token": SANDBOX_API_KEY},
        content=json.dumps({"contacts": contacts, "exclude_automations": top}),
    )
    assert response.status_code == 200
    (batch,) = ac_sandbox.state.batches()
    assert batch.exclude_automations is excluded
    assert [c.exclude_automations for c in batch.contacts] == [excluded, excluded]


def test_sandbox_permission_403_reaches_the_client_as_permission_denied(ac_sandbox: SandboxServer) -> None:
    ac_sandbox.state.deny("/api/3/lists", "view lists")
    try:
        with sandbox_client(ac_sandbox) as client:
            assert client.check_connection()  # the key itself is fine
            with pytest.raises(PermissionDenied, match=r"'You do not have permission to view lists\.'"):
                client.get_list(NEWSLETTER_LIST_ID)
    finally:
        ac_sandbox.state.allow_all()


def test_sandbox_records_the_sourceid_of_a_resubscribe(ac_sandbox: SandboxServer) -> None:
    with sandbox_client(ac_sandbox) as client:
        client.bulk_import([contact(1)])
        assert ac_sandbox.wait_until_idle(10)
        contact_id = client.find_contact_id("p1@example.com")
        assert contact_id is not None
        ac_sandbox.state.set_membership(NEWSLETTER_LIST_ID, contact_id, 2)  # unsubscribed
        client.subscribe(NEWSLETTER_LIST_ID, contact_id)
    assert ac_sandbox.state.resubscribe_sources == [(NEWSLETTER_LIST_ID, "p1@example.com", 4)]


def test_sandbox_command_line_declares_typed_fields() -> None:
    from sandbox.__main__ import _field_arg

    assert _field_arg("8:TIER:dropdown:gold,silver") == FieldSpec(
        8, "TIER", "", "dropdown", ("gold", "silver")
    )
    assert _field_arg("7:SCORE") == FieldSpec(7, "SCORE")
