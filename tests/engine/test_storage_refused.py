"""Storage that refuses the app's credentials says which setting to fix, in the API and in a run's
error, against a real Azurite given a wrong account key."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient

from shared.error_text import describe
from shared.reachability import storage_refused
from tests.fixtures.sandbox import SANDBOX_API_KEY
from tests.support.app import AppEnv, call, create_connection, export_body
from tests.support.segments import profiles, write_ci_snapshot

WRONG_KEY = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="


def wrong_key(connection_string: str) -> str:
    parts = [p for p in connection_string.split(";") if p and not p.startswith("AccountKey=")]
    return ";".join([*parts, f"AccountKey={WRONG_KEY}"])


def test_saving_an_export_whose_segment_storage_refuses_the_key_names_the_setting(
    app_env: AppEnv, ac_sandbox, segments
):
    write_ci_snapshot(segments, "Vip", profiles(5))
    app_env.monkeypatch.setenv("ACTIVECAMPAIGN_MAIN", SANDBOX_API_KEY)
    create_connection(ac_sandbox.hostname)
    app_env.set("SEGMENTS_STORAGE", wrong_key(app_env.azurite))
    resp = call(
        "export_item", "PUT", "exports/vip", route={"name": "vip"}, body=export_body(segments.container_name)
    )
    assert resp.status == 500
    error = resp.body["error"]
    assert error["code"] == "StorageRefused"
    # Both settings point at the one Azurite, with different keys: both are named.
    assert "check AzureWebJobsStorage or SEGMENTS_STORAGE:" in error["message"]
    assert "account key or SAS token" in error["message"]
    assert WRONG_KEY not in error["message"]
    assert call("export_item", "GET", "exports/vip", route={"name": "vip"}).status == 404  # nothing saved


def test_a_refusal_is_described_for_the_run_record_and_other_errors_are_not(app_env: AppEnv, segments):
    client = BlobServiceClient.from_connection_string(wrong_key(app_env.azurite))
    with pytest.raises(HttpResponseError) as caught:
        client.get_container_client(segments.container_name).get_container_properties()
    line = describe(caught.value)
    # SEGMENTS_STORAGE is the app's own storage here: one setting to check.
    assert line.startswith("storage AzureWebJobsStorage at 127.0.0.1:")
    assert "refused the request (Authorization" in line
    assert WRONG_KEY not in line
    # A 404, and another service's 403 (Key Vault's codes are its own), are not storage refusals.
    with pytest.raises(HttpResponseError) as missing:
        BlobServiceClient.from_connection_string(app_env.azurite).get_container_client(
            "no-such-container"
        ).get_container_properties()
    assert storage_refused(missing.value) is None
    vault = HttpResponseError(message="Forbidden")
    vault.status_code = 403
    vars(vault)["error_code"] = (
        "Forbidden"  # an attribute the Key Vault SDK sets, azure-core does not declare
    )
    assert storage_refused(vault) is None
