"""The sandbox's contact tags, field options without the sideload and account time zone (issue 21),
in the shapes of ActiveCampaign's reference, and the client's calls for them."""

from __future__ import annotations

import httpx
import pytest

from sandbox import SandboxServer
from shared.activecampaign import CustomField
from tests.client.test_activecampaign import sandbox_client
from tests.client.test_sandbox import assert_conforms, request_schema, response_schema
from tests.fixtures.sandbox import INTERESTS_FIELD_ID, LOYALTY_TIER_FIELD_ID, LOYALTY_TIERS, MakeSandbox


def http(server: SandboxServer) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"Api-Token": server.api_key})


def test_contact_tags_are_added_listed_and_removed_as_documented(ac_sandbox: SandboxServer) -> None:
    state = ac_sandbox.state
    state.tag_contact("ann@example.com", "customer")
    state.tag_contact("ann@example.com", "vip")
    contact = state.contact("ann@example.com")
    assert contact is not None
    vip = next(i for i, name in state.tags() if name == "vip")
    with http(ac_sandbox) as api:
        listed = api.get(f"/contacts/{contact.id}/contactTags")
        assert listed.status_code == 200
        links = listed.json()["contactTags"]
        assert [(link["contact"], link["tag"]) for link in links] == [
            (str(contact.id), "1"),
            (str(contact.id), str(vip)),
        ]
        for link in links:
            assert_conforms({"contactTag": link}, response_schema("contacts", "/contactTags", "post", "201"))

        body = {"contactTag": {"contact": contact.id, "tag": vip}}  # integers, as the schema types them
        assert_conforms(body, request_schema("contacts", "/contactTags", "post"))
        again = api.post("/contactTags", json=body)
        assert again.status_code == 201
        assert again.json()["contactTag"]["id"] == links[1]["id"]  # the tag it already has

        gone = api.delete(f"/contactTags/{links[1]['id']}")
        assert (gone.status_code, gone.json()) == (200, {})
        assert_conforms(gone.json(), response_schema("contacts", "/contactTags/{id}", "delete", "200"))
        missing = api.delete(f"/contactTags/{links[1]['id']}")
        assert missing.status_code == 404
        assert missing.json() == {"message": f"No Result found for SubscriberTag with id {links[1]['id']}"}
        assert_conforms(missing.json(), response_schema("contacts", "/contactTags/{id}", "delete", "404"))

        unknown = api.post("/contactTags", json={"contactTag": {"contact": "999", "tag": str(vip)}})
        assert unknown.status_code == 404
        assert_conforms(unknown.json(), response_schema("contacts", "/contactTags", "post", "404"))
        incomplete = api.post("/contactTags", json={"contactTag": {"contact": str(contact.id)}})
        assert incomplete.status_code == 422
        assert_conforms(incomplete.json(), response_schema("contacts", "/contactTags", "post", "422"))
    assert state.contact("ann@example.com").tags == {"customer"}  # type: ignore[union-attr]


def test_the_client_reads_and_removes_contact_tags(ac_sandbox: SandboxServer) -> None:
    ac_sandbox.state.tag_contact("bob@example.com", "segment-vip")
    ac_sandbox.state.tag_contact("bob@example.com", "segment-vipers")
    contact = ac_sandbox.state.contact("bob@example.com")
    assert contact is not None
    with sandbox_client(ac_sandbox) as client:
        ids = client.tag_ids(["segment-vip", "SEGMENT-VIPERS", "absent"])
        assert ids == {
            "segment-vip": 1,
            "SEGMENT-VIPERS": 2,
        }  # exact name, else ignoring case; absent left out
        links = client.contact_tags(contact.id)
        assert [tag for _link, tag in links] == [1, 2]
        assert client.remove_contact_tag(links[0][0]) is True
        assert client.remove_contact_tag(links[0][0]) is False  # already gone: 404
        assert client.request_counts()["DELETE /contactTags/{id}"] == 2
    assert ac_sandbox.state.contact("bob@example.com").tags == {"segment-vipers"}  # type: ignore[union-attr]


def test_without_the_sideload_options_come_from_each_field(make_sandbox: MakeSandbox) -> None:
    server = make_sandbox(field_options_sideload=False)
    with http(server) as api:
        fields = api.get("/fields", params={"limit": 100}).json()
        assert "fieldOptions" not in fields
        tier = next(f for f in fields["fields"] if f["id"] == str(LOYALTY_TIER_FIELD_ID))
        assert tier["links"]["options"] == f"{server.base_url}/fields/{LOYALTY_TIER_FIELD_ID}/options"
        options = api.get(f"/fields/{LOYALTY_TIER_FIELD_ID}/options").json()["fieldOptions"]
        assert [o["value"] for o in sorted(options, key=lambda o: o["orderid"])] == list(LOYALTY_TIERS)
        assert api.get("/fields/9999/options").status_code == 404
    with sandbox_client(server) as client:
        listed = client.list_fields()
        assert all(f.options == () for f in listed)
        filled = client.with_options(listed, [LOYALTY_TIER_FIELD_ID, 2])  # 2: a text field, nothing to read
        by_id = {f.id: f for f in filled}
        assert by_id[LOYALTY_TIER_FIELD_ID].options == LOYALTY_TIERS
        assert by_id[INTERESTS_FIELD_ID].options == ()  # not mapped: not read
        assert client.request_counts().get("GET /fields/{id}/options") == 1


def test_with_the_sideload_nothing_more_is_read(ac_sandbox: SandboxServer) -> None:
    with sandbox_client(ac_sandbox) as client:
        listed = client.list_fields()
        assert client.with_options(listed, [LOYALTY_TIER_FIELD_ID]) == listed
        assert "GET /fields/{id}/options" not in client.request_counts()
    assert isinstance(listed[0], CustomField)


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("2024-07-01T12:00:00", "2024-07-01T12:00:00+02:00"),  # no offset: the account's local time
        ("2024-07-01T12:00:00Z", "2024-07-01T14:00:00+02:00"),
        ("2024-01-01T12:00:00-05:00", "2024-01-01T18:00:00+01:00"),
    ],
)
def test_the_account_time_zone_stores_date_times_as_its_local_time(
    make_sandbox: MakeSandbox, sent: str, stored: str
) -> None:
    from tests.fixtures.sandbox import LAST_SEEN_FIELD_ID

    server = make_sandbox(time_zone="Europe/Madrid")
    with http(server) as api:
        body = {
            "contacts": [{"email": "a@example.com", "fields": [{"id": LAST_SEEN_FIELD_ID, "value": sent}]}]
        }
        assert api.post("/import/bulk_import", json=body).status_code == 200
    assert server.wait_until_idle(10)
    assert server.state.contact("a@example.com").fields[LAST_SEEN_FIELD_ID] == stored  # type: ignore[union-attr]
