"""HTTP API: what a run left behind. Its report, its rejected rows (CSV), its change log (CSV) and,
for mirror runs, who was unsubscribed; and lookup by email across an export's change logs.

Rejected rows, change logs and unsubscribed people are personal data. Administrators get them
whole; a contributor gets the rejected rows' positions and reasons without their values, the change
log's `email,action,outcome,reason` with emails masked (`j***@example.com`), and unsubscribed
emails masked. Lookup is for administrators only. The files stay in the app's storage; these routes read them
a page at a time (`start`, `limit`), streamed from storage, since the Functions worker buffers
every response body.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable

import azure.functions as func

from functions import new_blueprint
from functions.http import (
    ApiError,
    int_param,
    json_response,
    read_json_object,
)
from functions.resources import export_or_404, run_or_404
from functions.services import Services, api_route
from functions.views import run_location
from shared.auth import Action, Caller
from shared.mapping import normalize_email
from shared.outcomes import Action as ChangeAction
from shared.outcomes import Outcome
from shared.redact import mask_email, scrub
from shared.report import FORMULA_TRIGGERS
from shared.report_files import csv_page, csv_rows, to_csv
from shared.runs import RunRecord

__all__ = [
    "CONTRIBUTOR_CHANGE_COLUMNS",
    "CONTRIBUTOR_COLUMNS",
    "PAGE_DEFAULT",
    "PAGE_MAX",
    "bp",
    "export_lookup",
    "export_run_changes",
    "export_run_rejected",
    "export_run_report",
    "export_run_unsubscribed",
]

bp = new_blueprint()
PAGE_DEFAULT = 10_000
PAGE_MAX = 100_000
# What a contributor sees of a rejected row: where it was and why, not what it held.
CONTRIBUTOR_COLUMNS = 3  # partition, line, reason
# ... and of a change log row: who (masked), what and how it went, not the values sent.
# `email,action,outcome,reason` (shared.changes.CHANGE_KEY_COLUMNS): what contributors see of a
# change log. A literal, because shared.changes loads numpy, which the function app must not import.
CONTRIBUTOR_CHANGE_COLUMNS = 4


def _run(svc: Services, req: func.HttpRequest) -> RunRecord:
    name, run_id = req.route_params["name"], req.route_params["runId"]
    export_or_404(svc, name)
    return run_or_404(svc, name, run_id)


def _no_report(record: RunRecord, what: str) -> ApiError:
    where = run_location(record.export, record.run_id)
    if record.active:
        why = f"run {record.run_id} is {record.status}: its {what} is written when it succeeds; follow it at {where}"
    else:
        why = (
            f"run {record.run_id} {record.status} without writing its {what}"
            f" ({record.error or 'no error recorded'}); its counts and error are at {where}"
        )
    return ApiError(404, "ReportNotFound", why)


def _report(svc: Services, record: RunRecord) -> dict[str, object]:
    from azure.core.exceptions import ResourceNotFoundError

    if not record.report_blob:
        raise _no_report(record, "report")
    try:
        data = svc.app_container.download_blob(record.report_blob).readall()
    except ResourceNotFoundError:
        raise _no_report(record, "report") from None
    report: dict[str, object] = json.loads(data)
    return report


def _page_params(req: func.HttpRequest) -> tuple[int, int]:
    return int_param(req.params, "start", 0, 0, 1_000_000_000), int_param(
        req.params, "limit", PAGE_DEFAULT, 1, PAGE_MAX
    )


def _next(req: func.HttpRequest, start: int, limit: int, **filters: str) -> str:
    path = req.url.split("?", 1)[0]
    path = path[path.index("/api/") :] if "/api/" in path else path
    extra = "".join(f"&{name}={value}" for name, value in filters.items() if value)
    return f"{path}?start={start + limit}&limit={limit}{extra}"


def _csv_page(
    record: RunRecord,
    what: str,
    header: list[str],
    rows: list[list[str]],
    *,
    start: int,
    next_url: str | None,
) -> func.HttpResponse:
    """One page of a run's CSV file (`what`: rejected, changes), with the next page's link if any."""
    headers = {
        "Cache-Control": "no-store",
        "Content-Disposition": f'attachment; filename="{record.export}-{record.run_id}-{what}.csv"',
        "X-Rows-Start": str(start),
        "X-Rows": str(len(rows)),
    }
    if next_url is not None:
        headers["Link"] = f'<{next_url}>; rel="next"'
    return func.HttpResponse(
        to_csv(header, rows), status_code=200, headers=headers, mimetype="text/csv", charset="utf-8"
    )


def _choice(req: func.HttpRequest, name: str, allowed: Iterable[str]) -> str:
    value = str(req.params.get(name, ""))
    known = sorted(allowed)
    if value and value not in known:
        raise ApiError(400, "ValidationFailed", f"{name} must be one of {', '.join(known)}")
    return value


@bp.function_name("export_run_report")
@bp.route(route="exports/{name}/runs/{runId}/report", methods=["GET"])
@api_route(Action.READ_EXPORTS)
def export_run_report(req: func.HttpRequest, svc: Services, caller: Caller) -> func.HttpResponse:
    return json_response(_report(svc, _run(svc, req)))


@bp.function_name("export_run_rejected")
@bp.route(route="exports/{name}/runs/{runId}/rejected", methods=["GET"])
@api_route(Action.READ_EXPORTS)
def export_run_rejected(req: func.HttpRequest, svc: Services, caller: Caller) -> func.HttpResponse:
    from azure.core.exceptions import ResourceNotFoundError

    record = _run(svc, req)
    start, limit = _page_params(req)
    if not record.rejected_blob:
        raise _no_report(record, "rejected rows")
    try:
        download = svc.app_container.download_blob(record.rejected_blob)
    except ResourceNotFoundError:
        raise _no_report(record, "rejected rows") from None
    page = csv_page(csv_rows(download.chunks()), start, limit)
    header, rows = page.header, page.rows
    if not caller.is_admin:
        header, rows = header[:CONTRIBUTOR_COLUMNS], [row[:CONTRIBUTOR_COLUMNS] for row in rows]
    next_url = _next(req, start, limit) if page.more else None
    return _csv_page(record, "rejected", header, rows, start=start, next_url=next_url)


@bp.function_name("export_run_unsubscribed")
@bp.route(route="exports/{name}/runs/{runId}/unsubscribed", methods=["GET"])
@api_route(Action.READ_EXPORTS)
def export_run_unsubscribed(req: func.HttpRequest, svc: Services, caller: Caller) -> func.HttpResponse:
    from azure.core.exceptions import ResourceNotFoundError

    record = _run(svc, req)
    start, limit = _page_params(req)
    report = _report(svc, record)
    blob = report.get("unsubscribed_blob")
    # Mirror runs unsubscribe who left the segment; withdraw runs everyone the export had subscribed.
    if (report.get("mode") != "mirror" and not report.get("withdraw")) or not isinstance(blob, str):
        raise ApiError(
            404,
            "NotAMirrorRun",
            f"run {record.run_id} of export {record.export!r} ran in {report.get('mode')} mode: only mirror "
            "and withdraw runs unsubscribe anyone",
        )
    try:
        download = svc.app_container.download_blob(blob)
    except ResourceNotFoundError:
        raise _no_report(record, "unsubscribed list") from None
    page = csv_page(csv_rows(download.chunks()), start, limit)
    masked = not caller.is_admin
    items = []
    for row in page.rows:
        email, outcome, detail = ([*row, "", "", ""])[:3]
        if email.startswith("'") and email[1:2] and email[1] in FORMULA_TRIGGERS:
            email = email[1:]  # undo the spreadsheet guard of the stored file
        items.append(
            {
                "email": mask_email(email) if masked else email,
                "outcome": outcome,
                "detail": scrub(detail) if masked else detail,
            }
        )
    return json_response(
        {
            "export": record.export,
            "runId": record.run_id,
            "masked": masked,
            "start": start,
            "limit": limit,
            "unsubscribed": items,
            "next": _next(req, start, limit) if page.more else None,
        }
    )


@bp.function_name("export_run_changes")
@bp.route(route="exports/{name}/runs/{runId}/changes", methods=["GET"])
@api_route(Action.READ_EXPORTS)
def export_run_changes(req: func.HttpRequest, svc: Services, caller: Caller) -> func.HttpResponse:
    """The run's change log, a page at a time, optionally only one action and/or outcome."""
    from azure.core.exceptions import ResourceNotFoundError

    record = _run(svc, req)
    start, limit = _page_params(req)
    action = _choice(req, "action", (a.value for a in ChangeAction))
    outcome = _choice(req, "outcome", (o.value for o in Outcome))
    if not record.changes_blob:
        raise _no_changes(record)
    try:
        download = svc.app_container.download_blob(record.changes_blob)
    except ResourceNotFoundError:
        raise _no_changes(record) from None
    rows = csv_rows(download.chunks())
    header = next(rows, [])
    wanted = (r for r in rows if (not action or r[1:2] == [action]) and (not outcome or r[2:3] == [outcome]))
    page = csv_page(itertools.chain([header], wanted), start, limit)
    header, rows_out = page.header, page.rows
    if not caller.is_admin:
        from shared.changes import plain_cell

        n = CONTRIBUTOR_CHANGE_COLUMNS
        header = header[:n]
        rows_out = [[mask_email(plain_cell(row[0])), *row[1:n]] for row in rows_out]
    next_url = _next(req, start, limit, action=action, outcome=outcome) if page.more else None
    return _csv_page(record, "changes", header, rows_out, start=start, next_url=next_url)


def _no_changes(record: RunRecord) -> ApiError:
    where = run_location(record.export, record.run_id)
    if record.active:
        why = f"run {record.run_id} is {record.status} and has not started sending yet; follow it at {where}"
    else:
        why = (
            f"run {record.run_id} {record.status} before it acted on any contact"
            f" ({record.error or 'no error recorded'}); its counts and error are at {where}"
        )
    return ApiError(404, "ChangesNotFound", why)


@bp.function_name("export_lookup")
@bp.route(route="exports/{name}/lookup", methods=["POST"])
@api_route(Action.LOOKUP_PERSON)
def export_lookup(req: func.HttpRequest, svc: Services, caller: Caller) -> func.HttpResponse:
    """What the export's runs did to one person. A POST, so the address is in no URL or access log;
    it is never logged or stored (shared/lookup.py)."""
    from shared.lookup import lookup

    name = req.route_params["name"]
    export = export_or_404(svc, name)
    body = read_json_object(req)
    unknown = sorted(set(body) - {"email"})
    if unknown:
        raise ApiError(400, "ValidationFailed", f"unknown field(s) {', '.join(unknown)}; lookup takes email")
    raw = body.get("email")
    if not isinstance(raw, str):
        raise ApiError(400, "ValidationFailed", "email is required: the address to look up, as a string")
    email = normalize_email(raw)
    if not isinstance(email, str):
        # The rejection's detail describes the address without quoting it.
        raise ApiError(
            400, "ValidationFailed", f"email is not an address ActiveCampaign accepts: {email.detail}"
        )
    found = lookup(svc.app_container, svc.runs, export, email, segment_blobs=svc.segment_blobs)
    return json_response(found, headers={"Cache-Control": "no-store"})
