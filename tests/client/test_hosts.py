import pytest

from shared.hosts import HostError, base_url, validate_hostname
from shared.settings import DEFAULT_ALLOWED_HOST_SUFFIXES as SUFFIXES


@pytest.mark.parametrize(
    "value", ["acme.api-us1.com", "ACME.api-us1.com", " acme.api-eu1.com ", "x.activehosted.com"]
)
def test_activecampaign_hosts_are_accepted(value):
    assert validate_hostname(value, allowed_suffixes=SUFFIXES, allow_loopback=False) == value.strip().lower()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("https://acme.api-us1.com", "scheme"),
        ("acme.api-us1.com/api/3", "path"),
        ("key@acme.api-us1.com", "credentials"),
        ("acme.api-us1.com:8443", "port"),
        ("acme.example.com", "not an ActiveCampaign API host"),
        ("api-us1.com.evil.net", "not an ActiveCampaign API host"),
        ("evilapi-us1.com", "not a valid host name"),
        ("", "empty"),
        ("127.0.0.1:9000", "loopback"),
    ],
)
def test_bad_hosts_are_refused_with_the_expected_form(value, says):
    with pytest.raises(HostError, match=says):
        validate_hostname(value, allowed_suffixes=SUFFIXES, allow_loopback=False)


def test_loopback_only_outside_azure_and_uses_http():
    assert (
        validate_hostname("127.0.0.1:9000", allowed_suffixes=SUFFIXES, allow_loopback=True)
        == "127.0.0.1:9000"
    )
    assert base_url("127.0.0.1:9000") == "http://127.0.0.1:9000/api/3"
    assert base_url("acme.api-us1.com") == "https://acme.api-us1.com/api/3"


def test_error_shows_expected_form():
    with pytest.raises(HostError, match=r"acme\.api-us1\.com"):
        validate_hostname("https://x.api-us1.com/", allowed_suffixes=SUFFIXES, allow_loopback=False)
