"""HTTP API: connections (ActiveCampaign accounts). Administrators only.

The API key is write-only: accepted as `apiKey` in a PUT body, checked against ActiveCampaign, stored
in the secrets provider under the connection's `apiKeySecret`, and never returned or logged.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import azure.functions as func

from functions import new_blueprint
from functions.accounts import account, default_secret_name, refuse_stored_key_for_another_host, stored_key
from functions.http import (
    ApiError,
    conditions,
    json_response,
    no_content,
    not_found,
    options,
    read_json_object,
)
from functions.resources import purge_deleted_exports
from functions.services import Services, api_route
from functions.views import connection_view
from shared.apikey import ApiKeyInvalid, check_api_key
from shared.auth import Action, Caller
from shared.config import connection_to_document, parse_connection
from shared.configstore import ConfigSnapshot, check_preconditions, item_etag
from shared.redact import scrub

__all__ = ["bp", "connection_item", "connections_list"]

log = logging.getLogger(__name__)
bp = new_blueprint()

_HINT = "list them with GET /api/connections"


@bp.function_name("connections_list")
@bp.route(route="connections", methods=["GET"])
@api_route(Action.READ_CONNECTIONS)
def connections_list(req: func.HttpRequest, svc: Services, caller: Caller) -> func.HttpResponse:
    snapshot = svc.config.read()
    items = [connection_view(name, item) for name, item in sorted(snapshot.document["connections"].items())]
    return json_response({"connections": items})


@bp.function_name("connection_item")
@bp.route(route="connections/{name}", methods=["GET", "PUT", "DELETE"])
@api_route(
    {"GET": Action.READ_CONNECTIONS, "PUT": Action.WRITE_CONNECTIONS, "DELETE": Action.WRITE_CONNECTIONS}
)
def connection_item(req: func.HttpRequest, svc: Services, caller: Caller) -> func.HttpResponse:
    name = req.route_params["name"]
    if req.method == "GET":
        item = svc.config.read().item("connections", name)
        if item is None:
            raise not_found("connection", name, _HINT)
        return json_response(connection_view(name, item), headers={"ETag": item_etag(item)})
    response = _put(svc, req, name) if req.method == "PUT" else _delete(svc, req, name)
    log.info("connection %s: %s by %s", name, req.method, scrub(caller.name))
    return response


def _put(svc: Services, req: func.HttpRequest, name: str) -> func.HttpResponse:
    body = read_json_object(req)
    api_key = body.pop("apiKey", None)
    if api_key is not None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise ApiError(
                400, "ValidationFailed", "apiKey must be the ActiveCampaign API key as a non-empty string"
            )
        try:
            api_key = check_api_key(api_key)
        except ApiKeyInvalid as exc:
            raise ApiError(400, "ValidationFailed", f"apiKey: {exc}") from None
    current = svc.config.read()
    existing = current.item("connections", name)
    # Fail fast on a stale If-Match, before ActiveCampaign is called; checked again when writing.
    check_preconditions(existing, **conditions(req), what=f"connection {name!r}")
    if "apiKeySecret" not in body:
        body["apiKeySecret"] = existing["apiKeySecret"] if existing else default_secret_name(name)
    settings = svc.settings
    connection = parse_connection(
        name,
        body,
        allowed_suffixes=settings.allowed_host_suffixes,
        allow_loopback=not settings.running_in_azure,
    )
    if not connection.data_privacy_consent:
        raise ApiError(
            400,
            "ConsentRequired",
            "set dataPrivacyConsent: true to confirm that profile data (including personal data) may leave your "
            "compliance boundary for ActiveCampaign, which must meet your privacy and security obligations",
        )
    if api_key is None:
        refuse_stored_key_for_another_host(current, name, connection)
    key = api_key if api_key else stored_key(svc, connection)
    with account(settings, connection.hostname, key, connection=name) as client:
        client.check_connection()
    if api_key:
        svc.secrets.set(connection.api_key_secret, key, host=connection.hostname)
    item = connection_to_document(connection)

    def change(snapshot: ConfigSnapshot) -> dict[str, Any]:
        check_preconditions(
            snapshot.item("connections", name), **conditions(req), what=f"connection {name!r}"
        )
        doc = copy.deepcopy(snapshot.document)
        doc["connections"][name] = item
        return doc

    svc.config.update(change)
    return json_response(
        connection_view(name, item),
        status=200 if existing else 201,
        headers={"ETag": item_etag(item), "Location": f"/api/connections/{name}"},
    )


def _delete(svc: Services, req: func.HttpRequest, name: str) -> func.HttpResponse:
    chosen = options(req, ("cascade", "keepHistory"), "deleting a connection")
    cascade, keep_history = chosen["cascade"], chosen["keepHistory"]
    removed: dict[str, Any] = {}

    def change(snapshot: ConfigSnapshot) -> dict[str, Any]:
        item = snapshot.item("connections", name)
        if item is None:
            raise not_found("connection", name, _HINT)
        check_preconditions(item, **conditions(req), what=f"connection {name!r}")
        users = sorted(e.name for e in snapshot.config.exports.values() if e.connection == name)
        if users and not cascade:
            raise ApiError(
                409,
                "ConnectionInUse",
                f"connection {name!r} is used by exports {', '.join(users)}: delete them first, or repeat with "
                '{"cascade": true} to delete them too (their runs stop before the next batch)',
            )
        doc = copy.deepcopy(snapshot.document)
        del doc["connections"][name]
        for export in users:
            del doc["exports"][export]
        removed.update(secret=item["apiKeySecret"], exports=users)
        return doc

    after = svc.config.update(change)
    secret = removed["secret"]
    if all(c.api_key_secret != secret for c in after.config.connections.values()):
        _forget_key(svc, secret, name)
    if removed["exports"]:
        log.info("connection %s deleted with its exports %s", name, ", ".join(removed["exports"]))
        for export in removed["exports"]:
            svc.decisions.delete(export)
        purge_deleted_exports(svc, removed["exports"], keep_history=keep_history)
    return no_content()


def _forget_key(svc: Services, secret: str, name: str) -> None:
    from shared.secrets import SecretsError

    try:
        svc.secrets.delete(secret)
    except SecretsError as exc:
        # The connection is gone already; a leftover secret is worth a warning, not a failed request.
        log.warning("connection %s deleted, but its API key secret %r was not: %s", name, secret, exc)
