"""Secrets providers: the real SecretClient against the Key Vault stand-in, and the env provider."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.redact import scrub
from shared.secrets import EnvSecrets, KeyVaultSecrets, SecretNotFound, SecretsError, secrets_from_settings
from shared.settings import SettingsError, load_settings
from tests.fixtures.keyvault import CACHE_SECONDS, FORBIDDEN_TOKEN, KeyVaultHandle, ManualClock
from tests.keyvault_standin import SCOPE, TENANT_ID, StaticTokenCredential

KEY_V1 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567"
HOST = "acme.api-us1.com"
KEY_V2 = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210fedcba98"


def test_get_follows_key_vault_challenge_auth(
    keyvault: KeyVaultHandle, keyvault_secrets: KeyVaultSecrets
) -> None:
    keyvault.secrets["activecampaign-key-prod"] = KEY_V1

    assert keyvault_secrets.get("activecampaign-key-prod", host=HOST) == KEY_V1

    first, second = keyvault.requests[:2]  # then the PATCH binding the untagged secret to HOST
    # The client first probes without credentials, learns the authority/resource from the 401, then
    # retries with a token for that resource; the token never goes out before the vault asks.
    assert (first.status, first.authorization) == (401, None)
    assert (second.status, second.authorization) == (200, f"Bearer {keyvault.credential.token}")
    assert all(r.api_version for r in keyvault.requests)
    assert keyvault.credential.scopes_requested == [(SCOPE,)]
    assert keyvault.credential.tenants_requested == [TENANT_ID]


def test_value_is_cached_within_cache_seconds(
    keyvault: KeyVaultHandle, keyvault_secrets: KeyVaultSecrets, keyvault_clock: ManualClock
) -> None:
    keyvault.secrets["activecampaign-key"] = KEY_V1
    assert keyvault_secrets.get("activecampaign-key", host=HOST) == KEY_V1
    keyvault.rotate("activecampaign-key", KEY_V2)
    keyvault_clock.advance(CACHE_SECONDS - 1)

    assert keyvault_secrets.get("activecampaign-key", host=HOST) == KEY_V1
    assert len(keyvault.secret_reads("activecampaign-key")) == 1


def test_rotated_value_is_read_after_the_cache_expires(
    keyvault: KeyVaultHandle, keyvault_secrets: KeyVaultSecrets, keyvault_clock: ManualClock
) -> None:
    keyvault.secrets["activecampaign-key"] = KEY_V1
    keyvault_secrets.get("activecampaign-key", host=HOST)
    keyvault.rotate("activecampaign-key", KEY_V2)
    keyvault_clock.advance(CACHE_SECONDS)

    assert keyvault_secrets.get("activecampaign-key", host=HOST) == KEY_V2
    assert len(keyvault.secret_reads("activecampaign-key")) == 2


def test_refresh_bypasses_the_cache_and_sees_a_rotated_key(
    keyvault: KeyVaultHandle, keyvault_secrets: KeyVaultSecrets
) -> None:
    keyvault.secrets["activecampaign-key"] = KEY_V1
    keyvault_secrets.get("activecampaign-key", host=HOST)
    keyvault.rotate("activecampaign-key", KEY_V2)

    assert keyvault_secrets.get("activecampaign-key", refresh=True, host=HOST) == KEY_V2
    # The refreshed value is what later callers get from the cache.
    assert keyvault_secrets.get("activecampaign-key", host=HOST) == KEY_V2
    assert len(keyvault.secret_reads("activecampaign-key")) == 2


def test_missing_secret_names_the_secret_and_the_vault(
    keyvault: KeyVaultHandle, keyvault_secrets: KeyVaultSecrets
) -> None:
    with pytest.raises(SecretNotFound) as caught:
        keyvault_secrets.get("activecampaign-key-missing", host=HOST)

    assert caught.value.name == "activecampaign-key-missing"
    message = str(caught.value)
    assert "'activecampaign-key-missing'" in message
    assert keyvault.vault_url in message
    assert "az keyvault secret set" in message


def test_set_get_delete_round_trip_including_reuse_of_a_soft_deleted_name(
    keyvault: KeyVaultHandle, keyvault_secrets: KeyVaultSecrets
) -> None:
    keyvault_secrets.set("activecampaign-key-new", KEY_V1, host=HOST)
    assert keyvault.secrets["activecampaign-key-new"] == KEY_V1
    assert keyvault_secrets.get("activecampaign-key-new", host=HOST) == KEY_V1

    keyvault_secrets.delete("activecampaign-key-new")
    assert "activecampaign-key-new" not in keyvault.secrets
    assert "activecampaign-key-new" in keyvault.deleted  # soft-deleted, as in a real vault
    with pytest.raises(SecretNotFound):
        keyvault_secrets.get("activecampaign-key-new", host=HOST)

    # A soft-deleted name answers 409 to a plain PUT; set() recovers it and writes the new value.
    keyvault_secrets.set("activecampaign-key-new", KEY_V2, host=HOST)
    assert keyvault.secrets["activecampaign-key-new"] == KEY_V2
    assert keyvault.deleted == {}
    assert keyvault_secrets.get("activecampaign-key-new", refresh=True, host=HOST) == KEY_V2

    keyvault_secrets.delete("activecampaign-key-never-existed")  # deleting what is not there is not an error


def test_denied_identity_is_a_secrets_error_naming_the_role(keyvault: KeyVaultHandle) -> None:
    keyvault.secrets["activecampaign-key"] = KEY_V1
    provider = KeyVaultSecrets(
        keyvault.vault_url, StaticTokenCredential(FORBIDDEN_TOKEN), cache_seconds=60, **keyvault.client_kwargs
    )

    with pytest.raises(SecretsError) as caught:
        provider.get("activecampaign-key", host=HOST)

    message = str(caught.value)
    assert "403" in message
    assert "Key Vault Secrets User" in message
    assert FORBIDDEN_TOKEN not in message
    assert KEY_V1 not in message


def test_rejected_token_is_a_secrets_error_about_the_identity(keyvault: KeyVaultHandle) -> None:
    keyvault.secrets["activecampaign-key"] = KEY_V1
    provider = KeyVaultSecrets(
        keyvault.vault_url,
        StaticTokenCredential("not-a-valid-token"),
        cache_seconds=60,
        **keyvault.client_kwargs,
    )

    with pytest.raises(SecretsError, match="AZURE_CLIENT_ID") as caught:
        provider.get("activecampaign-key", host=HOST)
    assert "not-a-valid-token" not in str(caught.value)


def test_by_default_a_challenge_for_another_domain_is_refused_before_any_token_is_sent(
    keyvault: KeyVaultHandle,
) -> None:
    # Production keeps the SDK's check that the challenge's resource (vault.azure.net) covers the vault
    # host; the stand-in at 127.0.0.1 fails it, which is what a spoofed vault URL would look like.
    kwargs = {k: v for k, v in keyvault.client_kwargs.items() if k != "verify_challenge_resource"}
    keyvault.secrets["activecampaign-key"] = KEY_V1
    provider = KeyVaultSecrets(keyvault.vault_url, keyvault.credential, cache_seconds=60, **kwargs)

    with pytest.raises(SecretsError, match="KEY_VAULT_URL"):
        provider.get("activecampaign-key", host=HOST)
    assert keyvault.credential.scopes_requested == []
    assert all(r.authorization is None for r in keyvault.requests)


def test_unreachable_vault_is_a_secrets_error_naming_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port any more.
    vault_url = f"https://127.0.0.1:{port}"
    provider = KeyVaultSecrets(
        vault_url,
        StaticTokenCredential("t"),
        cache_seconds=60,
        retry_total=0,
        verify_challenge_resource=False,
    )

    with pytest.raises(SecretsError, match="unreachable") as caught:
        provider.get("activecampaign-key", host=HOST)
    assert vault_url in str(caught.value)


def test_concurrent_first_reads_share_one_key_vault_request(
    keyvault: KeyVaultHandle, keyvault_secrets: KeyVaultSecrets
) -> None:
    keyvault.secrets["activecampaign-key"] = KEY_V1
    workers = 8
    start = threading.Barrier(workers)

    def read() -> str:
        start.wait()
        return keyvault_secrets.get("activecampaign-key", host=HOST)

    with ThreadPoolExecutor(workers) as pool:
        values = list(pool.map(lambda _: read(), range(workers)))

    assert values == [KEY_V1] * workers
    assert len(keyvault.secret_reads("activecampaign-key")) == 1


def test_values_read_from_the_vault_are_scrubbed_from_logs(
    keyvault: KeyVaultHandle, keyvault_secrets: KeyVaultSecrets
) -> None:
    value = "kv-canary-" + "7" * 30
    keyvault.secrets["activecampaign-key"] = value

    keyvault_secrets.get("activecampaign-key", host=HOST)

    assert value not in scrub(f"sending key {value} to ActiveCampaign")


def test_invalid_name_fails_before_calling_the_vault(
    keyvault: KeyVaultHandle, keyvault_secrets: KeyVaultSecrets
) -> None:
    with pytest.raises(SecretsError, match="letters, digits and '-'"):
        keyvault_secrets.get("ac_key/../x", host=HOST)
    assert keyvault.requests == []


# --- EnvSecrets (local development) ---


def test_env_secrets_reads_the_upper_cased_underscored_variable() -> None:
    provider = EnvSecrets({"ACTIVECAMPAIGN_KEY_PROD": KEY_V1})

    assert EnvSecrets.env_var("activecampaign-key-prod") == "ACTIVECAMPAIGN_KEY_PROD"
    assert provider.get("activecampaign-key-prod", host=HOST) == KEY_V1


def test_env_secrets_missing_names_the_variable() -> None:
    with pytest.raises(SecretNotFound) as caught:
        EnvSecrets({}).get("activecampaign-key-prod", host=HOST)

    assert caught.value.where == "environment variable ACTIVECAMPAIGN_KEY_PROD"
    assert "set ACTIVECAMPAIGN_KEY_PROD" in str(caught.value)


def test_env_secrets_set_and_delete_stay_in_process_memory() -> None:
    env = {"ACTIVECAMPAIGN_KEY": KEY_V1}
    provider = EnvSecrets(env)

    provider.set("activecampaign-key", KEY_V2, host=HOST)
    assert provider.get("activecampaign-key", host=HOST) == KEY_V2
    assert env == {"ACTIVECAMPAIGN_KEY": KEY_V1}  # the environment is not written

    provider.delete("activecampaign-key")
    with pytest.raises(SecretNotFound):
        provider.get("activecampaign-key", host=HOST)
    assert (
        EnvSecrets(env).get("activecampaign-key", host=HOST) == KEY_V1
    )  # a new process would see the env again


def test_env_secrets_refuses_names_of_app_settings() -> None:
    provider = EnvSecrets({"ACTIVECAMPAIGN_REQUESTS_PER_SECOND": "5"})

    with pytest.raises(SecretsError, match="app setting"):
        provider.get("activecampaign-requests-per-second", host=HOST)


@pytest.mark.parametrize(
    "name", ["AzureWebJobsStorage", "other-app-db-password", "ActiveCampaign-main", "main"]
)
def test_secrets_outside_the_app_prefix_are_never_touched(
    name: str, keyvault: KeyVaultHandle, keyvault_secrets: KeyVaultSecrets
) -> None:
    # Finding 6 of issue 12: in a shared vault, a connection's apiKeySecret could name another
    # application's secret; it would be sent to ActiveCampaign, overwritten, or deleted.
    keyvault.secrets[name] = KEY_V1
    env = EnvSecrets({EnvSecrets.env_var(name): KEY_V1})
    for provider in (keyvault_secrets, env):
        with pytest.raises(SecretsError, match="activecampaign-"):
            provider.get(name, host=HOST)
        with pytest.raises(SecretsError, match="activecampaign-"):
            provider.set(name, KEY_V2, host=HOST)
        with pytest.raises(SecretsError, match="activecampaign-"):
            provider.delete(name)
    assert keyvault.secrets[name] == KEY_V1
    assert keyvault.requests == []  # not even read


# --- secrets_from_settings ---


def test_local_without_key_vault_uses_env_secrets() -> None:
    settings = load_settings({})
    provider = secrets_from_settings(settings, env={"ACTIVECAMPAIGN_KEY": KEY_V1})

    assert isinstance(provider, EnvSecrets)
    assert provider.get("activecampaign-key", host=HOST) == KEY_V1


def test_in_azure_without_key_vault_is_a_settings_error_naming_key_vault_url() -> None:
    settings = load_settings({"WEBSITE_INSTANCE_ID": "abc123"})

    with pytest.raises(SettingsError, match="KEY_VAULT_URL"):
        secrets_from_settings(settings, env={"ACTIVECAMPAIGN_KEY": KEY_V1})


def test_key_vault_url_selects_key_vault(keyvault: KeyVaultHandle) -> None:
    keyvault.secrets["activecampaign-key"] = KEY_V1
    settings = load_settings({"KEY_VAULT_URL": keyvault.vault_url, "SECRET_CACHE_SECONDS": "60"})

    provider = secrets_from_settings(
        settings,
        env={"ACTIVECAMPAIGN_KEY": "from-env-must-not-be-used"},
        credential=keyvault.credential,
        **keyvault.client_kwargs,
    )

    assert isinstance(provider, KeyVaultSecrets)
    assert provider.get("activecampaign-key", host=HOST) == KEY_V1


def test_in_azure_with_client_id_uses_that_managed_identity() -> None:
    from azure.identity import ManagedIdentityCredential

    settings = load_settings(
        {
            "KEY_VAULT_URL": "https://myvault.vault.azure.net",
            "AZURE_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
            "WEBSITE_INSTANCE_ID": "abc123",
        }
    )

    provider = secrets_from_settings(settings)

    assert isinstance(provider, KeyVaultSecrets)
    assert isinstance(provider.credential, ManagedIdentityCredential)
    assert provider.vault_url == "https://myvault.vault.azure.net"


def test_locally_with_key_vault_uses_default_azure_credential() -> None:
    from azure.identity import DefaultAzureCredential

    settings = load_settings({"KEY_VAULT_URL": "https://myvault.vault.azure.net"})

    provider = secrets_from_settings(settings)

    assert isinstance(provider, KeyVaultSecrets)
    assert isinstance(provider.credential, DefaultAzureCredential)
