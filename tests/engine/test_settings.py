import pytest

from shared.settings import SETTINGS_READ, SettingsError, load_settings


def test_defaults_and_segments_storage_falls_back_to_app_storage():
    s = load_settings({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert s.requests_per_second == 5
    assert s.bulk_imports_per_minute == 100
    assert s.segments_storage is not None
    assert s.segments_storage.connection_string == "UseDevelopmentStorage=true"
    assert s.segments_storage.setting == "SEGMENTS_STORAGE"
    assert s.auth_mode == "key"
    assert not s.running_in_azure
    assert s.key_vault_url is None


def test_identity_based_storage_from_double_underscore_settings():
    s = load_settings(
        {
            "AzureWebJobsStorage__accountName": "acct",
            "AzureWebJobsStorage__clientId": "cid",
            "WEBSITE_INSTANCE_ID": "x",
        }
    )
    assert s.storage is not None
    assert s.storage.uses_identity
    assert s.storage.blob_service_uri == "https://acct.blob.core.windows.net"
    assert s.storage.queue_service_uri == "https://acct.queue.core.windows.net"
    assert s.storage.client_id == "cid"
    assert s.running_in_azure


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ACTIVECAMPAIGN_REQUESTS_PER_SECOND": "fast"}, "ACTIVECAMPAIGN_REQUESTS_PER_SECOND"),
        ({"ACTIVECAMPAIGN_BULK_IMPORTS_PER_MINUTE": "0"}, "ACTIVECAMPAIGN_BULK_IMPORTS_PER_MINUTE"),
        ({"KEY_VAULT_URL": "myvault.vault.azure.net"}, "KEY_VAULT_URL"),
        ({"AUTH_MODE": "open"}, "AUTH_MODE"),
        ({"AzureWebJobsStorage": "not a connection string"}, "AzureWebJobsStorage"),
        (
            {"ACTIVECAMPAIGN_ALLOWED_HOST_SUFFIXES": "https://evil.example/"},
            "ACTIVECAMPAIGN_ALLOWED_HOST_SUFFIXES",
        ),
        ({"RUN_TIME_BUDGET_SECONDS": "-1"}, "RUN_TIME_BUDGET_SECONDS"),
        ({"RUNS_KEPT_PER_EXPORT": "0"}, "RUNS_KEPT_PER_EXPORT"),
        ({"RUNS_KEPT_PER_EXPORT": "2.5"}, "RUNS_KEPT_PER_EXPORT"),
        # On Azure the worker's trigger listens on export-runs only: runs queued elsewhere would wait forever.
        ({"RUNS_QUEUE": "other-runs", "WEBSITE_INSTANCE_ID": "abc"}, "RUNS_QUEUE"),
    ],
)
def test_bad_values_name_the_setting(env, named):
    with pytest.raises(SettingsError, match=named):
        load_settings(env)


def test_missing_storage_is_reported_only_when_needed():
    s = load_settings({})
    with pytest.raises(SettingsError, match="AzureWebJobsStorage"):
        s.require_storage()


def test_extra_host_suffixes_are_added():
    s = load_settings({"ACTIVECAMPAIGN_ALLOWED_HOST_SUFFIXES": "api-us2.com, .example-ac.net"})
    assert ".api-us2.com" in s.allowed_host_suffixes
    assert ".example-ac.net" in s.allowed_host_suffixes
    assert ".api-us1.com" in s.allowed_host_suffixes
    assert "AzureWebJobsStorage" in SETTINGS_READ


ACCOUNT_KEY = "c2VjcmV0LWFjY291bnQta2V5LW5vYm9keS1zaG91bGQtc2VlPT0="
SAS_SIG = "sig=abc%2Bsecret%3D"


def test_settings_and_secret_holding_objects_print_without_their_secrets():
    from shared.activecampaign import ActiveCampaignClient, Pacer
    from shared.secrets import EnvSecrets

    settings = load_settings(
        {
            "AzureWebJobsStorage": (
                f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={ACCOUNT_KEY};"
                "EndpointSuffix=core.windows.net"
            ),
            "SEGMENTS_STORAGE": f"BlobEndpoint=https://seg.blob.core.windows.net;SharedAccessSignature=sv=2024&{SAS_SIG}",
            "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-1111-2222-3333-444444444444",
        }
    )
    for shown in (repr(settings), str(settings), repr(settings.storage), f"{settings.segments_storage}"):
        assert ACCOUNT_KEY not in shown
        assert "abc%2Bsecret" not in shown
        assert "444444444444" not in shown
        assert "AccountName=acct" in shown or "seg.blob" in shown or "Settings(" in shown
    assert "AccountKey=***" in repr(settings)
    # Still usable: the value itself is untouched.
    assert settings.storage is not None
    assert ACCOUNT_KEY in (settings.storage.connection_string or "")

    key = "sandbox-secret-key-1234"
    client = ActiveCampaignClient(
        "127.0.0.1:9", key, pacer=Pacer(5, 100), allowed_suffixes=(), allow_loopback=True
    )
    try:
        assert key not in repr(client)
        assert key not in str(client)
    finally:
        client.close()
    env = EnvSecrets({"ACTIVECAMPAIGN_MAIN": key})
    assert key not in repr(env)
    assert key not in str(env)


def test_allowed_origins_are_bare_https_origins():
    s = load_settings(
        {"ALLOWED_ORIGINS": " https://Portal.Example.com ,https://a.example.com:443, http://localhost:3000"}
    )
    assert s.allowed_origins == (
        "https://portal.example.com",
        "https://a.example.com",
        "http://localhost:3000",
    )
    assert load_settings({}).allowed_origins == ()
    for bad in (
        "*",
        "https://a.example.com/",
        "https://a.example.com/path",
        "http://a.example.com",
        "null",
        "a.com",
    ):
        with pytest.raises(SettingsError, match="ALLOWED_ORIGINS"):
            load_settings({"ALLOWED_ORIGINS": bad})
