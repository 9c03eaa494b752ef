"""Where the ActiveCampaign API keys live: Azure Key Vault, or (local development only) env vars.

`secrets_from_settings` picks the provider. Every value a provider returns or stores is registered
with `shared.redact`, so it is scrubbed from logs wherever it shows up.

A key is bound to the ActiveCampaign host it was given for. The host is stored with the value in the
same write (a Key Vault tag, `activecampaign-host`; beside the value for local secrets), and every
read names the host the key is about to be sent to: a key bound to another host is refused
(KeyBoundToAnotherHost), never returned. A cached key is returned only for the host it was cached
with; for any other host the vault is read again. So an instance whose cache predates a connection's
move to another host reads the new key instead of sending the old one there. A secret written
before keys were bound (or by hand without the tag) is bound, on its first read, to the host it is
read for: the version read is tagged, so a newer value is never mislabelled.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.keyvault.secrets import SecretClient

from shared.config import SECRET_PREFIX
from shared.errors import TerminalError
from shared.redact import register_secret_value
from shared.settings import SETTINGS_READ, Settings, SettingsError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

__all__ = [
    "HOST_TAG",
    "EnvSecrets",
    "KeyBoundToAnotherHost",
    "KeyVaultSecrets",
    "SecretNotFound",
    "SecretsError",
    "SecretsProvider",
    "connection_key",
    "secrets_from_settings",
]

# Key Vault's rule for secret names; checked here so a typo fails with a clear message, not a 400.
_NAME_RE = re.compile(r"[0-9A-Za-z-]{1,127}")
# azure-core waits 300 s per connect/read by default: a function would hang far past any useful point.
_DEFAULT_CLIENT_KWARGS: dict[str, Any] = {"connection_timeout": 10, "read_timeout": 30, "retry_total": 3}
# Generous: recovery of a soft-deleted secret usually takes a few seconds.
_RECOVER_WAIT_SECONDS = 60.0
# The Key Vault tag holding the host a key was given for (scripts/deploy.sh writes it too).
HOST_TAG = "activecampaign-host"


class SecretNotFound(TerminalError):
    """The secret does not exist. `name` is the secret, `where` the vault URL or env var looked in."""

    def __init__(self, name: str, where: str, hint: str) -> None:
        super().__init__(f"secret {name!r} was not found in {where}: {hint}")
        self.name = name
        self.where = where


class SecretsError(TerminalError):
    """The secret store could not be used (unreachable, denied, misconfigured); says what to fix."""

    code = "SecretsUnavailable"


class KeyBoundToAnotherHost(TerminalError):
    """The secret holds a key given for another host than the one it would be sent to. Names the
    secret and both hosts, never the key; `for_connection` adds the connection."""

    code = "ApiKeyBoundToAnotherHost"
    http_status = 409

    def __init__(self, name: str, bound: str, wanted: str, connection: str | None = None) -> None:
        self.name, self.bound, self.wanted, self.connection = name, bound, wanted, connection
        whose = f"connection {connection!r} (secret {name!r})" if connection else f"secret {name!r}"
        super().__init__(
            f"the API key stored for {whose} was given for {bound}, not for {wanted}, so it is not sent "
            f"there: save the connection with the API key of the account at {wanted} "
            "(PUT /api/connections/{name} with apiKey, or the console's Save)"
        )

    def for_connection(self, connection: str) -> KeyBoundToAnotherHost:
        return KeyBoundToAnotherHost(self.name, self.bound, self.wanted, connection)


class SecretsProvider(Protocol):
    def get(self, name: str, *, host: str, refresh: bool = False) -> str:
        """The value of secret `name`, which is about to be sent to `host`; KeyBoundToAnotherHost if it
        was given for another host. `refresh=True` skips any cache (after a 403, to see a rotated key)."""
        ...

    def set(self, name: str, value: str, *, host: str) -> None:
        """Store `value`, bound to `host`, in one write."""
        ...

    def delete(self, name: str) -> None: ...


def connection_key(
    secrets: SecretsProvider, connection: str, secret: str, host: str, *, refresh: bool = False
) -> str:
    """The key of `connection` for `host`; a key bound to another host is refused naming the connection."""
    try:
        return secrets.get(secret, host=host, refresh=refresh)
    except KeyBoundToAnotherHost as exc:
        raise exc.for_connection(connection) from None


def _host(host: str) -> str:
    # Hostnames are validated (shared/hosts.py) before they get here; case never makes two hosts.
    bound = host.strip().lower()
    if not bound:
        raise SecretsError("an API key is bound to a host: name the host it is read or stored for")
    return bound


def _check_name(name: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise SecretsError(
            f"invalid secret name {name!r}: use 1-127 letters, digits and '-' (Key Vault's naming rule)"
        )
    if not name.startswith(SECRET_PREFIX):
        # The second line behind the configuration check: whatever names a secret, the app never
        # reads, overwrites or deletes one outside its own namespace of a possibly shared vault.
        raise SecretsError(
            f"secret {name!r} is not one of this app's: it reads, writes and deletes only secrets named "
            f"{SECRET_PREFIX}*; rename the connection's apiKeySecret (e.g. '{SECRET_PREFIX}main') and "
            "store the key under it"
        )


class KeyVaultSecrets:
    """Secrets in Azure Key Vault through `SecretClient`, cached for `cache_seconds`.

    The short cache keeps Key Vault off the hot path yet picks up a rotated key without a restart.
    Thread-safe: concurrent `get`s of the same name share one Key Vault read.
    """

    def __init__(
        self,
        vault_url: str,
        credential: TokenCredential,
        *,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        **client_kwargs: Any,
    ) -> None:
        self.vault_url = vault_url.rstrip("/")
        self.credential = credential
        self._client = SecretClient(self.vault_url, credential, **{**_DEFAULT_CLIENT_KWARGS, **client_kwargs})
        self._cache_seconds = cache_seconds
        self._clock = clock
        # name -> (value, the host it is bound to, when read)
        self._cache: dict[str, tuple[str, str, float]] = {}
        self._lock = threading.Lock()
        self._name_locks: dict[str, threading.Lock] = {}

    def __repr__(self) -> str:
        return f"KeyVaultSecrets(vault_url={self.vault_url!r})"  # not the cached values

    def _name_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._name_locks.setdefault(name, threading.Lock())

    def _cached(self, name: str, host: str) -> str | None:
        """The cached value if it is fresh and was cached for `host`; for another host, None (read
        the vault: the key may have moved with its connection)."""
        with self._lock:
            entry = self._cache.get(name)
        if entry is None:
            return None
        value, bound, fetched_at = entry
        if bound != host or self._clock() - fetched_at >= self._cache_seconds:
            return None
        return value

    def _remember(self, name: str, value: str, host: str) -> None:
        with self._lock:
            self._cache[name] = (value, host, self._clock())

    def get(self, name: str, *, host: str, refresh: bool = False) -> str:
        _check_name(name)
        host = _host(host)
        if not refresh and (value := self._cached(name, host)) is not None:
            return value
        with self._name_lock(name):
            # Another thread may have read it while this one waited.
            if not refresh and (value := self._cached(name, host)) is not None:
                return value
            try:
                secret = self._client.get_secret(name)
            except ResourceNotFoundError:
                with self._lock:
                    self._cache.pop(name, None)
                raise SecretNotFound(
                    name,
                    f"Key Vault {self.vault_url}",
                    f"create it (az keyvault secret set --vault-name <vault> --name {name} --value <key>) "
                    "or fix the connection's apiKeySecret",
                ) from None
            except Exception as exc:
                # `from None`: the SDK's exception text carries response bodies into tracebacks.
                raise self._error("read", name, exc) from None
            if secret.value is None:
                raise SecretsError(f"secret {name!r} in Key Vault {self.vault_url} has no value: set one")
            register_secret_value(secret.value)
            tags = dict(secret.properties.tags or {})
            bound = tags.get(HOST_TAG)
            if bound is None:
                self._bind(name, secret.properties.version, {**tags, HOST_TAG: host})
                bound = host
            bound = _host(bound)
            self._remember(name, secret.value, bound)
            if bound != host:
                raise KeyBoundToAnotherHost(name, bound, host)
            return secret.value

    def _bind(self, name: str, version: str | None, tags: dict[str, str]) -> None:
        """Bind a secret stored without a host (before keys were bound, or by hand) to the host of its
        first use: the version read is tagged, so a value written meanwhile is never mislabelled."""
        try:
            self._client.update_secret_properties(name, version, tags=tags)
        except Exception as exc:
            raise self._error("bind", name, exc) from None

    def set(self, name: str, value: str, *, host: str) -> None:
        _check_name(name)
        host = _host(host)
        if not value:
            raise SecretsError(f"refusing to store an empty value in secret {name!r}")
        register_secret_value(value)
        # The host goes in the same write as the value: no reader ever sees one without the other.
        tags = {HOST_TAG: host}
        with self._name_lock(name):
            try:
                try:
                    self._client.set_secret(name, value, tags=tags)
                except ResourceExistsError:
                    # With soft-delete a deleted name can't be reused until it is recovered or purged;
                    # recovering needs less permission than purging and purge protection can't block it.
                    self._client.begin_recover_deleted_secret(name).wait(timeout=_RECOVER_WAIT_SECONDS)
                    self._client.set_secret(name, value, tags=tags)
            except Exception as exc:
                raise self._error("write", name, exc) from None
            self._remember(name, value, host)

    def delete(self, name: str) -> None:
        """Delete the secret (soft-delete where the vault has it); a missing secret is not an error."""
        _check_name(name)
        with self._name_lock(name):
            with self._lock:
                self._cache.pop(name, None)
            try:
                # The DELETE itself takes the secret out of the vault; not waiting for the poller spares
                # the get-permission and the seconds its polling needs.
                self._client.begin_delete_secret(name)
            except ResourceNotFoundError:
                return
            except Exception as exc:
                raise self._error("delete", name, exc) from None

    def close(self) -> None:
        self._client.close()

    def _error(self, action: str, name: str, exc: Exception) -> SecretsError:
        where = f"Key Vault {self.vault_url}"
        if isinstance(exc, ClientAuthenticationError):
            return SecretsError(
                f"could not {action} secret {name!r}: {where} did not accept the app's identity "
                f"({_describe(exc)}); check AZURE_CLIENT_ID names the managed identity assigned to the app"
            )
        if isinstance(exc, HttpResponseError) and exc.status_code == 403:
            role = "Key Vault Secrets User" if action == "read" else "Key Vault Secrets Officer"
            if action == "bind":
                return SecretsError(
                    f"secret {name!r} has no {HOST_TAG} tag and {where} denied adding it ({_describe(exc)}): "
                    f"grant the app's identity the {role} role, or set the tag to the host of the key "
                    f"(az keyvault secret set-attributes --vault-name <vault> --name {name} "
                    f"--tags {HOST_TAG}=<host>)"
                )
            return SecretsError(
                f"could not {action} secret {name!r}: {where} denied access ({_describe(exc)}); "
                f"grant the app's identity the {role} role on the vault"
            )
        if isinstance(exc, ServiceRequestError):
            return SecretsError(
                f"could not {action} secret {name!r}: {where} is unreachable ({type(exc).__name__}); "
                "check KEY_VAULT_URL and the network path (private endpoint, firewall)"
            )
        if isinstance(exc, ValueError):
            # Raised by the client's challenge check when the vault's auth challenge names a resource
            # that does not belong to the vault's host: the token is not sent.
            return SecretsError(
                f"could not {action} secret {name!r}: {where} answered with an authentication challenge "
                "for another domain; check KEY_VAULT_URL is the vault's own URL "
                "(https://<name>.vault.azure.net)"
            )
        return SecretsError(f"could not {action} secret {name!r} in {where}: {_describe(exc)}")


def _describe(exc: Exception) -> str:
    """Status and Key Vault error code, never the response body (which could echo input)."""
    if isinstance(exc, HttpResponseError):
        code = exc.error.code if exc.error is not None else None
        return f"HTTP {exc.status_code}" + (f" {code}" if code else "")
    return type(exc).__name__


class EnvSecrets:
    """Local development only: secret `activecampaign-prod` is read from env var `ACTIVECAMPAIGN_PROD`.

    `set` and `delete` change process memory only: nothing persists, and a restart reads the
    environment again. A value is bound to a host as in Key Vault: by `set`, or for a value from the
    environment by its first read (for the life of the process).
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        # var -> (value, host it is bound to); None: deleted in this process
        self._overrides: dict[str, tuple[str, str] | None] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "EnvSecrets()"  # not the environment, which holds the keys

    @staticmethod
    def env_var(name: str) -> str:
        return name.upper().replace("-", "_")

    def get(self, name: str, *, host: str, refresh: bool = False) -> str:
        var = self._checked_var(name)
        host = _host(host)
        with self._lock:
            if var in self._overrides:
                entry = self._overrides[var]
            else:
                value = self._env.get(var) or None
                entry = None if value is None else self._overrides.setdefault(var, (value, host))
        if entry is None:
            raise SecretNotFound(
                name,
                f"environment variable {var}",
                f"set {var} (e.g. in local.settings.json Values), or set KEY_VAULT_URL to use Key Vault",
            )
        value, bound = entry
        register_secret_value(value)
        if bound != host:
            raise KeyBoundToAnotherHost(name, bound, host)
        return value

    def set(self, name: str, value: str, *, host: str) -> None:
        var = self._checked_var(name)
        host = _host(host)
        if not value:
            raise SecretsError(f"refusing to store an empty value in secret {name!r}")
        register_secret_value(value)
        with self._lock:
            self._overrides[var] = (value, host)

    def delete(self, name: str) -> None:
        var = self._checked_var(name)
        with self._lock:
            self._overrides[var] = None

    def _checked_var(self, name: str) -> str:
        _check_name(name)
        var = self.env_var(name)
        # Otherwise a connection whose apiKeySecret names an app setting would send, say, the
        # storage connection string to ActiveCampaign as its API key.
        if var in {setting.upper() for setting in SETTINGS_READ}:
            raise SecretsError(f"secret name {name!r} maps to app setting {var}; choose another name")
        return var


def _credential(settings: Settings) -> TokenCredential:
    # Imported here: azure.identity is heavy and only needed when Key Vault is used (cold start).
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if settings.running_in_azure and settings.managed_identity_client_id:
        return ManagedIdentityCredential(client_id=settings.managed_identity_client_id)
    # Locally (az login, service principal env vars) or a system-assigned identity in Azure.
    return DefaultAzureCredential(managed_identity_client_id=settings.managed_identity_client_id)


def secrets_from_settings(
    settings: Settings,
    *,
    env: Mapping[str, str] = os.environ,
    credential: TokenCredential | None = None,
    **client_kwargs: Any,
) -> SecretsProvider:
    """Key Vault when KEY_VAULT_URL is set; env vars locally; SettingsError in Azure without a vault.

    `credential` and `client_kwargs` (passed to `SecretClient`) are for tests and special setups.
    """
    if settings.key_vault_url:
        return KeyVaultSecrets(
            settings.key_vault_url,
            credential if credential is not None else _credential(settings),
            cache_seconds=settings.secret_cache_seconds,
            **client_kwargs,
        )
    if settings.running_in_azure:
        raise SettingsError(
            "KEY_VAULT_URL is not set: in Azure the ActiveCampaign API keys are read from Key Vault; set "
            "KEY_VAULT_URL to the vault's URL (https://<name>.vault.azure.net) and grant the app's identity "
            "the Key Vault Secrets User role"
        )
    return EnvSecrets(env)
