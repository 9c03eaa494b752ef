"""Who may do what through the HTTP API. Pure: headers and configuration in, a decision out.

Two modes (app setting `AUTH_MODE`):
- `key` (default): the Functions host already checked the function key (`auth_level=FUNCTION`);
  whoever holds a key is an administrator.
- `entra`: App Service Authentication (Easy Auth) signs the caller in with Microsoft Entra ID and
  passes the identity in `X-MS-CLIENT-PRINCIPAL` (base64 JSON with a `claims` list). The app roles
  below, assigned in Entra ID, decide what the caller may do. App Service removes any
  `X-MS-CLIENT-PRINCIPAL` a client sends, so the header is trustworthy only with Easy Auth on:
  `easy_auth_refusal` says why the API must refuse to serve when the platform does not report it on
  (`WEBSITE_AUTH_ENABLED`).

Only what the platform itself writes is trusted: `auth_typ` must be Entra ID's (`aad`), and roles
and names are read from the fixed claim types Entra ID tokens carry, never from the `role_typ` /
`name_typ` the header names (a forged or relayed principal could point them at any claim).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from shared import boundedjson

__all__ = [
    "ADMIN_ROLE",
    "CONTRIBUTOR_ROLE",
    "ENTRA_AUTH_TYPE",
    "KEY_HOLDER",
    "PRINCIPAL_HEADER",
    "Action",
    "AuthError",
    "AuthMode",
    "Caller",
    "authorize",
    "caller_from_headers",
    "easy_auth_refusal",
    "has_a_role",
    "parse_auth_mode",
    "require_a_role",
]

ADMIN_ROLE = "Exports.Admin"
CONTRIBUTOR_ROLE = "Exports.Contributor"
PRINCIPAL_HEADER = "X-MS-CLIENT-PRINCIPAL"
# Easy Auth's identity-provider id for Microsoft Entra ID; other providers carry no app roles.
ENTRA_AUTH_TYPE = "aad"
# Entra ID tokens carry app roles in the `roles` claim; Easy Auth lists them under that type, and
# (when it maps claims) under the WS-Federation role type it also names as `role_typ`.
_ROLE_CLAIMS = frozenset({"roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"})
_NAME_CLAIMS = ("preferred_username", "name", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn")
# A principal is a few KB; the limits keep a hostile header from costing more than parsing that.
_MAX_PRINCIPAL_CHARS = 64 * 1024
_MAX_PRINCIPAL_DEPTH = 4


class Action(Enum):
    READ_CONNECTIONS = "read connections"
    WRITE_CONNECTIONS = "change connections"
    READ_EXPORTS = "read exports and runs"
    WRITE_EXPORTS = "change exports"
    START_RUN = "start a run"
    # `force` lifts the mirror-mode removal guard; `full` resends every contact, spending the account's
    # whole rate budget. Both widen what a run does beyond what its configuration allows by default.
    START_WIDENED_RUN = "start a run with force or full"
    # What was sent about one person, across runs: personal data beyond any one run's masked view.
    LOOKUP_PERSON = "look up a person in the change logs"
    # Unsubscribes everyone the export subscribed: administrators only.
    WITHDRAW = "withdraw an export's contacts from its list"
    # Administrators; a contributor may cancel a run they started (functions/api_runs.py checks that).
    CANCEL_RUN = "cancel a run someone else started"


@dataclass(frozen=True)
class Caller:
    """The signed-in caller. `name` is for audit logs only (never used to decide)."""

    name: str
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles

    @property
    def is_contributor(self) -> bool:
        return CONTRIBUTOR_ROLE in self.roles


KEY_HOLDER = Caller(name="function-key holder", roles=frozenset({ADMIN_ROLE}))


class AuthError(Exception):
    """The caller may not do this. `status` is 401 (not signed in) or 403 (signed in, not allowed)."""

    def __init__(self, status: Literal[401, 403], code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


AuthMode = Literal["key", "entra"]


def parse_auth_mode(raw: str | None) -> AuthMode | None:
    """The app setting AUTH_MODE as both the settings and function_app.py read it (unset or blank is
    `key`); None for any other value. One reader, because function_app.py decides from it which
    auth level the Functions host enforces on the API routes."""
    text = (raw or "").strip().lower() or "key"
    if text == "key":
        return "key"
    if text == "entra":
        return "entra"
    return None


def caller_from_headers(headers: Mapping[str, str], auth_mode: Literal["key", "entra"]) -> Caller:
    """The caller of a request. Raises AuthError(401) in `entra` mode without a usable principal."""
    if auth_mode == "key":
        return KEY_HOLDER
    raw = _header(headers, PRINCIPAL_HEADER)
    if not raw:
        raise AuthError(
            401,
            "NotSignedIn",
            f"no {PRINCIPAL_HEADER} header: sign in with Microsoft Entra ID (App Service Authentication "
            "must be enabled on the function app when AUTH_MODE=entra)",
        )
    if len(raw) > _MAX_PRINCIPAL_CHARS:
        raise AuthError(401, "BadPrincipal", f"the {PRINCIPAL_HEADER} header is too long to be a principal")
    try:
        principal = boundedjson.loads(base64.b64decode(raw, validate=False), max_depth=_MAX_PRINCIPAL_DEPTH)
    except (binascii.Error, ValueError):
        raise AuthError(
            401, "BadPrincipal", f"the {PRINCIPAL_HEADER} header is not base64-encoded JSON of a principal"
        ) from None
    if not isinstance(principal, dict) or not isinstance(principal.get("claims"), list):
        raise AuthError(401, "BadPrincipal", f"the {PRINCIPAL_HEADER} header has no claims list")
    if principal.get("auth_typ") != ENTRA_AUTH_TYPE:
        raise AuthError(
            401,
            "NotSignedIn",
            f"the caller was not signed in with Microsoft Entra ID (auth_typ must be {ENTRA_AUTH_TYPE!r}): "
            "configure Microsoft as the App Service Authentication identity provider",
        )
    roles: set[str] = set()
    names: dict[str, str] = {}
    for claim in principal["claims"]:
        if not isinstance(claim, dict):
            continue
        typ, val = claim.get("typ"), claim.get("val")
        if not isinstance(typ, str) or not isinstance(val, str):
            continue
        if typ in _ROLE_CLAIMS:
            roles.add(val)
        elif typ in _NAME_CLAIMS:
            names.setdefault(typ, val)
    name = next((names[t] for t in _NAME_CLAIMS if t in names), "unnamed principal")
    return Caller(name=name, roles=frozenset(roles))


def authorize(caller: Caller, action: Action, *, allow_contributors: bool = False) -> None:
    """Raise AuthError(403) unless `caller` may do `action`.

    `allow_contributors` is the `allowContributors` flag of the connection of the export a run is
    started for (only used for START_RUN).
    """
    if caller.is_admin:
        return
    if caller.is_contributor:
        if action is Action.READ_EXPORTS:
            return
        if action is Action.START_WIDENED_RUN:
            raise AuthError(
                403,
                "Forbidden",
                f"only administrators (app role {ADMIN_ROLE}) may start a run with force (lifts the "
                "removal guard) or full (resends every contact); start it without them, or ask an administrator",
            )
        if action is Action.START_RUN:
            if allow_contributors:
                return
            raise AuthError(
                403,
                "Forbidden",
                f"role {CONTRIBUTOR_ROLE} may start runs only for exports whose connection has "
                f"allowContributors: true; ask an administrator ({ADMIN_ROLE}) to start it or to allow it",
            )
        raise AuthError(403, "Forbidden", f"only administrators (app role {ADMIN_ROLE}) may {action.value}")
    raise AuthError(
        403,
        "Forbidden",
        f"you need the app role {ADMIN_ROLE} or {CONTRIBUTOR_ROLE} to {action.value}; "
        "ask an administrator to assign one to you in Microsoft Entra ID",
    )


def has_a_role(caller: Caller) -> bool:
    """Whether the caller holds any role of this app: callers without one learn nothing else."""
    return caller.is_admin or caller.is_contributor


def require_a_role(caller: Caller) -> None:
    """AuthError(403) for a caller with no role of this app, whatever they asked for."""
    if not has_a_role(caller):
        raise AuthError(
            403,
            "Forbidden",
            f"you need the app role {ADMIN_ROLE} or {CONTRIBUTOR_ROLE} to use this API; "
            "ask an administrator to assign one to you in Microsoft Entra ID",
        )


def easy_auth_refusal(auth_mode: Literal["key", "entra"], easy_auth_enabled: bool) -> str | None:
    """Why the API must not serve at all, or None. In `entra` mode the principal header is only
    trustworthy when App Service Authentication strips client-sent copies: without it anyone could
    send an admin principal."""
    if auth_mode != "entra" or easy_auth_enabled:
        return None
    return (
        "AUTH_MODE=entra, but App Service Authentication is not enabled on this function app "
        "(the platform does not report WEBSITE_AUTH_ENABLED=True), so the caller's identity cannot be "
        "trusted and every request is refused: enable Authentication with Microsoft as the identity "
        "provider on the function app, or set AUTH_MODE=key"
    )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # func.HttpRequest headers are case-insensitive already; plain dicts (tests, tools) may not be.
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value
