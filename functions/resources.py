"""What several API routes do with the stored exports and runs: find one or answer 404, and delete
what the app kept about exports just removed from the configuration."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from functions.http import ApiError, not_found
from functions.messages import RUN_ID

if TYPE_CHECKING:
    from functions.services import Services
    from shared.config import ExportConfig
    from shared.runs import RunRecord

__all__ = ["EXPORTS_HINT", "export_or_404", "purge_deleted_exports", "run_or_404"]

log = logging.getLogger(__name__)

EXPORTS_HINT = "list them with GET /api/exports"


def export_or_404(svc: Services, name: str) -> ExportConfig:
    export = svc.config.read().config.exports.get(name)
    if export is None:
        raise not_found("export", name, EXPORTS_HINT)
    return export


def run_or_404(svc: Services, name: str, run_id: str) -> RunRecord:
    """Run `run_id` of export `name` (whose existence the caller checked first)."""
    record = svc.runs.get(name, run_id) if RUN_ID.fullmatch(run_id) else None
    if record is None:
        raise not_found("run", run_id, f"list the runs of export {name!r} with GET /api/exports/{name}/runs")
    return record


def purge_deleted_exports(svc: Services, names: list[str], *, keep_history: bool) -> None:
    """Delete what the app kept about exports just removed from the configuration (shared/purge.py).

    The configuration change comes first, so their runs stop; if deleting their data fails, the
    error says so, and the timer's retention sweep deletes the personal data left behind.
    """
    from shared.purge import purge_export

    failed = []
    for export in names:
        try:
            purge_export(svc.app_container, export, keep_history=keep_history)
        except Exception:
            log.exception("export %s was deleted, but deleting its stored data failed", export)
            failed.append(export)
    if failed:
        raise ApiError(
            500,
            "PurgeIncomplete",
            f"deleted {', '.join(failed)} from the configuration, but not all of its stored data (delivered "
            "state, run records, reports): the timer's retention sweep deletes the personal data left "
            "behind; the function logs have the details",
        )
