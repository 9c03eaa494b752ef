"""HTTP API: connections. Real ActiveCampaign sandbox for the key check, Key Vault stand-in for storage."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from functions import services
from shared.secrets import KeyVaultSecrets
from tests.fixtures.sandbox import SANDBOX_API_KEY
from tests.support.app import call

pytestmark = pytest.mark.usefixtures("app_env")


def connection_body(hostname: str, **extra: Any) -> dict[str, Any]:
    return {"displayName": "Sandbox", "hostname": hostname, "dataPrivacyConsent": True, **extra}


def put(name: str, body: Any, headers: dict[str, str] | None = None, **kw: Any):
    return call(
        "connection_item",
        "PUT",
        f"connections/{name}",
        route={"name": name},
        body=body,
        headers=headers,
        **kw,
    )


def get(name: str):
    return call("connection_item", "GET", f"connections/{name}", route={"name": name})


def delete(name: str, headers: dict[str, str] | None = None, body: dict[str, bool] | None = None):
    return call(
        "connection_item",
        "DELETE",
        f"connections/{name}",
        route={"name": name},
        headers=headers,
        body=body,
    )


def stored_key(secret: str, host: str) -> str:
    return services.get_services().secrets.get(secret, host=host)


def test_put_checks_the_key_stores_it_and_never_returns_it(ac_sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    resp = put("main", connection_body(ac_sandbox.hostname, apiKey=SANDBOX_API_KEY))
    assert resp.status == 201, resp.body
    assert resp.body["apiKeySecret"] == "activecampaign-main"
    assert resp.headers["ETag"] == resp.body["etag"]
    assert stored_key("activecampaign-main", ac_sandbox.hostname) == SANDBOX_API_KEY
    again = get("main")
    assert again.status == 200
    assert again.body == resp.body
    listed = call("connections_list", "GET", "connections")
    assert listed.body == {"connections": [resp.body]}
    for response in (resp, again, listed):
        assert SANDBOX_API_KEY not in str(response.body)
        assert SANDBOX_API_KEY not in str(response.headers)
    assert all(SANDBOX_API_KEY not in r.getMessage() for r in caplog.records)


def test_put_without_api_key_keeps_the_stored_key_and_rechecks_it(ac_sandbox):
    assert put("main", connection_body(ac_sandbox.hostname, apiKey=SANDBOX_API_KEY)).status == 201
    resp = put("main", connection_body(ac_sandbox.hostname, displayName="Renamed", allowContributors=True))
    assert resp.status == 200, resp.body
    assert resp.body["displayName"] == "Renamed"
    assert resp.body["allowContributors"] is True
    assert stored_key("activecampaign-main", ac_sandbox.hostname) == SANDBOX_API_KEY
    # The stored key is checked again: once ActiveCampaign stops accepting it, the save is refused.
    ac_sandbox.set_api_key("rotated-elsewhere-key")
    refused = put("main", connection_body(ac_sandbox.hostname))
    assert refused.status == 400
    assert refused.body["error"]["code"] == "InvalidApiKey"


def test_put_with_a_wrong_key_is_refused_and_nothing_is_saved(ac_sandbox):
    resp = put("main", connection_body(ac_sandbox.hostname, apiKey="wrong-key-123456"))
    assert resp.status == 400
    assert resp.body["error"]["code"] == "InvalidApiKey"
    assert "Settings > Developer" in resp.body["error"]["message"]
    assert "wrong-key-123456" not in str(resp.body)
    assert get("main").status == 404


def test_first_put_without_a_key_says_to_send_one(ac_sandbox):
    resp = put("main", connection_body(ac_sandbox.hostname))
    assert resp.status == 400
    assert resp.body["error"]["code"] == "ApiKeyRequired"
    assert "apiKey" in resp.body["error"]["message"]


@pytest.mark.parametrize(
    ("body", "code", "fragment"),
    [
        ({"dataPrivacyConsent": False}, "ConsentRequired", "dataPrivacyConsent: true"),
        ({"dataPrivacyConsent": None}, "ConsentRequired", "dataPrivacyConsent"),
        ({"displayName": 5}, "ValidationFailed", "displayName"),
        ({"colour": "red"}, "ValidationFailed", "colour: unknown field"),
        ({"hostname": "https://acme.api-us1.com"}, "ValidationFailed", "no https://"),
        ({"hostname": "acme.example.com"}, "ValidationFailed", "ACTIVECAMPAIGN_ALLOWED_HOST_SUFFIXES"),
        ({"apiKey": ""}, "ValidationFailed", "apiKey"),
        ({"apiKey": 12345}, "ValidationFailed", "apiKey"),
    ],
)
def test_put_validation_errors_say_what_to_fix(ac_sandbox, body, code, fragment):
    full = connection_body(ac_sandbox.hostname, apiKey=SANDBOX_API_KEY)
    full.update(body)
    if body.get("dataPrivacyConsent", True) is None:
        del full["dataPrivacyConsent"]
    resp = put("main", full)
    assert resp.status == 400, resp.body
    assert resp.body["error"]["code"] == code
    assert fragment in resp.body["error"]["message"]


@pytest.mark.parametrize(
    ("raw", "code"),
    [(b"{not json", "InvalidJson"), (b"[1, 2]", "InvalidJson"), (b"", "BodyRequired")],
)
def test_put_with_a_body_that_is_not_a_json_object_is_400(raw, code):
    resp = call("connection_item", "PUT", "connections/main", route={"name": "main"}, raw=raw)
    assert resp.status == 400
    assert resp.body["error"]["code"] == code


def test_invalid_name_in_the_url_is_400(ac_sandbox):
    resp = put("Bad_Name", connection_body(ac_sandbox.hostname, apiKey=SANDBOX_API_KEY))
    assert resp.status == 400
    assert "name" in resp.body["error"]["message"]


def test_unknown_connection_is_404():
    for resp in (get("nope"), delete("nope")):
        assert resp.status == 404
        assert resp.body["error"]["code"] == "NotFound"


def test_stale_if_match_is_412_and_the_current_etag_succeeds(ac_sandbox):
    first = put("main", connection_body(ac_sandbox.hostname, apiKey=SANDBOX_API_KEY))
    old_etag = first.headers["ETag"]
    second = put(
        "main", connection_body(ac_sandbox.hostname, displayName="B"), headers={"If-Match": old_etag}
    )
    assert second.status == 200
    assert second.headers["ETag"] != old_etag
    stale = put("main", connection_body(ac_sandbox.hostname, displayName="C"), headers={"If-Match": old_etag})
    assert stale.status == 412
    assert "GET it again" in stale.body["error"]["message"]
    assert get("main").body["displayName"] == "B"
    assert delete("main", headers={"If-Match": old_etag}).status == 412
    assert delete("main", headers={"If-Match": second.headers["ETag"]}).status == 204
    create_only = put("main", connection_body(ac_sandbox.hostname), headers={"If-None-Match": "*"})
    assert create_only.status == 400  # it is gone, and so is its key


def test_delete_removes_the_key_and_refuses_while_exports_use_it_unless_cascade(ac_sandbox):
    assert put("main", connection_body(ac_sandbox.hostname, apiKey=SANDBOX_API_KEY)).status == 201
    export = {
        "connection": "main",
        "source": {"container": "segments", "segment": "vip"},
        "listId": 1,
        "mapping": {"email": "Email"},
    }
    assert call("export_item", "PUT", "exports/vip", route={"name": "vip"}, body=export).status == 201
    in_use = delete("main")
    assert in_use.status == 409
    assert "vip" in in_use.body["error"]["message"]
    assert delete("main", body={"cascade": True}).status == 204
    assert get("main").status == 404
    assert call("export_item", "GET", "exports/vip", route={"name": "vip"}).status == 404
    from shared.secrets import SecretNotFound

    with pytest.raises(SecretNotFound):
        stored_key("activecampaign-main", ac_sandbox.hostname)


def test_key_goes_to_key_vault_under_the_named_secret(ac_sandbox, keyvault):
    services.set_secrets_factory(
        lambda settings: KeyVaultSecrets(
            keyvault.vault_url, keyvault.credential, cache_seconds=300, **keyvault.client_kwargs
        )
    )
    resp = put(
        "main",
        connection_body(ac_sandbox.hostname, apiKey=SANDBOX_API_KEY, apiKeySecret="activecampaign-main-key"),
    )
    assert resp.status == 201, resp.body
    assert keyvault.secrets["activecampaign-main-key"] == SANDBOX_API_KEY
    assert delete("main").status == 204
    assert "activecampaign-main-key" not in keyvault.secrets


# --- issue 12: what a connection change may do with the stored key ------------------------------


def test_moving_a_connection_to_another_host_needs_the_key_in_the_same_request(ac_sandbox, make_sandbox):
    other = make_sandbox()
    assert put("main", connection_body(ac_sandbox.hostname, apiKey=SANDBOX_API_KEY)).status == 201
    moved = put("main", connection_body(other.hostname))
    assert moved.status == 400, moved.body
    assert moved.body["error"]["code"] == "ApiKeyRequired"
    assert other.hostname in moved.body["error"]["message"]
    assert other.state.requests() == []  # the stored key never went to the new host
    assert get("main").body["hostname"] == ac_sandbox.hostname
    with_key = put("main", connection_body(other.hostname, apiKey=SANDBOX_API_KEY))
    assert with_key.status == 200, with_key.body
    assert with_key.body["hostname"] == other.hostname


@pytest.mark.parametrize("secret", ["activecampaign-main", "activecampaign-MAIN"])
def test_naming_another_connections_secret_beside_a_new_host_needs_the_key(ac_sandbox, make_sandbox, secret):
    # Finding 11 by another door: a new connection borrowing main's apiKeySecret (Key Vault names
    # are case-insensitive) would send main's stored key to the new host.
    other = make_sandbox()
    assert put("main", connection_body(ac_sandbox.hostname, apiKey=SANDBOX_API_KEY)).status == 201
    borrowed = put("evil", connection_body(other.hostname, apiKeySecret=secret))
    assert borrowed.status == 400, borrowed.body
    assert borrowed.body["error"]["code"] == "ApiKeyRequired"
    checked = call(
        "connection_check",
        "POST",
        "connections/evil/check",
        route={"name": "evil"},
        body={"displayName": "x", "hostname": other.hostname, "apiKeySecret": secret},
    )
    assert checked.status == 400, checked.body
    assert checked.body["error"]["code"] == "ApiKeyRequired"
    moved = call(
        "connection_check",
        "POST",
        "connections/main/check",
        route={"name": "main"},
        body={"displayName": "x", "hostname": other.hostname},
    )
    assert moved.status == 400, moved.body
    assert moved.body["error"]["code"] == "ApiKeyRequired"
    assert other.state.requests() == []  # main's key never went to the other host
    assert get("evil").status == 404
    # Sharing the secret on main's own host stays possible without sending the key again.
    assert put("twin", connection_body(ac_sandbox.hostname, apiKeySecret=secret)).status == 201


@pytest.mark.parametrize("secret", ["other-app-db-password", "AzureWebJobsStorage", "ac-main"])
def test_api_key_secret_outside_the_app_prefix_is_refused_and_never_touched(ac_sandbox, keyvault, secret):
    services.set_secrets_factory(
        lambda settings: KeyVaultSecrets(
            keyvault.vault_url, keyvault.credential, cache_seconds=300, **keyvault.client_kwargs
        )
    )
    keyvault.secrets[secret] = "another-applications-secret-value"
    for body in (
        connection_body(ac_sandbox.hostname, apiKeySecret=secret),  # would read it and send it
        connection_body(ac_sandbox.hostname, apiKeySecret=secret, apiKey=SANDBOX_API_KEY),  # overwrite it
    ):
        resp = put("main", body)
        assert resp.status == 400, resp.body
        assert "activecampaign-" in resp.body["error"]["message"]
    assert keyvault.secrets[secret] == "another-applications-secret-value"
    assert keyvault.requests == []
    assert ac_sandbox.state.requests() == []


@pytest.mark.parametrize(
    "key",
    [
        "sandbox\x0btest-key",
        "sandbox\x0ctest-key",
        "sandbox test key",
        "short",
        "k" * 300,
        "sändbox-test-key",
    ],
)
def test_an_api_key_that_cannot_be_one_is_refused_when_saved_without_echoing_it(ac_sandbox, caplog, key):
    resp = put("main", connection_body(ac_sandbox.hostname, apiKey=key))
    assert resp.status == 400, resp.body
    assert resp.body["error"]["code"] == "ValidationFailed"
    # A control character is refused by the HTTP layer for any field; the rest by the key's own check.
    message = resp.body["error"]["message"]
    assert "printable ASCII" in message or "$.apiKey holds the control character" in message
    assert key not in str(resp.body)
    assert all(key not in r.getMessage() for r in caplog.records)
    assert ac_sandbox.state.requests() == []  # refused before ActiveCampaign was called
    assert get("main").status == 404
