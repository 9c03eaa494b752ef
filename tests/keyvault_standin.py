"""A Key Vault stand-in: real HTTPS on loopback, speaking enough of the secrets REST API for `SecretClient`.

No Key Vault emulator installs offline, so the real `azure.keyvault.secrets.SecretClient` talks to this
instead. It serves get/set/delete of secrets (soft-delete, recover, purge), Key Vault's JSON shapes and
error bodies, and its challenge-based authentication: a request without a bearer token gets 401 with a
`WWW-Authenticate` challenge naming the authority and resource, and only `accepted_token` is let in.
Everything received is recorded in `requests` so tests can assert the protocol, not just the result.
"""

from __future__ import annotations

import hashlib
import json
import re
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions

TENANT_ID = "72f988bf-0000-4000-8000-000000000000"
AUTHORITY = f"https://login.microsoftonline.com/{TENANT_ID}"
# What real vaults put in their challenge; the client turns it into the scope it asks a token for.
RESOURCE = "https://vault.azure.net"
SCOPE = f"{RESOURCE}/.default"
_NAME_RE = re.compile(r"^[0-9A-Za-z-]{1,127}$")
# (status, extra headers, JSON payload or None)
Response = tuple[int, dict[str, str], Any]
_PATH_RE = re.compile(r"^/(secrets|deletedsecrets)/([^/]+)(?:/([^/]*))?/?$")


class StaticTokenCredential:
    """Hands out one fixed token: there is no Entra ID offline, so this is the one piece mocked.

    Records the scopes and tenants asked for, so tests can check the challenge was honoured.
    """

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes_requested: list[tuple[str, ...]] = []
        self.tenants_requested: list[str | None] = []

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        self.scopes_requested.append(scopes)
        self.tenants_requested.append(tenant_id)
        return AccessToken(self.token, int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        self.scopes_requested.append(scopes)
        self.tenants_requested.append((options or {}).get("tenant_id"))
        return AccessTokenInfo(self.token, int(time.time()) + 3600)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: Mapping[str, list[str]]
    authorization: str | None
    status: int

    @property
    def api_version(self) -> str | None:
        values = self.query.get("api-version")
        return values[0] if values else None


@dataclass
class _Version:
    version: str
    value: str
    content_type: str | None
    tags: dict[str, str] | None
    created: int


@dataclass
class VaultState:
    """What the vault holds. `secrets` maps name -> current value and may be edited directly."""

    secrets: dict[str, str] = field(default_factory=dict)
    deleted: dict[str, str] = field(default_factory=dict)
    versions: dict[tuple[str, str], _Version] = field(default_factory=dict)


def _version_id(name: str, value: str) -> str:
    # Derived from the value so secrets seeded straight into the dict still have a stable version.
    return hashlib.sha256(f"{name}\0{value}".encode()).hexdigest()[:32]


class KeyVaultStandIn:
    """The server. `start()` listens on a free loopback port; `vault_url` is its base URL."""

    def __init__(self, server_context: ssl.SSLContext, *, accepted_token: str, forbidden_token: str) -> None:
        self.accepted_token = accepted_token
        self.forbidden_token = forbidden_token
        self.state = VaultState()
        self.requests: list[RecordedRequest] = []
        # (name, version, tags) of every property update, in order
        self.patches: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        # Handshake lazily, on the connection's own thread, so one stuck client can't block accept().
        self._server.socket = server_context.wrap_socket(
            self._server.socket, server_side=True, do_handshake_on_connect=False
        )
        self._server.standin = self  # type: ignore[attr-defined]
        # A short poll interval: shutdown waits for one poll, and every test stops a server.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="keyvault-standin", daemon=True
        )

    @property
    def vault_url(self) -> str:
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    @property
    def secrets(self) -> dict[str, str]:
        return self.state.secrets

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def rotate(self, name: str, value: str, *, tags: dict[str, str] | None = None) -> None:
        """Give `name` a new current version, as `az keyvault secret set [--tags]` would."""
        with self._lock:
            self.state.secrets[name] = value
            if tags is not None:
                self._current(name, tags=tags)

    def tags(self, name: str) -> dict[str, str] | None:
        """The tags of the current version of `name`."""
        with self._lock:
            return self._current(name).tags

    def requests_for(self, method: str, path_prefix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    # --- request handling (called on server threads) ---

    def handle(
        self, method: str, path: str, query: Mapping[str, list[str]], auth: str | None, body: bytes
    ) -> Response:
        status, headers, payload = self._dispatch(method, path, query, auth, body)
        with self._lock:
            self.requests.append(RecordedRequest(method, path, query, auth, status))
        return status, headers, payload

    def _dispatch(
        self, method: str, path: str, query: Mapping[str, list[str]], auth: str | None, body: bytes
    ) -> Response:
        # Key Vault checks authentication before anything else, which is what makes the client's
        # bodiless discovery request work.
        challenge = {"WWW-Authenticate": f'Bearer authorization="{AUTHORITY}", resource="{RESOURCE}"'}
        if not auth or not auth.startswith("Bearer "):
            return (
                401,
                challenge,
                _error("Unauthorized", "AKV10000: Request is missing a Bearer or PoP token"),
            )
        token = auth.removeprefix("Bearer ")
        if token == self.forbidden_token:
            denied = "Caller is not authorized to perform action on resource."
            return 403, {}, _error("Forbidden", denied, inner="ForbiddenByRbac")
        if token != self.accepted_token:
            return 401, challenge, _error("Unauthorized", "AKV10032: Invalid issuer.")
        if not query.get("api-version"):
            return (
                400,
                {},
                _error("BadParameter", "The request URI contains an invalid or missing api-version"),
            )
        match = _PATH_RE.match(path)
        if match is None:
            return 404, {}, _error("NotFound", f"Path not found: {path}")
        collection, name, rest = match.group(1), match.group(2), match.group(3) or ""
        if not _NAME_RE.match(name):
            return 400, {}, _error("BadParameter", "The request URI contains an invalid name: " + name)
        with self._lock:
            if collection == "secrets":
                return self._secrets(method, name, rest, body)
            return self._deleted(method, name, rest)

    def _secrets(self, method: str, name: str, version: str, body: bytes) -> Response:
        state = self.state
        if method == "GET":
            if name not in state.secrets:
                return 404, {}, _not_found(name)
            if not version:
                return 200, {}, self._bundle(name, self._current(name))
            stored = state.versions.get((name, version))
            if stored is None:
                return 404, {}, _not_found(f"{name}/{version}")
            return 200, {}, self._bundle(name, stored)
        if method == "PUT" and not version:
            if name in state.deleted:
                reused = (
                    f"Secret {name} is currently in a deleted but recoverable state, and its name cannot be "
                    "reused; in this state, the secret can only be recovered or purged."
                )
                return 409, {}, _error("Conflict", reused, inner="ObjectIsDeletedButRecoverable")
            try:
                document = json.loads(body)
                value = document["value"]
            except (ValueError, KeyError, TypeError):
                return 400, {}, _error("BadParameter", "Property value is required.")
            if not isinstance(value, str):
                return 400, {}, _error("BadParameter", "Property value must be a string.")
            state.secrets[name] = value
            stored = self._current(name, content_type=document.get("contentType"), tags=document.get("tags"))
            return 200, {}, self._bundle(name, stored)
        if method == "PATCH" and version:
            # Update a version's properties (tags, content type), its value untouched.
            stored = state.versions.get((name, version))
            if name not in state.secrets or stored is None:
                return 404, {}, _not_found(f"{name}/{version}")
            try:
                document = json.loads(body)
            except ValueError:
                return 400, {}, _error("BadParameter", "The request body is not valid JSON.")
            if "tags" in document:
                stored.tags = document["tags"]
            if "contentType" in document:
                stored.content_type = document["contentType"]
            self.patches.append((name, version, dict(document.get("tags") or {})))
            return 200, {}, self._bundle(name, stored)
        if method == "DELETE" and not version:
            if name not in state.secrets:
                return 404, {}, _not_found(name)
            current = self._current(name)
            state.deleted[name] = state.secrets.pop(name)
            return 200, {}, self._deleted_bundle(name, current)
        return 405, {}, _error("BadParameter", f"{method} is not supported on this resource.")

    def _deleted(self, method: str, name: str, action: str) -> Response:
        state = self.state
        if name not in state.deleted:
            return 404, {}, _error("SecretNotFound", f"Deleted Secret not found: {name}")
        if method == "GET" and not action:
            return 200, {}, self._deleted_bundle(name, self._stored(name, state.deleted[name]))
        if method == "POST" and action == "recover":
            state.secrets[name] = state.deleted.pop(name)
            return 200, {}, self._bundle(name, self._current(name))
        if method == "DELETE" and not action:
            del state.deleted[name]
            return 204, {}, None
        return 405, {}, _error("BadParameter", f"{method} is not supported on this resource.")

    def _stored(self, name: str, value: str) -> _Version:
        key = (name, _version_id(name, value))
        if key not in self.state.versions:
            self.state.versions[key] = _Version(key[1], value, None, None, int(time.time()))
        return self.state.versions[key]

    def _current(
        self, name: str, *, content_type: str | None = None, tags: dict[str, str] | None = None
    ) -> _Version:
        stored = self._stored(name, self.state.secrets[name])
        if content_type is not None or tags is not None:
            stored.content_type, stored.tags = content_type, tags
        return stored

    def _bundle(self, name: str, stored: _Version) -> dict[str, Any]:
        bundle: dict[str, Any] = {
            "value": stored.value,
            "id": f"{self.vault_url}/secrets/{name}/{stored.version}",
            "attributes": {
                "enabled": True,
                "created": stored.created,
                "updated": stored.created,
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
            },
        }
        if stored.content_type is not None:
            bundle["contentType"] = stored.content_type
        if stored.tags is not None:
            bundle["tags"] = stored.tags
        return bundle

    def _deleted_bundle(self, name: str, stored: _Version) -> dict[str, Any]:
        now = int(time.time())
        return {
            **self._bundle(name, stored),
            "recoveryId": f"{self.vault_url}/deletedsecrets/{name}",
            "deletedDate": now,
            "scheduledPurgeDate": now + 90 * 86400,
        }


def _not_found(name_or_id: str) -> dict[str, Any]:
    return _error("SecretNotFound", f"A secret with (name/id) {name_or_id} was not found in this key vault.")


def _error(code: str, message: str, *, inner: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return {"error": error}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real service; every response has a length

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        standin: KeyVaultStandIn = self.server.standin  # type: ignore[attr-defined]
        status, headers, payload = standin.handle(
            self.command, url.path, parse_qs(url.query), self.headers.get("Authorization"), body
        )
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if data:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_DELETE = do_POST = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet: pytest shows `requests` on failure, and stderr noise would bury it.
        return
