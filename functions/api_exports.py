"""HTTP API: exports (segment -> ActiveCampaign list). Contributors read, administrators change.

Saving an export never runs it: runs start on the schedule or through POST .../runs.
"""

from __future__ import annotations

import copy
import logging
from datetime import UTC, datetime
from typing import Any

import azure.functions as func

from functions import new_blueprint
from functions.accounts import account
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
from functions.views import export_view, next_scheduled_at, run_location, run_view
from shared.auth import Action, Caller
from shared.config import Connection, ExportConfig, export_to_document, parse_export
from shared.configstore import ConfigSnapshot, check_preconditions, item_etag
from shared.redact import scrub

__all__ = ["HINT", "bp", "export_feedback", "export_item", "exports_list"]

log = logging.getLogger(__name__)
bp = new_blueprint()

HINT = "list them with GET /api/exports"


@bp.function_name("exports_list")
@bp.route(route="exports", methods=["GET"])
@api_route(Action.READ_EXPORTS)
def exports_list(req: func.HttpRequest, svc: Services, caller: Caller) -> func.HttpResponse:
    snapshot = svc.config.read()
    items = [_view(svc, name, item, snapshot) for name, item in sorted(snapshot.document["exports"].items())]
    return json_response({"exports": items})


@bp.function_name("export_item")
@bp.route(route="exports/{name}", methods=["GET", "PUT", "DELETE"])
@api_route({"GET": Action.READ_EXPORTS, "PUT": Action.WRITE_EXPORTS, "DELETE": Action.WRITE_EXPORTS})
def export_item(req: func.HttpRequest, svc: Services, caller: Caller) -> func.HttpResponse:
    name = req.route_params["name"]
    if req.method == "GET":
        snapshot = svc.config.read()
        item = snapshot.item("exports", name)
        if item is None:
            raise not_found("export", name, HINT)
        return json_response(_view(svc, name, item, snapshot), headers={"ETag": item_etag(item)})
    response = _put(svc, req, name) if req.method == "PUT" else _delete(svc, req, name)
    log.info("export %s: %s by %s", name, req.method, scrub(caller.name))
    return response


@bp.function_name("export_feedback")
@bp.route(route="exports/{name}/feedback", methods=["GET"])
@api_route(Action.READ_EXPORTS)
def export_feedback(req: func.HttpRequest, svc: Services, caller: Caller) -> func.HttpResponse:
    """The export's feedback folder: when it was last written, what it holds, and where (issue 26)."""
    from shared import feedback  # numpy and the CDM writer: not loaded with function_app.py
    from shared.config import FeedbackTarget

    name = req.route_params["name"]
    item = svc.config.read().item("exports", name)
    if item is None:
        raise not_found("export", name, HINT)
    configured = item.get("feedback")
    target = (
        FeedbackTarget(str(configured["container"]), str(configured["folder"]))
        if isinstance(configured, dict)
        else None
    )
    customer_url = svc.segment_blobs.url if target is not None else None
    return json_response(feedback.summary(svc.app_container, name, target, customer_url))


def _view(svc: Services, name: str, item: dict[str, Any], snapshot: ConfigSnapshot) -> dict[str, Any]:
    runs = svc.runs.list(name, limit=1)
    next_at = next_scheduled_at(item, svc.settings.export_schedule, datetime.now(UTC))
    connection = snapshot.item("connections", str(item.get("connection")))
    shown = str(connection["displayName"]) if connection and connection.get("displayName") else None
    return export_view(name, item, runs[0] if runs else None, svc.decisions.get(name), next_at, shown)


def _put(svc: Services, req: func.HttpRequest, name: str) -> func.HttpResponse:
    body = read_json_object(req)
    current = svc.config.read()
    existing = current.item("exports", name)
    check_preconditions(existing, **conditions(req), what=f"export {name!r}")
    export = parse_export(name, body, current.config.connections)
    warnings = _check_target(svc, current.config.connections[export.connection], export)
    item = export_to_document(export)

    def change(snapshot: ConfigSnapshot) -> dict[str, Any]:
        check_preconditions(snapshot.item("exports", name), **conditions(req), what=f"export {name!r}")
        if export.connection not in snapshot.config.connections:
            raise ApiError(
                409, "ConnectionDeleted", f"connection {export.connection!r} was deleted meanwhile"
            )
        doc = copy.deepcopy(snapshot.document)
        doc["exports"][name] = item
        return doc

    view = _view(svc, name, item, svc.config.update(change))
    view["warnings"] = warnings
    return json_response(
        view,
        status=200 if existing else 201,
        headers={"ETag": item_etag(item), "Location": f"/api/exports/{name}"},
    )


def _check_target(svc: Services, connection: Connection, export: ExportConfig) -> list[str]:
    """The list exists, mapped custom fields exist, mapped columns exist in the newest snapshot.

    Returns warnings for what cannot be checked yet (no snapshot exported so far).
    """
    from shared.activecampaign import ListNotFound
    from shared.mapping import MappingError, RowMapper
    from shared.pipeline import preflight
    from shared.secrets import SecretNotFound, connection_key
    from shared.segments import SegmentError, SegmentReader

    try:
        key = connection_key(svc.secrets, connection.name, connection.api_key_secret, connection.hostname)
    except SecretNotFound:
        raise ApiError(
            409,
            "ApiKeyMissing",
            f"connection {connection.name!r} has no stored API key: PUT /api/connections/{connection.name} "
            "with apiKey first",
        ) from None
    with account(svc.settings, connection.hostname, key, connection=connection.name) as client:
        try:
            field_ids, converters, _ = preflight(client, export)  # the pipeline's own first step
        except ListNotFound:
            raise ApiError(
                400,
                "ListNotFound",
                f"listId {export.list_id} does not exist in the ActiveCampaign account of connection "
                f"{connection.name!r}: check the list's id in ActiveCampaign (Contacts > Lists)",
            ) from None
        except MappingError as exc:
            raise ApiError(400, "MappingInvalid", f"mapping.fields: {exc}") from None
    source = export.source
    where = f"container {source.container!r}, folder {source.folder!r}, segment {source.segment!r}"
    try:
        snapshot = SegmentReader(svc.segment_blobs, source).latest_snapshot()
    except SegmentError as exc:
        return [f"the segment could not be read yet, so the mapped columns were not checked: {exc}"]
    if snapshot is None:
        return [f"no snapshot of the segment exists yet ({where}), so the mapped columns were not checked"]
    try:
        RowMapper(export.mapping, snapshot.columns, field_ids, converters=converters)
    except MappingError as exc:
        raise ApiError(400, "MappingInvalid", f"mapping: {exc}") from None
    return []


def _delete(svc: Services, req: func.HttpRequest, name: str) -> func.HttpResponse:
    keep_history = options(req, ("keepHistory",), "deleting an export")["keepHistory"]
    active = svc.runs.active(name)
    if active is not None:
        # Deleting forgets who the export put on its list; a run still sending would be cut off half-way.
        location = run_location(name, active.run_id)
        raise ApiError(
            409,
            "RunActive",
            f"export {name!r} has run {active.run_id} {active.status}: cancel it (POST {location}/cancel) "
            "or let it finish, then delete the export. To take the export's contacts off its list first, "
            f'run a withdraw (POST /api/exports/{name}/runs with {{"withdraw": true}}) before deleting it',
            extra={"activeRun": run_view(active)},
        )

    def change(snapshot: ConfigSnapshot) -> dict[str, Any]:
        item = snapshot.item("exports", name)
        if item is None:
            raise not_found("export", name, HINT)
        check_preconditions(item, **conditions(req), what=f"export {name!r}")
        doc = copy.deepcopy(snapshot.document)
        del doc["exports"][name]
        return doc

    svc.config.update(change)
    # A decision about a deleted export would show against a new export of the same name.
    svc.decisions.delete(name)
    purge_deleted_exports(svc, [name], keep_history=keep_history)
    return no_content()
