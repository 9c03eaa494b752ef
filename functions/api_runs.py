"""HTTP API: start a run on demand (or a withdraw run), follow runs (status, live counts, timings,
reports) and cancel them.

Starting only records the run and queues a message: the queue worker does the work, because an
HTTP request is cut at 230 s and an export can take far longer. Cancelling stores a request the
worker sees at its next batch boundary (shared/cancel.py).
"""

from __future__ import annotations

import logging

import azure.functions as func

from functions import new_blueprint
from functions.http import (
    ApiError,
    int_param,
    json_response,
    not_found,
    options,
    read_json_object,
)
from functions.resources import EXPORTS_HINT, export_or_404, run_or_404
from functions.services import Services, api_route
from functions.views import run_location, run_view
from shared.auth import Action, AuthError, Caller, authorize, require_a_role
from shared.redact import hash_email, scrub
from shared.runs import RunActive, RunRecord

__all__ = ["bp", "export_reset", "export_run", "export_run_cancel", "export_runs"]

log = logging.getLogger(__name__)
bp = new_blueprint()

_OPTIONS = ("dryRun", "full", "force", "withdraw")


@bp.function_name("export_runs")
@bp.route(route="exports/{name}/runs", methods=["GET", "POST"])
@api_route({"GET": Action.READ_EXPORTS, "POST": None})  # POST: authorized by the export's connection
def export_runs(req: func.HttpRequest, svc: Services, caller: Caller) -> func.HttpResponse:
    name = req.route_params["name"]
    if req.method == "GET":
        export_or_404(svc, name)
        limit = int_param(req.params, "limit", 20, 1, 100)
        return json_response({"runs": [run_view(r) for r in svc.runs.list(name, limit=limit)]})
    return _start(svc, req, caller, name)


def _start(svc: Services, req: func.HttpRequest, caller: Caller, name: str) -> func.HttpResponse:
    # The caller first, before anything is read: a caller without a role gets the same answer for
    # every export name, existing or not.
    require_a_role(caller)
    snapshot = svc.config.read()
    export = snapshot.config.exports.get(name)
    if export is None:
        raise not_found("export", name, EXPORTS_HINT)
    connection = snapshot.config.connections[export.connection]
    authorize(caller, Action.START_RUN, allow_contributors=connection.allow_contributors)
    chosen = options(req, _OPTIONS, "a run")
    dry_run, full, force, withdraw = (chosen[option] for option in _OPTIONS)
    if withdraw:
        authorize(caller, Action.WITHDRAW)
        if full:
            raise ApiError(
                400, "ValidationFailed", "a withdraw run sends nothing but unsubscriptions: leave out full"
            )
    if force or full:
        authorize(caller, Action.START_WIDENED_RUN)
    # A disabled export can still be withdrawn: disabling it first keeps its schedule from adding
    # everyone back while the withdrawal runs.
    if not export.enabled and not withdraw:
        raise ApiError(409, "ExportDisabled", f"export {name!r} is disabled: set enabled: true to run it")
    if not dry_run and not connection.data_privacy_consent:
        raise ApiError(
            409,
            "ConsentRequired",
            f"connection {connection.name!r} has no data privacy consent: an administrator must set "
            "dataPrivacyConsent: true before data is sent (a dryRun is allowed)",
        )
    try:
        record = svc.start_run(
            name,
            trigger="api",
            dry_run=dry_run,
            full=full,
            force=force,
            started_by=f"api:{scrub(caller.name)}",
            started_by_hash=hash_email(caller.name),
            withdraw=withdraw,
        )
    except RunActive as exc:
        active = exc.record
        raise ApiError(
            409,
            "RunActive",
            f"export {name!r} already has run {active.run_id} {active.status}; follow it at "
            f"{run_location(name, active.run_id)} and start another when it has finished",
            extra={"activeRun": run_view(active)},
        ) from None
    log.info("run %s of export %s queued by %s", record.run_id, name, scrub(caller.name))
    location = run_location(name, record.run_id)
    return json_response(run_view(record), status=202, headers={"Location": location})


@bp.function_name("export_run")
@bp.route(route="exports/{name}/runs/{runId}", methods=["GET"])
@api_route(Action.READ_EXPORTS)
def export_run(req: func.HttpRequest, svc: Services, caller: Caller) -> func.HttpResponse:
    name, run_id = req.route_params["name"], req.route_params["runId"]
    export_or_404(svc, name)
    return json_response(run_view(run_or_404(svc, name, run_id)))


@bp.function_name("export_run_cancel")
@bp.route(route="exports/{name}/runs/{runId}/cancel", methods=["POST"])
@api_route(None)  # authorized against the run: administrators, or the contributor who started it
def export_run_cancel(req: func.HttpRequest, svc: Services, caller: Caller) -> func.HttpResponse:
    """Cancel a queued or running run: 202 with its status as stored after the request (a queued run
    is `cancelled` at once, a running one stops at its next batch boundary), 409 RunNotActive
    otherwise. Administrators, and the contributor who started the run."""
    from shared.cancel import cancel_run

    name, run_id = req.route_params["name"], req.route_params["runId"]
    require_a_role(caller)
    export_or_404(svc, name)
    body = read_json_object(req, required=False)
    if body:
        raise ApiError(400, "ValidationFailed", f"unknown field(s) {', '.join(sorted(body))}; send {{}}")
    record = run_or_404(svc, name, run_id)
    _may_cancel(caller, record)
    record = cancel_run(svc.runs, svc.app_container, record, by=f"api:{scrub(caller.name)}")
    log.info("run %s of export %s: cancel asked by %s (%s)", run_id, name, scrub(caller.name), record.status)
    location = run_location(name, run_id)
    return json_response(
        {"runId": record.run_id, "status": record.status, "cancelRequested": True, "run": run_view(record)},
        status=202,
        headers={"Location": location},
    )


def _may_cancel(caller: Caller, record: RunRecord) -> None:
    if caller.is_admin:
        return
    if caller.is_contributor and record.started_by_hash == hash_email(caller.name):
        return
    authorize(caller, Action.CANCEL_RUN)  # raises: a contributor who did not start it, or no role
    raise AuthError(403, "Forbidden", "only administrators may cancel a run someone else started")


@bp.function_name("export_reset")
@bp.route(route="exports/{name}/reset", methods=["POST"])
@api_route(Action.WRITE_EXPORTS)
def export_reset(req: func.HttpRequest, svc: Services, caller: Caller) -> func.HttpResponse:
    """Delete an export's checkpoint, or its delivered state too: the documented way out of a
    StoredStateCorrupt error. Administrators only; refused while the export has a live run."""
    from shared.state import RESET_WHATS, StateStore

    name = req.route_params["name"]
    export_or_404(svc, name)
    body = read_json_object(req)
    what = body.get("what")
    if set(body) != {"what"} or what not in RESET_WHATS:
        raise ApiError(
            400,
            "ValidationFailed",
            'send {"what": "checkpoint"} (forget the run in progress) or {"what": "state"} (forget what '
            "was delivered too: the next run sends every contact)",
        )
    active = svc.runs.active(name)
    if active is not None:
        raise ApiError(
            409,
            "RunActive",
            f"export {name!r} has run {active.run_id} {active.status}: reset it once that run has ended",
            extra={"activeRun": run_view(active)},
        )
    deleted = StateStore(svc.app_container, name).reset(str(what))
    log.warning("export %s: %s reset by %s (deleted %s)", name, what, scrub(caller.name), deleted)
    return json_response({"export": name, "reset": what, "deleted": deleted})
