"""A key is bound to the host it was given for, on every instance (issue 23, item 1).

The finding: a worker instance cached a connection's key for SECRET_CACHE_SECONDS while the
hostname came from the configuration as it is now, so after a connection moved from host A to host
B, that worker sent key A to B. Here two providers stand for two instances (the API's and a
worker's) over one Key Vault stand-in, with the real SecretClient, and two sandboxes stand for the
two ActiveCampaign accounts; a sandbox refusing a key records it as a `forbidden` request.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from functions import services
from sandbox import SandboxServer
from shared.secrets import HOST_TAG, EnvSecrets, KeyBoundToAnotherHost, KeyVaultSecrets
from shared.storage import CONFIG_BLOB
from tests.fixtures.keyvault import CACHE_SECONDS, KeyVaultHandle, ManualClock
from tests.support.app import AppEnv, call, create_export, deliver, run_status, start
from tests.support.segments import profiles, write_ci_snapshot

KEY_A = "aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111aaaa1111"
KEY_B = "bbbb2222bbbb2222bbbb2222bbbb2222bbbb2222bbbb2222bbbb2222bbbb2222bbbb2222"
SECRET = "activecampaign-main"
HOST_A, HOST_B = "acme.api-us1.com", "other.api-us1.com"


@pytest.fixture
def instances(keyvault: KeyVaultHandle, keyvault_clock: ManualClock) -> Iterator[tuple[KeyVaultSecrets, ...]]:
    """Two providers (the API's instance, a worker's) over one vault, each with its own cache."""
    made = tuple(
        KeyVaultSecrets(
            keyvault.vault_url,
            keyvault.credential,
            cache_seconds=CACHE_SECONDS,
            clock=keyvault_clock,
            **keyvault.client_kwargs,
        )
        for _ in range(2)
    )
    yield made
    for provider in made:
        provider.close()


def test_the_host_is_written_with_the_value_in_one_set_secret(keyvault: KeyVaultHandle, instances):
    api, _ = instances
    api.set(SECRET, KEY_A, host=HOST_A)
    assert keyvault.tags(SECRET) == {HOST_TAG: HOST_A}
    assert [r.method for r in keyvault.requests if r.status != 401] == ["PUT"]
    assert keyvault.server.patches == []
    assert KEY_A not in repr(api)  # a provider prints its vault, never what it caches
    assert KEY_A not in str(api)


def test_a_key_is_never_returned_for_another_host(instances):
    api, worker = instances
    api.set(SECRET, KEY_A, host=HOST_A)
    for provider in (api, worker):  # from the cache, and from the vault
        with pytest.raises(KeyBoundToAnotherHost) as refused:
            provider.get(SECRET, host=HOST_B)
        assert (refused.value.bound, refused.value.wanted) == (HOST_A, HOST_B)
        assert KEY_A not in str(refused.value)
        assert provider.get(SECRET, host=HOST_A) == KEY_A


def test_a_worker_whose_cache_predates_the_move_reads_the_new_key(keyvault: KeyVaultHandle, instances):
    api, worker = instances
    api.set(SECRET, KEY_A, host=HOST_A)
    assert worker.get(SECRET, host=HOST_A) == KEY_A  # cached for CACHE_SECONDS
    api.set(SECRET, KEY_B, host=HOST_B)  # the connection moves, with the new account's key
    reads = len(keyvault.secret_reads(SECRET))
    assert worker.get(SECRET, host=HOST_B) == KEY_B  # well within the cache time: read again
    assert len(keyvault.secret_reads(SECRET)) == reads + 1
    with pytest.raises(KeyBoundToAnotherHost):
        worker.get(SECRET, host=HOST_A)


def test_a_secret_stored_without_a_host_is_bound_to_its_first_use(keyvault: KeyVaultHandle, instances):
    api, worker = instances
    keyvault.secrets[SECRET] = KEY_A  # stored before keys were bound, or by hand
    assert worker.get(SECRET, host=HOST_A) == KEY_A
    assert keyvault.tags(SECRET) == {HOST_TAG: HOST_A}
    ((name, version, tags),) = keyvault.server.patches
    assert (name, tags) == (SECRET, {HOST_TAG: HOST_A})
    assert len(version) == 32  # the version read, not "the current one", is tagged
    with pytest.raises(KeyBoundToAnotherHost):
        api.get(SECRET, host=HOST_B)


def test_local_secrets_are_bound_the_same_way():
    local = EnvSecrets({"ACTIVECAMPAIGN_MAIN": KEY_A})
    assert local.get(SECRET, host=HOST_A) == KEY_A  # a value from the environment: its first host
    with pytest.raises(KeyBoundToAnotherHost):
        local.get(SECRET, host=HOST_B)
    local.set(SECRET, KEY_B, host=HOST_B)
    assert local.get(SECRET, host=HOST_B) == KEY_B
    with pytest.raises(KeyBoundToAnotherHost):
        local.get(SECRET, host=HOST_A)


# --- end to end: the API on one instance, the worker on another -------------------------------


def _connection(host: str, key: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {"displayName": "Main", "hostname": host, "dataPrivacyConsent": True}
    if key is not None:
        body["apiKey"] = key
    return body


def _as_instance(provider: KeyVaultSecrets) -> None:
    services.set_secrets_factory(lambda settings: provider)


def _run(env: AppEnv) -> dict[str, object]:
    location = start(body={}).headers["Location"]
    for _ in range(20):
        deliver(env)
        if not env.messages():
            break
    body = run_status(location).body
    assert isinstance(body, dict)
    return body


def _forbidden(sandbox: SandboxServer) -> int:
    return sum(1 for r in sandbox.state.requests() if r.outcome == "forbidden")


@pytest.fixture
def two_accounts(make_sandbox, app_env: AppEnv, segments, instances) -> tuple[SandboxServer, SandboxServer]:
    a, b = make_sandbox(api_key=KEY_A), make_sandbox(api_key=KEY_B)
    api, worker = instances
    _as_instance(api)
    put = call("connection_item", "PUT", "x", route={"name": "main"}, body=_connection(a.hostname, KEY_A))
    assert put.status == 201, put.body
    write_ci_snapshot(segments, "Vip", profiles(30))
    create_export(segments.container_name)
    _as_instance(worker)
    assert _run(app_env)["status"] == "succeeded"  # the worker now holds key A in its cache
    return a, b


def test_a_connection_moved_on_one_instance_never_gets_the_old_key_from_another(
    app_env: AppEnv, two_accounts, instances
):
    a, b = two_accounts
    api, worker = instances
    _as_instance(api)
    moved = call("connection_item", "PUT", "x", route={"name": "main"}, body=_connection(b.hostname, KEY_B))
    assert moved.status == 200, moved.body

    _as_instance(worker)  # its cache still holds key A, well within SECRET_CACHE_SECONDS
    run = _run(app_env)
    assert run["status"] == "succeeded", run
    assert _forbidden(b) == 0  # host B never saw key A
    assert b.state.list_members(1) != {}
    assert _forbidden(a) == 0


def test_a_configuration_moved_behind_the_apis_back_fails_the_run_naming_the_connection(
    app_env: AppEnv, two_accounts, instances
):
    a, b = two_accounts
    # The host changed in the stored configuration without a key (not through the API): the vault
    # still holds key A, bound to host A.
    config = app_env.app.download_blob(CONFIG_BLOB).readall().decode()
    app_env.app.upload_blob(CONFIG_BLOB, config.replace(a.hostname, b.hostname), overwrite=True)
    before = len(b.state.requests())
    run = _run(app_env)
    assert run["status"] == "failed"
    error = str(run["error"])
    assert "connection 'main'" in error
    assert f"given for {a.hostname}, not for {b.hostname}" in error
    assert KEY_A not in str(run)
    assert len(b.state.requests()) == before == 0  # nothing was sent to host B at all


def test_a_refused_key_is_re_read_for_the_same_host_once_and_the_retry_is_logged(
    app_env: AppEnv, two_accounts, instances, caplog
):
    a, _ = two_accounts
    api, _worker = instances
    rotated = "cccc3333cccc3333cccc3333cccc3333cccc3333cccc3333cccc3333cccc3333cccc3333"
    a.set_api_key(rotated)  # rotated in ActiveCampaign...
    _as_instance(api)
    api.set(SECRET, rotated, host=a.hostname)  # ...and in the vault, for the same host
    _as_instance(instances[1])  # the worker still caches the old key
    caplog.set_level("WARNING", logger="shared.pipeline")
    forbidden = _forbidden(a)
    assert _run(app_env)["status"] == "succeeded"
    assert _forbidden(a) == forbidden + 1  # the cached key once, then the rotated one
    assert any(
        "retrying once with the key now stored for that host" in r.getMessage() for r in caplog.records
    )
    assert all(rotated not in r.getMessage() and KEY_A not in r.getMessage() for r in caplog.records)

    a.set_api_key("dddd4444dddd4444dddd4444dddd4444")  # rotated in ActiveCampaign only
    forbidden = _forbidden(a)
    failed = _run(app_env)
    assert failed["status"] == "failed"
    assert "refused the API key of connection 'main'" in str(failed["error"])
    assert _forbidden(a) == forbidden + 1  # the same key is not sent twice
