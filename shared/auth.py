"""Who may do what through the HTTP API. Pure: headers and configuration in, a decision out.

Two modes (app setting `AUTH_MODE`):
- `key` (default): the Functions host already checked the function key (`auth_level=FUNCTION`);
  whoever holds a key is an administrator.
- `entra`: App Service Authentication (Easy Auth) signs the caller in with Microsoft Entra ID and
  passes the identity in `X-MS-CLIENT-PRINCIPAL` (base64 JSON with a `claims` list). The app roles
  below, assigned in Entra ID, decide what the caller may do. App Service removes any
  `X-MS-CLIENT-PRINCIPAL` a client sends, so the header is trustworthy only with Easy Auth on:
  never use this mode without it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Literal

ADMIN_ROLE = "Exports.Admin"
CONTRIBUTOR_ROLE = "Exports.Contributor"
PRINCIPAL_HEADER = "X-MS-CLIENT-PRINCIPAL"
# Entra ID tokens carry app roles in the "roles" claim; Easy Auth may also name its own role claim
# type in "role_typ".
_ROLE_CLAIM = "roles"
_NAME_CLAIMS = ("preferred_username", "name", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn")


class Action(Enum):
    READ_CONNECTIONS = "read connections"
    WRITE_CONNECTIONS = "change connections"
    READ_EXPORTS = "read exports and runs"
    WRITE_EXPORTS = "change exports"
    START_RUN = "start a run"


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
    try:
        principal = json.loads(base64.b64decode(raw, validate=False))
    except (binascii.Error, ValueError):
        raise AuthError(
            401, "BadPrincipal", f"the {PRINCIPAL_HEADER} header is not base64-encoded JSON"
        ) from None
    if not isinstance(principal, dict) or not isinstance(principal.get("claims"), list):
        raise AuthError(401, "BadPrincipal", f"the {PRINCIPAL_HEADER} header has no claims list")
    role_types = {_ROLE_CLAIM}
    if isinstance(principal.get("role_typ"), str):
        role_types.add(principal["role_typ"])
    roles: set[str] = set()
    names: dict[str, str] = {}
    for claim in principal["claims"]:
        if not isinstance(claim, dict):
            continue
        typ, val = claim.get("typ"), claim.get("val")
        if not isinstance(typ, str) or not isinstance(val, str):
            continue
        if typ in role_types:
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


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # func.HttpRequest headers are case-insensitive already; plain dicts (tests, tools) may not be.
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value
