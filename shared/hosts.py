"""Where personal data and the API key may go: the ActiveCampaign REST endpoint hostname check.

The hostname is what the user copies from ActiveCampaign (Settings > Developer): a bare host such as
`acme.api-us1.com`. Anything else (a scheme, a path, credentials, a port on a public host, a domain
that is not ActiveCampaign's) is refused, because the API key and contacts are sent to it.
"""

from __future__ import annotations

import ipaddress
import re

from shared.errors import TerminalError

__all__ = ["EXPECTED_FORM", "HostError", "base_url", "split_host_port", "validate_hostname"]

EXPECTED_FORM = "a bare host name such as 'acme.api-us1.com' (no https://, no path)"
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_LOOPBACK_NAMES = ("localhost",)


class HostError(TerminalError, ValueError):
    """The hostname is not acceptable; the message shows the expected form."""

    code = "HostRefused"
    http_status = 400


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_host_port(value: str) -> tuple[str, int | None]:
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise HostError(f"invalid port in hostname {value!r}: expected {EXPECTED_FORM}")
    return host, int(port)


def validate_hostname(value: str, *, allowed_suffixes: tuple[str, ...], allow_loopback: bool) -> str:
    """Return the normalised hostname (lower-case, optional `:port` for loopback) or raise HostError.

    `allow_loopback` is True only outside Azure (the local sandbox); `allowed_suffixes` comes from
    Settings.allowed_host_suffixes.
    """
    if not isinstance(value, str) or not value.strip():
        raise HostError(f"hostname is empty: expected {EXPECTED_FORM}")
    raw = value.strip().lower()
    if "://" in raw:
        raise HostError(f"hostname {value!r} includes a scheme: expected {EXPECTED_FORM}")
    if "@" in raw:
        raise HostError(f"hostname {value!r} includes credentials: expected {EXPECTED_FORM}")
    if any(ch in raw for ch in "/?#\\ \t"):
        raise HostError(f"hostname {value!r} includes a path or query: expected {EXPECTED_FORM}")
    host, port = split_host_port(raw)
    host = host.rstrip(".")
    if _is_loopback(host):
        if not allow_loopback:
            raise HostError(
                f"hostname {value!r} is a loopback address, allowed only outside Azure (local sandbox)"
            )
        return f"{host}:{port}" if port is not None else host
    if port is not None:
        raise HostError(
            f"hostname {value!r} has a port; only the local sandbox may use one: expected {EXPECTED_FORM}"
        )
    labels = host.split(".")
    if len(labels) < 3 or not all(_LABEL.fullmatch(label) for label in labels):
        raise HostError(f"hostname {value!r} is not a valid host name: expected {EXPECTED_FORM}")
    if not any(host.endswith(suffix) for suffix in allowed_suffixes):
        allowed = ", ".join("*" + s for s in allowed_suffixes)
        raise HostError(
            f"hostname {value!r} is not an ActiveCampaign API host (allowed: {allowed}); "
            "to allow another domain add its suffix to ACTIVECAMPAIGN_ALLOWED_HOST_SUFFIXES"
        )
    return host


def base_url(hostname: str) -> str:
    """The API base URL for an already validated hostname: https, except plain http for loopback."""
    host, _ = split_host_port(hostname)
    scheme = "http" if _is_loopback(host) else "https"
    return f"{scheme}://{hostname}/api/3"
