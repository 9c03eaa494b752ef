"""JSON shapes of API resources (documented in docs/openapi.yaml)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.config import DEFAULT_TRIGGER
from shared.configstore import item_etag
from shared.decisions import Decision
from shared.runs import RunRecord
from shared.settings import load_settings

__all__ = ["connection_view", "export_view", "next_scheduled_at", "run_location", "run_view"]


def connection_view(name: str, item: dict[str, Any]) -> dict[str, Any]:
    """A connection as stored (no API key ever exists in it), with its name and ETag."""
    return {"name": name, **item, "etag": item_etag(item)}


def export_view(
    name: str,
    item: dict[str, Any],
    last_run: RunRecord | None,
    decision: Decision | None = None,
    next_scheduled_at: str | None = None,
    connection_display_name: str | None = None,
) -> dict[str, Any]:
    return {
        "name": name,
        **item,
        "etag": item_etag(item),
        # The connection by its name for people: readers who may not read connections see it too.
        "connectionDisplayName": connection_display_name,
        # When the timer next checks this export (trigger scheduled: its schedule's next firing).
        "nextScheduledAt": next_scheduled_at,
        "lastRun": run_view(last_run) if last_run else None,
        # What the timer (or a refresh event) last decided for this export, and why.
        "lastDecision": decision.to_document() if decision else None,
    }


def run_location(export: str, run_id: str) -> str:
    return f"/api/exports/{export}/runs/{run_id}"


def run_view(record: RunRecord) -> dict[str, Any]:
    """A run record plus where its reports are and how long it took."""
    view = record.to_document()
    view.pop("startedByHash", None)  # only for the contributor check of a cancel; nobody reads it
    view["durationSeconds"] = _duration(record.started_at, record.finished_at)
    view["reports"] = {
        "container": load_settings().app_container,
        "report": record.report_blob,
        "rejectedRows": record.rejected_blob,
        "changes": record.changes_blob,
    }
    view["links"] = {"self": run_location(record.export, record.run_id)}
    return view


def _duration(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 3)


def next_scheduled_at(item: dict[str, Any], default_schedule: str, now: datetime) -> str | None:
    """When the timer next looks at this export (a stored export document): for `scheduled`, the
    next firing of its schedule; for `onRefresh`, the next catch-up check; None for `manual` or
    disabled exports, and for a schedule that no longer parses (the error shows on the next check)."""
    from shared.schedules import Schedule, ScheduleError, iso

    trigger = item.get("trigger", DEFAULT_TRIGGER)
    if not item.get("enabled", True) or trigger == "manual":
        return None
    expression = (item.get("schedule") if trigger == "scheduled" else None) or default_schedule
    try:
        return iso(Schedule.parse(str(expression)).next_after(now))
    except ScheduleError:
        return None
