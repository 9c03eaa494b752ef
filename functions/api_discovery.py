"""HTTP API: what a connection's ActiveCampaign account holds (lists, custom fields, tags).

Read through ActiveCampaign page by page as it pages (`limit` at most 100, `offset`), so a mapping
can be written against the real perstags and list ids. Administrators only, like connections.
"""

from __future__ import annotations

import azure.functions as func

from functions import new_blueprint
from functions.accounts import account, stored_key
from functions.http import int_param, json_response, not_found
from functions.services import Services, api_route
from shared.auth import Action, Caller
from shared.discovery import PAGE_MAX, page_view, total_of

__all__ = ["bp", "connection_fields", "connection_lists", "connection_tags"]

bp = new_blueprint()
_HINT = "list them with GET /api/connections"


def _discover(req: func.HttpRequest, svc: Services, resource: str) -> func.HttpResponse:
    name = req.route_params["name"]
    connection = svc.config.read().config.connections.get(name)
    if connection is None:
        raise not_found("connection", name, _HINT)
    limit = int_param(req.params, "limit", PAGE_MAX, 1, PAGE_MAX)
    offset = int_param(req.params, "offset", 0, 0, 10_000_000)
    key = stored_key(svc, connection)
    with account(svc.settings, connection.hostname, key, connection=name) as client:
        body = client.page(resource, limit=limit, offset=offset)
    items = page_view(resource, body)
    total = total_of(body)
    following = offset + len(items)
    more = bool(items) and (total is None or following < total)
    return json_response(
        {
            resource: items,
            "total": total,
            "limit": limit,
            "offset": offset,
            "next": f"/api/connections/{name}/{resource}?limit={limit}&offset={following}" if more else None,
        }
    )


@bp.function_name("connection_lists")
@bp.route(route="connections/{name}/lists", methods=["GET"])
@api_route(Action.READ_CONNECTIONS)
def connection_lists(req: func.HttpRequest, svc: Services, caller: Caller) -> func.HttpResponse:
    return _discover(req, svc, "lists")


@bp.function_name("connection_fields")
@bp.route(route="connections/{name}/fields", methods=["GET"])
@api_route(Action.READ_CONNECTIONS)
def connection_fields(req: func.HttpRequest, svc: Services, caller: Caller) -> func.HttpResponse:
    return _discover(req, svc, "fields")


@bp.function_name("connection_tags")
@bp.route(route="connections/{name}/tags", methods=["GET"])
@api_route(Action.READ_CONNECTIONS)
def connection_tags(req: func.HttpRequest, svc: Services, caller: Caller) -> func.HttpResponse:
    return _discover(req, svc, "tags")
