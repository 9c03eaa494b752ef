import base64
import json

import pytest

from shared.auth import (
    ADMIN_ROLE,
    CONTRIBUTOR_ROLE,
    PRINCIPAL_HEADER,
    Action,
    AuthError,
    Caller,
    authorize,
    caller_from_headers,
    easy_auth_refusal,
    require_a_role,
)


def principal(*roles: str, name: str = "ada@example.com", role_typ: str | None = None) -> str:
    claims = [{"typ": "preferred_username", "val": name}]
    claims += [{"typ": role_typ or "roles", "val": role} for role in roles]
    doc: dict[str, object] = {"auth_typ": "aad", "claims": claims}
    if role_typ:
        doc["role_typ"] = role_typ
    return base64.b64encode(json.dumps(doc).encode()).decode()


def test_key_mode_makes_every_caller_an_admin_whatever_the_headers():
    caller = caller_from_headers({PRINCIPAL_HEADER: principal()}, "key")
    assert caller.is_admin


def test_entra_mode_reads_roles_and_name_from_the_principal():
    caller = caller_from_headers({PRINCIPAL_HEADER: principal(CONTRIBUTOR_ROLE, "Other")}, "entra")
    assert caller.roles == frozenset({CONTRIBUTOR_ROLE, "Other"})
    assert caller.name == "ada@example.com"
    assert caller.is_contributor
    assert not caller.is_admin


def test_entra_mode_honours_the_role_claim_type_easy_auth_names():
    role_typ = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
    caller = caller_from_headers({"x-ms-client-principal": principal(ADMIN_ROLE, role_typ=role_typ)}, "entra")
    assert caller.is_admin


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "NotSignedIn"),
        ({PRINCIPAL_HEADER: "%%% not base64 %%%"}, "BadPrincipal"),
        ({PRINCIPAL_HEADER: base64.b64encode(b"[1, 2]").decode()}, "BadPrincipal"),
        ({PRINCIPAL_HEADER: base64.b64encode(b'{"claims": "x"}').decode()}, "BadPrincipal"),
    ],
)
def test_entra_mode_without_a_usable_principal_is_401(headers, code):
    with pytest.raises(AuthError) as raised:
        caller_from_headers(headers, "entra")
    assert raised.value.status == 401
    assert raised.value.code == code


ADMIN = Caller("a", frozenset({ADMIN_ROLE}))
CONTRIBUTOR = Caller("c", frozenset({CONTRIBUTOR_ROLE}))
NOBODY = Caller("n", frozenset({"Something.Else"}))


@pytest.mark.parametrize(
    ("caller", "action", "allow_contributors", "allowed"),
    [
        (ADMIN, Action.READ_CONNECTIONS, False, True),
        (ADMIN, Action.WRITE_CONNECTIONS, False, True),
        (ADMIN, Action.WRITE_EXPORTS, False, True),
        (ADMIN, Action.START_RUN, False, True),
        (CONTRIBUTOR, Action.READ_CONNECTIONS, True, False),
        (CONTRIBUTOR, Action.WRITE_CONNECTIONS, True, False),
        (CONTRIBUTOR, Action.READ_EXPORTS, False, True),
        (CONTRIBUTOR, Action.WRITE_EXPORTS, True, False),
        (CONTRIBUTOR, Action.START_RUN, True, True),
        (CONTRIBUTOR, Action.START_RUN, False, False),
        (NOBODY, Action.READ_EXPORTS, True, False),
        (NOBODY, Action.START_RUN, True, False),
        (ADMIN, Action.START_WIDENED_RUN, False, True),
        (CONTRIBUTOR, Action.START_WIDENED_RUN, True, False),
        (NOBODY, Action.START_WIDENED_RUN, True, False),
    ],
)
def test_authorization_matrix(caller, action, allow_contributors, allowed):
    if allowed:
        authorize(caller, action, allow_contributors=allow_contributors)
        return
    with pytest.raises(AuthError) as raised:
        authorize(caller, action, allow_contributors=allow_contributors)
    assert raised.value.status == 403
    # The reason names the role that would be needed.
    assert ADMIN_ROLE in raised.value.message


def _encoded(doc: object) -> str:
    return base64.b64encode(json.dumps(doc).encode()).decode()


@pytest.mark.parametrize("auth_typ", [None, "github", "google", "AAD ", ""])
def test_entra_mode_accepts_only_principals_signed_in_by_entra_id(auth_typ):
    doc: dict[str, object] = {"claims": [{"typ": "roles", "val": ADMIN_ROLE}]}
    if auth_typ is not None:
        doc["auth_typ"] = auth_typ
    with pytest.raises(AuthError) as raised:
        caller_from_headers({PRINCIPAL_HEADER: _encoded(doc)}, "entra")
    assert raised.value.status == 401
    assert "aad" in raised.value.message


def test_entra_mode_ignores_the_role_claim_type_the_header_names():
    # A principal pointing role_typ at a claim the caller controls (a name, a group display name)
    # would otherwise turn that claim's value into a role.
    doc = {
        "auth_typ": "aad",
        "role_typ": "preferred_username",
        "claims": [{"typ": "preferred_username", "val": ADMIN_ROLE}, {"typ": "groups", "val": ADMIN_ROLE}],
    }
    caller = caller_from_headers({PRINCIPAL_HEADER: _encoded(doc)}, "entra")
    assert caller.roles == frozenset()
    with pytest.raises(AuthError):
        require_a_role(caller)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"auth_typ": "aad", "claims": [' + b"[" * 5000 + b"]" * 5000 + b"]}",
        b'{"auth_typ": "aad", "claims": [{"typ": "roles", "val": {"a": {"b": {"c": 1}}}}]}',
    ],
)
def test_a_deeply_nested_principal_is_401(raw):
    with pytest.raises(AuthError) as raised:
        caller_from_headers({PRINCIPAL_HEADER: base64.b64encode(raw).decode()}, "entra")
    assert raised.value.status == 401


def test_an_oversized_principal_is_401():
    with pytest.raises(AuthError) as raised:
        caller_from_headers({PRINCIPAL_HEADER: "A" * 100_000}, "entra")
    assert raised.value.status == 401


def test_entra_mode_is_refused_without_app_service_authentication():
    assert easy_auth_refusal("key", False) is None
    assert easy_auth_refusal("entra", True) is None
    refusal = easy_auth_refusal("entra", False)
    assert refusal is not None
    assert "WEBSITE_AUTH_ENABLED" in refusal
